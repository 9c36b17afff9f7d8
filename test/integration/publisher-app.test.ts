/**
 * App behaviours that need a connector other than `memory` (registered in a registry made by
 * the test), or a process of their own (signals).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import type {
  ChangeSink,
  ConnectorHealth,
  EventConnector,
  StartRequest,
} from '../../src/connectors/contract';
import * as memoryModule from '../../src/connectors/memory';
import { ConnectorRegistry } from '../../src/connectors/registry';
import type { ChangeEvent } from '../../src/events/change-event';
import { uniqueName } from '../helpers/services';
import { quietLogger, statusLog, subscriber, tempDir } from '../helpers/publisher';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** A connector without positions that pushes what the test hands it and can fail a model. */
class ScriptedConnector implements EventConnector {
  readonly name = 'scripted';
  readonly resumable = false;
  sink: ChangeSink | undefined;
  from: unknown[] = [];
  async start({ models, sink }: StartRequest): Promise<void> {
    this.sink = sink;
    this.from = models.map((m) => m.from);
  }
  async stop(): Promise<void> {}
  health(): ConnectorHealth {
    return { state: 'streaming' };
  }
  emit(model: string, key: string, after: ChangeEvent['after']): boolean {
    return this.sink!.push({
      id: uniqueName('e'),
      datasource: 'ext',
      model,
      op: 'create',
      key,
      after,
      position: null,
      sourceTime: new Date().toISOString(),
    });
  }
}

describe('app with a registered connector', () => {
  it('a connector without positions starts "now" with a warning; a failed feed stops alone; bad events are dead-lettered', async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const scripted = new ScriptedConnector();
    const registry = new ConnectorRegistry().register('memory', memoryModule).register('scripted', {
      initialize(ds) {
        ds.connector = scripted;
      },
    });
    const app = evpub({
      logger: quietLogger(),
      registry,
      brokers: { default: broker },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    const log = statusLog();
    app.on('status', log.listener);
    app.dataSource('ext', { connector: 'scripted' });
    app.model('a', { dataSource: 'ext', from: 'beginning', topic: '{model}/{key}' });
    app.model('b', { dataSource: 'ext', topic: '{model}/{key}' });
    await app.start();
    expect(scripted.from).toEqual(['now', 'now']);
    expect(log.events.filter((e) => e.type === 'warning')).toHaveLength(1);

    scripted.emit('a', '1', { v: 1 });
    const cyclic: Record<string, unknown> = { v: 2 };
    cyclic.self = cyclic;
    scripted.emit('a', '2', cyclic); // JSON cannot carry a cycle: dead-lettered
    scripted.emit('a', 'x'.repeat(70_000), { v: 3 }); // topic too long: dead-lettered
    scripted.emit('b', '1', { v: 1 });
    scripted.sink!.fail('b', new Error('slot dropped'));
    scripted.emit('b', '2', { v: 2 }); // ignored: feed b failed
    scripted.emit('a', '4', { v: 4 });
    await waitFor(() => sub.got.length === 5, 'five messages');
    expect(sub.got.map((m) => m.topic)).toEqual([
      'a/1',
      'evpub/dead-letter',
      'evpub/dead-letter',
      'b/1',
      'a/4',
    ]);
    expect(sub.got[1]!.json).toMatchObject({ code: 'EVPUB_PUBLISH_FAILED', event: { key: '2' } });
    expect(sub.got[2]!.json).toMatchObject({ code: 'EVPUB_INVALID_TOPIC' });
    expect(log.events).toContainEqual({
      type: 'feed-failed',
      feed: 'ext/b',
      error: { code: 'ERROR', message: 'slot dropped' },
    });
    expect(app.status().feeds['ext/b']).toMatchObject({ failed: 'slot dropped', published: 1 });
    expect(app.status().feeds['ext/a']).toMatchObject({ published: 2, deadLettered: 2 });
  });

  it('a start that fails undoes itself and reports the connector error', async () => {
    const registry = new ConnectorRegistry().register('broken', {
      initialize(ds) {
        ds.connector = {
          name: 'broken',
          resumable: true,
          start: () => Promise.reject(new Error('cannot reach the source')),
          stop: async () => undefined,
          health: () => ({ state: 'failed' }),
        } satisfies EventConnector;
      },
    });
    const app = evpub({
      logger: quietLogger(),
      registry,
      brokers: { default: 'memory://x' },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('db', { connector: 'broken' });
    app.model('m', { dataSource: 'db' });
    await expect(app.start()).rejects.toThrow('cannot reach the source');
    expect(app.state).toBe('idle');
    expect(app.status().brokers).toEqual({});
  });
});

describe('signals', () => {
  it('SIGTERM stops gracefully: everything published is committed, exit code 0', async () => {
    const tmp = await tempDir();
    cleanups.push(() => tmp.remove());
    const root = path.resolve(__dirname, '../..');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(root, 'test/helpers/signal-app.ts'), tmp.dir],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(() => out.includes('ready') || child.exitCode !== null, 'the child app to be ready');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(err).toBe('');
    expect(await new FileCheckpointStore({ path: tmp.dir }).load('local/accounts')).toBe('200');
  });
});
