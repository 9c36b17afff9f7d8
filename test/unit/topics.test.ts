import { describe, expect, it } from 'vitest';
import {
  assertPattern,
  assertTopic,
  fromDotted,
  fromKafka,
  matches,
  patternToDotted,
  patternToGlob,
  patternToKafkaRegExp,
  toDotted,
  toKafka,
} from '../../src/pubsub/topics';

describe('topics', () => {
  it('matches like MQTT', () => {
    expect(matches('a/+/c', 'a/b/c')).toBe(true);
    expect(matches('a/+/c', 'a/b/d')).toBe(false);
    expect(matches('a/#', 'a')).toBe(true);
    expect(matches('a/#', 'a/b/c')).toBe(true);
    expect(matches('#', '/v1/subutest')).toBe(true);
    expect(matches('+/v1/+', '/v1/subutest')).toBe(true);
    expect(matches('a/+', 'a/b/c')).toBe(false);
    expect(matches('a/b', 'a/b/c')).toBe(false);
  });

  it('validates topics and patterns', () => {
    expect(() => assertTopic('a/+')).toThrow(/only allowed in subscription patterns/);
    expect(() => assertTopic('')).toThrow(/non-empty/);
    expect(() => assertPattern('a/#/b')).toThrow(/last one/);
    expect(() => assertPattern('a/b+')).toThrow(/whole level/);
    expect(() => assertPattern('a/+/#')).not.toThrow();
  });

  it('the dotted rule is invertible, empty levels and special characters included', () => {
    for (const t of ['/v1/subutest', 'a.b/c*d/>/e f', 'x//y/', '%/%25', 'plain']) {
      expect(fromDotted(toDotted(t))).toBe(t);
    }
    expect(toDotted('/v1/subutest')).toBe('%.v1.subutest');
    expect(patternToDotted('a/+/#', '>')).toBe('a.*.>');
  });

  it('the kafka rule is invertible and names itself when a topic breaks it', () => {
    expect(toKafka('/v1/subutest')).toBe('.v1.subutest');
    expect(fromKafka(toKafka('/v1/subutest'))).toBe('/v1/subutest');
    expect(() => toKafka('a/b c')).toThrow(/\[A-Za-z0-9_-\]/);
    const re = patternToKafkaRegExp('a/+/c');
    expect(re.test('a.b.c')).toBe(true);
    expect(re.test('a.b.d')).toBe(false);
    expect(patternToKafkaRegExp('a/#').test('a')).toBe(true);
    expect(patternToKafkaRegExp('a/#').test('a.b.c')).toBe(true);
    expect(patternToKafkaRegExp('a/#').test('ab')).toBe(false);
  });

  it('globs cover their pattern', () => {
    expect(patternToGlob('a/+/c')).toBe('a/*/c');
    expect(patternToGlob('a/#')).toBe('a*');
    expect(patternToGlob('a[1]/*')).toBe('a\\[1\\]/\\*');
  });
});
