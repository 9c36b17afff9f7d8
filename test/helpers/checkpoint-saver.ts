/**
 * A child process for the checkpoint crash test: saves 1, 2, 3, ... to one feed forever and
 * prints each number once its save resolved. The test kills it with SIGKILL mid-loop.
 *
 *   node --import tsx test/helpers/checkpoint-saver.ts '<CheckpointConfig JSON>' <feedId>
 */
import { createCheckpointStore } from '../../src/checkpoints/index';
import type { CheckpointConfig } from '../../src/app/config-types';

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as CheckpointConfig;
  const feedId = process.argv[3] ?? 'feed';
  const store = createCheckpointStore(config);
  for (let i = 1; ; i++) {
    await store.save(feedId, String(i));
    process.stdout.write(`${i}\n`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
