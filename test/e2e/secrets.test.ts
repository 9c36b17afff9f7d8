/**
 * Secrets never leak (issue 13), part 1: `evpub start` with a PostgreSQL password, a NATS token,
 * a Kafka SASL password, a Redis ACL password and a webhook secret in its configuration, at
 * debug level: working (the API, `evpub status`, webhooks unsigned, forged and signed), then
 * with a wrong NATS token, NATS down, a wrong Redis password, Redis down. None of the five
 * secrets appears in anything the process prints or serves. Part 2: secrets-failures.test.ts.
 * The harness and the servers: secrets.ts.
 */
import { describe, expect, it } from 'vitest';
import { sql } from '../helpers/postgres';
import { freePort } from '../helpers/services';
import {
  configOf,
  downPort,
  expectNoSecret,
  hostPort,
  natsOther,
  redis,
  run,
  SECRETS,
  sign,
  table,
  useSecretServers,
} from './secrets';

useSecretServers();

describe('evpub start never prints a secret', () => {
  it('when everything works: logs at debug, the API, evpub status; webhooks signed, unsigned and forged', async () => {
    const webhookPort = await freePort();
    const hook = `http://127.0.0.1:${webhookPort}/orders`;
    const post = async (body: string, headers: Record<string, string>): Promise<number> =>
      (
        await fetch(hook, {
          method: 'POST',
          body,
          headers: { 'content-type': 'application/json', ...headers },
        })
      ).status;
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
});
