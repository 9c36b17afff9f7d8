/**
 * The `evpub` command line, run as a real process (`node --import tsx src/cli/index.ts`).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, validateConfig } from '../../src/app/config';
import YAML from 'yaml';
import { waitFor } from '../helpers/wait';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'src/cli/index.ts');
/** tsx's loader by absolute URL, so that the CLI runs from any working directory. */
const TSX = pathToFileURL(createRequire(path.join(ROOT, 'package.json')).resolve('tsx')).href;

function evpub(args: string[], cwd = ROOT, env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, ['--import', TSX, CLI, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, EVPUB_HTTP_PORT: '0', ...env },
    timeout: 60_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const dirs: string[] = [];
function tmp(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-cli-'));
  dirs.push(dir);
  return dir;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('evpub init', () => {
  it('scaffolds a configuration that validates, and a README', () => {
    for (const connector of ['couchdb', 'memory']) {
      const dir = path.join(tmp(), 'app');
      const run = evpub(['init', dir, '--connector', connector]);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(existsSync(path.join(dir, 'README.md'))).toBe(true);
      const raw = readFileSync(path.join(dir, 'evpub.config.yaml'), 'utf8');
      const config = loadConfig({ dir, env: {} });
      expect(config.datasources.db?.connector).toBe(connector);
      expect(config.models.accounts?.dataSource).toBe('db');
      // Also valid as written, once the variables are substituted by hand.
      const parsed = YAML.parse(raw.replace(/\$\{\w+:-([^}]*)\}/g, '$1')) as unknown;
      expect(() => validateConfig(parsed)).not.toThrow();
    }
  });

  it('refuses to overwrite unless --force', () => {
    const dir = tmp();
    writeFileSync(path.join(dir, 'README.md'), 'mine');
    const run = evpub(['init', dir]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('README.md already exists; nothing was written (use --force to overwrite)');
    expect(run.stderr).not.toMatch(/\n\s+at /); // no stack
    expect(existsSync(path.join(dir, 'evpub.config.yaml'))).toBe(false);
    expect(evpub(['init', dir, '--force']).code).toBe(0);
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).not.toBe('mine');
  });
});

describe('evpub start', () => {
  it('exits 1 on a bad configuration, naming every path, before connecting', () => {
    const dir = tmp();
    writeFileSync(
      path.join(dir, 'evpub.config.yaml'),
      [
        'brokers:',
        '  default: { url: "mqtt://user:hunter2@127.0.0.1:1" }',
        'datasources:',
        '  db: { connector: couchdb, url: "http://127.0.0.1:1" }',
        'models:',
        '  accounts: { dataSource: db, envelope: xml, topic: "{table}" }',
      ].join('\n'),
    );
    const run = evpub(['start', '--dir', dir]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      'models.accounts.envelope: must be one of cloudevents, cloudevents-binary, legacy',
    );
    expect(run.stderr).toContain('models.accounts.topic: unknown placeholder {table}');
    expect(run.stderr).not.toContain('hunter2');
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout).toBe('');
  });

  it('exits 1 naming a missing environment variable, with --config', () => {
    const dir = tmp();
    const file = path.join(dir, 'conf.json');
    writeFileSync(
      file,
      JSON.stringify({
        datasources: { db: { connector: 'memory' } },
        models: {},
        brokers: { default: { url: '${EVPUB_TEST_UNSET_BROKER}' } },
      }),
    );
    const run = evpub(['start', '--config', file], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      'brokers.default.url: environment variable EVPUB_TEST_UNSET_BROKER is not set',
    );
  });

  it('exits 1 when there is no configuration, saying how to make one', () => {
    const run = evpub(['start'], tmp());
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('run `evpub init`');
  });

  it('runs with structured logs on stdout and stops gracefully on SIGTERM (exit 0)', async () => {
    const dir = tmp();
    writeFileSync(
      path.join(dir, 'evpub.config.json'),
      JSON.stringify({
        // The memory connector takes no password (an unknown setting is an error): the secret
        // that must not reach the logs is the broker URL's.
        brokers: { default: { url: 'memory://evpub:hunter2@local' } },
        checkpoints: { store: 'memory' },
        datasources: { db: { connector: 'memory' } },
        models: { accounts: { dataSource: 'db' } },
      }),
    );
    const child = spawn(process.execPath, ['--import', TSX, CLI, 'start'], {
      cwd: dir,
      env: { ...process.env, EVPUB_LOG_LEVEL: 'info', EVPUB_HTTP_PORT: '0' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(() => stdout.includes('evpub started'), 'the publisher to start', 30_000);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string });
    expect(lines.map((l) => l.msg)).toContain('configuration loaded');
    expect(lines.map((l) => l.msg)).toContain('evpub stopped');
    expect(stdout).not.toContain('hunter2');
  });
});
