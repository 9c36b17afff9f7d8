/**
 * Helpers for the seed's server.js on real LoopBack (test/fixtures/seed-lb3, seed-lb4): the
 * built package, a NODE_PATH through which juggler finds `evpub/connectors/*` as it would in an
 * application's node_modules, and line-collecting child processes (the server, mosquitto_sub).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitFor } from '../helpers/wait';
import { ROOT } from './cli';

export const SEED_TOPIC = '/v1/subutest';

/** Builds dist/ when the juggler adapter is not in it (`npm run build`, as a user would). */
export function ensureBuilt(): void {
  if (existsSync(path.join(ROOT, 'dist/connectors/kit/juggler-dao.js'))) return;
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore', timeout: 180_000 });
}

/**
 * A directory holding `evpub` (a link to this repository), for NODE_PATH: juggler requires the
 * connector from its own directory, where an application would have evpub installed.
 */
export async function evpubNodePath(): Promise<{ dir: string; remove(): Promise<void> }> {
  const base = await mkdtemp(path.join(tmpdir(), 'evpub-nodepath-'));
  const dir = path.join(base, 'node_modules');
  await mkdir(dir);
  await symlink(ROOT, path.join(dir, 'evpub'), 'dir');
  return { dir, remove: () => rm(base, { recursive: true, force: true }) };
}

export interface Lines {
  proc: ChildProcess;
  lines: string[];
  err(): string;
  exited: Promise<number | string>;
}

export function collectLines(command: string, args: string[], env: Record<string, string> = {}): Lines {
  const proc = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | string>((resolve) =>
    proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  return { proc, lines, err: () => stderr, exited };
}

/** `mosquitto_sub -d` on `topic`, resolved once its SUBACK came back (see seed-mosquitto.test.ts). */
export async function mosquittoSub(topic: string): Promise<Lines> {
  const args = ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', '1883', '-q', '1', '-t', topic, '-d'];
  const sub = collectLines('stdbuf', args);
  await waitFor(() => sub.lines.some((l) => l.startsWith('Subscribed')), `mosquitto_sub on ${topic}`);
  return sub;
}

/** Waits until the server printed `line`; fails early with its output if it exits. */
export async function waitForLine(server: Lines, line: string, what: string): Promise<void> {
  await waitFor(() => {
    if (server.proc.exitCode !== null) {
      throw new Error(
        `the server exited (${server.proc.exitCode}): ${server.lines.join('\n')}\n${server.err()}`,
      );
    }
    return server.lines.includes(line);
  }, what);
}
