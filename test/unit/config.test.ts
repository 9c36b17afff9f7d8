import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigFrom, redactConfig, validateConfig } from '../../src/app/config';
import { ErrorCode, EvpubError } from '../../src/errors';

const SEED_APP = path.resolve(__dirname, '../fixtures/seed-app');

function base(): Record<string, unknown> {
  return {
    brokers: { default: { url: 'mqtt://localhost:1883' } },
    datasources: { db: { connector: 'couchdb', url: 'http://admin:hunter2@localhost:5984' } },
    models: { accounts: { dataSource: 'db' } },
  };
}

/** The CONFIG_INVALID error `fn` throws. */
function configError(fn: () => unknown): EvpubError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
    return err as EvpubError;
  }
  throw new Error('expected a CONFIG_INVALID error');
}

const dirs: string[] = [];
function tmp(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-config-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('validateConfig', () => {
  it('applies the defaults and freezes the result', () => {
    const config = validateConfig({ datasources: { db: { connector: 'memory' } }, models: {} });
    expect(config.brokers).toEqual({});
    expect(config.publisher).toEqual({});
    expect(config.checkpoints).toEqual({ store: 'file', path: '.evpub/checkpoints' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.datasources.db)).toBe(true);
    expect(() => {
      (config.models as Record<string, unknown>).x = {};
    }).toThrow();
  });

  it('accepts a full configuration and leaves the input untouched', () => {
    const input = {
      ...base(),
      brokers: {
        default: { url: 'mqtt://localhost:1883' },
        events: { url: 'nats://localhost:4222', options: { nats: { jetstream: true } } },
      },
      checkpoints: { store: 'redis', url: 'redis://localhost:6379', prefix: 'cp:' },
      models: {
        accounts: {
          dataSource: 'db',
          broker: 'events',
          topic: 'cdc/{datasource}/{model}/{op}/{key}',
          envelope: 'cloudevents-binary',
          include: ['name'],
          ops: ['create', 'delete'],
          from: 'beginning',
          resetCheckpoint: false,
          settings: { database: 'accounts-v2' },
        },
        orders: { dataSource: 'db', broker: 'amqp://guest:guest@localhost:5672', envelope: 'legacy' },
      },
      publisher: { maxInFlight: 100, deadLetterTopic: 'evpub/dlq', maxEventBytes: 65536 },
    };
    const copy = JSON.parse(JSON.stringify(input)) as unknown;
    const config = validateConfig(input);
    expect(config.models.accounts?.ops).toEqual(['create', 'delete']);
    expect(config.checkpoints).toEqual({ store: 'redis', url: 'redis://localhost:6379', prefix: 'cp:' });
    expect(input).toEqual(copy);
  });

  it('names an unknown key with what is allowed, at every level', () => {
    const input = base();
    input.modles = {};
    (input.brokers as Record<string, Record<string, unknown>>).default!.uri = 'x';
    (input.models as Record<string, Record<string, unknown>>).accounts!.envelop = 'legacy';
    const err = configError(() => validateConfig(input));
    expect(err.message).toContain(
      'config: unknown key "modles" (did you mean "models"?); allowed: brokers, checkpoints, datasources, models, publisher',
    );
    expect(err.message).toContain(
      'brokers.default: unknown key "uri" (did you mean "url"?); allowed: url, options',
    );
    expect(err.message).toContain(
      'models.accounts: unknown key "envelop" (did you mean "envelope"?); allowed: dataSource, broker, topic',
    );
    expect(err.message).toContain('(3 problems)');
    expect(err.context.problems).toHaveLength(3);
  });

  it('lets a datasource carry its connector settings but requires connector', () => {
    expect(() =>
      validateConfig({ ...base(), datasources: { db: { connector: 'couchdb', anything: { a: 1 } } } }),
    ).not.toThrow();
    const err = configError(() =>
      validateConfig({ ...base(), datasources: { db: { conector: 'couchdb' } } }),
    );
    expect(err.message).toContain('datasources.db.connector: missing');
  });

  it('names a missing broker URL and an unparseable one', () => {
    const err = configError(() =>
      validateConfig({ ...base(), brokers: { default: {}, other: { url: 'localhost 1883' } } }),
    );
    expect(err.message).toContain(
      'brokers.default.url: missing; a URL like mqtt://localhost:1883 is required',
    );
    expect(err.message).toContain('brokers.other.url: must be a URL like mqtt://localhost:1883');
  });

  it('names an unknown adapter scheme, in brokers and in a model', () => {
    const input = base();
    input.brokers = { default: { url: 'mqtx://localhost' } };
    (input.models as Record<string, Record<string, unknown>>).accounts!.broker = 'zmq://localhost';
    const err = configError(() => validateConfig(input));
    expect(err.message).toContain(
      'brokers.default.url: unknown broker URL scheme "mqtx:"; use one of memory://, mqtt://',
    );
    expect(err.message).toContain('models.accounts.broker: unknown broker URL scheme "zmq:"');
    expect(err.message).toContain('kafka://');
  });

  it('names a model whose datasource or broker does not exist', () => {
    const err = configError(() =>
      validateConfig({
        ...base(),
        models: { a: { dataSource: 'dbb' }, b: { dataSource: 'db', broker: 'main' } },
      }),
    );
    expect(err.message).toContain(
      'models.a.dataSource: unknown datasource "dbb" (did you mean "db"?); datasources are: db',
    );
    expect(err.message).toContain(
      'models.b.broker: unknown broker "main"; brokers are: default, or give a URL',
    );
  });

  it('needs a default broker when a model names none', () => {
    const err = configError(() => validateConfig({ ...base(), brokers: { main: { url: 'memory://' } } }));
    expect(err.message).toContain('models.accounts.broker: missing, and there is no broker named "default"');
  });

  it('names an unknown connector, the built-ins and the package to install', () => {
    const err = configError(() =>
      validateConfig({ ...base(), datasources: { db: { connector: 'cloudantevents' } } }),
    );
    expect(err.message).toContain('datasources.db.connector: unknown connector "cloudantevents"');
    expect(err.message).toContain('built-in connectors are memory, couchdb, cloudant');
    expect(err.message).toContain('`npm install cloudantevents`');
    expect(err.message).toContain('loopback-connector-cloudantevents');
  });

  it('accepts an npm connector installed in the application directory, by name or LoopBack prefix', () => {
    for (const connector of ['loopback-connector-testevents', 'testevents']) {
      const input = { ...base(), datasources: { db: { connector } } };
      expect(() => validateConfig(input, { cwd: SEED_APP })).not.toThrow();
      expect(() => validateConfig(input, { cwd: tmpdir() })).toThrow(
        /datasources\.db\.connector: unknown connector/,
      );
    }
  });

  it('checks topic templates, operations, envelopes and from', () => {
    const err = configError(() =>
      validateConfig({
        ...base(),
        models: {
          a: { dataSource: 'db', topic: 'cdc/{table}/{op}' },
          b: { dataSource: 'db', topic: 'cdc/{model' },
          c: {
            dataSource: 'db',
            topic: 'cdc/#/{op}',
            ops: ['create', 'upsert'],
            envelope: 'avro',
            from: 'start',
          },
        },
      }),
    );
    expect(err.message).toContain('models.a.topic: unknown placeholder {table}');
    expect(err.message).toContain('{datasource}, {model}, {op}, {key}');
    expect(err.message).toMatch(/models\.b\.topic: unbalanced braces/);
    expect(err.message).toMatch(/models\.c\.topic: .*wildcard/);
    expect(err.message).toContain(
      'models.c.ops.1: must be one of create, update, delete, snapshot, truncate',
    );
    expect(err.message).toContain(
      'models.c.envelope: must be one of cloudevents, cloudevents-binary, legacy',
    );
    expect(err.message).toContain('models.c.from: must be one of beginning, now');
  });

  it('checks the checkpoint store and its URL', () => {
    expect(
      configError(() => validateConfig({ ...base(), checkpoints: { store: 'mongo' } })).message,
    ).toContain('checkpoints.store: must be one of file, redis, postgres, memory');
    expect(
      configError(() => validateConfig({ ...base(), checkpoints: { store: 'redis' } })).message,
    ).toContain('checkpoints.url: missing; a URL like redis://localhost:6379 is required');
    expect(
      configError(() => validateConfig({ ...base(), checkpoints: { store: 'file', table: 'x' } })).message,
    ).toContain('checkpoints: unknown key "table"; allowed: store, path');
    expect(
      configError(() =>
        validateConfig({ ...base(), checkpoints: { store: 'postgres', url: 'mysql://root@h/db' } }),
      ).message,
    ).toContain(
      'checkpoints.url: unknown PostgreSQL URL scheme "mysql:"; use one of postgres://, postgresql://',
    );
  });

  it('checks publisher settings', () => {
    const err = configError(() =>
      validateConfig({ ...base(), publisher: { maxInFlight: 0, deadLetterTopic: 'dlq/#', window: 3 } }),
    );
    expect(err.message).toContain('publisher.maxInFlight: must be at least 1');
    expect(err.message).toMatch(/publisher\.deadLetterTopic: Invalid topic/);
    expect(err.message).toContain('publisher: unknown key "window"');
  });

  it('never puts secrets in messages', () => {
    const secret = 'hunter2';
    const err = configError(() =>
      validateConfig({
        brokers: {
          default: { url: `zmq://user:${secret}@localhost` },
          b: { url: `mqtt://user:${secret}@localhost:99999` },
          c: { url: `not a url ${secret}` },
        },
        checkpoints: { store: 'postgres', url: `mysql://root:${secret}@localhost/db?password=${secret}` },
        datasources: { db: { connector: 'nope', password: secret, token: secret, apiKey: secret } },
        models: { accounts: { dataSource: 'db', broker: `foo://:${secret}@host`, settings: { secret } } },
      }),
    );
    expect(err.message).not.toContain(secret);
    expect(JSON.stringify(err.context)).not.toContain(secret);
    expect(err.message).toContain('brokers.default.url');
    expect(err.message).toContain('brokers.b.url');
    expect(err.message).toContain('models.accounts.broker');
  });

  it('redactConfig masks secret keys and URL credentials for logs', () => {
    const safe = redactConfig({
      brokers: { default: { url: 'amqp://guest:hunter2@localhost' } },
      datasources: {
        db: { connector: 'couchdb', password: 'hunter2', apiKey: 'hunter2', url: 'http://h/?token=hunter2' },
      },
    });
    expect(JSON.stringify(safe)).not.toContain('hunter2');
    expect(safe.datasources.db.connector).toBe('couchdb');
  });

  it('rejects what is not an object', () => {
    expect(configError(() => validateConfig('datasources: {}')).message).toContain(
      'config: must be an object',
    );
  });
});

describe('loadConfig', () => {
  const yaml = `
brokers:
  default:
    url: \${BROKER_URL:-mqtt://localhost:1883}
datasources:
  db:
    connector: couchdb
    url: http://admin:\${COUCH_PASSWORD}@localhost:5984
models:
  accounts:
    dataSource: db
    topic: /v1/subutest
    envelope: legacy
publisher:
  deadLetterTopic: $\${literal}/dlq
`;

  it('reads evpub.config.yaml with ${VAR} and ${VAR:-default}', () => {
    const dir = tmp({ 'evpub.config.yaml': yaml });
    const config = loadConfig({ dir, env: { COUCH_PASSWORD: 'pw' } });
    expect(config.brokers.default?.url).toBe('mqtt://localhost:1883');
    expect(config.datasources.db?.url).toBe('http://admin:pw@localhost:5984');
    expect(config.models.accounts?.envelope).toBe('legacy');
    expect(config.publisher.deadLetterTopic).toBe('${literal}/dlq');
    expect(config.checkpoints).toEqual({ store: 'file', path: path.join(dir, '.evpub/checkpoints') });
    const other = loadConfig({ dir, env: { COUCH_PASSWORD: 'pw', BROKER_URL: 'nats://localhost:4222' } });
    expect(other.brokers.default?.url).toBe('nats://localhost:4222');
  });

  it('names a missing environment variable and where it is used', () => {
    const dir = tmp({ 'evpub.config.yml': yaml });
    const err = configError(() => loadConfig({ dir, env: {} }));
    expect(err.message).toContain(
      'datasources.db.url: environment variable COUCH_PASSWORD is not set (write ${COUCH_PASSWORD:-default} to give a default)',
    );
    expect(err.message).toContain('evpub.config.yml');
  });

  it('reports a malformed variable reference', () => {
    const dir = tmp({
      'evpub.config.json': JSON.stringify({ ...base(), models: { a: { dataSource: '${1BAD}' } } }),
    });
    expect(configError(() => loadConfig({ dir, env: {} })).message).toContain(
      'models.a.dataSource: malformed variable reference "${1BAD}"',
    );
  });

  it('reads evpub.config.json, and a file given by path', () => {
    const dir = tmp({
      'evpub.config.json': JSON.stringify({ ...base(), checkpoints: { store: 'file', path: 'state/cp' } }),
      'conf/other.yaml': 'datasources: { db: { connector: memory } }\nmodels: {}\n',
    });
    const config = loadConfig({ dir });
    expect(config.models.accounts?.dataSource).toBe('db');
    expect(config.checkpoints).toEqual({ store: 'file', path: path.join(dir, 'state/cp') });
    const loaded = loadConfigFrom({ file: path.join(dir, 'conf/other.yaml') });
    expect(loaded.config.datasources.db?.connector).toBe('memory');
    expect(loaded.dir).toBe(path.join(dir, 'conf'));
  });

  it('names the file and line of a YAML or JSON syntax error', () => {
    const dir = tmp({ 'bad.yaml': 'models:\n  a: [\n', 'bad.json': '{ "models": ' });
    expect(configError(() => loadConfig({ file: path.join(dir, 'bad.yaml') })).message).toMatch(
      /bad\.yaml:\d+:\d+: not valid YAML/,
    );
    expect(configError(() => loadConfig({ file: path.join(dir, 'bad.json') })).message).toMatch(
      /bad\.json: not valid JSON/,
    );
  });

  it('names the file in validation errors', () => {
    const dir = tmp({
      'evpub.config.yaml':
        'datasources: { db: { connector: memory } }\nmodels: { a: { dataSource: db, envelope: xml } }\nbrokers: { default: { url: "memory://" } }\n',
    });
    const err = configError(() => loadConfig({ dir }));
    expect(err.message).toMatch(
      /invalid evpub configuration in .*evpub\.config\.yaml: models\.a\.envelope: must be one of/,
    );
  });

  it('refuses two configuration files, and says how to start when there is none', () => {
    const two = tmp({ 'evpub.config.json': '{}', 'evpub.config.yaml': '{}' });
    expect(configError(() => loadConfig({ dir: two })).message).toContain('keep only one configuration file');
    const none = tmp({ 'README.md': '' });
    expect(configError(() => loadConfig({ dir: none })).message).toContain('run `evpub init`');
    expect(configError(() => loadConfig({ file: path.join(none, 'missing.yaml') })).message).toContain(
      'no such file',
    );
  });

  describe("LoopBack's layout", () => {
    const datasources = JSON.stringify({
      db: { name: 'db', connector: 'couchdb', url: '${COUCH_URL:-http://localhost:5984}' },
    });
    const modelConfig = JSON.stringify({
      _meta: { sources: ['loopback/common/models'] },
      User: { dataSource: null },
      accounts: { dataSource: 'db', public: true, options: { topic: '/v1/subutest', envelope: 'legacy' } },
    });
    const evpubJson = JSON.stringify({ brokers: { default: { url: 'mqtt://localhost:1883' } } });

    it('maps datasources.json + model-config.json + evpub.json', () => {
      const dir = tmp({
        'datasources.json': datasources,
        'model-config.json': modelConfig,
        'evpub.json': evpubJson,
      });
      const loaded = loadConfigFrom({ dir, env: {} });
      expect(loaded.layout).toBe('loopback');
      expect(loaded.config.datasources.db).toEqual({
        name: 'db',
        connector: 'couchdb',
        url: 'http://localhost:5984',
      });
      expect(loaded.config.models).toEqual({
        accounts: { dataSource: 'db', topic: '/v1/subutest', envelope: 'legacy' },
      });
      expect(loaded.config.brokers.default?.url).toBe('mqtt://localhost:1883');
    });

    it("finds server/ and reads brokers from config.json's evpub key", () => {
      const dir = tmp({
        'server/datasources.json': datasources,
        'server/model-config.json': modelConfig,
        'server/config.json': JSON.stringify({
          restApiRoot: '/api',
          evpub: { brokers: { default: { url: 'memory://' } } },
        }),
      });
      const loaded = loadConfigFrom({ dir, env: {} });
      expect(loaded.dir).toBe(path.join(dir, 'server'));
      expect(loaded.config.brokers.default?.url).toBe('memory://');
      expect(loadConfig({ file: path.join(dir, 'server/model-config.json') }).models.accounts?.topic).toBe(
        '/v1/subutest',
      );
    });

    it('names problems where the user wrote them', () => {
      const dir = tmp({
        'datasources.json': JSON.stringify({ db: { connector: 'nosuch' } }),
        'model-config.json': JSON.stringify({
          accounts: { dataSource: 'db', options: { envelope: 'xml' }, acls: [] },
          orders: { dataSource: 'dbb' },
        }),
        'evpub.json': JSON.stringify({ brokers: { default: { url: 'mqtt://localhost' } }, checkpoint: {} }),
      });
      const first = configError(() => loadConfig({ dir }));
      expect(first.message).toContain(
        'model-config.json: accounts: unknown key "acls"; allowed: dataSource, public, options',
      );
      writeFileSync(
        path.join(dir, 'model-config.json'),
        JSON.stringify({
          accounts: { dataSource: 'db', options: { envelope: 'xml' } },
          orders: { dataSource: 'dbb' },
        }),
      );
      const err = configError(() => loadConfig({ dir }));
      expect(err.message).toContain(
        'model-config.json: accounts.options.envelope: must be one of cloudevents',
      );
      expect(err.message).toContain('model-config.json: orders.dataSource: unknown datasource "dbb"');
      expect(err.message).toContain('datasources.json: db.connector: unknown connector "nosuch"');
      expect(err.message).toContain('evpub.json: unknown key "checkpoint" (did you mean "checkpoints"?)');
    });

    it('needs datasources.json next to model-config.json', () => {
      const dir = tmp({ 'model-config.json': modelConfig });
      expect(configError(() => loadConfig({ dir })).message).toContain('datasources.json is missing');
    });
  });
});
