/**
 * Interoperability with clients nobody here wrote: mosquitto_sub receives what evpub publishes,
 * and evpub receives what mosquitto_pub publishes, through the SHARED mosquitto on 127.0.0.1:1883.
 * Every test uses its own topic (except the seed topic, where it looks for its own payload).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const run = promisify(execFile);
const HOST = ['-h', '127.0.0.1', '-p', '1883'];
/** mosquitto_sub output format: topic, content type, user properties (k:v ...), payload. */
const FORMAT = '%t|%C|%P|%p';

interface Sub {
  lines: string[];
  /** Lines that are messages (not -d debug output), parsed. */
  messages(): { topic: string; contentType: string; props: string; payload: string }[];
  stop(): void;
}

const subs: ChildProcess[] = [];

/** Spawns mosquitto_sub with -d and resolves once its SUBACK arrived. */
async function mosquittoSub(topic: string, version: '5' | '311'): Promise<Sub> {
  // stdbuf: line-buffered stdout, so that -d's "received SUBACK" is seen when it happens.
  const proc = spawn('stdbuf', [
    '-oL',
    'mosquitto_sub',
    ...HOST,
    '-V',
    version,
    '-d',
    '-q',
    '1',
    '-t',
    topic,
    '-F',
    FORMAT,
  ]);
  subs.push(proc);
  const lines: string[] = [];
  let rest = '';
  proc.stdout.on('data', (d: Buffer) => {
    const parts = (rest + d.toString()).split('\n');
    rest = parts.pop() ?? '';
    lines.push(...parts);
  });
  let exited = false;
  proc.once('exit', () => (exited = true));
  await waitFor(() => {
    if (exited) throw new Error(`mosquitto_sub exited early:\n${lines.join('\n')}`);
    return lines.some((l) => l.includes('received SUBACK'));
  }, 'mosquitto_sub to be subscribed');
  return {
    lines,
    messages: () =>
      lines
        .filter((l) => l.startsWith(`${topic}|`))
        .map((l) => {
          const [t, contentType, props, ...payload] = l.split('|');
          return { topic: t!, contentType: contentType!, props: props!, payload: payload.join('|') };
        }),
    stop: () => proc.kill('SIGTERM'),
  };
}

describe('MQTT interoperability with mosquitto_pub / mosquitto_sub (shared mosquitto)', () => {
  let url: string;
  const clients: Client[] = [];
  const client = (options: ClientOptions = {}): Client => {
    const c = createClient(url, options);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    url = await requireService('mosquitto');
  });
  afterAll(async () => {
    for (const p of subs) if (p.exitCode === null) p.kill('SIGTERM');
    await Promise.all(clients.map((c) => c.end()));
  });

  it("mosquitto_sub receives what evpub publishes on the seed's topic /v1/subutest", async () => {
    const sub = await mosquittoSub('/v1/subutest', '5');
    const pub = client();
    const body = JSON.stringify({ model: 'accounts', message: { _id: uniqueName() } });
    await pub.publish('/v1/subutest', body);
    await waitFor(() => sub.messages().some((m) => m.payload === body), 'the seed message in mosquitto_sub');
    sub.stop();
  });

  it('mosquitto_sub (MQTT 5) sees headers, key and message id as user properties, and the content type', async () => {
    const topic = `evpub/interop/${uniqueName()}`;
    const sub = await mosquittoSub(topic, '5');
    await client().publish(topic, '{"a":1}', {
      headers: { 'ce-id': 'abc', 'x-tenant': 'acme' },
      key: 'k1',
      messageId: 'm1',
      contentType: 'application/json',
    });
    await waitFor(() => sub.messages().length === 1, 'the message in mosquitto_sub');
    const m = sub.messages()[0]!;
    expect(m.payload).toBe('{"a":1}');
    expect(m.contentType).toBe('application/json');
    expect(m.props.split(' ').sort()).toEqual(
      ['ce-id:abc', 'x-tenant:acme', 'evpub-key:k1', 'evpub-message-id:m1'].sort(),
    );
    sub.stop();
  });

  it('mosquitto_sub (MQTT 3.1.1) receives what an MQTT 3.1.1 evpub client publishes, payload only', async () => {
    const topic = `evpub/interop/${uniqueName()}/v311`;
    const sub = await mosquittoSub(topic, '311');
    await client({ mqtt: { protocolVersion: 4 } }).publish(topic, 'plain', { headers: { dropped: 'yes' } });
    await waitFor(() => sub.messages().length === 1, 'the message in mosquitto_sub');
    expect(sub.messages()[0]).toMatchObject({ payload: 'plain', props: '', contentType: '' });
    sub.stop();
  });

  it('evpub receives what mosquitto_pub (MQTT 5) publishes, user properties and content type included', async () => {
    const topic = `evpub/interop/${uniqueName()}/in`;
    const sub = client();
    const got = collector(sub);
    await sub.subscribe(`${topic.split('/').slice(0, -1).join('/')}/+`);
    await run('mosquitto_pub', [
      ...HOST,
      '-V',
      '5',
      '-q',
      '1',
      '-t',
      topic,
      '-m',
      'from mosquitto_pub',
      '-D',
      'publish',
      'user-property',
      'k',
      'v',
      '-D',
      'publish',
      'user-property',
      'evpub-key',
      'order-1',
      '-D',
      'publish',
      'content-type',
      'text/plain',
    ]);
    await waitFor(() => got.length === 1, 'the message from mosquitto_pub');
    expect(got[0]!.topic).toBe(topic);
    expect(got[0]!.payload.toString()).toBe('from mosquitto_pub');
    expect(got[0]!.meta).toMatchObject({
      pattern: `${topic.split('/').slice(0, -1).join('/')}/+`,
      headers: { k: 'v' },
      key: 'order-1',
      contentType: 'text/plain',
      qos: 1,
    });
    expect(got[0]!.meta.headers).not.toHaveProperty('evpub-key');
  });

  it('evpub (MQTT 3.1.1) receives what mosquitto_pub (MQTT 3.1.1) publishes, binary payload included', async () => {
    const topic = `evpub/interop/${uniqueName()}/bin`;
    const sub = client({ mqtt: { protocolVersion: 4 } });
    const got = collector(sub);
    await sub.subscribe(topic);
    const file = Buffer.from([0, 1, 2, 254, 255, 10, 13]);
    await new Promise<void>((resolve, reject) => {
      const p = spawn('mosquitto_pub', [...HOST, '-V', '311', '-q', '1', '-t', topic, '-s']);
      p.once('error', reject);
      p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mosquitto_pub exited ${code}`))));
      p.stdin.end(file);
    });
    await waitFor(() => got.length === 1, 'the message from mosquitto_pub');
    expect(got[0]!.payload.equals(file)).toBe(true);
    expect(got[0]!.meta.headers).toBeUndefined();
  });
});
