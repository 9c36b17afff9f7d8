/**
 * `evpub dead-letters replay` against one durable broker, through the real CLI.
 *
 * Five letters, made by the publisher's own code (src/pipeline/dead-letter.ts), are published to
 * the dead-letter topic: a refused event (EVPUB_NOT_AUTHORIZED) meant for topic B, two events
 * with an invalid topic (EVPUB_INVALID_TOPIC) meant for topic A (one structured CloudEvent, one
 * binary with headers and non-ASCII data), an event too large to keep in its letter (no
 * original) and raw input a connector could not read (no topic). They are published with one
 * key so that Kafka keeps them in one partition, in this order (the pipeline keys them by the
 * event's key; see docs/dead-letters.md for what a skipped letter does to a Kafka partition).
 *
 * Then, with the same durable group each time:
 * 1. `--dry-run`: three would be replayed, two skipped; nothing published, exit 2.
 * 2. `--code EVPUB_NOT_AUTHORIZED`: the refused event's original arrives on B byte for byte;
 *    the others are not selected; exit 0.
 * 3. no filter: the two originals arrive on A byte for byte, with their headers; the letter
 *    without original and the raw input are reported and left; exit 2.
 * 4. again: only those two are found (the replayed ones were acknowledged), exit 2; nothing
 *    more arrives on A or B.
 */
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/events/change-event';
import { binaryEnvelope, structuredEnvelope } from '../../src/events/envelopes/index';
import { deadLetterPayload, rawDeadLetterPayload } from '../../src/pipeline/dead-letter';
import type { SubscribeOptions } from '../../src/pubsub/adapter';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { spawnCli } from './cli';

export interface ReplayTarget {
  name: string;
  url: () => Promise<string>;
  /** Client options, as objects for the test's clients and as `-o k=v` for the CLI. */
  options: Record<string, unknown>;
  cliOptions: string[];
  /** How the test subscribes to the original topics (JetStream: a durable consumer). */
  subscribe?: () => SubscribeOptions;
  /** Runs `evpub dead-letters setup` before the letters are published (AMQP). */
  setup?: boolean;
  /** Called once the letters are published, before the first run. */
  prepare?: (url: string, group: string, deadLetterTopic: string) => Promise<void>;
  /** The test's timeout, ms (default vitest's). */
  timeout?: number;
  /** Removes what the run left on the broker (the group's queue, ...). */
  cleanup?: (url: string, group: string) => Promise<void>;
}

interface Got {
  payload: Buffer;
  headers?: Record<string, string>;
  contentType?: string;
}

function event(key: string, after: Record<string, unknown>): ChangeEvent {
  return {
    id: uniqueName('ev'),
    datasource: 'db',
    model: 'accounts',
    op: 'create',
    key,
    before: null,
    after,
    position: String(Math.floor(Math.random() * 1e9)),
    sourceTime: new Date().toISOString(),
  };
}

async function collect(
  url: string,
  topic: string,
  target: ReplayTarget,
): Promise<{ client: Client; got: Got[] }> {
  const client = createClient(url, { logger: quietLogger(), ...target.options });
  const got: Got[] = [];
  client.on('message', (_t, payload, meta) => {
    got.push({
      payload,
      ...(meta.headers ? { headers: meta.headers } : {}),
      ...(meta.contentType ? { contentType: meta.contentType } : {}),
    });
  });
  await client.subscribe(topic, target.subscribe?.());
  return { client, got };
}

async function run(args: string[]): Promise<{ code: number | string; lines: string[]; stderr: string }> {
  const proc = spawnCli(['dead-letters', ...args]);
  const code = await proc.exited;
  return { code, lines: proc.stdout().trim().split('\n'), stderr: proc.stderr() };
}

/**
 * A run's output: the line of each letter by its id, and the summary. Letters come in the order
 * the broker delivers them, which after a redelivery (JetStream nak, AMQP requeue) need not be
 * the order they were published in.
 */
function byLetter(lines: string[]): { lines: Map<string, string>; summary: string } {
  const map = new Map<string, string>();
  for (const line of lines.slice(0, -1)) {
    const id = /id=(\S+)/.exec(line)?.[1] ?? line;
    expect(map.has(id), `one line per letter: ${line}`).toBe(false);
    map.set(id, line);
  }
  return { lines: map, summary: lines[lines.length - 1]! };
}

export function replaySuite(target: ReplayTarget): void {
  describe(`evpub dead-letters replay: ${target.name}`, () => {
    it(
      'replays originals byte for byte, acknowledges them, filters by code, keeps letters without original',
      async () => {
        const url = await target.url();
        const prefix = `evpub/test/${uniqueName('dl')}`;
        const deadLetterTopic = `${prefix}/dead-letter`;
        const topicA = `${prefix}/a`;
        const topicB = `${prefix}/b`;
        const group = uniqueName('g');
        const where = ['--topic', deadLetterTopic, '--group', group, ...target.cliOptions];
        // Longer than a JetStream consumer's ack wait in this test (see the JetStream target).
        const common = [...where, '--idle-ms', '2500'];
        const clients: Client[] = [];
        try {
          if (target.setup) {
            const setup = await run(['setup', url, ...where]);
            expect(setup.code, setup.stderr).toBe(0);
            expect(setup.lines).toEqual([`durable subscription "${group}" is ready on ${deadLetterTopic}`]);
          }
          const [a, b] = await Promise.all([collect(url, topicA, target), collect(url, topicB, target)]);
          clients.push(a.client, b.client);

          // The letters, as the pipeline makes them.
          const refused = event('k1', { name: 'refused' });
          const invalid = event('k2', { name: 'invalid topic' });
          const binary = event('k3', { name: 'binaire: é ü 東京' });
          const big = event('k4', { name: 'x'.repeat(5000) });
          const encRefused = structuredEnvelope.encode(refused);
          const encInvalid = structuredEnvelope.encode(invalid);
          const encBinary = binaryEnvelope.encode(binary);
          const fail = (code: string, topic: string, envelope = 'cloudevents') => ({
            code,
            reason: `refused for the test (${code})`,
            topic,
            envelope,
          });
          const letters = [
            deadLetterPayload(refused, fail('EVPUB_NOT_AUTHORIZED', topicB), encRefused, 1_000_000),
            deadLetterPayload(invalid, fail('EVPUB_INVALID_TOPIC', topicA), encInvalid, 1_000_000),
            deadLetterPayload(
              binary,
              fail('EVPUB_INVALID_TOPIC', topicA, 'cloudevents-binary'),
              encBinary,
              1_000_000,
            ),
            deadLetterPayload(
              big,
              fail('EVPUB_PAYLOAD_TOO_LARGE', topicA),
              structuredEnvelope.encode(big),
              1000,
            ),
            rawDeadLetterPayload(
              { datasource: 'db', model: 'accounts', position: '7' },
              { code: 'EVPUB_MALFORMED_INPUT', reason: 'not JSON' },
              { payload: 'not json {' },
              1_000_000,
            ),
          ];
          expect(JSON.parse(letters[3]!.toString())).not.toHaveProperty('original');
          const producer = createClient(url, { logger: quietLogger(), ...target.options });
          clients.push(producer);
          for (const letter of letters) {
            await producer.publish(deadLetterTopic, letter, {
              key: 'dead-letters',
              contentType: 'application/json',
            });
          }

          await target.prepare?.(url, group, deadLetterTopic);
          const raw = 'db/accounts@"7"';
          const noOriginal = (line: string) =>
            expect(line).toMatch(
              new RegExp(
                `^skipped id=${big.id} code=EVPUB_PAYLOAD_TOO_LARGE topic=${topicA}: no original: the encoded event \\(\\d+ bytes\\) did not fit in the letter; left unacknowledged$`,
              ),
            );
          const rawLine =
            `skipped id=${raw} code=EVPUB_MALFORMED_INPUT: raw input a connector could not read: ` +
            'it has no topic to go back to; left unacknowledged';

          // 1. Dry run: reported, nothing published or acknowledged.
          const dry = await run(['replay', url, ...common, '--dry-run']);
          expect(dry.code, dry.stderr).toBe(2);
          const d = byLetter(dry.lines);
          expect([...d.lines.keys()].sort()).toEqual([refused.id, invalid.id, binary.id, big.id, raw].sort());
          expect(d.lines.get(refused.id)).toBe(
            `would replay id=${refused.id} code=EVPUB_NOT_AUTHORIZED topic=${topicB}`,
          );
          expect(d.lines.get(invalid.id)).toBe(
            `would replay id=${invalid.id} code=EVPUB_INVALID_TOPIC topic=${topicA}`,
          );
          expect(d.lines.get(binary.id)).toBe(
            `would replay id=${binary.id} code=EVPUB_INVALID_TOPIC topic=${topicA}`,
          );
          noOriginal(d.lines.get(big.id)!);
          expect(d.lines.get(raw)).toBe(rawLine);
          expect(d.summary).toBe(
            '5 dead letters: 3 would be replayed, 2 skipped, 0 failed (left unacknowledged: still with the group)',
          );

          // 2. Only the refused event.
          const onlyRefused = await run(['replay', url, ...common, '--code', 'EVPUB_NOT_AUTHORIZED']);
          expect(onlyRefused.code, onlyRefused.stderr).toBe(0);
          const o = byLetter(onlyRefused.lines);
          expect([...o.lines.keys()].sort()).toEqual([refused.id, invalid.id, binary.id, big.id, raw].sort());
          expect(o.lines.get(refused.id)).toBe(
            `replayed id=${refused.id} code=EVPUB_NOT_AUTHORIZED topic=${topicB}`,
          );
          for (const id of [invalid.id, binary.id, big.id, raw]) {
            expect(o.lines.get(id)).toMatch(/^skipped .*: code not selected by --code; left unacknowledged$/);
          }
          expect(o.summary).toBe(
            '5 dead letters: 1 replayed, 4 skipped, 0 failed (left unacknowledged: still with the group)',
          );
          await waitFor(() => b.got.length >= 1, `the replayed original on ${topicB}`);
          expect(b.got[0]!.payload.equals(encRefused.payload)).toBe(true);

          // 3. Everything replayable; the rest is reported and kept.
          const all = await run(['replay', url, ...common]);
          expect(all.code, all.stderr).toBe(2);
          const l = byLetter(all.lines);
          expect([...l.lines.keys()].sort()).toEqual([invalid.id, binary.id, big.id, raw].sort());
          expect(l.lines.get(invalid.id)).toBe(
            `replayed id=${invalid.id} code=EVPUB_INVALID_TOPIC topic=${topicA}`,
          );
          expect(l.lines.get(binary.id)).toBe(
            `replayed id=${binary.id} code=EVPUB_INVALID_TOPIC topic=${topicA}`,
          );
          noOriginal(l.lines.get(big.id)!);
          expect(l.lines.get(raw)).toBe(rawLine);
          expect(l.summary).toBe(
            '4 dead letters: 2 replayed, 2 skipped, 0 failed (left unacknowledged: still with the group)',
          );
          await waitFor(() => a.got.length >= 2, `the two replayed originals on ${topicA}`);
          const structured = a.got.find((m) => m.payload.equals(encInvalid.payload));
          const withHeaders = a.got.find((m) => m.payload.equals(encBinary.payload));
          expect(structured, 'the structured original, byte for byte').toBeDefined();
          expect(structured!.contentType ?? 'application/cloudevents+json').toBe(
            'application/cloudevents+json',
          );
          expect(withHeaders, 'the binary original, byte for byte').toBeDefined();
          // The attributes as headers; the content type as a header or the broker's own field (Kafka).
          const { 'content-type': dataType, ...attributes } = encBinary.headers!;
          expect(withHeaders!.headers).toMatchObject(attributes);
          expect(withHeaders!.headers?.['content-type'] ?? withHeaders!.contentType).toBe(dataType);

          // 4. The replayed letters were acknowledged; the two without a way back are still there.
          const again = await run(['replay', url, ...common]);
          expect(again.code, again.stderr).toBe(2);
          const g = byLetter(again.lines);
          expect([...g.lines.keys()].sort()).toEqual([big.id, raw].sort());
          noOriginal(g.lines.get(big.id)!);
          expect(g.lines.get(raw)).toBe(rawLine);
          expect(g.summary).toBe(
            '2 dead letters: 0 replayed, 2 skipped, 0 failed (left unacknowledged: still with the group)',
          );
          // Nothing more arrived: a marker published after the runs is the next message on A and B.
          await producer.publish(topicA, 'marker');
          await producer.publish(topicB, 'marker');
          await waitFor(() => a.got.length >= 3 && b.got.length >= 2, 'the markers');
          expect(a.got.map((m) => m.payload.toString()).sort()).toEqual(
            [encInvalid.payload.toString(), encBinary.payload.toString(), 'marker'].sort(),
          );
          expect(b.got.map((m) => m.payload.toString())).toEqual([encRefused.payload.toString(), 'marker']);
        } finally {
          await Promise.all(clients.map((c) => c.end()));
          await target.cleanup?.(url, group);
        }
      },
      target.timeout,
    );
  });
}
