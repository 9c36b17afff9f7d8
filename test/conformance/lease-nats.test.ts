import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { NatsLeaseStore } from '../../src/cluster/nats';
import { privateNatsServer } from '../helpers/nats-server';
import { requireService, uniqueName } from '../helpers/services';
import { leaseConformance } from './lease.suite';

const bucket = uniqueName('evpub_lease');

leaseConformance({
  name: 'nats',
  open: async (cluster) => new NatsLeaseStore({ url: await requireService('nats'), cluster, bucket }),
  privateServer: async () => {
    const server = await privateNatsServer();
    return { server, open: (cluster) => new NatsLeaseStore({ url: server.url, cluster, opTimeout: 500 }) };
  },
  teardown: async () => {
    const nc = await connect({ servers: '127.0.0.1:4222' });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
    await nc.close();
  },
});
