/**
 * The AMQP adapter's reading of a channel the broker closed over a basic.publish
 * (`amqpPublishRefusal`) and what it makes of the message concerned (`refusalError`). 403 (topic
 * permissions) and 404 are also produced by RabbitMQ in the conformance and integration tests;
 * the 406 over max_message_size is not, because evpub refuses such a payload before sending.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { amqpPublishRefusal, refusalError } from '../../src/pubsub/adapters/amqp-publish';

/** amqplib's error for a channel.close from the broker. */
function channelClosed(code: number, name: string, text: string, classId = 60, methodId = 40): Error {
  return Object.assign(new Error(`Channel closed by server: ${code} (${name}) with message "${text}"`), {
    code,
    classId,
    methodId,
  });
}

describe('amqpPublishRefusal and refusalError', () => {
  it('403 naming a routing key (topic permissions): NOT_AUTHORIZED for that key, permanent', () => {
    const text =
      "ACCESS_REFUSED - access to topic 'shop.orders.vip' in exchange 'evpub' in vhost '/' refused for user 'u'";
    const refusal = amqpPublishRefusal(channelClosed(403, 'ACCESS-REFUSED', text));
    expect(refusal).toEqual({ replyCode: 403, reason: text, routingKey: 'shop.orders.vip' });
    expect(refusalError(refusal!, 'shop.orders.vip')).toMatchObject({
      code: ErrorCode.NOT_AUTHORIZED,
      retriable: false,
      context: { routingKey: 'shop.orders.vip', brokerCode: 403, brokerReason: text },
    });
  });

  it('403 on the exchange (no write permission): NOT_AUTHORIZED for any key', () => {
    const text = "ACCESS_REFUSED - access to exchange 'evpub' in vhost '/' refused for user 'u'";
    const refusal = amqpPublishRefusal(channelClosed(403, 'ACCESS-REFUSED', text))!;
    expect(refusal.routingKey).toBeUndefined();
    expect(refusalError(refusal, 'a.b')).toMatchObject({ code: ErrorCode.NOT_AUTHORIZED, retriable: false });
  });

  it('406 over max_message_size: PAYLOAD_TOO_LARGE, permanent', () => {
    const text = 'PRECONDITION_FAILED - message size 5000 is larger than configured max size 1024';
    const refusal = amqpPublishRefusal(channelClosed(406, 'PRECONDITION-FAILED', text))!;
    expect(refusal.maxSize).toBe(1024);
    expect(refusalError(refusal, 'a.b')).toMatchObject({
      code: ErrorCode.PAYLOAD_TOO_LARGE,
      retriable: false,
    });
  });

  it('404 no exchange is not final: the adapter declares the exchange again and re-publishes', () => {
    const refusal = amqpPublishRefusal(
      channelClosed(404, 'NOT-FOUND', "NOT_FOUND - no exchange 'evpub' in vhost '/'"),
    )!;
    expect(refusal.replyCode).toBe(404);
    expect(refusalError(refusal, 'a.b')).toBeUndefined();
  });

  it('a channel closed over another method, or the connection going, is no publish refusal', () => {
    expect(
      amqpPublishRefusal(channelClosed(404, 'NOT-FOUND', 'NOT_FOUND - no queue', 50, 10)),
    ).toBeUndefined();
    expect(amqpPublishRefusal(new Error('Connection closed: 320 (CONNECTION-FORCED)'))).toBeUndefined();
  });
});
