import { describe, expect, it } from 'vitest';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { loadDriver } from '../../src/pubsub/driver';

describe('loadDriver', () => {
  it('names the package to install when a driver is missing', async () => {
    const err: unknown = await loadDriver('evpub-no-such-driver', 'Test adapter').catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.DRIVER_MISSING)).toBe(true);
    expect((err as Error).message).toBe(
      'The Test adapter needs the "evpub-no-such-driver" package, which is not installed: run `npm install evpub-no-such-driver`',
    );
  });

  it("returns the driver's module.exports", async () => {
    const mqtt = await loadDriver<typeof import('mqtt')>('mqtt', 'MQTT adapter');
    expect(typeof mqtt.connect).toBe('function');
  });
});
