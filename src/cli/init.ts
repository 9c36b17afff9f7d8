/**
 * `evpub init [dir]`: scaffold a project: `evpub.config.yaml` with a sample datasource and
 * model, and a README stub. Refuses to overwrite an existing file unless `--force`.
 *
 *   evpub init                              # a CouchDB datasource
 *   evpub init my-app --connector memory    # an in-process store, no database
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { ErrorCode, EvpubError } from '../errors';

interface InitFlags {
  force?: boolean;
  connector: string;
}

const DATASOURCES: Record<string, string> = {
  memory: `  # The memory connector: an in-process store, for trying evpub without a database.
  db:
    connector: memory`,
  couchdb: `  # CouchDB (or Cloudant): each model is a database, read from its _changes feed.
  db:
    connector: couchdb
    url: \${COUCHDB_URL:-http://localhost:5984}`,
};

export function configTemplate(connector: string): string {
  const datasource = DATASOURCES[connector];
  if (!datasource) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `--connector: must be one of ${Object.keys(DATASOURCES).join(', ')}`,
    );
  }
  return `# evpub configuration: see docs/configuration.md for every key.
# \${VAR} and \${VAR:-default} are replaced from the environment.

brokers:
  default:
    url: \${EVPUB_BROKER_URL:-mqtt://localhost:1883}

datasources:
${datasource}

models:
  # Every change to "accounts" is published to accounts/<op> on the default broker.
  accounts:
    dataSource: db
    topic: "{model}/{op}"
    envelope: cloudevents
    # ops: [create, update, delete]
    # exclude: [password]

checkpoints:
  store: file
  path: .evpub/checkpoints

publisher:
  maxInFlight: 1000
`;
}

const README = `# evpub project

Publishes the changes of the models in \`evpub.config.yaml\` to a message broker.

    npx evpub start            # runs until SIGTERM / Ctrl-C, then drains and saves checkpoints
    npx evpub sub mqtt://localhost:1883 '#'   # watch what is published

Set \`EVPUB_BROKER_URL\` (and \`COUCHDB_URL\` for CouchDB) or edit the configuration.
Checkpoints live in \`.evpub/checkpoints\`: keep them to resume where the publisher stopped.
`;

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('scaffold a project: evpub.config.yaml with a sample datasource and model, a README')
    .argument('[dir]', 'directory to create the files in', '.')
    .option('--connector <name>', 'sample datasource connector: couchdb or memory', 'couchdb')
    .option('-f, --force', 'overwrite existing files')
    .action(async (dir: string, flags: InitFlags) => {
      const target = path.resolve(dir);
      const files: Record<string, string> = {
        'evpub.config.yaml': configTemplate(flags.connector),
        'README.md': README,
      };
      if (!flags.force) {
        const existing: string[] = [];
        for (const name of Object.keys(files)) {
          if (await exists(path.join(target, name))) existing.push(name);
        }
        if (existing.length > 0) {
          throw new EvpubError(
            ErrorCode.CONFIG_INVALID,
            `${existing.map((f) => path.join(target, f)).join(', ')} already exist${existing.length === 1 ? 's' : ''}; ` +
              'nothing was written (use --force to overwrite)',
          );
        }
      }
      mkdirSync(target, { recursive: true });
      for (const [name, text] of Object.entries(files)) writeFileSync(path.join(target, name), text);
      console.log(`created ${Object.keys(files).join(' and ')} in ${target}`);
      console.log(`next: cd ${path.relative(process.cwd(), target) || '.'} && npx evpub start`);
    });
}
