/**
 * The seed's own scenario, end to end on real parts: a CouchDB database `accounts` (the
 * embedded CouchDB-compatible test server), the publisher (couchdb connector under its alias
 * `cloudant`, legacy envelope, topic `/v1/subutest`) and the shared Mosquitto on 1883. Three
 * consumers must print exactly `{"model":"accounts","message":{...the document...}}`:
 * an evpub subscriber, `mosquitto_sub -t /v1/subutest`, and the seed's client code
 * (test/fixtures/seed-consumer/client.cjs, CommonJS requiring the built `evpub/pubsub`).
 *
 * `/v1/subutest` is the seed's topic, so it is used as is on the shared broker: each test
 * picks out its own message by the document's unique `_id`.
 *
 * Also: the seed-style connector installed under its own package name in the fixture app
 * (test/fixtures/seed-app) run by `evpub start --dir` from LoopBack's layout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import Redis from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { killCli, ROOT, spawnCli } from './cli';

const SEED_TOPIC = '/v1/subutest';
const SEED_CONSUMER = path.join(ROOT, 'test/fixtures/seed-consumer/client.cjs');
const SEED_APP = path.join(ROOT, 'test/fixtures/seed-app/server');

/** A line-collecting child process (mosquitto_sub, node): output kept, killed at the end. */
interface Lines {
  proc: ChildProcess;
  lines: string[];
  err(): string;
}
const children: ChildProcess[] = [];
function collectLines(command: string, args: string[]): Lines {
  const proc = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { proc, lines, err: () => stderr };
}

/**
 * `mosquitto_sub -d` prints "Subscribed (mid: N)" once the SUBACK came back (line-buffered by
 * stdbuf: into a pipe its debug lines would otherwise wait for the exit).
 */
async function mosquittoSub(topic: string): Promise<Lines> {
  const args = ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', '1883', '-q', '1', '-t', topic, '-d'];
  const sub = collectLines('stdbuf', args);
  await waitFor(() => sub.lines.some((l) => l.startsWith('Subscribed')), `mosquitto_sub on ${topic}`);
  return sub;
}

let mqttUrl: string;
let couch: TestCouchServer;
beforeAll(async () => {
  mqttUrl = await requireService('mosquitto');
  couch = await startTestCouchServer();
  await couch.createDb('accounts');
});
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});
afterAll(async () => {
  await couch?.close();
});

describe("the seed's scenario: CouchDB accounts → Mosquitto /v1/subutest, legacy envelope", () => {
  it('an evpub subscriber, mosquitto_sub and the seed client (CommonJS, built evpub/pubsub) all receive the document', async () => {
    if (!existsSync(path.join(ROOT, 'dist/pubsub/index.js'))) {
      throw new Error(
        'dist/ is missing: the seed client requires the built evpub/pubsub; run `npm run build`',
      );
    }
    // 1-3: the consumers, subscribed before anything is published.
    const evpubSub = await subscriber(mqttUrl, SEED_TOPIC);
    const mosq = await mosquittoSub(SEED_TOPIC);
    const seedClient = collectLines(process.execPath, [SEED_CONSUMER, SEED_TOPIC]);
    await waitFor(() => {
      if (seedClient.proc.exitCode !== null) throw new Error(`seed client exited: ${seedClient.err()}`);
      return seedClient.lines.includes('subscribed');
    }, 'the seed client to subscribe');
    expect(seedClient.lines[0]).toBe('created consumer.....');

    // 4: the publisher, configured like the seed's server.js.
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: mqttUrl },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('dsCloudAntIn', { connector: 'cloudant', url: couch.url });
    app.model(
      { name: 'accounts', base: 'Model' },
      { dataSource: 'dsCloudAntIn', topic: SEED_TOPIC, envelope: 'legacy' },
    );
    try {
      await app.start();

      // 5: a new document in the accounts database.
      const id = uniqueName('bond');
      const rev = await couch.put('accounts', {
        _id: id,
        name: 'James Bond',
        type: 'Demo',
        region: 'Bangalore',
      });
      const stored = (await (await fetch(`${couch.url}accounts/${id}`)).json()) as Record<string, unknown>;
      expect(stored).toEqual({ _id: id, _rev: rev, name: 'James Bond', type: 'Demo', region: 'Bangalore' });
      const expected = JSON.stringify({ model: 'accounts', message: stored });
      const mine = (text: string): boolean => text.includes(`"_id":"${id}"`);

      // 8: the evpub subscriber; 9: mosquitto_sub; and the seed client prints "topic message".
      await waitFor(() => evpubSub.got.some((m) => mine(m.text)), 'the evpub subscriber');
      await waitFor(() => mosq.lines.some(mine), 'mosquitto_sub');
      await waitFor(() => seedClient.lines.some(mine), 'the seed client');
      const got = evpubSub.got.filter((m) => mine(m.text));
      expect(got).toHaveLength(1);
      expect(got[0]!.topic).toBe(SEED_TOPIC);
      expect(got[0]!.text).toBe(expected);
      expect(mosq.lines.filter(mine)).toEqual([expected]);
      expect(seedClient.lines.filter(mine)).toEqual([`${SEED_TOPIC} ${expected}`]);
      const parsed = JSON.parse(expected) as { message: Record<string, unknown> };
      expect(Object.keys(parsed.message).sort()).toEqual(['_id', '_rev', 'name', 'region', 'type']);
    } finally {
      await app.stop();
      await evpubSub.client.end();
    }
  });
});

describe('a seed-style connector installed under its own package name, run by `evpub start`', () => {
  it("loads loopback-connector-testevents by name from LoopBack's layout and publishes to Mosquitto", async () => {
    const redisUrl = await requireService('redis');
    const prefix = `${uniqueName('seed')}:`;
    const topic = `/v1/${uniqueName('subutest')}`;
    const mosq = await mosquittoSub(topic);
    const publisher = spawnCli(['start', '--dir', SEED_APP], {
      env: {
        EVPUB_LOG_LEVEL: 'info',
        REDIS_URL: redisUrl,
        MQTT_URL: mqttUrl,
        TESTEVENTS_PREFIX: prefix,
        SEED_TOPIC: topic,
      },
    });
    const redis = new Redis(redisUrl);
    try {
      await publisher.waitForOutput('evpub started');
      const doc = {
        _id: uniqueName('bond'),
        _rev: '1-08fb96a0',
        name: 'James Bond',
        type: 'Demo',
        region: 'Bangalore',
      };
      await redis.rpush(`${prefix}accounts`, JSON.stringify(doc));
      await waitFor(() => mosq.lines.some((l) => l.startsWith('{')), 'the message on mosquitto_sub');
      expect(mosq.lines.filter((l) => l.startsWith('{'))).toEqual([
        JSON.stringify({ model: 'accounts', message: doc }),
      ]);
      publisher.child.kill('SIGTERM');
      expect(await publisher.exited).toBe(0);
      expect(publisher.stderr()).toBe('');
    } finally {
      await killCli(publisher);
      await redis.del(`${prefix}accounts`);
      redis.disconnect();
    }
  });
});
