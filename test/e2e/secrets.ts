/**
 * The cases of secrets.test.ts and secrets-failures.test.ts (two files, so that they run side by
 * side). Secrets never leak: `evpub start` (the built CLI) runs with a PostgreSQL password, a NATS
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
import { afterAll, beforeAll, expect } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { privateNatsServer } from '../helpers/nats-server';
import { dropSlotWhenFree, sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { startRedisServer } from '../helpers/redis-server';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { requireFreshBuild } from '../faults/evpub-process';
import { killCli, spawnCli, type CliProcess } from './cli';

/** Random, and nothing else in any output could contain them by chance. */
const secret = (what: string): string => `${what}${uniqueName('x').slice(2)}Zq9`;
export const SECRETS = {
  pg: secret('pgpw'),
  nats: secret('natstok'),
  kafka: secret('kafkapw'),
  redis: secret('redispw'),
  webhook: secret('hooksecret'),
};

let dir: string;
export let nats: PrivateBroker; // --auth SECRETS.nats
export let natsOther: PrivateBroker; // --auth <another token>: SECRETS.nats is wrong there
export let redis: PrivateBroker; // ACL: evpub/SECRETS.redis; other/<another password>
export let scram: PrivatePostgres; // scram-sha-256: evpub_secret has another password there
export let kafka: KafkaCluster;
export let downPort: number; // nothing listens there
export const role = uniqueName('evpub_secret');
export const table = uniqueName('secrets');
const slots: string[] = [];
const publications: string[] = [];

/** Starts the servers before the file's cases and stops them after (call once, at the top of a test file). */
export function useSecretServers(options: { scram?: boolean } = {}): void {
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
      options.scram
        ? privatePostgres({ settings: { hba_file: hba } })
        : (undefined as unknown as PrivatePostgres),
      startKafkaMock(),
      freePort(),
    ]);
    // The shared server (trust on 127.0.0.1): a role with the password, owning the captured table.
    await sql(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD '${SECRETS.pg}'`);
    await sql(`GRANT CREATE ON DATABASE test TO ${role}`);
    await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
    await sql(`ALTER TABLE ${table} OWNER TO ${role}`);
    // The scram cluster: the role exists with another password.
    if (scram) await sql(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD 'another-password'`, [], scram.url);
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
}

export const hostPort = (url: string): string => new URL(url).host;

export interface Variant {
  /** The NATS broker's URL (default: the right token on the private server). */
  natsUrl?: string;
  redisUrl?: string;
  kafkaUrl?: string;
  /** The Kafka broker's SASL settings in `options.kafka.sasl` (the password a secret). */
  kafkaSasl?: boolean;
  /** The PostgreSQL datasource's URL (default: the role on the shared server). */
  pgUrl?: string;
  webhookPort: number;
}

/** A configuration holding the five secrets: PostgreSQL → NATS, webhook → Redis, memory → Kafka. */
export function configOf(v: Variant): Record<string, unknown> {
  const slot = uniqueName('slot');
  const publication = uniqueName('pub');
  slots.push(slot);
  publications.push(publication);
  const quick = { connectTimeout: 3000, reconnect: { initialDelay: 100, maxDelay: 500 } };
  const saslOptions = { mechanism: 'plain', username: 'evpub', password: SECRETS.kafka };
  return {
    brokers: {
      nats: { url: v.natsUrl ?? `nats://${SECRETS.nats}@${hostPort(nats.url)}`, options: quick },
      redis: { url: v.redisUrl ?? `redis://evpub:${SECRETS.redis}@${hostPort(redis.url)}`, options: quick },
      // librdkafka's mock speaks no SASL: the feed's broker has no credentials; the SASL password
      // is on a broker the runs that fail on Kafka use (`kafkaUrl`), declared in every other run.
      kafka: {
        url: v.kafkaUrl ?? `kafka://${kafka.brokers[0]}`,
        options: v.kafkaSasl ? { ...quick, kafka: { sasl: saslOptions } } : quick,
      },
      kafkaSasl: { url: `kafka://evpub:${SECRETS.kafka}@${kafka.brokers[0]}`, options: quick },
      kafkaSaslOptions: {
        url: `kafka://${kafka.brokers[0]}`,
        options: { ...quick, kafka: { sasl: saslOptions } },
      },
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
      rows: {
        dataSource: 'pg',
        broker: 'nats',
        topic: `evpub.secrets.${uniqueName('t')}`,
        settings: { table },
      },
      orders: { dataSource: 'hooks', broker: 'redis', topic: `evpub/secrets/${uniqueName('t')}` },
      ticks: { dataSource: 'mem', broker: 'kafka', topic: `evpub-secrets-${uniqueName('t')}` },
    },
  };
}

/** Everything a run printed or served, joined for the search. */
export interface Collected {
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
 * it serves, reads the API and `evpub status`; `during(base, output)` may drive it (webhook
 * requests, a server's certificate swapped) and wait for its output.
 */
export async function run(
  name: string,
  config: Record<string, unknown>,
  settled: (output: string) => boolean,
  during?: (base: string, output: () => string) => Promise<string>,
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
  await waitFor(() => exited || settled(out()), `${name}: the expected output`, 40_000).catch(
    (err: Error) => {
      throw new Error(`${err.message}\n--- output ---\n${out().slice(-6000)}`);
    },
  );
  // A failed start prints its `evpub: …` line just before it exits: let it exit rather than
  // stopping it mid-way (its exit code is what some cases assert).
  if (!exited && /^evpub: /m.test(proc.stderr())) {
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 10_000))]);
  }
  let text = '';
  const base = exited ? undefined : apiBase(proc);
  if (base) {
    if (during) text += await during(base, out);
    for (const route of ['/api/config', '/api/feeds', '/ready', '/metrics']) text += await get(base, route);
    for (const args of [
      ['status', '--url', base],
      ['status', '--url', base, '--json'],
    ]) {
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

/** None of the five SECRETS (and of `more`, by name) appears in anything the run printed or served. */
export function expectNoSecret(c: Collected, more: Record<string, string> = {}): void {
  for (const [what, value] of Object.entries({ ...SECRETS, ...more })) {
    const at = c.text.indexOf(value);
    expect(at, `the ${what} secret appears: …${c.text.slice(Math.max(0, at - 300), at + 100)}…`).toBe(-1);
  }
}

export const sign = (body: string): string =>
  `sha256=${createHmac('sha256', SECRETS.webhook).update(body).digest('hex')}`;
