/**
 * Runs the `evpub` command line as a real child process, from the TypeScript sources through
 * tsx (so the e2e tests exercise the code in the tree, not a stale build).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { waitFor } from '../helpers/wait';

export const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'src/cli/index.ts');
/** tsx's loader by absolute URL, so that the CLI runs from any working directory. */
const TSX = pathToFileURL(createRequire(path.join(ROOT, 'package.json')).resolve('tsx')).href;

export interface CliProcess {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal's name) when the process is gone. */
  exited: Promise<number | string>;
  /** Waits until stdout contains `text`; fails early (with the output) if the process exits. */
  waitForOutput(text: string, timeoutMs?: number): Promise<void>;
}

/** The built CLI, as `npm start` and the installed `evpub` bin run it (`npm run build` first). */
export const BUILT_CLI = path.join(ROOT, 'dist/cli/index.js');

export function spawnCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; built?: boolean; nodeFlags?: string[] } = {},
): CliProcess {
  const cli = options.built ? [BUILT_CLI, ...args] : ['--import', TSX, CLI, ...args];
  const argv = [...(options.nodeFlags ?? []), ...cli];
  const child = spawn(process.execPath, argv, {
    cwd: options.cwd ?? ROOT,
    // Port 0: tests run `evpub start` in parallel; they must not all bind the API's 7401.
    env: { ...process.env, EVPUB_HTTP_PORT: '0', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let gone = false;
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      gone = true;
      resolve(code ?? signal ?? -1);
    }),
  );
  return {
    child,
    pid: child.pid!,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitForOutput: async (text, timeoutMs = 30_000) => {
      await waitFor(
        () => {
          if (stdout.includes(text)) return true;
          if (gone)
            throw new Error(
              `evpub ${args.join(' ')} exited before printing "${text}":\n${stdout}\n${stderr}`,
            );
          return false;
        },
        `"${text}" from evpub ${args.join(' ')}`,
        timeoutMs,
      );
    },
  };
}

/** Kills `proc` with SIGKILL unless it is gone already; resolves when it is. */
export async function killCli(proc: CliProcess): Promise<void> {
  if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
  await proc.exited;
}
