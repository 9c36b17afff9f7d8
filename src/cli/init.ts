/**
 * `evpub init [dir]`: scaffold a project: `evpub.config.yaml` with a sample datasource and
 * model, and a README stub. Refuses to overwrite an existing file unless `--force`.
 *
 *   evpub init                              # a CouchDB datasource
 *   evpub init my-app --connector postgres  # postgres, mysql/mariadb, webhook, poll, websocket, bridge
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

/** Per connector: the datasource block and the sample model's settings (YAML, indented). */
const TEMPLATES: Record<string, { datasource: string; model: string }> = {
  memory: {
    datasource: `  # The memory connector: an in-process store, for trying evpub without a database.
  db:
    connector: memory`,
    model: '',
  },
  couchdb: {
    datasource: `  # CouchDB (or Cloudant): each model is a database, read from its _changes feed.
  db:
    connector: couchdb
    url: \${COUCHDB_URL:-http://localhost:5984}`,
    model: '',
  },
  postgres: {
    datasource: `  # PostgreSQL logical replication (pgoutput): needs wal_level=logical and a role with
  # REPLICATION that owns the tables; \`evpub check\` says what is missing. The slot and the
  # publication are created at the first start.
  db:
    connector: postgres
    url: \${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    # snapshot: initial   # publish the existing rows once, then stream`,
    model: `    settings:
      table: public.accounts`,
  },
  mysql: {
    datasource: `  # MySQL/MariaDB binlog (row-based): needs log_bin, binlog_format=ROW, binlog_row_image=FULL
  # and REPLICATION SLAVE + REPLICATION CLIENT grants; \`evpub check\` says what is missing.
  db:
    connector: mysql
    url: \${MYSQL_URL:-mysql://root@127.0.0.1:3306/app}
    # snapshot: initial   # publish the existing rows once, beside the stream`,
    model: `    settings:
      table: accounts`,
  },
  webhook: {
    datasource: `  # Webhooks: the sender POSTs each change to http://<host>:8080/hooks/<model>.
  db:
    connector: webhook
    port: 8080
    host: 127.0.0.1
    basePath: /hooks
    # auth: { scheme: standard-webhooks, secret: '\${WEBHOOK_SECRET}' }  # required on a host other than loopback`,
    model: `    settings:
      keyPath: id`,
  },
  poll: {
    datasource: `  # SQL polling: rows whose cursor column moved since the last poll (no replication needed).
  db:
    connector: poll
    url: \${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    interval: 1000`,
    model: `    settings:
      table: public.accounts
      keyColumn: id
      cursorColumn: updated_at`,
  },
  websocket: {
    datasource: `  # A websocket stream of change messages (JSON), one connection per model.
  db:
    connector: websocket
    url: \${STREAM_URL:-ws://localhost:8081/stream}
    keyPath: id`,
    model: '',
  },
  bridge: {
    datasource: `  # A bridge from another broker: each model subscribes to its topics there.
  db:
    connector: bridge
    url: \${SOURCE_BROKER_URL:-redis://127.0.0.1:6379}
    options:
      redis:
        mode: streams`,
    model: `    settings:
      topics: source/accounts
      durable: evpub-bridge
      keyPath: id`,
  },
};
TEMPLATES.mariadb = TEMPLATES.mysql!;

/** The connectors `evpub init --connector` has a template for. */
export const INIT_CONNECTORS = Object.keys(TEMPLATES);

export function configTemplate(connector: string): string {
  const template = TEMPLATES[connector];
  if (!template) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `--connector: must be one of ${INIT_CONNECTORS.join(', ')}`,
    );
  }
  const datasource = template.datasource.replace(/connector: mysql$/m, `connector: ${connector}`);
  return `# evpub configuration: see docs/configuration.md for every key.
# \${VAR} and \${VAR:-default} are replaced from the environment.
# \`evpub check\` tells what the source and the broker still need; \`evpub start\` runs it.

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
${template.model ? `${template.model}\n` : ''}
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
    .option('--connector <name>', `sample datasource connector: ${INIT_CONNECTORS.join(', ')}`, 'couchdb')
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
