/**
 * `evpub snapshot <model...> [-c config] [--start]`: re-snapshot models of a postgres
 * datasource on demand.
 *
 *   evpub snapshot accounts               # then `evpub start` (or restart the service)
 *   evpub snapshot accounts orders --start
 *
 * Protocol: evpub must not be reading the datasource's slot (the command refuses an active
 * slot: a running publisher would overwrite the checkpoint). For each model, the command saves
 * in the configured checkpoint store a position that means "stream from the server's current
 * WAL position, snapshot from the first row". The next `evpub start` resumes from it: it
 * publishes every row as a `snapshot` event (resumable, with progress) while streaming the
 * changes made from that WAL position on; the consistency argument is the initial snapshot's
 * (docs/connectors/postgres.md). It also works when the slot was dropped or invalidated: a new
 * slot is created and nothing the snapshot does not cover is missing. `--start` goes on to run
 * the publisher, as `evpub start` does.
 *
 * Other connectors: delete the model's checkpoint (`resetCheckpoint: true` once) with the
 * connector's own initial-snapshot setting.
 */
import type { Command } from 'commander';
import { loadConfigFrom } from '../app/config';
import { createCheckpointStore } from '../checkpoints/index';
import { ErrorCode, EvpubError } from '../errors';
import { tuneHeap } from './heap';
import { runPublisher } from './start';

interface SnapshotFlags {
  config?: string;
  dir?: string;
  start?: boolean;
  logLevel?: string;
}

const POSTGRES = ['postgres', 'postgresql'];

export async function snapshotModels(
  models: string[],
  flags: SnapshotFlags,
  out: NodeJS.WritableStream,
): Promise<void> {
  const loaded = loadConfigFrom({ file: flags.config, dir: flags.dir });
  const { config } = loaded;
  const byDatasource = new Map<string, string[]>();
  for (const model of models) {
    const m = config.models[model];
    if (!m) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `evpub snapshot: no model "${model}" in the configuration (models: ${Object.keys(config.models).join(', ')})`,
      );
    }
    const ds = config.datasources[m.dataSource]!;
    if (!POSTGRES.includes(ds.connector)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `evpub snapshot: model "${model}" reads datasource "${m.dataSource}" (connector ${ds.connector}); ` +
          "on-demand snapshots are for the postgres connector. For others, start once with the model's " +
          '"resetCheckpoint": true and the connector\'s initial snapshot setting',
      );
    }
    if (m.resetCheckpoint) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `evpub snapshot: models.${model}.resetCheckpoint is true, so evpub start would delete the snapshot's checkpoint; remove it first`,
      );
    }
    byDatasource.set(m.dataSource, [...(byDatasource.get(m.dataSource) ?? []), model]);
  }
  if (config.checkpoints.store === 'memory') {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      'evpub snapshot: checkpoints.store is "memory": a re-snapshot is saved as a checkpoint, use file, redis or postgres',
    );
  }

  const pg = await import('../connectors/postgres/index.js');
  const store = createCheckpointStore(config.checkpoints, { cwd: loaded.dir });
  try {
    for (const [datasource, names] of byDatasource) {
      const ds = config.datasources[datasource]!;
      const settings = pg.parsePostgresSettings(datasource, ds);
      const slot = settings.slot;
      const client = await pg.connectAdmin(settings.url, settings.displayUrl, 10_000, pg.pgSsl(settings));
      let lsn: bigint;
      try {
        const [state] = await pg.listSlots(client, slot);
        if (state?.active) {
          throw new EvpubError(
            ErrorCode.INVALID_STATE,
            `evpub snapshot: the slot "${slot}" of datasource "${datasource}" is being read (pid ${state.activePid}): ` +
              'stop evpub first (it would overwrite the checkpoint), then run evpub snapshot again',
          );
        }
        lsn = await pg.currentLsn(client);
      } finally {
        await client.end().catch(() => undefined);
      }
      for (const model of names) {
        await store.save(`${datasource}/${model}`, pg.resnapshotPosition(lsn));
        out.write(
          `${model}: re-snapshot saved as its checkpoint (rows from the first, changes from ${pg.formatLsn(lsn)})\n`,
        );
      }
    }
  } finally {
    await store.close();
  }
  if (flags.start) {
    // The heap settings of `evpub start` (V8 reads them while it runs: not too late here).
    await runPublisher(loaded, flags.logLevel, { heap: tuneHeap() });
  } else {
    out.write('the next `evpub start` publishes every row of these models, then goes on streaming\n');
  }
}

export function registerSnapshot(program: Command): void {
  program
    .command('snapshot <models...>')
    .description('re-snapshot models (postgres): every row again as snapshot events, then the stream')
    .option('-c, --config <path>', 'configuration file (.json, .yaml, .yml, or model-config.json)')
    .option('-d, --dir <dir>', 'directory holding the configuration (default: the working directory)')
    .option('--start', 'then run the publisher, as evpub start does')
    .option('-l, --log-level <level>', 'with --start: trace, debug, info, warn, error')
    .action((models: string[], flags: SnapshotFlags) => snapshotModels(models, flags, process.stdout));
}
