/**
 * The MQTT adapter's classification of PUBACK/PUBREC reason codes (`mqttPublishError`): which
 * refusals are permanent for the message (dead-lettered by the publisher) and which transient.
 * 0x87 is also checked against a real mosquitto in the conformance suite; the other codes
 * mosquitto cannot be made to send here.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { mqttPublishError } from '../../src/pubsub/adapters/mqtt';

/** An error as mqtt.js passes it to the publish callback for a PUBACK reason code. */
function puback(code: number, text: string): Error {
  return Object.assign(new Error(`Publish error: ${text}`), { code });
}

describe('mqttPublishError', () => {
  it.each([
    ['Not authorized', 0x87, ErrorCode.NOT_AUTHORIZED],
    ['Topic Name invalid', 0x90, ErrorCode.INVALID_TOPIC],
    ['Packet too large', 0x95, ErrorCode.PAYLOAD_TOO_LARGE],
    ['Payload format invalid', 0x99, ErrorCode.PUBLISH_FAILED],
  ])('%s (reason code %i) is a permanent %s', (text, code, expected) => {
    const err = mqttPublishError('shop/orders/vip', puback(code, text));
    expect(err).toMatchObject({ code: expected, retriable: false });
    expect(err.context).toMatchObject({
      topic: 'shop/orders/vip',
      brokerReason: text,
      brokerCode: `0x${code.toString(16)}`,
      reasonCode: code,
    });
    expect(err.message).toContain(text);
  });

  it.each([
    ['Quota exceeded', 0x97],
    ['Unspecified error', 0x80],
    ['Implementation specific error', 0x83],
    ['Packet Identifier in use', 0x91],
  ])('%s (reason code %i) is transient: the same publish may pass later', (text, code) => {
    const err = mqttPublishError('a/b', puback(code, text));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
    expect(err.context.brokerReason).toBe(text);
  });

  it('a code the adapter does not know keeps mqtt.js words and is transient', () => {
    const err = mqttPublishError('a/b', puback(0x9f, 'Something new'));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
    expect(err.context).toMatchObject({ brokerReason: 'Something new', brokerCode: '0x9f' });
  });

  it('a connection error (no reason code) is transient', () => {
    const err = mqttPublishError('a/b', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
  });
});
