/**
 * Interoperability with a Kafka client nobody here wrote: kcat (librdkafka). kcat receives
 * what evpub publishes, key and headers included, and evpub receives what kcat produces.
 * Runs on librdkafka's mock cluster, or on KAFKA_BROKERS when set.
 */
import { execFile, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type Client } from '../../src/pubsub/index';
import { toKafka } from '../../src/pubsub/topics';
import { collector } from '../conformance/pubsub.suite';
import { kafkaCluster, type KafkaCluster } from '../helpers/kafka-mock';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

/** Runs kcat with `args`, feeding `input`; resolves with its stdout. */
function kcat(args: string[], input?: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('kcat', args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kcat ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

describe('Kafka interoperability with kcat', () => {
  let cluster: KafkaCluster;
  const clients: Client[] = [];
  const client = (): Client => {
    const c = createClient(cluster.url);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    cluster = await kafkaCluster();
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await cluster.close();
  });

  it('kcat -C receives what evpub publishes, with key and headers', async () => {
    const topic = `/interop/${uniqueName()}/out`;
    const pub = client();
    await pub.publish(topic, 'first', {
      key: 'acct-1',
      headers: { 'ce-id': 'e1' },
      contentType: 'application/json',
    });
    await pub.publish(topic, 'second ünï', { key: 'acct-1', headers: { 'x-n': '2' } });
    const out = await kcat([
      '-b',
      cluster.brokers.join(','),
      '-C',
      '-t',
      toKafka(topic),
      '-o',
      'beginning',
      '-c',
      '2',
      '-e',
      '-q',
      '-f',
      '%k %h %s\n',
    ]);
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^acct-1 /);
    expect(lines[0]).toContain('ce-id=e1');
    expect(lines[0]).toContain('content-type=application/json');
    expect(lines[0]).toMatch(/ first$/);
    expect(lines[1]).toContain('x-n=2');
    expect(lines[1]).toMatch(/ second ünï$/);
  });

  it('evpub receives what kcat -P produces, with key and headers', async () => {
    const topic = `interop/${uniqueName()}/in`;
    const sub = client();
    const got = collector(sub);
    await sub.subscribe(topic);
    await kcat(
      [
        '-b',
        cluster.brokers.join(','),
        '-P',
        '-t',
        toKafka(topic),
        '-k',
        'order-9',
        '-H',
        'ce-type=created',
        '-H',
        'content-type=text/plain',
      ],
      'one\ntwo\n',
    );
    await waitFor(() => got.length === 2, 'two messages from kcat');
    expect(got.map((m) => m.payload.toString())).toEqual(['one', 'two']);
    for (const m of got) {
      expect(m.topic).toBe(topic);
      expect(m.meta.key).toBe('order-9');
      expect(m.meta.headers).toMatchObject({ 'ce-type': 'created' });
      expect(m.meta.contentType).toBe('text/plain');
    }
  });
});

// kcat must exist: fail with the install command rather than skip.
beforeAll(async () => {
  await new Promise<void>((resolve, reject) => {
    const probe = spawn('kcat', ['-V'], { stdio: 'ignore' });
    probe.once('error', () => reject(new Error('kcat is not installed: apt-get install kcat')));
    probe.once('exit', () => resolve());
  });
});
