/**
 * `evpub feeds pause|resume FEED [--url] [--token]`: pause or resume a feed of a running evpub
 * through its management API. FEED is `datasource/model` (as `evpub status` lists it).
 *
 *   evpub feeds pause pg/accounts      # the datasource pg is no longer read; nothing is lost
 *   evpub feeds resume pg/accounts     # reading goes on from the checkpoint
 *
 * Pausing stops reading the feed's datasource (every feed of it waits: one stream per
 * datasource); what is in flight is still published and committed. Both are idempotent: a
 * feed already paused (resumed) is said so, exit 0. An unknown feed exits 1.
 */
import type { Command } from 'commander';
import { callApi, type ApiFlags } from './api';

export async function feedAction(
  action: 'pause' | 'resume',
  feed: string,
  flags: ApiFlags,
  out: NodeJS.WritableStream,
): Promise<void> {
  const { body } = await callApi(flags, 'POST', `/api/feeds/${encodeURIComponent(feed)}/${action}`);
  const reply = body as { changed: boolean; feed: { state: string; pausedBy?: string[] } };
  const done = action === 'pause' ? 'paused' : 'resumed';
  let line = reply.changed
    ? `${feed}: ${done}`
    : `${feed}: already ${done === 'paused' ? 'paused' : 'reading'}`;
  line += ` (state ${reply.feed.state})`;
  out.write(`${line}\n`);
}

export function registerFeeds(program: Command): void {
  const feeds = program.command('feeds').description('pause or resume a feed of a running evpub');
  for (const action of ['pause', 'resume'] as const) {
    feeds
      .command(`${action} <feed>`)
      .description(
        action === 'pause'
          ? "stop reading the feed's datasource (datasource/model); the checkpoint stays, nothing is lost"
          : 'resume a paused feed from where it stopped',
      )
      .option('-u, --url <url>', 'the management API (default: EVPUB_URL or http://127.0.0.1:7401)')
      .option('-t, --token <token>', 'its bearer token (default: EVPUB_HTTP_TOKEN)')
      .action(async (feed: string, flags: ApiFlags) => feedAction(action, feed, flags, process.stdout));
  }
}
