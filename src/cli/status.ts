/**
 * `evpub status [--url] [--token] [--json]`: the feeds of a running evpub, from its management
 * API (`/ready` and `/api/feeds`), as a table (coloured on a terminal, plain when piped or with
 * NO_COLOR) or as JSON. Exit code 0 when evpub is ready (every feed reading or paused on purpose,
 * every broker connected), 1 otherwise, so scripts can use it:
 *
 * In cluster mode (docs/cluster.md) the table has OWNER, EPOCH and SINCE columns: the instance
 * that publishes each feed (`*`: the instance asked), the lease's epoch and since when it owns
 * the unit; feeds another instance publishes are `standby`; a lease store that does not answer
 * makes the instance not ready. `evpub cluster` lists the instances and units.
 *
 *   evpub status && echo ready
 *   evpub status --json | jq '.feeds[] | select(.state == "failed")'
 */
import { styleText } from 'node:util';
import type { Command } from 'commander';
import type { FeedsView, FeedView, ReadyView } from '../http/views';
import { callApi, type ApiFlags } from './api';
import { shortTime } from './cluster';
import { redactValue } from '../util/redact';

interface StatusFlags extends ApiFlags {
  json?: boolean;
}

type Colour = Parameters<typeof styleText>[0];

const STATE_COLOUR: Record<FeedView['state'], Colour> = {
  streaming: 'green',
  snapshotting: 'cyan',
  paused: 'yellow',
  waiting: 'yellow',
  starting: 'blue',
  reconnecting: 'yellow',
  failed: 'red',
  stopped: 'gray',
  standby: 'gray',
};

function stateText(feed: FeedView): string {
  if (feed.state === 'snapshotting' && feed.snapshot) {
    const { done, total } = feed.snapshot;
    return total
      ? `snapshotting ${Math.floor((done / Math.max(total, 1)) * 100)}%`
      : `snapshotting ${done} rows`;
  }
  if (feed.state === 'waiting' && feed.pausedBy) return `waiting (${feed.pausedBy.join(', ')} paused)`;
  return feed.state;
}

/** The table: one line per feed, then the brokers, then why not ready. */
export function statusTable(feeds: FeedsView, ready: ReadyView, colour: boolean): string {
  const paint = (c: Colour, s: string): string => (colour ? styleText(c, s, { validateStream: false }) : s);
  const cluster = feeds.cluster;
  const header = ['FEED', 'STATE', 'EVENTS/S', 'PUBLISHED', 'DEAD', 'IN FLIGHT', 'COMMITTED'];
  if (cluster) header.splice(2, 0, 'OWNER', 'EPOCH', 'SINCE');
  const rows = feeds.feeds.map((f) => {
    const cells = [
      f.id,
      stateText(f),
      f.eventsPerSecond.toFixed(1),
      String(f.counters.published),
      String(f.counters.deadLettered),
      String(f.inFlight),
      f.position.committed ?? '-',
    ];
    if (cluster) {
      const o = f.owner;
      cells.splice(
        2,
        0,
        o ? `${o.instance}${o.mine ? ' *' : ''}` : 'unowned',
        o ? String(o.epoch) : '-',
        o ? shortTime(o.since) : '-',
      );
    }
    return cells;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const out = [paint('bold', line(header))];
  feeds.feeds.forEach((f, i) => {
    const cells = rows[i]!;
    const text = line(cells);
    const at = text.indexOf(cells[1]!, cells[0]!.length);
    out.push(text.slice(0, at) + paint(STATE_COLOUR[f.state], cells[1]!) + text.slice(at + cells[1]!.length));
    if (f.error) out.push(`  ${paint('red', `${f.error.code}: ${f.error.message}`)}`);
  });
  if (feeds.feeds.length === 0) out.push('(no feeds)');
  out.push('');
  if (cluster) {
    const store =
      cluster.state === 'ok'
        ? paint('green', 'ok')
        : paint('red', `unreachable${cluster.error ? ` (${cluster.error.code})` : ''}`);
    out.push(
      `cluster ${cluster.name}, this instance ${cluster.instance} (*), lease store ${cluster.store}: ${store}`,
    );
  }
  for (const b of feeds.brokers) {
    out.push(`broker ${b.name} (${b.adapter}): ${paint(b.state === 'connected' ? 'green' : 'red', b.state)}`);
  }
  out.push(ready.ready ? paint('green', 'ready') : paint('red', `not ready: ${ready.reasons.join('; ')}`));
  return `${out.join('\n')}\n`;
}

/** Prints the status; resolves with the exit code (0 ready, 1 not). */
export async function showStatus(
  flags: StatusFlags,
  out: NodeJS.WriteStream | NodeJS.WritableStream,
): Promise<number> {
  const readyReply = await callApi(flags, 'GET', '/ready', [200, 503]);
  const ready = readyReply.body as ReadyView;
  const feeds = (await callApi(flags, 'GET', '/api/feeds')).body as FeedsView;
  if (flags.json) {
    out.write(`${JSON.stringify(redactValue({ ...ready, ...feeds }), null, 2)}\n`);
  } else {
    const tty = (out as NodeJS.WriteStream).isTTY === true;
    const colour = tty && !process.env.NO_COLOR;
    out.write(statusTable(redactValue(feeds), redactValue(ready), colour));
  }
  return ready.ready ? 0 : 1;
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('the feeds of a running evpub (exit 0 when ready, 1 otherwise)')
    .option('-u, --url <url>', 'the management API (default: EVPUB_URL or http://127.0.0.1:7401)')
    .option('-t, --token <token>', 'its bearer token (default: EVPUB_HTTP_TOKEN)')
    .option('--json', 'print JSON: ready, reasons, state, feeds, brokers')
    .action(async (flags: StatusFlags) => {
      process.exitCode = await showStatus(flags, process.stdout);
    });
}
