/**
 * The PostgreSQL slot gauge's own connection: closed when the app stops (not only when the
 * metrics are closed), reopened by the next run's first scrape; and its failures log no
 * password. The app reaches the real PostgreSQL through a small counting relay, so the test
 * sees every connection evpub holds open (the connector's and the probe's) and can refuse new
 * ones.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { createMetrics } from '../../src/metrics/index';
import { PgFixture } from '../helpers/postgres';
import { parseExposition, scrapeUntil } from '../helpers/prometheus';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('postgres');
});

/**
 * A TCP relay to PostgreSQL that counts the connections open through it; `cut()` destroys them
 * and refuses new ones.
 */
async function countingRelay(target: URL): Promise<{ port: number; open: () => number; cut: () => void }> {
  const sockets = new Set<Socket>();
  let refuse = false;
  const relay = {
    port: 0,
    open: () => sockets.size,
    cut: () => {
      refuse = true;
      for (const s of sockets) s.destroy();
    },
  };
  const server: Server = createServer((client) => {
    if (refuse) return client.destroy();
    const upstream = connect(Number(target.port || 5432), target.hostname);
    sockets.add(client);
    const done = (): void => {
      sockets.delete(client);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', done).on('close', done);
    upstream.on('error', done).on('close', done);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = (server.address() as { port: number }).port;
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return relay;
}

function capturingLogger(): { logger: pino.Logger; text(): string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), text: () => text };
}

describe('metrics: the PostgreSQL slot probe', () => {
  it(
    'closes its connection when the app stops, reopens at the next run, logs no password',
    { timeout: 60_000 },
    async () => {
      const f = new PgFixture();
      cleanups.push(() => f.drop());
      const table = await f.table('id int PRIMARY KEY');
      const relay = await countingRelay(new URL(f.url));
      const password = `pw-${uniqueName('secret')}`; // trust auth: never asked, but in the URL
      const url = new URL(f.url);
      url.host = `127.0.0.1:${relay.port}`;
      url.username ||= 'postgres';
      url.password = password;
      const log = capturingLogger();
      const app = evpub({
        logger: log.logger,
        brokers: { default: `memory://${uniqueName('b')}` },
        checkpoints: { store: 'memory' },
      });
      app.dataSource('pg', {
        connector: 'postgres',
        url: url.href,
        slot: f.slot,
        publication: f.publication,
      });
      app.model(table, { dataSource: 'pg', topic: `{model}/{key}` });
      cleanups.push(() => app.stop());
      const metrics = createMetrics(app, { slotTimeoutMs: 5000 });
      cleanups.push(() => metrics.close());
      const text = () => metrics.text();
      const slot = { datasource: 'pg', slot: f.slot };
      const gauge = (m: ReturnType<typeof parseExposition>) =>
        m.value('evpub_postgres_slot_wal_retained_bytes', slot);

      await app.start();
      const connector = relay.open();
      await scrapeUntil(text, (m) => gauge(m) !== undefined, 'the slot gauge');
      expect(relay.open()).toBe(connector + 1); // the probe's own connection

      await app.stop();
      await waitFor(() => relay.open() === 0, "every connection closed, the probe's too");
      expect(gauge(parseExposition(await text()))).toBeUndefined();

      // The next run: the first scrape opens it again.
      await app.start();
      await scrapeUntil(text, (m) => gauge(m) !== undefined, 'the slot gauge after a restart');
      // The database goes away: the probe's failures (the lost connection, then refused ones)
      // are logged without the password.
      relay.cut();
      await waitFor(async () => {
        await text();
        return log
          .text()
          .split('\n')
          .some((line) => line.includes('the slot query failed') && line.includes('cannot connect'));
      }, 'the probe logs its failure to reconnect');
      expect(log.text()).not.toContain(password);
      expect(await metrics.text()).not.toContain(password);
    },
  );
});
