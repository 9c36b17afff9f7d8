/**
 * Poison events on NATS: core NATS with a user denied the vip subject (a permissions
 * violation), and JetStream with a stream whose subjects leave the vip subject out (no stream
 * takes it). Each is refused for that message alone: dead-lettered, and the feed goes on.
 */
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { privateNatsServer } from '../helpers/nats-server';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { uniqueName } from '../helpers/services';
import { poisonCase, poisonRoot } from './poison.suite';

const root = poisonRoot();
let server: PrivateBroker;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'evpub-nats-acl-'));
  const conf = path.join(dir, 'nats.conf');
  writeFileSync(
    conf,
    `authorization {
  users = [
    { user: evpub, password: secret, permissions: { publish: { allow: ">", deny: "${root}.orders.vip" }, subscribe: ">" } }
    { user: reader, password: secret }
  ]
}
`,
  );
  server = await privateNatsServer({ args: ['-c', conf] });
});
afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const withUser = (url: string, user: string): string => {
  const u = new URL(url);
  u.username = user;
  u.password = 'secret';
  return u.toString();
};

describe('poison events on NATS', () => {
  it('core: a subject the user may not publish (permissions violation): dead-lettered, the rows after it arrive', async () => {
    await poisonCase(root, {
      label: 'nats (permissions)',
      url: withUser(server.url, 'evpub'),
      subscriberUrl: withUser(server.url, 'reader'),
      code: ErrorCode.NOT_AUTHORIZED,
    });
  });

  it('JetStream: a subject no stream takes: dead-lettered, the rows after it arrive', async () => {
    const jsRoot = poisonRoot();
    const keys = Array.from({ length: 100 }, (_, i) => `k${String(i + 1).padStart(3, '0')}`);
    const subjects = [...keys.map((k) => `${jsRoot}.orders.${k}`), `${jsRoot}.dead-letter`];
    const options = { nats: { jetstream: true, stream: uniqueName('POISON'), subjects } };
    await poisonCase(jsRoot, {
      label: 'nats jetstream (no stream)',
      url: withUser(server.url, 'reader'),
      options,
      code: ErrorCode.NO_DESTINATION,
    });
  });
});
