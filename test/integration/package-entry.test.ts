/**
 * The built package as users load it: `evpub` and `evpub/pubsub`, with `require` (the seed's
 * code is CommonJS) and with `import`; `evpub/loopback` and `evpub/connectors/<name>`, whose
 * LoopBack packages are optional peers that nothing else may load. Runs against dist/ (`npm test` builds before vitest).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

function node(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

const CHECK = `[typeof Client, typeof createClient, typeof MqttAdapter, typeof KafkaAdapter, typeof evpub].join(' ')`;

describe('package entry points', () => {
  beforeAll(() => {
    if (!existsSync(path.join(ROOT, 'dist/pubsub/index.js'))) {
      throw new Error('dist/ is missing: run `npm run build` first (`npm test` does)');
    }
  });

  it('require("evpub/pubsub") and require("evpub") work from CommonJS', () => {
    const r = node([
      '-e',
      `const { Client, createClient, MqttAdapter, KafkaAdapter } = require('evpub/pubsub');
       const { evpub } = require('evpub');
       console.log(${CHECK});`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('function function function function function');
  });

  it('import { ... } from "evpub/pubsub" and "evpub" work from ESM', () => {
    const r = node([
      '--input-type=module',
      '-e',
      `import { Client, createClient, MqttAdapter, KafkaAdapter } from 'evpub/pubsub';
       import { evpub } from 'evpub';
       console.log(${CHECK});`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('function function function function function');
  });

  it('loading the client loads no broker driver until one is used', () => {
    const r = node([
      '-e',
      `require('evpub/pubsub');
       const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](mqtt|ioredis|amqplib|kafkajs|@nats-io)[\\\\/]/.test(f));
       console.log(loaded.length);`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0');
  });

  it('evpub and evpub/pubsub load no LoopBack package (they are optional peers)', () => {
    const r = node([
      '-e',
      `require('evpub'); require('evpub/pubsub');
       const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\/](@loopback|loopback|loopback-datasource-juggler)[\\/]/.test(f));
       console.log(loaded.length);`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0');
  });

  it('evpub/loopback and every evpub/connectors/<name> load from CommonJS', () => {
    const names = ['couchdb', 'postgres', 'mysql', 'poll', 'webhook', 'websocket', 'bridge', 'memory'];
    const r = node([
      '-e',
      `const { EvpubBindings } = require('evpub/loopback');
       const inits = ${JSON.stringify(names)}.map((n) => typeof require('evpub/connectors/' + n).initialize);
       console.log(typeof EvpubBindings.APP, inits.join(' '));`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`object ${names.map(() => 'function').join(' ')}`);
  });
});
