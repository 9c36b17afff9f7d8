/**
 * The example's settings, read once from the environment with defaults for a local machine.
 *
 *   DATABASE_URL     postgres://postgres@127.0.0.1:5432/test   (wal_level=logical for the CDC feed)
 *   MQTT_URL         mqtt://127.0.0.1:1883
 *   HOST, PORT       127.0.0.1, 3000                           the REST API (PORT=0: a free port)
 *   EVPUB_HTTP_PORT  7401                                      evpub's management API and dashboard
 *   ACCOUNTS_TABLE   accounts                                  the table; the outbox, checkpoint
 *                                                              table, slot and publication are
 *                                                              named after it
 *   ACCOUNTS_TOPIC   bank/accounts/{op}/{key}                  the topic template of account events
 */

export interface AccountsConfig {
  databaseUrl: string;
  mqttUrl: string;
  host: string;
  port: number;
  /** evpub's management API port (0: a free port). */
  managementPort: number;
  table: string;
  /** The outbox table: `<table>_outbox`. */
  outbox: string;
  /** evpub's replication slot and publication: `evpub_<table>`. */
  slot: string;
  /** The evpub model of account events (CloudEvents `type`: `evpub.Account.<op>`). */
  model: string;
  topic: string;
}

const TABLE_NAME = /^[a-z_][a-z0-9_]{0,40}$/;

function portOf(env: NodeJS.ProcessEnv, key: string, fallback: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${key}=${JSON.stringify(raw)}: must be a port number (0 to 65535)`);
  }
  return port;
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): AccountsConfig {
  const table = env.ACCOUNTS_TABLE || 'accounts';
  if (!TABLE_NAME.test(table)) {
    // It names the slot and publication too: PostgreSQL's slot rule, with room for a suffix.
    throw new Error(`ACCOUNTS_TABLE=${JSON.stringify(table)}: must match ${String(TABLE_NAME)}`);
  }
  return {
    databaseUrl: env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test',
    mqttUrl: env.MQTT_URL || 'mqtt://127.0.0.1:1883',
    host: env.HOST || '127.0.0.1',
    port: portOf(env, 'PORT', 3000),
    managementPort: portOf(env, 'EVPUB_HTTP_PORT', 7401),
    table,
    outbox: `${table}_outbox`,
    slot: `evpub_${table}`,
    model: 'Account',
    topic: env.ACCOUNTS_TOPIC || 'bank/accounts/{op}/{key}',
  };
}
