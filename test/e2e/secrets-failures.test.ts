/**
 * Secrets never leak (issue 13), part 2: the Kafka SASL password refused and Kafka down, a
 * wrong PostgreSQL password (a private scram-sha-256 cluster) and PostgreSQL down, bad broker
 * and source URLs. Part 1 and the description: secrets.test.ts; the harness: secrets.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  configOf,
  downPort,
  expectNoSecret,
  kafka,
  role,
  run,
  scram,
  SECRETS,
  useSecretServers,
} from './secrets';

useSecretServers({ scram: true });

describe('evpub start never prints a secret, failing', () => {
  it('with a Kafka broker that refuses the SASL handshake', async () => {
    const c = await run(
      'kafka-sasl',
      configOf({ webhookPort: 0, kafkaUrl: `kafka://evpub:${SECRETS.kafka}@${kafka.brokers[0]}` }),
      (out) => out.includes('evpub: '),
    );
    expect(c.text).toContain('does not offer SASL authentication');
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

  it('with a Kafka SASL password in options.kafka.sasl, refused', async () => {
    const c = await run('kafka-sasl-options', configOf({ webhookPort: 0, kafkaSasl: true }), (out) =>
      out.includes('evpub: '),
    );
    expect(c.text).toContain('does not offer SASL authentication');
    expectNoSecret(c);
  }, 60_000);

  it('with a wrong PostgreSQL password (a scram-sha-256 cluster)', async () => {
    const c = await run(
      'pg-wrong',
      configOf({
        webhookPort: 0,
        pgUrl: `postgres://${role}:${SECRETS.pg}@127.0.0.1:${scram.port}/postgres`,
      }),
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

  it('with bad broker URLs (the configuration is refused)', async () => {
    const c = await run(
      'bad-broker-urls',
      configOf({
        webhookPort: 0,
        natsUrl: `nats://${SECRETS.nats}@127.0.0.1:99999`,
        redisUrl: `redis://evpub:${SECRETS.redis}@[127.0.0.1`,
        kafkaUrl: `kafka://evpub:${SECRETS.kafka}@127.0.0.1:port`,
      }),
      (out) => out.includes('evpub: '),
    );
    expect(await c.proc.exited).toBe(1);
    expect(c.text).toMatch(/brokers\.nats\.url: "nats:\/\/\*\*\*@127\.0\.0\.1:99999" is not a valid URL/);
    expect(c.text).toContain('brokers.kafka.url');
    expectNoSecret(c);
  }, 60_000);

  it('with a bad PostgreSQL URL and a bad webhook signature setting (the start fails)', async () => {
    const bad = configOf({
      webhookPort: 0,
      pgUrl: `postgres://${role}:${SECRETS.pg}@127.0.0.1:5432:5432/test`,
    });
    (bad.datasources as Record<string, Record<string, unknown>>).hooks!.signature = {
      header: 'X-Signature',
      secret: SECRETS.webhook,
      algorithm: SECRETS.webhook, // not an algorithm: the key is named, the value never echoed
    };
    const c = await run('bad-source-urls', bad, (out) => out.includes('evpub: '));
    expect(await c.proc.exited).toBe(1);
    expect(c.text).toContain('datasources.pg.url');
    expectNoSecret(c);
  }, 60_000);
});
