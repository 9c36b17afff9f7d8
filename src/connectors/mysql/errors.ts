/**
 * Server checks made before streaming, and translation of mysql2 / zongji errors into
 * EvpubErrors whose message names the fix. Driver errors are kept as `cause`.
 *
 * Fatal (the feed fails, `sink.fail`): binary logging off, a binlog format other than ROW,
 * missing REPLICATION SLAVE / REPLICATION CLIENT privileges, a checkpoint whose binlog was
 * purged. Anything else on an open stream (connection lost, server restarting) is retriable:
 * the feed reconnects with back-off.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import { tlsFailure } from '../../util/tls';
import type { MysqlSettings } from './settings';

interface DriverError {
  code?: string;
  errno?: number;
  sqlMessage?: string;
  fatal?: boolean;
}

/** Server errors meaning "the binlog position you ask for is gone" (purged, or never existed). */
const POSITION_GONE = new Set([1236, 1945, 1951, 1955]);
const ACCESS_DENIED = new Set([1227, 1142, 1044]);
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']);

export function purgedError(what: string, cause?: unknown): EvpubError {
  return new EvpubError(
    ErrorCode.SOURCE_FAILED,
    `mysql: the server no longer has (or never had) the binlog the checkpoint needs (${what}); the changes ` +
      'made since are lost to this feed: re-snapshot the model (delete its checkpoint and start with snapshot: "initial"), ' +
      'and keep binlogs longer (binlog_expire_logs_seconds) than the publisher may be down',
    { cause, context: { reason: 'binlog-purged' } },
  );
}

/**
 * mysql2 replaces a TLS error's code with HANDSHAKE_SSL_ERROR (and says HANDSHAKE_NO_SSL_SUPPORT
 * for a server without TLS); the original code, from Node's message, so tlsFailure names the
 * reason and the fix.
 */
const TLS_MESSAGES: [RegExp, string][] = [
  [/self[- ]signed certificate in certificate chain/i, 'SELF_SIGNED_CERT_IN_CHAIN'],
  [/self[- ]signed certificate/i, 'DEPTH_ZERO_SELF_SIGNED_CERT'],
  [/unable to verify the first certificate/i, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
  [/unable to get local issuer certificate/i, 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'],
  [/certificate has expired/i, 'CERT_HAS_EXPIRED'],
  [/certificate is not yet valid/i, 'CERT_NOT_YET_VALID'],
  [/does not match certificate's altnames/i, 'ERR_TLS_CERT_ALTNAME_INVALID'],
];

export function mysqlTlsFailure(err: unknown, endpoint: string): EvpubError | undefined {
  const e = err as DriverError;
  if (e.code === 'HANDSHAKE_NO_SSL_SUPPORT') {
    return tlsFailure({ code: 'ERR_SSL_WRONG_VERSION_NUMBER', cause: err }, endpoint);
  }
  if (e.code !== 'HANDSHAKE_SSL_ERROR') return tlsFailure(err, endpoint);
  const message = toError(err).message;
  const code = TLS_MESSAGES.find(([pattern]) => pattern.test(message))?.[1];
  return (
    (code !== undefined ? tlsFailure({ code, message, cause: err }, endpoint) : undefined) ??
    new EvpubError(ErrorCode.TLS_FAILED, `TLS with ${endpoint} failed: ${message}`, {
      cause: err,
      context: { endpoint },
    })
  );
}

/** Translates a driver error; `during` says what we were doing, for the message. */
export function translate(err: unknown, settings: MysqlSettings, during: string): EvpubError {
  if (isEvpubError(err)) return err;
  const tls = mysqlTlsFailure(err, settings.display);
  if (tls) return tls;
  const e = err as DriverError;
  const message = toError(err).message;
  if (e.errno !== undefined && POSITION_GONE.has(e.errno)) return purgedError(message, err);
  if (e.errno === 1045 || e.code === 'ER_ACCESS_DENIED_ERROR') {
    return new EvpubError(
      ErrorCode.AUTH_FAILED,
      `mysql: ${settings.display} refused the user's credentials (${during}): check the user and password (and the client certificate, tls.cert and tls.key, when the user REQUIRES X509)`,
      { cause: err },
    );
  }
  if (e.errno !== undefined && ACCESS_DENIED.has(e.errno)) {
    return new EvpubError(
      ErrorCode.AUTH_FAILED,
      `mysql: permission denied ${during}: ${message}; grant the user ` +
        `\`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${settings.user}'@'%'\``,
      { cause: err },
    );
  }
  if (e.code !== undefined && CONNECT_CODES.has(e.code)) {
    return new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `mysql: cannot reach ${settings.display} (${during}): ${message}`,
      { cause: err, retriable: true },
    );
  }
  return new EvpubError(ErrorCode.DISCONNECTED, `mysql: ${during} failed: ${message}`, {
    cause: err,
    retriable: true,
  });
}

/** True when the error must stop the feed instead of reconnecting. */
export function isFatal(err: EvpubError): boolean {
  return !err.retriable;
}

interface ServerVars extends RowDataPacket {
  logBin: number | string;
  format: string;
  image: string;
  version: string;
}

export interface ServerInfo {
  version: string;
  mariadb: boolean;
}

/**
 * Checks that the server can feed a row-based change stream to this user. Throws a
 * SOURCE_FAILED / AUTH_FAILED EvpubError naming the fix.
 */
export async function checkServer(
  conn: Connection,
  settings: MysqlSettings,
  logger: Logger,
): Promise<ServerInfo> {
  const [[vars]] = await conn.query<ServerVars[]>(
    'SELECT @@GLOBAL.log_bin AS logBin, @@GLOBAL.binlog_format AS format, @@GLOBAL.binlog_row_image AS image, VERSION() AS version',
  );
  if (!vars) throw new EvpubError(ErrorCode.SOURCE_FAILED, 'mysql: the server did not answer its variables');
  if (String(vars.logBin) !== '1') {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `mysql: binary logging is off on ${settings.display}: set log_bin, binlog_format=ROW and ` +
        'server_id in the server configuration ([mariadbd] or [mysqld]) and restart the server',
      { context: { setting: 'log_bin' } },
    );
  }
  if (String(vars.format).toUpperCase() !== 'ROW') {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `mysql: binlog_format is ${vars.format} on ${settings.display}, and change capture needs ROW: ` +
        "set binlog_format=ROW in the server configuration (and SET GLOBAL binlog_format='ROW')",
      { context: { setting: 'binlog_format', value: vars.format } },
    );
  }
  if (String(vars.image).toUpperCase() !== 'FULL') {
    logger.warn(
      { binlogRowImage: vars.image },
      'binlog_row_image is not FULL: updates and deletes carry only some columns; set binlog_row_image=FULL',
    );
  }
  const [privileges] = await conn.query<RowDataPacket[]>(
    'SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES',
  );
  const have = new Set(privileges.map((p) => String(p.PRIVILEGE_TYPE).toUpperCase()));
  const missing: string[] = [];
  if (!have.has('REPLICATION SLAVE')) missing.push('REPLICATION SLAVE');
  if (!['REPLICATION CLIENT', 'BINLOG MONITOR', 'SUPER'].some((p) => have.has(p))) {
    missing.push('REPLICATION CLIENT');
  }
  if (missing.length > 0) {
    throw new EvpubError(
      ErrorCode.AUTH_FAILED,
      `mysql: the user "${settings.user}" lacks ${missing.join(' and ')}, needed to read the binlog: ` +
        `run \`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${settings.user}'@'<host>'\``,
      { context: { missing } },
    );
  }
  return { version: vars.version, mariadb: /mariadb/i.test(vars.version) };
}
