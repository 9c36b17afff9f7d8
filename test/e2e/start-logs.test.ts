/**
 * `evpub start`'s logs: JSON lines when stdout is not a terminal (as under a supervisor or in a
 * container), readable lines with `--pretty`; credentials redacted either way.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniqueName } from '../helpers/services';
import { spawnCli } from './cli';

let dir: string;
let config: string;
const SECRET = `pw${uniqueName('s').slice(2)}`;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-logs-'));
  config = path.join(dir, 'evpub.config.json');
  writeFileSync(
    config,
    JSON.stringify({
      brokers: { default: { url: `memory://evpub:${SECRET}@${uniqueName('b')}` } },
      checkpoints: { store: 'memory' },
      datasources: { db: { connector: 'memory' } },
      models: { accounts: { dataSource: 'db' } },
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function startAndStop(args: string[]): Promise<string> {
  const cli = spawnCli(['start', '--config', config, ...args], {
    cwd: dir,
    env: { EVPUB_LOG_LEVEL: 'info' },
  });
  await cli.waitForOutput('evpub started');
  cli.child.kill('SIGTERM');
  expect(await cli.exited).toBe(0);
  return cli.stdout();
}

describe('evpub start logs', () => {
  it('are JSON lines when stdout is not a terminal', async () => {
    const out = await startAndStop([]);
    const lines = out.split('\n').filter((l) => l.trim() !== '');
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    expect(out).not.toContain(SECRET);
  });

  it('are readable lines with --pretty', async () => {
    const out = await startAndStop(['--pretty']);
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: evpub started/m);
    expect(out.split('\n').some((l) => l.startsWith('{'))).toBe(false);
    expect(out).not.toContain(SECRET);
  });
});
