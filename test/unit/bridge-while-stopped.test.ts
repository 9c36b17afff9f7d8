import { describe, expect, it } from 'vitest';
import { initialize } from '../../src/connectors/bridge';
import type { EventConnector } from '../../src/connectors/contract';
import { createLogger } from '../../src/logger';

async function bridge(): Promise<EventConnector> {
  const dataSource = {
    name: 'src',
    settings: { url: 'redis://127.0.0.1:6379' },
    logger: createLogger({ level: 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  return dataSource.connector as EventConnector;
}

describe('bridge: what becomes of messages published while evpub is stopped', () => {
  it('durable subscriptions for every model: kept by the source broker, nothing lost', async () => {
    const said = (await bridge()).whileStopped!([
      { name: 'a', settings: { topics: 'in/a', durable: 'ga' } },
      { name: 'b', settings: { topics: 'in/b', durable: 'gb' } },
    ]);
    expect(said?.lossless).toBe(true);
    expect(said?.text).toContain('durable subscriptions');
  });

  it('a model without one is named as losing them', async () => {
    const said = (await bridge()).whileStopped!([
      { name: 'a', settings: { topics: 'in/a', durable: 'ga' } },
      { name: 'b', settings: { topics: 'in/b' } },
    ]);
    expect(said?.lossless).toBe(false);
    expect(said?.text).toContain('model b has none (set durable)');
  });

  it('no durable subscription at all: the default "they are lost"', async () => {
    expect((await bridge()).whileStopped!([{ name: 'a', settings: { topics: 'in/a' } }])).toBeUndefined();
  });
});
