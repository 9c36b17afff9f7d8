/**
 * `evpub feeds pause|resume|snapshot FEED [--url] [--token]`: operate a feed of a running evpub
 * through its management API. FEED is `datasource/model` (as `evpub status` lists it).
 *
 *   evpub feeds pause pg/accounts      # the datasource pg is no longer read; nothing is lost
 *   evpub feeds resume pg/accounts     # reading goes on from the checkpoint
 *   evpub feeds snapshot pg/accounts   # every row published again (snapshot events), beside the stream
 *
 * Pausing stops reading the feed's datasource (every feed of it waits: one stream per
 * datasource); what is in flight is still published and committed. A re-snapshot reads the
 * feed's table again from its first row while changes go on streaming; a restart mid-way
 * resumes it. All are idempotent: a feed already paused (resumed, snapshotting) is said so,
 * exit 0. An unknown feed, or one whose connector cannot re-snapshot, exits 1 with the reason.
 */
import type { Command } from 'commander';
import { callApi, type ApiFlags } from './api';

type FeedReply = { state: string; pausedBy?: string[] };

function rows(snapshot: { done: number; total?: number }): string {
  const n = new Intl.NumberFormat('en');
  return snapshot.total !== undefined
    ? `${n.format(snapshot.done)} / ${n.format(snapshot.total)} rows`
    : `${n.format(snapshot.done)} rows`;
}

export async function feedAction(
  action: 'pause' | 'resume' | 'snapshot',
  feed: string,
  flags: ApiFlags,
  out: NodeJS.WritableStream,
): Promise<void> {
  const path = `/api/feeds/${encodeURIComponent(feed)}/${action}`;
  if (action === 'snapshot') {
    const { body } = await callApi(flags, 'POST', path, [202]);
    const reply = body as { started: boolean; snapshot: { done: number; total?: number }; feed: FeedReply };
    const line = reply.started
      ? `${feed}: re-snapshot started`
      : `${feed}: a snapshot is already running (${rows(reply.snapshot)})`;
    out.write(`${line} (state ${reply.feed.state})\n`);
    return;
  }
  const { body } = await callApi(flags, 'POST', path);
  const reply = body as { changed: boolean; feed: FeedReply };
  const done = action === 'pause' ? 'paused' : 'resumed';
  let line = reply.changed
    ? `${feed}: ${done}`
    : `${feed}: already ${done === 'paused' ? 'paused' : 'reading'}`;
  line += ` (state ${reply.feed.state})`;
  out.write(`${line}\n`);
}

const DESCRIPTIONS = {
  pause: "stop reading the feed's datasource (datasource/model); the checkpoint stays, nothing is lost",
  resume: 'resume a paused feed from where it stopped',
  snapshot: "publish every row of the feed's table again (snapshot events) while its changes go on streaming",
} as const;

export function registerFeeds(program: Command): void {
  const feeds = program
    .command('feeds')
    .description('pause, resume or re-snapshot a feed of a running evpub');
  for (const action of ['pause', 'resume', 'snapshot'] as const) {
    feeds
      .command(`${action} <feed>`)
      .description(DESCRIPTIONS[action])
      .option('-u, --url <url>', 'the management API (default: EVPUB_URL or http://127.0.0.1:7401)')
      .option('-t, --token <token>', 'its bearer token (default: EVPUB_HTTP_TOKEN)')
      .action(async (feed: string, flags: ApiFlags) => feedAction(action, feed, flags, process.stdout));
  }
}
