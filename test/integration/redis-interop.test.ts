/**
 * Interoperability with `redis-cli`, a client nobody here wrote, against the shared Redis:
 * what evpub publishes reaches redis-cli, and what redis-cli writes reaches evpub, in both modes.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Client } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const run = promisify(execFile);

let url: string;
let host: string;
let port: string;
const clients: Client[] = [];
const children: ChildProcess[] = [];

/** Runs `redis-cli <args>` against the shared Redis and returns its output. */
async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', host, '-p', port, ...args]);
  return stdout;
}

function client(options: Parameters<typeof createClient>[1] = {}): Client {
  const c = createClient(url, options);
  clients.push(c);
  return c;
}

/** `redis-cli SUBSCRIBE <channels>` in the background; its output so far is in `out()`. */
async function cliSubscriber(...channels: string[]): Promise<() => string> {
  const child = spawn('redis-cli', ['-h', host, '-p', port, 'SUBSCRIBE', ...channels], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  // Subscribed when Redis counts the subscriber on every channel (not after a fixed sleep).
  for (const channel of channels) {
    await waitFor(
      async () => Number((await cli('PUBSUB', 'NUMSUB', channel)).trim().split('\n')[1]) >= 1,
      `redis-cli subscribed to ${channel}`,
    );
  }
  return () => out;
}

beforeAll(async () => {
  url = await requireService('redis');
  const u = new URL(url);
  host = u.hostname;
  port = u.port;
});

afterAll(async () => {
  for (const child of children) child.kill();
  await Promise.all(clients.map((c) => c.end()));
});

describe('redis interop (pub/sub mode)', () => {
  it('redis-cli SUBSCRIBE receives what evpub publishes, the seed topic included', async () => {
    const topic = `evpub/interop/${uniqueName()}`;
    const out = await cliSubscriber(topic, '/v1/subutest');
    const pub = client();
    const body = `hello from evpub ${uniqueName()}`;
    const seed = JSON.stringify({ model: 'accounts', message: { _id: uniqueName() } });
    await pub.publish(topic, body);
    await pub.publish('/v1/subutest', seed);
    await waitFor(() => out().includes(body) && out().includes(seed), 'both messages at redis-cli');
    const lines = out().split('\n');
    // redis-cli prints each message as the lines: message, channel, payload.
    expect(lines[lines.indexOf(body) - 1]).toBe(topic);
    expect(lines[lines.indexOf(seed) - 1]).toBe('/v1/subutest');
  });

  it('evpub receives what redis-cli PUBLISH sends, on exact topics and through wildcards', async () => {
    const base = `evpub/interop/${uniqueName()}`;
    const sub = client();
    const got = collector(sub);
    await sub.subscribe([`${base}/exact`, `${base}/+/created`]);
    await cli('PUBLISH', `${base}/exact`, 'from redis-cli');
    await cli('PUBLISH', `${base}/accounts/created`, 'created');
    await cli('PUBLISH', `${base}/accounts/x/created`, 'too deep'); // in the glob, not in "+"
    await cli('PUBLISH', `${base}/exact`, 'end');
    await waitFor(() => got.some((m) => m.payload.toString() === 'end'), 'the end marker');
    expect(got.map((m) => [m.topic, m.payload.toString(), m.meta.pattern])).toEqual([
      [`${base}/exact`, 'from redis-cli', `${base}/exact`],
      [`${base}/accounts/created`, 'created', `${base}/+/created`],
      [`${base}/exact`, 'end', `${base}/exact`],
    ]);
  });
});

describe('redis interop (streams mode)', () => {
  const streams = { redis: { mode: 'streams' } };

  it('a durable evpub subscriber receives what redis-cli XADD writes', async () => {
    const topic = `evpub/interop/${uniqueName()}`;
    const sub = client(streams);
    const got = collector(sub);
    const group = uniqueName('g');
    await sub.subscribe(topic, { durable: group });
    const id = (
      await cli('XADD', topic, '*', 'payload', 'from redis-cli', 'h:source', 'cli', 'trace', 't1')
    ).trim();
    await waitFor(() => got.length === 1, 'the entry written by redis-cli');
    expect(got[0]!.topic).toBe(topic);
    expect(got[0]!.payload.toString()).toBe('from redis-cli');
    expect(got[0]!.meta.headers).toEqual({ source: 'cli', trace: 't1' });
    expect(got[0]!.meta.messageId).toBe(id);
    // Auto-acknowledged after the listener ran: nothing left pending in the group.
    await waitFor(
      async () => (await cli('XPENDING', topic, group)).trim().split('\n')[0] === '0',
      'no pending entries in the group',
    );
  });

  it("evpub's XADD is visible with redis-cli XRANGE, fields and all", async () => {
    const topic = `evpub/interop/${uniqueName()}`;
    const pub = client(streams);
    await pub.publish(topic, 'payload from evpub', {
      headers: { 'ce-id': 'abc' },
      key: 'k1',
      contentType: 'text/plain',
      messageId: 'm-1',
    });
    const lines = (await cli('XRANGE', topic, '-', '+')).trim().split('\n');
    expect(lines[0]).toMatch(/^\d+-\d+$/);
    const fields = lines.slice(1);
    const asObject = Object.fromEntries(
      Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]),
    );
    expect(asObject).toEqual({
      payload: 'payload from evpub',
      'h:ce-id': 'abc',
      key: 'k1',
      contentType: 'text/plain',
      messageId: 'm-1',
    });
  });
});
