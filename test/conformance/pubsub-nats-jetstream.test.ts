/**
 * The conformance suite on NATS in JetStream mode, against the shared nats-server (a private
 * one for the restart tests), plus what only JetStream does: de-duplication by message id.
 * Every run uses its own stream and deletes it at the end (its consumers go with it).
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/pubsub/index';
import { pubsubConformance, collector } from './pubsub.suite';
import { noStream, permissionDenied, streamMessageTooLarge } from './nats-refusals';
import { privateNatsServer } from '../helpers/nats-server';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const stream = uniqueName('EVPUB');
const options = { nats: { jetstream: true, stream } };

async function deleteStream(url: string, name: string): Promise<void> {
  const nc = await connect({ servers: new URL(url).host });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(name).catch((err: Error) => {
      if (err.name !== 'StreamNotFoundError') throw err;
    });
  } finally {
    await nc.close();
  }
}

pubsubConformance({
  name: 'nats (JetStream)',
  url: () => requireService('nats'),
  options,
  privateBroker: () => privateNatsServer(),
  teardown: async () => deleteStream(await requireService('nats'), stream),
  refusals: [
    permissionDenied,
    noStream(() => requireService('nats')),
    streamMessageTooLarge(() => requireService('nats')),
  ],
});

describe('nats JetStream specifics', () => {
  const dedupStream = uniqueName('EVPUB');
  let url: string;
  const clients: ReturnType<typeof createClient>[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    if (url) await deleteStream(url, dedupStream);
  });

  it('de-duplicates two publishes with the same messageId', async () => {
    url = await requireService('nats');
    const topic = `evpub/test/${uniqueName()}/dedup`;
    const c = createClient(url, { nats: { jetstream: true, stream: dedupStream } });
    clients.push(c);
    const got = collector(c);
    await c.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    const id = uniqueName('id');
    await c.publish(topic, 'first', { messageId: id });
    await c.publish(topic, 'second', { messageId: id });
    await c.publish(topic, 'marker');
    await waitFor(() => got.some((m) => m.payload.toString() === 'marker'), 'the marker');
    expect(got.map((m) => m.payload.toString())).toEqual(['first', 'marker']);
    expect(got[0]!.meta.messageId).toBe(id);

    const nc = await connect({ servers: new URL(url).host });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(dedupStream);
      expect(info.state.messages).toBe(2);
      // The stream evpub created remembers ids for the server's default window, 2 minutes.
      expect(info.config.duplicate_window).toBe(120_000 * 1_000_000);
    } finally {
      await nc.close();
    }
  });

  it('creates its stream with the duplicate window nats.duplicateWindow gives', async () => {
    url = await requireService('nats');
    const name = uniqueName('EVPUBDW');
    const c = createClient(url, { nats: { jetstream: true, stream: name, duplicateWindow: 600_000 } });
    clients.push(c);
    const topic = `evpub/test/${uniqueName()}/window`;
    const id = uniqueName('id');
    await c.publish(topic, 'one', { messageId: id });
    await c.publish(topic, 'again', { messageId: id });
    const nc = await connect({ servers: new URL(url).host });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(name);
      expect(info.config.duplicate_window).toBe(600_000 * 1_000_000);
      expect(info.state.messages).toBe(1);
    } finally {
      await nc.close();
      await deleteStream(url, name);
    }
  });
});
