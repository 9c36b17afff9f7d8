/**
 * The NATS adapter's classification of JetStream publish errors (`jetStreamPublishError`) and
 * of permissions violations (`natsPermissionError`), with the errors nats.js makes. The
 * permissions violation, a subject no stream captures and the stream's max_msg_size are also
 * checked against real servers in the conformance suite.
 */
import { JetStreamApiError } from '@nats-io/jetstream';
import { errors } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { jetStreamPublishError, natsPermissionError } from '../../src/pubsub/adapters/nats-publish';

const api = (err_code: number, code: number, description: string): Error =>
  new JetStreamApiError({ err_code, code, description });

describe('jetStreamPublishError', () => {
  it("a message over the stream's max_msg_size (API error 10054) is a permanent PAYLOAD_TOO_LARGE", () => {
    const err = jetStreamPublishError('a.b', api(10054, 400, 'message size exceeds maximum allowed'));
    expect(err).toMatchObject({ code: ErrorCode.PAYLOAD_TOO_LARGE, retriable: false });
    expect(err.context).toEqual({
      subject: 'a.b',
      brokerCode: 10054,
      brokerReason: 'message size exceeds maximum allowed',
    });
  });

  it("a message over the server's max_payload is a permanent PAYLOAD_TOO_LARGE", () => {
    const err = jetStreamPublishError(
      'a.b',
      new errors.InvalidArgumentError('message size exceeds max_payload'),
    );
    expect(err).toMatchObject({ code: ErrorCode.PAYLOAD_TOO_LARGE, retriable: false });
  });

  it.each([
    [10077, 'maximum messages exceeded'],
    [10047, 'insufficient resources'],
    [10008, 'jetstream cluster not available'],
  ])('API error %i (%s) is transient', (code, description) => {
    const err = jetStreamPublishError('a.b', api(code, 503, description));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
    expect(err.context.brokerReason).toBe(description);
  });

  it('a timeout, no responders past the deadline, or anything unknown is transient', () => {
    for (const e of [new errors.TimeoutError(), new errors.NoRespondersError('a.b'), new Error('strange')]) {
      expect(jetStreamPublishError('a.b', e)).toMatchObject({
        code: ErrorCode.PUBLISH_FAILED,
        retriable: true,
      });
    }
  });
});

describe('natsPermissionError', () => {
  it('is a permanent NOT_AUTHORIZED with the server words', () => {
    const reason = 'Permissions Violation for Publish to "shop.orders.vip"';
    const err = natsPermissionError('shop.orders.vip', reason);
    expect(err).toMatchObject({ code: ErrorCode.NOT_AUTHORIZED, retriable: false });
    expect(err.context).toEqual({ subject: 'shop.orders.vip', brokerReason: reason });
  });
});
