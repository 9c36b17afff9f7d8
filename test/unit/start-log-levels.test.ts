/** `evpub start`'s log of the app's status events: the level each one gets. */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { logStatus } from '../../src/cli/start';
import type { PublisherStatus } from '../../src/pipeline/status';

function levels(statuses: PublisherStatus[], level: string): { level: number; msg: string }[] {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ level }, stream);
  for (const s of statuses) logStatus(logger, s);
  return lines.map((l) => JSON.parse(l) as { level: number; msg: string });
}

describe('evpub start: status log levels', () => {
  const lagging: PublisherStatus = {
    type: 'connector',
    datasource: 'shop',
    status: { type: 'lagging', model: 'orders', bytes: 2048, seconds: 3 },
  };
  const reconnecting: PublisherStatus = {
    type: 'connector',
    datasource: 'shop',
    status: { type: 'reconnecting', model: 'orders', attempt: 1, error: 'lost' },
  };

  it('lag reports (every statusInterval) are debug lines, not info', () => {
    expect(levels([lagging], 'info')).toEqual([]);
    expect(levels([lagging], 'debug').map((l) => l.level)).toEqual([20]);
  });

  it('a reconnecting connector is still a warning', () => {
    expect(levels([reconnecting], 'info').map((l) => l.level)).toEqual([40]);
  });
});
