/**
 * `evpub cluster [--url] [--token] [--json]`: the cluster a running evpub instance belongs to,
 * as it sees it (its management API, `GET /api/cluster`): the live instances (host, pid, API
 * address, the units each holds with their epochs and since when), then every unit with its
 * owner, or `unowned`. Any instance answers for the whole cluster: each reads the members'
 * entries in the lease store.
 *
 *   evpub cluster --url http://10.0.0.7:7401
 *   evpub cluster --json | jq '.units[] | select(.owner == null)'
 *
 * Exit code 0; 1 when the lease store does not answer that instance (the units it holds stop at
 * their deadline, and its view of the others is the last one it read), or when it runs alone
 * (no `cluster` in its configuration).
 */
import { styleText } from 'node:util';
import type { Command } from 'commander';
import { ErrorCode, EvpubError } from '../errors';
import type { ClusterApiView } from '../http/views';
import { redactValue } from '../util/redact';
import { callApi, type ApiFlags } from './api';

interface ClusterFlags extends ApiFlags {
  json?: boolean;
}

type Colour = Parameters<typeof styleText>[0];

/** An ISO time to the second, as the tables show it. */
export function shortTime(iso: string | undefined): string {
  if (!iso) return '-';
  return iso.replace(/\.\d+Z$/, 'Z');
}

/** Columns padded to their widest cell, two spaces apart. */
export function columns(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((cells) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
}

/** The two tables: instances, then units; then the lease store's state. */
export function clusterTable(view: ClusterApiView, colour: boolean): string {
  const paint = (c: Colour, s: string): string => (colour ? styleText(c, s, { validateStream: false }) : s);
  const me = (instance: string): string => (instance === view.instance ? `${instance} *` : instance);
  const out: string[] = [];
  out.push(
    `cluster ${view.name}: ${view.members.length} live instance${view.members.length === 1 ? '' : 's'}, ` +
      `${view.units.length} unit${view.units.length === 1 ? '' : 's'}, lease store ${view.store}`,
    '',
  );
  const members = [...view.members].sort((a, b) => a.instance.localeCompare(b.instance));
  const instanceRows = members.map((m) => {
    const units = Object.entries(m.info.units)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([unit, u]) => `${unit} (epoch ${u.epoch}, since ${shortTime(u.since)})`);
    return [
      me(m.instance),
      m.info.host ?? '-',
      m.info.pid !== undefined ? String(m.info.pid) : '-',
      m.info.api ?? '-',
      units.join(', ') || '-',
    ];
  });
  const [header, ...lines] = columns([['INSTANCE', 'HOST', 'PID', 'API', 'UNITS'], ...instanceRows]);
  out.push(paint('bold', header!), ...lines);
  if (members.length === 0) out.push('(no live instance seen)');
  out.push('');
  const unitRows = view.units.map((u) => [
    u.unit,
    u.owner !== undefined ? me(u.owner) : 'unowned',
    u.epoch !== undefined ? String(u.epoch) : '-',
    shortTime(u.since),
    u.feeds.join(', '),
  ]);
  const [unitHeader, ...unitLines] = columns([['UNIT', 'OWNER', 'EPOCH', 'SINCE', 'FEEDS'], ...unitRows]);
  out.push(paint('bold', unitHeader!));
  unitLines.forEach((line, i) => out.push(view.units[i]!.owner === undefined ? paint('yellow', line) : line));
  out.push('', `* the instance asked (${view.instance})`);
  if (view.state === 'ok') out.push(paint('green', `lease store ${view.store}: ok`));
  else {
    const why = view.error ? `: ${view.error.code} ${view.error.message}` : '';
    out.push(paint('red', `lease store ${view.store}: unreachable${why}`));
  }
  return `${out.join('\n')}\n`;
}

/** Prints the cluster; resolves with the exit code (0; 1 when the lease store is unreachable). */
export async function showCluster(
  flags: ClusterFlags,
  out: NodeJS.WriteStream | NodeJS.WritableStream,
): Promise<number> {
  const reply = await callApi(flags, 'GET', '/api/cluster', [200, 404, 503]);
  if (reply.status !== 200) {
    const message = (reply.body as { message?: unknown } | undefined)?.message;
    throw new EvpubError(
      reply.status === 404 ? ErrorCode.NOT_SUPPORTED : ErrorCode.INVALID_STATE,
      `GET /api/cluster: ${typeof message === 'string' ? message : `HTTP ${reply.status}`}`,
    );
  }
  const view = redactValue(reply.body as ClusterApiView);
  if (flags.json) out.write(`${JSON.stringify(view, null, 2)}\n`);
  else {
    const tty = (out as NodeJS.WriteStream).isTTY === true;
    out.write(clusterTable(view, tty && !process.env.NO_COLOR));
  }
  return view.state === 'ok' ? 0 : 1;
}

export function registerCluster(program: Command): void {
  program
    .command('cluster')
    .description(
      'the live instances of a running evpub cluster and every unit with its owner (exit 1 when the lease store is unreachable)',
    )
    .option(
      '-u, --url <url>',
      'the management API of any instance (default: EVPUB_URL or http://127.0.0.1:7401)',
    )
    .option('-t, --token <token>', 'its bearer token (default: EVPUB_HTTP_TOKEN)')
    .option('--json', 'print JSON: instance, name, store, state, members, units')
    .action(async (flags: ClusterFlags) => {
      process.exitCode = await showCluster(flags, process.stdout);
    });
}
