/**
 * `evpub/connectors/<name>` for every built-in connector, resolved by juggler itself from
 * `connector: 'evpub/connectors/<name>'` (loopback-datasource-juggler 7, `@loopback/repository`),
 * in a CommonJS child process on the BUILT package: each exports `initialize`, juggler accepts
 * the connector it sets, and every model of the datasource gets the seed's `start` / `stop`.
 * Without settings each connector says what is missing (a CONFIG_INVALID naming the key);
 * the memory connector needs none and streams through `Model.start`.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './cli';
import { ensureBuilt, evpubNodePath } from './seed-loopback';

const NAMES = ['couchdb', 'postgres', 'mysql', 'poll', 'webhook', 'websocket', 'bridge', 'memory'];

const SCRIPT = `
var juggler = require('@loopback/repository').juggler;
var EventEmitter = require('events').EventEmitter;
var names = ${JSON.stringify(NAMES)};
var out = {};
var pending = names.length;
names.forEach(function (name) {
  var ds = new juggler.DataSource('ds_' + name, { connector: 'evpub/connectors/' + name });
  var row = (out[name] = { initialize: typeof require('evpub/connectors/' + name).initialize });
  ds.on('error', function (err) { row.dsError = err.code + ' ' + err.message; });
  var M = ds.createModel('accounts', {}, {});
  row.connector = ds.connector && ds.connector.name;
  row.dao = [typeof M.start, typeof M.stop].join(' ');
  var emitter = new EventEmitter();
  emitter.on('eventMessage', function (model, msg) {
    row.message = [model, msg];
    ds.disconnect(function () { if (--pending === 0) console.log(JSON.stringify(out)); });
  });
  emitter.on('error', function () {});
  M.start(emitter, function (err) {
    if (err) {
      row.startError = err.code + ' ' + err.message;
      return ds.disconnect(function () { if (--pending === 0) console.log(JSON.stringify(out)); });
    }
    require('evpub/connectors/memory').memoryStore('ds_memory').write('ds_memory', 'accounts', 'create', 'a1', { name: 'James Bond' });
  });
});
`;

let nodePath: Awaited<ReturnType<typeof evpubNodePath>>;
beforeAll(async () => {
  ensureBuilt();
  nodePath = await evpubNodePath();
}, 200_000);
afterAll(async () => {
  await nodePath?.remove();
});

describe('evpub/connectors/<name> under juggler', () => {
  it('every built-in connector loads by name, exports initialize and gives models start/stop', () => {
    const r = spawnSync(process.execPath, ['-e', SCRIPT], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, NODE_PATH: nodePath.dir },
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, Record<string, unknown>>;
    for (const name of NAMES) {
      const row = out[name]!;
      expect(row.initialize, name).toBe('function');
      expect(row.dao, name).toBe('function function');
      if (name === 'memory') continue;
      // What is missing, naming the key: a datasource setting is juggler's datasource 'error'
      // and every start's error alike; a model setting (mysql: the table's database) start's.
      expect(row.startError, name).toMatch(
        /^EVPUB_CONFIG_INVALID (datasources\.ds_\w+|models\.accounts\.settings)\.\w+: /,
      );
      if (row.dsError !== undefined) expect(row.dsError, name).toBe(row.startError);
      else expect(row.startError, name).toMatch(/^EVPUB_CONFIG_INVALID models\./);
    }
    expect(out.memory).toMatchObject({
      connector: 'memory',
      message: ['accounts', { name: 'James Bond' }],
    });
    expect(out.memory!.startError).toBeUndefined();
  });
});
