/**
 * `evpub slots list|drop`: the logical replication slots on the PostgreSQL servers evpub reads.
 *
 *   evpub slots list                      # the servers of the postgres datasources in the config
 *   evpub slots list --url postgres://postgres@db:5432/app --json
 *   evpub slots drop evpub_db             # refuses a slot some process is reading
 *
 * The servers: `--url`, else every `postgres`/`postgresql` datasource of the configuration
 * (`-c file` or the working directory's). A slot is marked as evpub's when a datasource of the
 * configuration names it (its `slot` setting, default `evpub_<datasource>`), when the process
 * reading it is evpub (application_name), or when it has evpub's default prefix `evpub_`.
 *
 * Dropping a slot evpub reads makes PostgreSQL discard the WAL it kept: the datasource's
 * checkpoints can no longer be resumed (evpub refuses to start them, see
 * docs/connectors/postgres.md), and `evpub snapshot <model>` is the way on.
 */
import type { Command } from 'commander';
import type { Client } from 'pg';
import { loadConfigFrom } from '../app/config';
import { ErrorCode, EvpubError, redact } from '../errors';
import { loadTls, parseTls, verifyServername, type TlsSettings } from '../util/tls';

const POSTGRES = ['postgres', 'postgresql'];

type PgModule = typeof import('../connectors/postgres/index');

interface SlotFlags {
  config?: string;
  dir?: string;
  url?: string;
  json?: boolean;
}

interface Server {
  url: string;
  /** The datasource's `tls` setting (and where it sits), when it has one. */
  tls?: { settings: TlsSettings; path: string };
  /** Slot name → the datasource (and its models) that reads it. */
  owners: Map<string, { datasource: string; models: string[] }>;
}

/** The PostgreSQL servers to look at: `--url`, else the configuration's postgres datasources. */
export function serversOf(flags: SlotFlags, pg: Pick<PgModule, 'defaultName'>): Server[] {
  if (flags.url) return [{ url: flags.url, owners: new Map() }];
  const { config } = loadConfigFrom({ file: flags.config, dir: flags.dir });
  const servers = new Map<string, Server>();
  for (const [name, ds] of Object.entries(config.datasources)) {
    if (!POSTGRES.includes(ds.connector) || typeof ds.url !== 'string') continue;
    const tlsPath = `datasources.${name}.tls`;
    const tls = parseTls(ds.tls, tlsPath);
    const server: Server = servers.get(ds.url) ?? {
      url: ds.url,
      owners: new Map(),
      ...(tls ? { tls: { settings: tls, path: tlsPath } } : {}),
    };
    servers.set(ds.url, server);
    const slot = typeof ds.slot === 'string' ? ds.slot : pg.defaultName(name);
    const models = Object.entries(config.models)
      .filter(([, m]) => m.dataSource === name)
      .map(([m]) => m);
    server.owners.set(slot, { datasource: name, models });
  }
  if (servers.size === 0) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      'no PostgreSQL server: the configuration has no postgres datasource; give --url postgres://user@host:5432/db',
    );
  }
  return [...servers.values()];
}

async function withServer<T>(pg: PgModule, server: Server, fn: (c: Client) => Promise<T>): Promise<T> {
  const endpoint = redact(server.url);
  const ssl = server.tls && verifyServername(loadTls(server.tls.settings, server.tls.path, { endpoint }));
  const client = await pg.connectAdmin(server.url, endpoint, 10_000, ssl);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

async function list(flags: SlotFlags, out: NodeJS.WritableStream): Promise<void> {
  const pg = await import('../connectors/postgres/index.js');
  const servers = serversOf(flags, pg);
  const all: Record<string, unknown>[] = [];
  for (const server of servers) {
    const slots = await withServer(pg, server, (c) => pg.listSlots(c));
    const rows = slots.map((s) => {
      const owner = server.owners.get(s.name);
      const evpub = owner
        ? `datasource ${owner.datasource}`
        : s.application === 'evpub' || s.application?.startsWith('evpub ') || s.name.startsWith('evpub_')
          ? 'yes'
          : '';
      return { server: redact(server.url), ...s, evpub };
    });
    all.push(
      ...rows.map((r) => ({
        ...r,
        restartLsn: r.restartLsn === null ? null : pg.formatLsn(r.restartLsn),
        confirmedFlush: r.confirmedFlush === null ? null : pg.formatLsn(r.confirmedFlush),
      })),
    );
    if (flags.json) continue;
    if (servers.length > 1) out.write(`${redact(server.url)}\n`);
    if (rows.length === 0) {
      out.write('no logical replication slots\n');
      continue;
    }
    const header = [
      'SLOT',
      'PLUGIN',
      'DATABASE',
      'ACTIVE',
      'RESTART LSN',
      'CONFIRMED LSN',
      'LAG',
      'WAL',
      'EVPUB',
    ];
    const cells = rows.map((r) => [
      r.name,
      r.plugin ?? '-',
      r.database ?? '-',
      r.active ? `yes (pid ${r.activePid}${r.application ? `, ${r.application}` : ''})` : 'no',
      r.restartLsn === null ? '-' : pg.formatLsn(r.restartLsn),
      r.confirmedFlush === null ? '-' : pg.formatLsn(r.confirmedFlush),
      formatBytes(r.lagBytes),
      r.walStatus ?? '-',
      r.evpub,
    ]);
    out.write(`${table([header, ...cells])}\n`);
  }
  if (flags.json) out.write(`${JSON.stringify(all, null, 2)}\n`);
}

async function drop(name: string, flags: SlotFlags, out: NodeJS.WritableStream): Promise<void> {
  const pg = await import('../connectors/postgres/index.js');
  const servers = serversOf(flags, pg);
  for (const server of servers) {
    const dropped = await withServer(pg, server, async (c) => {
      const [slot] = await pg.listSlots(c, name);
      if (!slot) return false;
      const inUse = (pid: number | null): EvpubError =>
        new EvpubError(
          ErrorCode.INVALID_STATE,
          `the slot "${name}" at ${redact(server.url)} is in use (pid ${pid ?? '?'}${slot.application ? `, ${slot.application}` : ''}): ` +
            'stop the process reading it (evpub start) first; a slot in use is never dropped',
          { context: { slot: name, pid } },
        );
      if (slot.active) throw inUse(slot.activePid);
      try {
        await pg.dropSlot(c, name);
      } catch (err) {
        if ((err as { code?: string }).code === '55006') throw inUse(null);
        throw new EvpubError(
          ErrorCode.SOURCE_FAILED,
          `dropping the slot "${name}" failed: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      return true;
    });
    if (!dropped) continue;
    out.write(`dropped the replication slot "${name}" at ${redact(server.url)}\n`);
    const owner = server.owners.get(name);
    if (owner) {
      out.write(
        `the checkpoints of datasource "${owner.datasource}" cannot be resumed without it: run ` +
          `\`evpub snapshot ${owner.models.join(' ')}\` before \`evpub start\`\n`,
      );
    }
    return;
  }
  throw new EvpubError(
    ErrorCode.CONFIG_INVALID,
    `no logical replication slot "${name}" at ${servers.map((s) => redact(s.url)).join(', ')} (see \`evpub slots list\`)`,
  );
}

export function registerSlots(program: Command): void {
  const slots = program
    .command('slots')
    .description('list or drop the PostgreSQL logical replication slots (postgres connector)');
  const common = (cmd: Command): Command =>
    cmd
      .option('-c, --config <path>', 'configuration file: its postgres datasources name the servers')
      .option('-d, --dir <dir>', 'directory holding the configuration (default: the working directory)')
      .option(
        '--url <url>',
        'a PostgreSQL URL (postgres://user:password@host:5432/db) instead of the configuration',
      );
  common(slots.command('list'))
    .description("slot, plugin, active, restart and confirmed LSN, lag in bytes; evpub's are marked")
    .option('--json', 'print JSON')
    .action((flags: SlotFlags) => list(flags, process.stdout));
  common(slots.command('drop <name>'))
    .description('drop a replication slot (refused while a process reads it)')
    .action((name: string, flags: SlotFlags) => drop(name, flags, process.stdout));
}
