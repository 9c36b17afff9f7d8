/**
 * PostgreSQL errors translated at the boundary into EvpubErrors that name the fix. The driver
 * error is kept as `cause`; messages carry the redacted URL, never credentials.
 */
import { ErrorCode, EvpubError, toError } from '../../errors';
import { tlsFailure } from '../../util/tls';

/** A pg error's SQLSTATE, when it has one. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export const fixes = {
  walLevel: (level: string): EvpubError =>
    new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `postgres connector: wal_level is "${level}", logical replication needs "logical": run ` +
        '`ALTER SYSTEM SET wal_level = logical` as a superuser and restart PostgreSQL',
      { context: { walLevel: level } },
    ),
  noReplication: (user: string): EvpubError =>
    new EvpubError(
      ErrorCode.AUTH_FAILED,
      `postgres connector: the user "${user}" lacks the REPLICATION attribute: run ` +
        `\`ALTER ROLE "${user}" WITH REPLICATION\` as a superuser (or connect as a user that has it)`,
      { context: { user } },
    ),
  slotInUse: (slot: string, pid: number | null, cause?: unknown): EvpubError =>
    new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `postgres connector: the replication slot "${slot}" is in use by another process` +
        `${pid ? ` (pid ${pid})` : ''}: stop the other evpub (or consumer) reading it, or give this ` +
        'datasource its own "slot" setting',
      { cause, retriable: true, context: { slot, pid } },
    ),
  /** At start: the slot is read by another live process (evpub or any consumer). */
  slotOwnedElsewhere: (
    slot: string,
    feeds: readonly string[],
    other: { pid: number | null; application: string | null; clientAddr: string | null },
  ): EvpubError => {
    const who = readerParts(other);
    return new EvpubError(
      ErrorCode.FEED_OWNED_ELSEWHERE,
      `postgres connector: the feed${feeds.length > 1 ? 's' : ''} ${feeds.join(', ')} ` +
        `${feeds.length > 1 ? 'are' : 'is'} already read by another process through the replication slot "${slot}"` +
        `${who ? ` (${who})` : ''}: evpub does not start a second reader (it would publish twice); stop the ` +
        'other process, run the instances with `cluster`, or give this datasource its own "slot" setting',
      { context: { slot, feeds: [...feeds], ...other } },
    );
  },
  /**
   * Takeover (contract point 11): this role may not end the other reader's backend. Not
   * retriable: the fix is a grant.
   */
  takeoverRefused: (
    slot: string,
    feeds: readonly string[],
    other: { pid: number | null; application: string | null; clientAddr: string | null; user: string | null },
    role: string,
    cause: unknown,
  ): EvpubError =>
    new EvpubError(
      ErrorCode.FEED_OWNED_ELSEWHERE,
      `postgres connector: cannot take over the replication slot "${slot}" (feeds ${feeds.join(', ')}) from ` +
        `${describeReader(other)}: PostgreSQL refused to end that backend (permission denied). The role ` +
        `"${role}" needs to be able to signal the other backend: connect as the same role as the other reader` +
        `${other.user ? ` ("${other.user}")` : ''}, or run \`GRANT pg_signal_backend TO "${role}"\` as a superuser ` +
        "(a superuser's backend can only be ended by a superuser)",
      { cause, context: { slot, feeds: [...feeds], role, ...other } },
    ),
  /** Takeover: the other reader's backend was told to end but still holds the slot. */
  takeoverTimedOut: (
    slot: string,
    other: { pid: number | null; application: string | null; clientAddr: string | null },
    waitedMs: number,
  ): EvpubError =>
    new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `postgres connector: the replication slot "${slot}" is still read by ${describeReader(other)} ` +
        `${waitedMs} ms after evpub ended that backend (pg_terminate_backend); it is retried. ` +
        'Raise "connectTimeout" if the server is slow to end backends',
      { retriable: true, context: { slot, ...other } },
    ),
  missingTables: (tables: string[]): EvpubError =>
    new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `postgres connector: table${tables.length > 1 ? 's' : ''} ${tables.join(', ')} do${tables.length > 1 ? '' : 'es'} ` +
        'not exist: create it, or set the model\'s "settings.table" to an existing "schema.table"',
      { context: { tables } },
    ),
  slotLost: (slot: string, why: string): EvpubError =>
    new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `postgres connector: the replication slot "${slot}" ${why}; changes made meanwhile are lost to ` +
        'evpub. Re-snapshot to go on: reset the checkpoint (resetCheckpoint: true) with snapshot: "initial", ' +
        'or run `evpub snapshot <model>`; evpub creates a new slot on start',
      { context: { slot } },
    ),
};

/** `"evpub host:1", backend pid 2, from 10.0.0.1`: what is known of a slot's reader. */
function readerParts(other: {
  pid: number | null;
  application: string | null;
  clientAddr: string | null;
}): string {
  return [
    other.application ? `"${other.application}"` : undefined,
    other.pid !== null ? `backend pid ${other.pid}` : undefined,
    other.clientAddr ? `from ${other.clientAddr}` : undefined,
  ]
    .filter(Boolean)
    .join(', ');
}

/** The reader for a sentence: `another process ("evpub host:1", backend pid 2, ...)`. */
export function describeReader(other: {
  pid: number | null;
  application: string | null;
  clientAddr: string | null;
}): string {
  const who = readerParts(other);
  return `another process${who ? ` (${who})` : ''}`;
}

/**
 * A failure while connecting or querying: retriable unless it is about rights or TLS (a
 * certificate evpub does not trust, an expired one, a wrong host name: EVPUB_TLS_FAILED).
 */
export function sourceError(what: string, err: unknown, displayUrl: string): EvpubError {
  if (err instanceof EvpubError) return err;
  const tls = tlsFailure(err, displayUrl);
  if (tls) return tls;
  const e = toError(err);
  const state = sqlState(err);
  if (state === '28000' || state === '28P01' || state === '42501') {
    return new EvpubError(
      ErrorCode.AUTH_FAILED,
      `postgres connector: ${what} at ${displayUrl}: ${e.message}`,
      {
        cause: err,
        context: { sqlState: state },
      },
    );
  }
  return new EvpubError(
    ErrorCode.SOURCE_FAILED,
    `postgres connector: ${what} at ${displayUrl}: ${e.message}`,
    {
      cause: err,
      retriable: true,
      context: state ? { sqlState: state } : {},
    },
  );
}
