/**
 * Fault matrix: a private mosquitto stopped (SIGTERM, a clean shutdown) and started again while
 * the publisher streams to it (QoS 1). The test's subscriber keeps a persistent session (fixed
 * clientId, `clean: false`) and the broker runs with persistence on, so the session and the
 * messages queued for it are written at shutdown and restored at start: the subscriber can see
 * everything the broker confirmed. (Without persistence a restart empties every queue: MQTT's
 * guarantee then ends at the broker's PUBACK.) See broker-fault.ts for the case and what it
 * asserts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { uniqueName } from '../helpers/services';
import { runBrokerFault } from './broker-fault';

let broker: PrivateMosquitto;
const store = mkdtempSync(path.join(tmpdir(), 'evpub-mqtt-persist-'));
beforeAll(async () => {
  broker = await startMosquitto({
    extraConfig: ['persistence true', `persistence_location ${store}/`, 'autosave_interval 0'],
  });
});
afterAll(async () => {
  await broker?.close();
  rmSync(store, { recursive: true, force: true });
});

describe('fault matrix: broker restarted mid-stream (mqtt)', () => {
  it(
    'a persistent session gets every change through a restart, in order per key',
    { timeout: 120_000 },
    async () => {
      await runBrokerFault({
        fault: 'broker restarted',
        broker: 'mqtt 5 (mosquitto)',
        note: 'persistent session, broker persistence on',
        publishUrl: broker.url,
        subscribeUrl: broker.url,
        subscriberOptions: { clientId: uniqueName('sub'), mqtt: { clean: false } },
        subscribe: { qos: 1 },
        down: () => broker.stop('SIGTERM'),
        up: () => broker.start(),
      });
    },
  );
});
