/**
 * `evpub start` tunes V8's garbage collector for its workload in its own process (no second
 * process: the pid the user started drains and exits 0 on SIGTERM), says so in its log, leaves
 * a flag the user gave node alone, and can be turned off.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniqueName } from '../helpers/services';
import { spawnCli } from './cli';

let dir: string;
let config: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-v8-'));
  config = path.join(dir, 'evpub.config.json');
  writeFileSync(
    config,
    JSON.stringify({
      brokers: { default: { url: `memory://${uniqueName('b')}` } },
      checkpoints: { store: 'memory' },
      datasources: { db: { connector: 'memory' } },
      models: { accounts: { dataSource: 'db' } },
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts `evpub start`, stops it with SIGTERM (exit 0), and returns its `v8` log entry. */
async function tuning(args: string[], options: { env?: Record<string, string>; nodeFlags?: string[] } = {}) {
  const cli = spawnCli(['start', '--config', config, ...args], {
    cwd: dir,
    env: { EVPUB_LOG_LEVEL: 'info', EVPUB_V8_TUNING: '', ...options.env },
    ...(options.nodeFlags ? { nodeFlags: options.nodeFlags } : {}),
  });
  await cli.waitForOutput('evpub started');
  cli.child.kill('SIGTERM');
  expect(await cli.exited).toBe(0);
  const line = cli
    .stdout()
    .split('\n')
    .find((l) => l.includes('"v8"'));
  expect(line).toBeDefined();
  return JSON.parse(line!) as { msg: string; v8: { flags: string[]; semiSpaceCapMb?: number; off?: string } };
}

describe('evpub start: V8 tuning', () => {
  it('sets the heap flags by default and caps the semi-space', async () => {
    const { v8, msg } = await tuning([]);
    expect(v8.flags).toEqual(['--no-allocation-site-pretenuring', '--heap-growing-percent=25']);
    expect(v8.semiSpaceCapMb).toBe(8);
    expect(msg).toContain('--heap-growing-percent=25');
  });

  it('leaves the flags the user gave node alone', async () => {
    const { v8 } = await tuning([], { nodeFlags: ['--heap-growing-percent=60', '--max-semi-space-size=4'] });
    expect(v8.flags).toEqual(['--no-allocation-site-pretenuring']);
    expect(v8.semiSpaceCapMb).toBeUndefined();
  });

  it('is off with EVPUB_V8_TUNING=off or --no-v8-tuning', async () => {
    expect((await tuning([], { env: { EVPUB_V8_TUNING: 'off' } })).v8).toEqual({
      flags: [],
      off: 'EVPUB_V8_TUNING',
    });
    expect((await tuning(['--no-v8-tuning'])).v8).toEqual({ flags: [], off: '--no-v8-tuning' });
  });
});
