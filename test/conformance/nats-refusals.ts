/**
 * The refusals a private nats-server produces for the NATS conformance runs: a user whose
 * publish permissions deny one subject (core and JetStream), and JetStream streams that do not
 * take a subject or a message size.
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { ErrorCode } from '../../src/pubsub/index';
import { privateNatsServer } from '../helpers/nats-server';
import { uniqueName } from '../helpers/services';
import type { RefusalCase } from './pubsub.suite';

/** A private server where user `evpub` may publish anything but `evpub.test.*.vip`. */
export const permissionDenied: RefusalCase = {
  what: 'a subject the user may not publish to (permissions violation)',
  code: ErrorCode.NOT_AUTHORIZED,
  retriable: false,
  async setup() {
    const server = await privateNatsServer({
      config: `authorization {
  users = [
    { user: evpub, password: secret, permissions: { publish: { allow: [">"], deny: ["evpub.test.*.vip"] }, subscribe: { allow: [">"] } } }
  ]
}
`,
    });
    const base = `evpub/test/${uniqueName()}`;
    return {
      url: server.url.replace('nats://', 'nats://evpub:secret@'),
      refused: `${base}/vip`,
      allowed: `${base}/orders`,
      brokerReason: /Permissions Violation for Publish to "evpub\.test\.\w+\.vip"/,
      cleanup: () => server.close(),
    };
  },
};

/** Runs `fn` with a JetStream manager on `url`. */
async function withJsm(
  url: string,
  fn: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<unknown>,
): Promise<void> {
  const nc = await connect({ servers: new URL(url).host });
  try {
    await fn(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

/**
 * A configured stream (`nats.subjects`) that exists on the server with fewer subjects than the
 * option says: the server has no stream for the refused subject.
 */
export function noStream(url: () => Promise<string>): RefusalCase {
  return {
    what: 'a subject no stream captures (configured stream)',
    code: ErrorCode.NO_DESTINATION,
    retriable: false,
    async setup() {
      const at = await url();
      const stream = uniqueName('EVPUB');
      const base = `evpub/test/${uniqueName()}`;
      const prefix = base.split('/').join('.');
      await withJsm(at, (jsm) => jsm.streams.add({ name: stream, subjects: [`${prefix}.orders`] }));
      return {
        options: { nats: { jetstream: true, stream, subjects: [`${prefix}.>`] } },
        refused: `${base}/vip`,
        allowed: `${base}/orders`,
        brokerReason: new RegExp(`no stream captures subject "${prefix}\\.vip"`),
        cleanup: () => withJsm(at, (jsm) => jsm.streams.delete(stream)),
      };
    },
  };
}

/** A stream whose max_msg_size is 200 bytes: the server refuses a larger message (API error 10054). */
export function streamMessageTooLarge(url: () => Promise<string>): RefusalCase {
  return {
    what: "a message over the stream's max_msg_size",
    code: ErrorCode.PAYLOAD_TOO_LARGE,
    retriable: false,
    async setup() {
      const at = await url();
      const stream = uniqueName('EVPUB');
      const base = `evpub/test/${uniqueName()}`;
      const prefix = base.split('/').join('.');
      await withJsm(at, (jsm) =>
        jsm.streams.add({ name: stream, subjects: [`${prefix}.>`], max_msg_size: 200 }),
      );
      return {
        options: { nats: { jetstream: true, stream, subjects: [`${prefix}.>`] } },
        refused: `${base}/vip`,
        payload: Buffer.alloc(1000, 1),
        allowed: `${base}/orders`,
        brokerReason: /message size exceeds maximum allowed/,
        brokerCode: 10054,
        cleanup: () => withJsm(at, (jsm) => jsm.streams.delete(stream)),
      };
    },
  };
}
