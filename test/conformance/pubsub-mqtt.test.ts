/**
 * The conformance suite against a private mosquitto (MQTT 5, then MQTT 3.1.1); the restart tests
 * start one more private mosquitto each, which they stop and start.
 */
import { afterAll, beforeAll } from 'vitest';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { pubsubConformance } from './pubsub.suite';

let broker: PrivateMosquitto | undefined;
let starting: Promise<PrivateMosquitto> | undefined;
const shared = (): Promise<PrivateMosquitto> => (starting ??= startMosquitto().then((b) => (broker = b)));

beforeAll(async () => {
  await shared();
});
afterAll(async () => {
  await broker?.close();
});

for (const [name, options] of [
  ['mqtt', {}],
  ['mqtt 3.1.1', { mqtt: { protocolVersion: 4 } }],
] as const) {
  pubsubConformance({
    name,
    url: async () => (await shared()).url,
    options,
    privateBroker: () => startMosquitto(),
  });
}
