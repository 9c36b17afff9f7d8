/**
 * Secrets never leak: `evpub start` (the built CLI) runs with a PostgreSQL password, a NATS
 * token, a Kafka SASL password, a Redis ACL password and a webhook secret in its configuration,
 * at `EVPUB_LOG_LEVEL=debug`, once with everything working and once per failure path (wrong
 * password or token, broker or database down, bad URLs). Every run's stdout and stderr, and
 * while it serves, its `/api/config`, `/api/feeds`, `/ready` and `/metrics` replies and the
 * output of `evpub status` (table and --json), are searched for the five secrets: none appears.
 *
 * Servers: private nats-servers with `--auth <token>`, a private redis-server with ACL users, a
 * private PostgreSQL cluster with scram-sha-256 (the shared one trusts 127.0.0.1, so a wrong
 * password is only refused there), the shared PostgreSQL (a role with the password), and
 * librdkafka's mock cluster for Kafka (credentials in the URL: `kafka://user:password@`).
 */
import { createHmac } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { privateNatsServer } from '../helpers/nats-server';
import { dropSlotWhenFree, PG_URL, sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { startRedisServer } from '../helpers/redis-server';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { requireFreshBuild } from '../faults/evpub-process';
import { killCli, spawnCli, type CliProcess } from './cli';

/** Random, and nothing else in any output could contain them by chance. */
const secret = (what: string): string => `${what}${uniqueName('x').slice(2)}Zq9`;
const SECRETS = {
  pg: secret('pgpw'),
  nats: secret('natstok'),
  kafka: secret('kafkapw'),
  redis: secret('redispw'),
  webhook: secret('hooksecret'),
};

let dir: string;
let nats: PrivateBroker; // --auth SECRETS.nats
let natsOther: PrivateBroker; // --auth <another token>: SECRETS.nats is wrong there
let redis: PrivateBroker; // ACL: evpub/SECRETS.redis; other/<another password>
let scram: PrivatePostgres; // scram-sha-256: evpub_secret has another password there
let kafka: KafkaCluster;
let downPort: number; // nothing listens there
const role = uniqueName('evpub_secret');
const table = uniqueName('secrets');
const slots: string[] = [];
const publications: string[] = [];

beforeAll(async () => {
  requireFreshBuild();
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-secrets-'));
  chmodSync(dir, 0o755); // the private PostgreSQL (user postgres) reads its hba file here
  const hba = path.join(dir, 'pg_hba.conf');
  writeFileSync(
    hba,
    [
      'local all all trust',
      'host all postgres 127.0.0.1/32 trust',
      'host all all 127.0.0.1/32 scram-sha-256',
      'host replication all 127.0.0.1/32 scram-sha-256',
      '',
    ].join('\n'),
  );
  chmodSync(hba, 0o644);
  const redisUsers = [
    ['--user', 'evpub', 'on', `>${SECRETS.redis}`, '~*', '&*', '+@all'],
    ['--user', 'other', 'on', '>not-the-secret-password', '~*', '&*', '+@all'],
  ].flat();
  [nats, natsOther, redis, scram, kafka, downPort] = await Promise.all([
    privateNatsServer({ args: ['--auth', SECRETS.nats] }),
    privateNatsServer({ args: ['--auth', 'another-token-entirely'] }),
    startRedisServer({ args: redisUsers }),
    privatePostgres({ settings: { hba_file: hba } }),
    startKafkaMock(),
    freePort(),
  ]);
  // The shared server (trust on 127.0.0.1): a role with the password, owning the captured table.
  await sql(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD '${SECRETS.pg}'`);
  await sql(`GRANT CREATE ON DATABASE test TO ${role}`);
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
  await sql(`ALTER TABLE ${table} OWNER TO ${role}`);
  // The scram cluster: the role exists with another password.
  await sql(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD 'another-password'`, [], scram.url);
}, 120_000);

afterAll(async () => {
  for (const slot of slots) await dropSlotWhenFree(slot).catch(() => undefined);
  for (const p of publications) await sql(`DROP PUBLICATION IF EXISTS ${p}`).catch(() => undefined);
  await sql(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  await sql(`REVOKE CREATE ON DATABASE test FROM ${role}`).catch(() => undefined);
  await sql(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
  await Promise.all([nats?.close(), natsOther?.close(), redis?.close(), scram?.close(), kafka?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

const hostPort = (url: string): string => new URL(url).host;

interface Variant {
  /** The NATS broker's URL (default: the right token on the private server). */
  natsUrl?: string;
  redisUrl?: string;
  kafkaUrl?: string;
  /** The PostgreSQL datasource's URL (default: the role on the shared server). */
  pgUrl?: string;
  webhookPort: number;
}

/** A configuration holding the five secrets: PostgreSQL → NATS, webhook → Redis, memory → Kafka. */
function configOf(v: Variant): Record<string, unknown> {
  const slot = uniqueName('slot');
  const publication = uniqueName('pub');
  slots.push(slot);
  publications.push(publication);
  const quick = { connectTimeout: 3000, reconnect: { initialDelay: 100, maxDelay: 500 } };
  return {
    brokers: {
      nats: { url: v.natsUrl ?? `nats://${SECRETS.nats}@${hostPort(nats.url)}`, options: quick },
      redis: { url: v.redisUrl ?? `redis://evpub:${SECRETS.redis}@${hostPort(redis.url)}`, options: quick },
      // librdkafka's mock speaks no SASL: the feed's broker has no credentials; the SASL password
      // is on a broker the runs that fail on Kafka use (`kafkaUrl`), declared in every other run.
      kafka: { url: v.kafkaUrl ?? `kafka://${kafka.brokers[0]}`, options: quick },
      kafkaSasl: { url: `kafka://evpub:${SECRETS.kafka}@${kafka.brokers[0]}`, options: quick },
    },
    checkpoints: { store: 'memory' },
    datasources: {
      pg: {
        connector: 'postgres',
        url: v.pgUrl ?? `postgres://${role}:${SECRETS.pg}@127.0.0.1:5432/test`,
        slot,
        publication,
        reconnectDelay: 200,
        connectTimeout: 3000,
      },
      hooks: {
        connector: 'webhook',
        port: v.webhookPort,
        signature: { header: 'X-Signature', secret: SECRETS.webhook, prefix: 'sha256=' },
      },
      mem: { connector: 'memory' },
    },
    models: {
      rows: { dataSource: 'pg', broker: 'nats', topic: `evpub.secrets.${uniqueName('t')}`, settings: { table } },
      orders: { dataSource: 'hooks', broker: 'redis', topic: `evpub/secrets/${uniqueName('t')}` },
      ticks: { dataSource: 'mem', broker: 'kafka', topic: `evpub-secrets-${uniqueName('t')}` },
    },
  };
}

/** Everything a run printed or served, joined for the search. */
interface Collected {
  proc: CliProcess;
  text: string;
  served: boolean;
}

async function get(base: string, route: string): Promise<string> {
  try {
    const res = await fetch(`${base}${route}`);
    return `${route} ${res.status}\n${await res.text()}\n`;
  } catch (err) {
    return `${route}: ${(err as Error).message}\n`; // the process stopped meanwhile
  }
}

/** The management API's address from the start log, once it is listening. */
function apiBase(proc: CliProcess): string | undefined {
  return /management API listening at (http:\/\/[\d.:]+)/.exec(proc.stdout())?.[1];
}

/**
 * Runs `evpub start` on `config` at debug level until `settled(output)` (or it exits), then, if
 * it serves, reads the API and `evpub status`; `during(base)` may drive it (webhook requests).
 */
async function run(
  name: string,
  config: Record<string, unknown>,
  settled: (output: string) => boolean,
  during?: (base: string) => Promise<string>,
): Promise<Collected> {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = spawnCli(['start', '--config', file], {
    cwd: dir,
    built: true,
    env: { EVPUB_LOG_LEVEL: 'debug', EVPUB_HTTP_PORT: '0' },
  });
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const out = (): string => proc.stdout() + proc.stderr();
  await waitFor(() => exited || settled(out()), `${name}: the expected output`, 40_000).catch((err: Error) => {
    throw new Error(`${err.message}\n--- output ---\n${out().slice(-6000)}`);
  });
  let text = '';
  const base = exited ? undefined : apiBase(proc);
  if (base) {
    if (during) text += await during(base);
    for (const route of ['/api/config', '/api/feeds', '/ready', '/metrics']) text += await get(base, route);
    for (const args of [['status', '--url', base], ['status', '--url', base, '--json']]) {
      const status = spawnCli(args, { cwd: dir, built: true });
      await status.exited;
      text += `evpub ${args.join(' ')}\n${status.stdout()}${status.stderr()}`;
    }
  }
  if (!exited) {
    proc.child.kill('SIGTERM');
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await killCli(proc);
  }
  return { proc, text: `${out()}\n${text}`, served: base !== undefined };
}

function expectNoSecret(c: Collected): void {
  for (const [what, value] of Object.entries(SECRETS)) {
    const at = c.text.indexOf(value);
    expect(at, `the ${what} secret appears: …${c.text.slice(Math.max(0, at - 300), at + 100)}…`).toBe(-1);
  }
}

const sign = (body: string): string => `sha256=${createHmac('sha256', SECRETS.webhook).update(body).digest('hex')}`;

describe('evpub start never prints a secret', () => {
  it('when everything works: logs at debug, the API, evpub status; webhooks signed, unsigned and forged', async () => {
    const webhookPort = await freePort();
    const hook = `http://127.0.0.1:${webhookPort}/orders`;
    const post = async (body: string, headers: Record<string, string>): Promise<number> =>
      (await fetch(hook, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } }))
        .status;
    const statuses: number[] = [];
    const c = await run(
      'ok',
      configOf({ webhookPort }),
      (out) => out.includes('evpub started'),
      async () => {
        const body = JSON.stringify({ id: 1, total: 5 });
        statuses.push(await post(body, {}));
        statuses.push(await post(body, { 'x-signature': 'sha256=00' }));
        statuses.push(await post(body, { 'x-signature': sign(body) }));
        await sql(`INSERT INTO ${table} VALUES (1, 1)`);
        return '';
      },
    );
    expect(c.served, c.text.slice(-4000)).toBe(true);
    expect(statuses).toEqual([401, 401, 202]);
    // The run did what it was configured to: it connected with the secrets it must not print.
    expect(c.text).toContain('"level":20'); // debug lines were written
    expect(c.text).toMatch(/\/api\/config 200/);
    expectNoSecret(c);
  }, 90_000);

  it('with a wrong NATS token', async () => {
    const c = await run(
      'nats-wrong',
      configOf({ webhookPort: 0, natsUrl: `nats://${SECRETS.nats}@${hostPort(natsOther.url)}` }),
      (out) => /Authorization|AUTH|authoriz/i.test(out) && /"level":50|evpub: /.test(out),
    );
    expectNoSecret(c);
  }, 60_000);

  it('with the NATS server down', async () => {
    const c = await run(
      'nats-down',
      configOf({ webhookPort: 0, natsUrl: `nats://${SECRETS.nats}@127.0.0.1:${downPort}` }),
      (out) => out.includes('evpub: '),
    );
    expect(await c.proc.exited).toBe(1);
    expectNoSecret(c);
  }, 60_000);

  it('with a wrong Redis password', async () => {
    const c = await run(
      'redis-wrong',
      configOf({ webhookPort: 0, redisUrl: `redis://other:${SECRETS.redis}@${hostPort(redis.url)}` }),
      (out) => out.includes('evpub: '),
    );
    expect(c.text).toMatch(/WRONGPASS|AUTH|password/i);
    expectNoSecret(c);
  }, 60_000);

  it('with the Redis server down', async () => {
    const c = await run(
      'redis-down',
      configOf({ webhookPort: 0, redisUrl: `redis://evpub:${SECRETS.redis}@127.0.0.1:${downPort}` }),
      (out) => out.includes('evpub: '),
    );
    expectNoSecret(c);
  }, 60_000);

  it('with a Kafka broker that refuses the SASL handshake', async () => {
    const c = await run(
      'kafka-sasl',
      configOf({ webhookPort: 0, kafkaUrl: `kafka://evpub:${SECRETS.kafka}@${kafka.brokers[0]}` }),
      (out) => out.includes('evpub: '),
    );
    expect(c.text).toContain('could not connect to Kafka');
    expectNoSecret(c);
  }, 60_000);

  it('with the Kafka broker down', async () => {
    const c = await run(
      'kafka-down',
      configOf({ webhookPort: 0, kafkaUrl: `kafka://evpub:${SECRETS.kafka}@127.0.0.1:${downPort}` }),
      (out) => out.includes('evpub: '),
    );
    expectNoSecret(c);
  }, 60_000);

  it.todo(
    // The Kafka adapter on this branch takes SASL credentials from the URL only (the case above);
    // `brokers.<name>.options.kafka.sasl = { mechanism: 'plain', username, password }` arrives
    // from another branch: then the same run with the password there, the broker up and down.
    'with a Kafka SASL password in options.kafka.sasl',
  );

  it('with a wrong PostgreSQL password (a scram-sha-256 cluster)', async () => {
    const c = await run(
      'pg-wrong',
      configOf({ webhookPort: 0, pgUrl: `postgres://${role}:${SECRETS.pg}@127.0.0.1:${scram.port}/postgres` }),
      (out) => /password authentication failed/.test(out) && out.includes('evpub started'),
    );
    expectNoSecret(c);
  }, 60_000);

  it('with PostgreSQL down', async () => {
    const c = await run(
      'pg-down',
      configOf({ webhookPort: 0, pgUrl: `postgres://${role}:${SECRETS.pg}@127.0.0.1:${downPort}/test` }),
      (out) => /ECONNREFUSED|connect/i.test(out) && out.includes('evpub started'),
    );
    expectNoSecret(c);
  }, 60_000);

  it('with bad URLs (the configuration is refused)', async () => {
    const bad = configOf({
      webhookPort: 0,
      natsUrl: `nats://${SECRETS.nats}@127.0.0.1:99999`,
      redisUrl: `redis://evpub:${SECRETS.redis}@[127.0.0.1`,
      kafkaUrl: `kafka://evpub:${SECRETS.kafka}@127.0.0.1:port`,
      pgUrl: `postgres://${role}:${SECRETS.pg}@127.0.0.1:5432:5432/test`,
    });
    (bad.datasources as Record<string, Record<string, unknown>>).hooks!.signature = {
      header: 'X-Signature',
      secret: SECRETS.webhook,
      algorithm: SECRETS.webhook, // not an algorithm: named, never echoed
    };
    const c = await run('bad-urls', bad, (out) => out.includes('evpub: '));
    expect(await c.proc.exited).toBe(1);
    expect(c.text).toContain('brokers.nats.url');
    expectNoSecret(c);
  }, 60_000);
});
