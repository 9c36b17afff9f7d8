/**
 * `evpub check` for MySQL/MariaDB (the connector contract, point 8): what the server's binary
 * log, the user's grants and the tables still need before the binlog can feed evpub, every
 * finding at once with the fix. Read-only: one query connection, variables and catalogs, closed.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { toError } from '../../errors';
import type { SourceCheck } from '../contract';
import type { Settings } from '../kit/settings';
import { registeredReplicas } from './replica';
import { outboxDdl } from '../../events/outbox';
import { splitForCheck } from '../kit/outbox';
import { parseSnapshot, signalTableOf, tableOf, type MysqlSettings } from './settings';

interface Vars extends RowDataPacket {
  logBin: number | string;
  format: string;
  image: string;
  metadata: string | null;
  version: string;
}

export async function checkMysql(
  connect: () => Promise<Connection>,
  settings: MysqlSettings,
  datasource: string,
  models: readonly { name: string; settings: Settings }[],
  /** Each model's binlog server id, when `serverId` is configured (a random default needs no check). */
  serverIds?: () => ReadonlyMap<string, number>,
): Promise<SourceCheck[]> {
  const where = `connection to ${settings.display}`;
  let conn: Connection;
  try {
    conn = await connect();
  } catch (err) {
    return [
      {
        what: where,
        level: 'error',
        detail: toError(err).message,
        fix: 'check the datasource url (host, port, user, password) and that the server listens there',
      },
    ];
  }
  try {
    const out: SourceCheck[] = [{ what: where, level: 'ok', detail: 'connected' }];
    // binlog_row_metadata exists on MySQL 8 and MariaDB 10.5+; NULL elsewhere.
    const [[v]] = await conn.query<Vars[]>(
      `SELECT @@GLOBAL.log_bin AS logBin, @@GLOBAL.binlog_format AS format, @@GLOBAL.binlog_row_image AS image,
              (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME = 'BINLOG_ROW_METADATA') AS metadata,
              VERSION() AS version`,
    );
    const serverConf = /mariadb/i.test(v!.version) ? '[mariadbd]' : '[mysqld]';
    out.push(
      String(v!.logBin) === '1'
        ? { what: 'log_bin', level: 'ok', detail: 'binary logging is on' }
        : {
            what: 'log_bin',
            level: 'error',
            detail: 'binary logging is off',
            fix: `in the server configuration (${serverConf}): log_bin = mysql-bin, binlog_format = ROW, server_id = 1; then restart`,
          },
    );
    out.push(
      String(v!.format).toUpperCase() === 'ROW'
        ? { what: 'binlog_format', level: 'ok', detail: 'ROW' }
        : {
            what: 'binlog_format',
            level: 'error',
            detail: `binlog_format is ${v!.format}; change capture needs ROW`,
            fix: `SET GLOBAL binlog_format = 'ROW'; and binlog_format = ROW in ${serverConf}`,
          },
    );
    out.push(
      String(v!.image).toUpperCase() === 'FULL'
        ? { what: 'binlog_row_image', level: 'ok', detail: 'FULL' }
        : {
            what: 'binlog_row_image',
            level: 'warning',
            detail: `binlog_row_image is ${v!.image}: updates and deletes carry only some columns`,
            fix: `SET GLOBAL binlog_row_image = 'FULL'; and binlog_row_image = FULL in ${serverConf}`,
          },
    );
    if (v!.metadata !== null && String(v!.metadata).toUpperCase() !== 'FULL') {
      out.push({
        what: 'binlog_row_metadata',
        level: 'warning',
        detail: `binlog_row_metadata is ${v!.metadata}: column names are read from the catalog, which can be wrong right after an ALTER TABLE`,
        fix: `SET GLOBAL binlog_row_metadata = 'FULL'; and binlog_row_metadata = FULL in ${serverConf}`,
      });
    }
    out.push(await checkGrants(conn, settings));
    if (serverIds) out.push(await checkReaders(conn, settings, serverIds));
    const { tableModels, fromOutbox } = splitForCheck('mysql', datasource, settings.outbox, models, out);
    for (const model of tableModels) out.push(await checkTable(conn, settings, model));
    if (fromOutbox.length > 0) out.push(await checkOutbox(conn, settings, fromOutbox));
    const snapshots = tableModels.some(
      (m) =>
        parseSnapshot(m.settings.snapshot, `models.${m.name}.settings.snapshot`, settings.snapshot) ===
        'initial',
    );
    if (snapshots) out.push(await checkSignalTable(conn, settings, datasource));
    return out;
  } finally {
    await conn.end().catch(() => undefined);
  }
}

async function checkGrants(conn: Connection, settings: MysqlSettings): Promise<SourceCheck> {
  const [rows] = await conn.query<RowDataPacket[]>(
    'SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES',
  );
  const have = new Set(rows.map((r) => String(r.PRIVILEGE_TYPE).toUpperCase()));
  const missing: string[] = [];
  if (!have.has('REPLICATION SLAVE')) missing.push('REPLICATION SLAVE');
  if (!['REPLICATION CLIENT', 'BINLOG MONITOR', 'SUPER'].some((p) => have.has(p)))
    missing.push('REPLICATION CLIENT');
  if (missing.length === 0)
    return { what: 'replication grants', level: 'ok', detail: `user ${settings.user} may read the binlog` };
  return {
    what: 'replication grants',
    level: 'error',
    detail: `user ${settings.user} lacks ${missing.join(' and ')}`,
    fix: `GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${settings.user}'@'%';`,
  };
}

/**
 * A configured `serverId`: whether the start can see other binlog readers (replica.ts), and
 * which of this datasource's server ids another reader uses now (a running evpub of this
 * configuration does, legitimately; another one makes the start fail).
 */
async function checkReaders(
  conn: Connection,
  settings: MysqlSettings,
  serverIds: () => ReadonlyMap<string, number>,
): Promise<SourceCheck> {
  const what = 'binlog server ids (serverId)';
  let ids: ReadonlyMap<string, number>;
  try {
    ids = serverIds();
  } catch (err) {
    return { what, level: 'error', detail: toError(err).message };
  }
  if (ids.size === 0) return { what, level: 'ok', detail: 'no model' };
  const replicas = await registeredReplicas(conn);
  if (!replicas) {
    return {
      what,
      level: 'warning',
      detail: `user ${settings.user} may not list the binlog readers (SHOW SLAVE HOSTS): a second reader with the same serverId is not refused at start`,
      fix: `GRANT REPLICATION MASTER ADMIN ON *.* TO '${settings.user}'@'%'; (MariaDB 10.5.2 and later; MySQL: REPLICATION SLAVE suffices)`,
    };
  }
  const used = [...ids].flatMap(([model, id]) => {
    const r = replicas.find((x) => x.serverId === id);
    return r ? [`${id} (model ${model}) by "${r.host}"`] : [];
  });
  const range = `${Math.min(...ids.values())}..${Math.max(...ids.values())}`;
  if (used.length === 0) return { what, level: 'ok', detail: `${range}: none read with now` };
  return {
    what,
    level: 'warning',
    detail: `read with now: ${used.join(', ')}; a start fails with EVPUB_FEED_OWNED_ELSEWHERE while they read`,
    fix: 'if that is not an evpub you run on purpose, stop it or choose another serverId',
  };
}

async function checkTable(
  conn: Connection,
  settings: MysqlSettings,
  model: { name: string; settings: Settings },
): Promise<SourceCheck> {
  let ref;
  try {
    ref = tableOf(model.name, model.settings, settings);
  } catch (err) {
    return { what: `model ${model.name}`, level: 'error', detail: toError(err).message };
  }
  const name = `${ref.database}.${ref.table}`;
  const what = `table ${name} (model ${model.name})`;
  const [rows] = await conn.query<RowDataPacket[]>(
    `SELECT COUNT(*) AS columns, SUM(COLUMN_KEY = 'PRI') AS keyColumns
       FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`,
    [ref.database, ref.table],
  );
  const found = rows[0] as { columns: number; keyColumns: number | string | null } | undefined;
  if (!found || Number(found.columns) === 0) {
    return {
      what,
      level: 'error',
      detail: 'does not exist (or this user cannot see it)',
      fix: `create it, or set models.${model.name}.settings.table to the right "database.table"`,
    };
  }
  if (Number(found.keyColumns ?? 0) === 0) {
    return {
      what,
      level: 'warning',
      detail: 'has no primary key: events are keyed by the whole row, and it cannot be snapshotted',
      fix: `ALTER TABLE ${name} ADD PRIMARY KEY (...);`,
    };
  }
  return { what, level: 'ok', detail: 'exists, with a primary key' };
}

async function checkSignalTable(
  conn: Connection,
  settings: MysqlSettings,
  datasource: string,
): Promise<SourceCheck> {
  let ref;
  try {
    ref = signalTableOf(settings, datasource);
  } catch (err) {
    return { what: 'snapshot signal table', level: 'error', detail: toError(err).message };
  }
  const name = `${ref.database}.${ref.table}`;
  const what = `snapshot signal table ${name}`;
  const [rows] = await conn.query<RowDataPacket[]>(
    'SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [ref.database, ref.table],
  );
  if (rows.length > 0) return { what, level: 'ok', detail: 'exists' };
  return {
    what,
    level: 'ok',
    detail: 'missing: created at the first snapshot if this user may create tables there',
    fix: `otherwise: CREATE TABLE ${name} (id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL); GRANT INSERT, UPDATE ON ${name} TO '${settings.user}'@'%';`,
  };
}

/** The outbox table of the models fed from it: it exists, or the connector may create it. */
async function checkOutbox(
  conn: Connection,
  settings: MysqlSettings,
  models: string[],
): Promise<SourceCheck> {
  const outbox = settings.outbox!;
  const name = `${outbox.schema}.${outbox.table}`;
  const what = `outbox table ${name} (models ${models.join(', ')})`;
  const ddl = outboxDdl(
    'mysql',
    `\`${outbox.schema.replace(/`/g, '``')}\`.\`${outbox.table.replace(/`/g, '``')}\``,
  );
  const [rows] = await conn.query<RowDataPacket[]>(
    'SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [outbox.schema, outbox.table],
  );
  if (rows.length > 0) return { what, level: 'ok', detail: 'exists' };
  if (!outbox.create) {
    return {
      what,
      level: 'error',
      detail: 'does not exist, and outbox.create is false',
      fix: `${ddl}; -- or set outbox.create to true`,
    };
  }
  return {
    what,
    level: 'ok',
    detail: `missing: created at first start if user ${settings.user} may create tables in ${outbox.schema}`,
    fix: `otherwise, as a user who may: ${ddl};`,
  };
}
