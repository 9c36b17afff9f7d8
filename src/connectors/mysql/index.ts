/**
 * The MySQL / MariaDB connector module (built-in `mysql`, alias `mariadb`): row-based binlog
 * change capture with GTID (or file + offset) positions and an optional initial snapshot.
 *
 * Files: settings.ts (datasource and model settings), connector.ts (the EventConnector: server
 * checks and where each model starts), binlog.ts (one model's binlog stream: decoding,
 * backpressure, reconnects), snapshot.ts (keyset chunks merged into the stream between
 * watermarks), values.ts (table metadata and JSON-safe values), position.ts (positions and the
 * purged-binlog check), errors.ts (server checks and driver error translation).
 */
import type { ConnectorModule } from '../contract';
import { MysqlConnector } from './connector';
import { connectorInitializer } from '../kit/initialize';

export { MysqlConnector } from './connector';
export { MYSQL_SETTING_KEYS, parseMysqlSettings } from './settings';

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new MysqlConnector(dataSource),
);
