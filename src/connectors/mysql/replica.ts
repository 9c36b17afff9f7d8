/**
 * Who reads the binlog with a server id: replica registration, and the start check that refuses
 * a second reader of a feed (issue 14).
 *
 * Protocol:
 * 1. Every binlog connection registers as a replica (`COM_REGISTER_SLAVE`) just before it asks
 *    for the dump, with its server id and a report host naming it: `evpub <host>:<pid>
 *    #<connection id>` (`reportHost`). The server lists it in `SHOW SLAVE HOSTS` (Server_id,
 *    Host) until that connection ends (a `KILL`, a close, a crash once the server notices).
 * 2. `start()` reads that list before any binlog connection opens (`claimServerIds`). A server
 *    id of one of its models already listed means another live reader uses it: when both
 *    dumped, the server would end the older dump ("a slave with the same server_id"), the older
 *    reader would reconnect and end the newer one, and each change would be published by both
 *    in turn. So the start fails with FEED_OWNED_ELSEWHERE naming the feed, the server id and
 *    the other reader (its report host, hence evpub's host and pid and its connection id).
 *    Exceptions: a reader left by a process of this host that is gone (kill -9: the server has
 *    not noticed yet) is no obstacle; a reader of this very process (a connector of it that is
 *    stopping) is waited for, up to `connectTimeout`; with `takeover` (contract point 11: the
 *    caller holds the unit's lease, so any other reader is stale) a warning is logged and the
 *    start goes on. Such a reader is not `KILL`ed: the server ends it when ours asks for the
 *    dump with the same id, and it gets the "same server_id" error, upon which it stops (point
 *    3). A KILLed one would see a lost connection, reconnect, and end ours in turn.
 * 3. A reader displaced anyway (two started within the same instant; a reader that does not
 *    register) gets the server's "same server_id" error on its stream: it fails with
 *    FEED_OWNED_ELSEWHERE (binlog.ts) instead of reconnecting, so the two never take turns.
 *
 * Why registration: neither server shows a dump thread's server id among its processes.
 * MariaDB keeps it in the dump thread's session `server_id`, which another session reads only
 * through performance_schema (`variables_by_thread`), off by default; PROCESSLIST shows only
 * "Binlog Dump". Registered replicas are what `SHOW SLAVE HOSTS` lists, with their server id.
 * That statement needs REPLICATION MASTER ADMIN on MariaDB ≥ 10.5.2 (REPLICATION SLAVE on
 * MySQL); without it the check is skipped with a warning when `serverId` is configured (the
 * default is random, so readers never share one) and point 3 still holds.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { ErrorCode, EvpubError } from '../../errors';
import type { Logger } from '../../logger';

/** MySQL 5.7's longest report host (MariaDB and MySQL 8 take 255). */
const MAX_REPORT_HOST = 60;

/** What a registered evpub binlog reader says about itself (`reportHost`). */
export interface ReaderName {
  host: string;
  pid: number;
  connection: number;
}

/** The report host of a binlog connection: `evpub <host>:<pid> #<connection id>`, at most 60 bytes. */
export function reportHost(connection: number, host = hostname(), pid = process.pid): string {
  const tail = `:${pid} #${connection}`;
  const room = MAX_REPORT_HOST - 'evpub '.length - Buffer.byteLength(tail);
  let name = host;
  while (Buffer.byteLength(name) > room) name = name.slice(0, -1);
  return `evpub ${name}${tail}`;
}

/** The reader a report host names, when evpub wrote it (a cut host name does not match ours). */
export function parseReportHost(value: string): ReaderName | undefined {
  const m = /^evpub (.*):(\d+) #(\d+)$/.exec(value);
  return m ? { host: m[1]!, pid: Number(m[2]), connection: Number(m[3]) } : undefined;
}

/** One row of SHOW SLAVE HOSTS. */
export interface RegisteredReplica {
  serverId: number;
  /** The report host (evpub's: `reportHost`), or the address the server saw. */
  host: string;
  port: number;
}

/** A mysql2 connection's internals that a raw command uses. */
interface RawConnection {
  threadId: number | null;
  _resetSequenceId(): void;
  writePacket(packet: { buffer: Buffer; length(): number; writeHeader(sequenceId: number): void }): void;
  addCommand(command: unknown): void;
}

interface ResponsePacket {
  isError(): boolean;
  asError(encoding?: string): Error;
}

/**
 * `COM_REGISTER_SLAVE` as a mysql2 command (queued like a query, run after those queued
 * before it). Layout: 0x15, server id (4), report host (1 + n), user (1 + 0), password
 * (1 + 0), port (2), rank (4), master id (4); the server answers OK or an error. The
 * connection id is read when it runs (after the handshake).
 */
class RegisterReplica extends EventEmitter {
  constructor(
    private readonly serverId: number,
    private readonly done: (err: Error | null) => void,
  ) {
    super();
  }

  execute(packet: ResponsePacket | null, connection: RawConnection): boolean {
    if (!packet) {
      connection._resetSequenceId();
      const host = Buffer.from(reportHost(connection.threadId ?? 0));
      const body = Buffer.alloc(1 + 4 + 1 + host.length + 1 + 1 + 2 + 4 + 4);
      let at = body.writeUInt8(0x15, 0);
      at = body.writeUInt32LE(this.serverId, at);
      at = body.writeUInt8(host.length, at);
      at += host.copy(body, at);
      at = body.writeUInt8(0, at); // user
      at = body.writeUInt8(0, at); // password
      at = body.writeUInt16LE(0, at); // port: none listening
      at = body.writeUInt32LE(0, at); // rank
      body.writeUInt32LE(0, at); // master id: the server fills its own
      const buffer = Buffer.concat([Buffer.alloc(4), body]);
      connection.writePacket({
        buffer,
        length: () => buffer.length,
        writeHeader(sequenceId) {
          buffer.writeUIntLE(body.length, 0, 3);
          buffer.writeUInt8(sequenceId, 3);
        },
      });
      return false;
    }
    this.done(packet.isError() ? packet.asError() : null);
    this.emit('end');
    return true;
  }
}

/**
 * Queues the registration of `connection` (a zongji binlog connection) as replica `serverId`;
 * `done` gets the server's refusal, if any (the dump goes on without it).
 */
export function registerReplica(
  connection: unknown,
  serverId: number,
  done: (err: Error | null) => void,
): void {
  (connection as RawConnection).addCommand(new RegisterReplica(serverId, done));
}

/** SHOW SLAVE HOSTS; undefined when the user may not run it (MariaDB ≥ 10.5.2: REPLICATION MASTER ADMIN). */
export async function registeredReplicas(conn: Connection): Promise<RegisteredReplica[] | undefined> {
  let rows: RowDataPacket[];
  try {
    [rows] = await conn.query<RowDataPacket[]>('SHOW SLAVE HOSTS');
  } catch (err) {
    const errno = (err as { errno?: number }).errno;
    if (errno === 1227 || errno === 1142 || errno === 1044) return undefined;
    throw err;
  }
  return rows.map((row) => {
    // MariaDB says Server_id, MySQL Server_ID (SHOW REPLICAS too).
    const get = (name: string): string | number | undefined =>
      Object.entries(row).find(([k]) => k.toLowerCase() === name)?.[1] as string | number | undefined;
    return {
      serverId: Number(get('server_id')),
      host: String(get('host') ?? ''),
      port: Number(get('port') ?? 0),
    };
  });
}

/** One binlog reader to start: the model's feed and its server id. */
export interface ServerIdUse {
  model: string;
  serverId: number;
}

export interface ClaimOptions {
  datasource: string;
  /** True when `serverId` was configured (the default is random per instance). */
  explicit: boolean;
  /** Point 11: end another reader of these server ids instead of failing. */
  takeover: boolean;
  /** How long a reader of this process is waited for (ms). */
  waitOwn: number;
  logger: Logger;
  signal: AbortSignal;
}

/** Who a registered reader is, for messages: `evpub host:pid, connection 57` or `host:port`. */
function describe(replica: RegisteredReplica, address?: string): string {
  const name = parseReportHost(replica.host);
  const from = address ? ` from ${address}` : '';
  if (name) return `evpub on ${name.host}, pid ${name.pid}, MySQL connection ${name.connection}${from}`;
  return `"${replica.host}"${replica.port ? ` port ${replica.port}` : ''}`;
}

/** The client address of connection `id` (PROCESSLIST HOST), when this user may see it. */
async function clientAddress(conn: Connection, id: number): Promise<string | undefined> {
  try {
    const [rows] = await conn.query<RowDataPacket[]>(
      'SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID = ?',
      [id],
    );
    return rows[0] ? String(rows[0].host as string) : undefined;
  } catch {
    return undefined;
  }
}

/** FEED_OWNED_ELSEWHERE: `model`'s server id is read with by `replica`. */
export function serverIdTaken(
  datasource: string,
  model: string,
  serverId: number,
  replica: RegisteredReplica,
  address?: string,
): EvpubError {
  const reader = parseReportHost(replica.host);
  return new EvpubError(
    ErrorCode.FEED_OWNED_ELSEWHERE,
    `mysql connector "${datasource}": the feed ${datasource}/${model} is already read by another binlog ` +
      `reader with the replica server id ${serverId} (${describe(replica, address)}): evpub does not start a second ` +
      'reader (the server would switch between the two and each change would be published twice); stop ' +
      'the other process, run the instances with `cluster`, or give this datasource its own "serverId"',
    {
      context: {
        feed: `${datasource}/${model}`,
        serverId,
        other: {
          reportHost: replica.host,
          ...(reader ? { pid: reader.pid, connection: reader.connection } : {}),
          ...(address ? { address } : {}),
        },
      },
    },
  );
}

/** FEED_OWNED_ELSEWHERE for a running stream the server ended for a newer reader of its id. */
export function displaced(datasource: string, model: string, serverId: number, cause: unknown): EvpubError {
  return new EvpubError(
    ErrorCode.FEED_OWNED_ELSEWHERE,
    `mysql connector "${datasource}": another binlog reader connected with the replica server id ${serverId} ` +
      `and the server ended this one: the feed ${datasource}/${model} stops here rather than take turns with ` +
      'it (each change would be published twice); stop the other process, run the instances with `cluster`, ' +
      'or give each datasource its own "serverId"',
    { cause, context: { feed: `${datasource}/${model}`, serverId } },
  );
}

/** True for the server's "a slave with the same server_uuid/server_id" error on a dump. */
export function isDisplaced(err: unknown): boolean {
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === 'string' && /same server_uuid\/server_id/i.test(message);
}

/**
 * Point 2 of the protocol (see top): resolves when no other live reader uses one of `uses`'s
 * server ids (ending stale ones), rejects with FEED_OWNED_ELSEWHERE naming the first in use.
 */
export async function claimServerIds(
  conn: Connection,
  uses: readonly ServerIdUse[],
  o: ClaimOptions,
): Promise<void> {
  const deadline = Date.now() + o.waitOwn;
  for (;;) {
    const replicas = await registeredReplicas(conn);
    if (!replicas) {
      if (o.explicit) {
        o.logger.warn(
          { serverIds: uses.map((u) => u.serverId) },
          'cannot list the binlog readers (SHOW SLAVE HOSTS needs REPLICATION MASTER ADMIN on MariaDB): ' +
            'another reader with the same serverId is not refused at start (it is when it displaces this one); ' +
            'grant it to the user to have the check',
        );
      }
      return;
    }
    let waiting = false;
    for (const use of uses) {
      const replica = replicas.find((r) => r.serverId === use.serverId);
      if (!replica) continue;
      const reader = parseReportHost(replica.host);
      const fields = { model: use.model, serverId: use.serverId, reader: replica.host };
      const local = reader !== undefined && isThisHost(reader);
      const gone = local && reader.pid !== process.pid && !alive(reader.pid);
      if (o.takeover || gone) {
        // Not KILLed: a killed reader sees a lost connection and reconnects, ending ours in
        // turn; displaced by the server, it gets "same server_id" and stops (point 3).
        const how = 'the server ends it when this reader connects with the same id';
        if (gone) o.logger.info(fields, `binlog reader left by a process that is gone: ${how}`);
        else {
          o.logger.warn(
            fields,
            `takeover: another binlog reader uses this server id (a stale owner): ${how}, and it stops with EVPUB_FEED_OWNED_ELSEWHERE`,
          );
        }
        continue;
      }
      const own = local && reader.pid === process.pid;
      if (own && Date.now() < deadline) {
        waiting = true; // a connector of this process still ending its reader
        continue;
      }
      const address = reader ? await clientAddress(conn, reader.connection) : undefined;
      throw serverIdTaken(o.datasource, use.model, use.serverId, replica, address);
    }
    if (!waiting || o.signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** True when `reader` ran on this host (its host name cut as `reportHost` cut ours). */
function isThisHost(reader: ReaderName): boolean {
  return parseReportHost(reportHost(reader.connection, hostname(), reader.pid))?.host === reader.host;
}

/** False only when no process `pid` exists on this host. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== 'ESRCH';
  }
}
