/** Checkpoint stores by configuration. */
import type { CheckpointConfig } from './config';
import { ErrorCode, EvpubError } from '../errors';
import type { Logger } from '../logger';
import { parseTls } from '../util/tls';
import type { CheckpointStore } from './contract';
import { FileCheckpointStore } from './file';
import { MemoryCheckpointStore } from './memory';
import { PostgresCheckpointStore } from './postgres';
import { RedisCheckpointStore } from './redis';

export type { CheckpointStore } from './contract';
export { FileCheckpointStore, MemoryCheckpointStore, PostgresCheckpointStore, RedisCheckpointStore };

/** A store for `config` (no I/O until the first load or save). */
export function createCheckpointStore(
  config: CheckpointConfig,
  options: { cwd?: string; logger?: Logger } = {},
): CheckpointStore {
  switch (config.store) {
    case 'file':
      return new FileCheckpointStore({ path: config.path, cwd: options.cwd });
    case 'redis':
      return new RedisCheckpointStore({
        url: config.url,
        prefix: config.prefix,
        tls: parseTls(config.tls, 'checkpoints.tls'),
        username: config.username,
        password: config.password,
        logger: options.logger,
      });
    case 'postgres':
      return new PostgresCheckpointStore({
        url: config.url,
        table: config.table,
        tls: parseTls(config.tls, 'checkpoints.tls'),
        logger: options.logger,
      });
    case 'memory':
      return new MemoryCheckpointStore();
    default:
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `checkpoints.store: ${JSON.stringify((config as { store?: unknown }).store)} is not one of file, redis, postgres, memory`,
      );
  }
}
