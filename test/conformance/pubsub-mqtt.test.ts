/**
 * The conformance suite against a private mosquitto (MQTT 5, then MQTT 3.1.1); the restart tests
 * start one more private mosquitto each, which they stop and start.
 */
import { afterAll, beforeAll } from 'vitest';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { ErrorCode } from '../../src/pubsub/index';
import { pubsubConformance, type RefusalCase } from './pubsub.suite';
import { uniqueName } from '../helpers/services';

let broker: PrivateMosquitto | undefined;
let starting: Promise<PrivateMosquitto> | undefined;
const shared = (): Promise<PrivateMosquitto> => (starting ??= startMosquitto().then((b) => (broker = b)));

beforeAll(async () => {
  await shared();
});
afterAll(async () => {
  await broker?.close();
});

/** A private mosquitto whose ACL denies `evpub/test/<id>/vip` to everyone, as in issue 11. */
const denied: RefusalCase = {
  what: 'a topic the ACL denies (PUBACK 0x87)',
  code: ErrorCode.NOT_AUTHORIZED,
  retriable: false,
  async setup() {
    const base = `evpub/test/${uniqueName()}`;
    const b = await startMosquitto({ acl: ['topic readwrite #', `topic deny ${base}/vip`] });
    return {
      url: b.url,
      refused: `${base}/vip`,
      allowed: `${base}/orders`,
      brokerReason: /^Not authorized$/,
      brokerCode: '0x87',
      cleanup: () => b.close(),
    };
  },
};

for (const [name, options, refusals, refusalsNotProduced] of [
  ['mqtt', {}, [denied], []],
  [
    'mqtt 3.1.1',
    { mqtt: { protocolVersion: 4 } },
    [],
    [
      'a topic the ACL denies: MQTT 3.1.1 has no refusal in PUBACK, mosquitto acknowledges the publish and drops it: it cannot be detected',
    ],
  ],
] as const) {
  pubsubConformance({
    name,
    url: async () => (await shared()).url,
    options,
    privateBroker: () => startMosquitto(),
    refusals: [...refusals],
    refusalsNotProduced: [...refusalsNotProduced],
  });
}
