/**
 * Apps of one cluster in this process, for the status, API, metrics and CLI tests of cluster
 * mode: two memory datasources (one unit each) publishing to a memory broker, checkpoints in the
 * shared Redis (fenced), leases in the Redis given (a private server when the test stops it).
 * Each app serves its management API on a free port before it starts, so its membership entry
 * carries the API's address.
 */
import { evpub, type App } from '../../src/app/app';
import { memoryStore } from '../../src/connectors/memory';
import type { PublisherStatus } from '../../src/pipeline/status';
import { quietLogger } from './publisher';
import { SERVICES, uniqueName } from './services';

export interface ClusterApp {
  app: App;
  url: string;
  statuses: PublisherStatus[];
}

export interface ClusterFixture {
  /** The datasources (each one unit): `da`, `db`. */
  units: string[];
  /** The feeds: `da/<model>`, `db/<model>`. */
  feeds: string[];
  name: string;
  broker: string;
  /** Writes a record to a datasource's memory store (whichever instance reads it publishes it). */
  write(datasource: string, model: string, key: string): void;
  /** Makes, listens and starts an instance. */
  start(instance: string, options?: { token?: string }): Promise<ClusterApp>;
}

export function clusterFixture(leaseUrl: string, cleanups: (() => Promise<unknown>)[]): ClusterFixture {
  const name = uniqueName('c').replace(/[^A-Za-z0-9_-]/g, '_');
  const prefix = `${uniqueName('cp')}:`;
  const broker = `memory://${uniqueName('b')}`;
  const stores = { da: uniqueName('sa'), db: uniqueName('sb') };
  const models = { da: uniqueName('ma'), db: uniqueName('mb') };
  return {
    units: ['da', 'db'],
    feeds: [`da/${models.da}`, `db/${models.db}`],
    name,
    broker,
    write(datasource, model, key) {
      memoryStore(stores[datasource as 'da' | 'db']).write(datasource, model, 'create', key, { key });
    },
    async start(instance, options = {}) {
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: broker },
        checkpoints: { store: 'redis', url: SERVICES.redis.url, prefix },
        cluster: { store: 'redis', url: leaseUrl, name, leaseTtl: '3s', instance },
        stopTimeout: 5000,
      });
      const statuses: PublisherStatus[] = [];
      app.on('status', (s) => statuses.push(s));
      for (const ds of ['da', 'db'] as const) {
        app.dataSource(ds, { connector: 'memory', store: stores[ds] });
        app.model(models[ds], { dataSource: ds, topic: '{datasource}/{model}/{key}', from: 'beginning' });
      }
      cleanups.push(() => app.stop());
      const { url } = await app.listen({ port: 0, ...(options.token ? { token: options.token } : {}) });
      await app.start();
      return { app, url, statuses };
    },
  };
}
