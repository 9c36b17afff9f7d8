/**
 * Leases and membership for running several instances (docs/cluster.md). Internal for now: the
 * app wires `cluster:` in a later step.
 */
import type { Logger } from '../logger';
import type { ClusterConfig } from './config';
import type { LeaseStore } from './lease';
import { NatsLeaseStore } from './nats';
import { PostgresLeaseStore } from './postgres';
import { RedisLeaseStore } from './redis';

export {
  CLUSTER_STORES,
  DEFAULT_LEASE_TTL,
  MIN_LEASE_TTL,
  parseClusterConfig,
  parseDuration,
} from './config';
export type { ClusterConfig, ClusterStore } from './config';
export { LeaseKeeper, type KeeperOptions } from './keeper';
export { deadlineOf, safetyMargin, type Lease, type LeaseState, type LeaseStore, type Member } from './lease';
export { NatsLeaseStore, PostgresLeaseStore, RedisLeaseStore };

/**
 * The lease store of a validated `cluster` configuration (no I/O until first used), with its TLS
 * and credentials; `logger` is told once when TLS verification is turned off.
 */
export function createLeaseStore(
  config: ClusterConfig,
  options: { opTimeout?: number; logger?: Logger } = {},
): LeaseStore {
  const common = {
    url: config.url,
    cluster: config.name,
    opTimeout: options.opTimeout,
    tls: config.tls,
    logger: options.logger,
  };
  const user = { username: config.username, password: config.password };
  switch (config.store) {
    case 'postgres':
      return new PostgresLeaseStore({ ...common, table: config.table, membersTable: config.membersTable });
    case 'redis':
      return new RedisLeaseStore({ ...common, ...user, prefix: config.prefix });
    case 'nats': {
      const { token, nkey, creds } = config;
      return new NatsLeaseStore({ ...common, ...user, token, nkey, creds, bucket: config.bucket });
    }
  }
}
