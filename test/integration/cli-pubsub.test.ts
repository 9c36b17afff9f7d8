/**
 * `evpub pub` and `evpub sub` as real processes against the real brokers: mosquitto_pub and
 * mosquitto_sub for every broker.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireService, uniqueName } from '../helpers/services';
import { deferred } from '../helpers/wait';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'src/cli/index.ts');
const TSX = pathToFileURL(createRequire(path.join(ROOT, 'package.json')).resolve('tsx')).href;

function pub(args: string[], input?: string): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', TSX, CLI, 'pub', ...args], {
    encoding: 'utf8',
    input,
    timeout: 30_000,
  });
  return { code: r.status, stderr: r.stderr };
}

/** Starts `evpub sub`; resolves `subscribed` once it says so; `done` with its stdout and exit code. */
function sub(args: string[]) {
  const child = spawn(process.execPath, ['--import', TSX, CLI, 'sub', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const subscribed = deferred();
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.includes('subscribed to')) subscribed.resolve();
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code) => resolve({ code, stdout, stderr })),
  );
  void done.then((r) => subscribed.reject(new Error(`evpub sub exited early (${r.code}): ${r.stderr}`)));
  return { subscribed: subscribed.promise, done, kill: () => child.kill('SIGKILL') };
}

describe('evpub pub / evpub sub', () => {
  let mqtt: string;
  let redis: string;
  beforeAll(async () => {
    mqtt = await requireService('mosquitto');
    redis = await requireService('redis');
  });

  it('sub --json --count prints what pub sends over MQTT 5, headers and key included, then exits 0', async () => {
    const base = `evpub/cli/${uniqueName()}`;
    const s = sub([mqtt, `${base}/#`, '--json', '--count', '2']);
    await s.subscribed;
    expect(pub([mqtt, `${base}/a`, '{"n":1}', '-H', 'tenant=acme', '-k', 'k1']).code).toBe(0);
    expect(pub([mqtt, `${base}/b/c`, '-'], 'from stdin').code).toBe(0);
    const { code, stdout } = await s.done;
    expect(code).toBe(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { topic: `${base}/a`, payload: '{"n":1}', headers: { tenant: 'acme' }, key: 'k1' },
      { topic: `${base}/b/c`, payload: 'from stdin' },
    ]);
  });

  it('pub --lines sends each line as a message; sub -v prints topic and payload (Redis)', async () => {
    const topic = `evpub/cli/${uniqueName()}`;
    const s = sub([redis, topic, '-v', '-C', '3']);
    await s.subscribed;
    expect(pub([redis, topic, '-', '--lines'], 'one\ntwo\nthree\n').code).toBe(0);
    const { code, stdout } = await s.done;
    expect(code).toBe(0);
    expect(stdout).toBe(`${topic} one\n${topic} two\n${topic} three\n`);
  });

  it('bad input exits 1 with one clear line', () => {
    const scheme = pub(['nope://127.0.0.1:1', 'a', 'x']);
    expect(scheme.code).toBe(1);
    expect(scheme.stderr).toContain('unknown broker URL scheme "nope:"');
    expect(scheme.stderr).not.toContain('    at ');
    const topic = pub([mqtt, 'a/+/b', 'x']);
    expect(topic.code).toBe(1);
    expect(topic.stderr).toContain('only allowed in subscription patterns');
    const qos = pub([mqtt, 'a', 'x', '-q', '7']);
    expect(qos.code).toBe(1);
    expect(qos.stderr).toContain('--qos: must be 0, 1 or 2');
  });
});
