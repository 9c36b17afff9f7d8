/**
 * Property tests of the topic mappings: a key value from a source (any string, lone surrogates
 * included) put into a topic template stays one level under its prefix, and every adapter's
 * mapping of the topic (identity for MQTT/Redis/memory, dotted for NATS subjects and AMQP
 * routing keys, Kafka names) gives the topic back, with no wildcard or separator injected.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { subjectsFor } from '../../src/pubsub/adapters/nats-subjects';
import { compileTopic } from '../../src/pipeline/topics';
import { isEvpubError, ErrorCode } from '../../src/errors';
import {
  assertMqttTopic,
  assertTopic,
  fromDotted,
  fromKafka,
  matches,
  patternToDotted,
  patternToGlob,
  toDotted,
  toKafka,
} from '../../src/pubsub/topics';

/** Characters that mean something to some broker, plus any UTF-16 code unit (lone surrogates too). */
const unit = fc.oneof(
  fc.constantFrom(
    '/',
    '+',
    '#',
    '%',
    '.',
    '*',
    '>',
    ' ',
    '\t',
    '\u0000',
    '\u0085',
    '\u00a0',
    '\u2028',
    '\u3000',
    '\ufeff',
    '\ud800',
    '\udfff',
    '%2F',
    '%u',
  ),
  fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
  fc.string({ unit: 'grapheme', maxLength: 2 }),
);
const anyString = fc.string({ unit, maxLength: 30 });
const RUNS = { numRuns: 300 };

const render = compileTopic('evpub/{model}/{key}');
const topicOf = (key: string) => render({ datasource: 'db', model: 'orders', op: 'create', key });
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
/** The key as the topic level gives it back: exact, but a lone surrogate is U+FFFD (UTF-8 has none). */
const wellFormed = (key: string) => key.replace(LONE, '\ufffd');

describe('topic templates (every adapter publishes what the template renders)', () => {
  it('keeps any key one level below its prefix, without wildcards, and gives it back', () => {
    fc.assert(
      fc.property(anyString, (key) => {
        const topic = topicOf(key);
        expect(topic.startsWith('evpub/orders/')).toBe(true);
        const level = topic.slice('evpub/orders/'.length);
        expect(['/', '+', '#', '\u0000'].some((c) => level.includes(c))).toBe(false);
        expect(decodeURIComponent(level)).toBe(wellFormed(key));
        expect(matches('evpub/orders/+', topic)).toBe(true);
        expect(matches('evpub/other/#', topic)).toBe(false);
        assertTopic(topic); // valid Unicode, no NUL or wildcard
        assertMqttTopic(topic); // no control character or noncharacter (MQTT brokers drop those)
      }),
      RUNS,
    );
  });
});

describe('dotted names (NATS subjects, AMQP routing keys)', () => {
  it('are invertible for any topic, and a level never becomes a wildcard, a separator or whitespace', () => {
    fc.assert(
      fc.property(fc.array(anyString, { minLength: 1, maxLength: 4 }), (levels) => {
        const topic = levels.join('/');
        const name = toDotted(topic);
        expect(fromDotted(name)).toBe(topic);
        const tokens = name.split('.');
        expect(tokens).toHaveLength(topic.split('/').length);
        for (const token of tokens) {
          expect(token).not.toBe('');
          expect(token).not.toMatch(/[*>#\s]/);
        }
      }),
      RUNS,
    );
  });

  it('a key in a subscription-side subject stays one token: `evpub/orders/+` matches it, the key cannot widen a pattern', () => {
    fc.assert(
      fc.property(anyString, (key) => {
        const topic = topicOf(key);
        const subject = toDotted(topic);
        const [wild] = subjectsFor('evpub/orders/+');
        const parts = subject.split('.');
        expect(parts).toHaveLength(3);
        expect(wild).toBe('evpub.orders.*');
        // A pattern made from the rendered topic (a subscriber to exactly this key) has no wildcard.
        expect(patternToDotted(topic, '>')).toBe(subject);
        expect(patternToDotted(topic, '#')).toBe(subject);
      }),
      RUNS,
    );
  });
});

describe('Kafka names', () => {
  it('are the topic back, or INVALID_TOPIC naming the rule: never a name that decodes to another topic', () => {
    fc.assert(
      fc.property(fc.array(anyString, { minLength: 1, maxLength: 4 }), (levels) => {
        const topic = levels.join('/');
        let name: string;
        try {
          name = toKafka(topic);
        } catch (err) {
          expect(isEvpubError(err) && err.code === ErrorCode.INVALID_TOPIC).toBe(true);
          return;
        }
        expect(name).toMatch(/^[A-Za-z0-9_.-]+$/);
        expect(fromKafka(name)).toBe(topic);
      }),
      RUNS,
    );
  });
});

describe('Redis globs', () => {
  it('a pattern for one key matches that topic only (glob characters in keys are escaped)', () => {
    fc.assert(
      fc.property(anyString, anyString, (key, other) => {
        fc.pre(wellFormed(key) !== wellFormed(other));
        const glob = patternToGlob(topicOf(key));
        expect(globMatches(glob, topicOf(key))).toBe(true);
        expect(globMatches(glob, topicOf(other))).toBe(false);
      }),
      RUNS,
    );
  });
});

/** Redis's glob (`*`, `?`, `[...]`, `\` escapes) as a RegExp, for the patterns patternToGlob makes. */
function globMatches(glob: string, topic: string): boolean {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '\\' && i + 1 < glob.length) source += escapeRe(glob[++i]!);
    else if (c === '*') source += '[\\s\\S]*';
    else if (c === '?') source += '[\\s\\S]';
    else source += escapeRe(c);
  }
  return new RegExp(`^${source}$`).test(topic);
}

const escapeRe = (c: string) => c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
