/**
 * `/ready` follows the broker connection: Redis behind a TCP proxy that is cut and restored.
 * 503 naming the broker while it is down, 200 again once the client reconnected; `/health`
 * answers throughout.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('redis');
});

describe('/ready and the broker connection', () => {
  it('is 503 naming the broker while it is unreachable, 200 once reconnected', async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 6379 });
    cleanups.push(() => proxy.close());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `redis://127.0.0.1:${proxy.port}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: 'local' });
    await app.start();
    const { url } = await app.listen({ port: 0 });
    const ready = async () => {
      const res = await fetch(`${url}/ready`);
      return { status: res.status, body: (await res.json()) as { ready: boolean; reasons: string[] } };
    };
    expect((await ready()).status).toBe(200);

    await proxy.stop();
    await waitFor(async () => (await ready()).status === 503, '503 while the broker is cut');
    const down = await ready();
    expect(down.body.ready).toBe(false);
    expect(down.body.reasons).toEqual([expect.stringMatching(/^broker default is (offline|connecting)$/)]);
    expect((await fetch(`${url}/health`)).status).toBe(200);

    await proxy.start();
    await waitFor(async () => (await ready()).status === 200, '200 once reconnected', 30_000);
  });
});
