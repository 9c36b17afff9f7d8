/**
 * A private nats-server (with JetStream) for fault tests: its own free port and store dir, so
 * stopping it never disturbs the shared server on 4222. `stop()` ends the process (SIGTERM, and
 * waits for the exit); `start()` runs it again on the same port and store dir, so streams and
 * durable consumers survive the restart; `close()` stops it for good and removes its files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { freePort, isListening } from './services';
import { waitFor } from './wait';

/** The server binary: $NATS_SERVER, else Debian's, else whatever `nats-server` is on the PATH. */
export const NATS_SERVER =
  process.env.NATS_SERVER ?? (existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server');

export interface PrivateNatsOptions {
  /** Extra server arguments, e.g. `['--user', 'u', '--pass', 'p']`. */
  args?: string[];
  /** A configuration file's text (`authorization { ... }`), passed with `-c`. */
  config?: string;
  /** TLS required on the port (`--tls --tlscert --tlskey`); with `ca`, client certificates too (`--tlsverify`). */
  tls?: { cert: string; key: string; ca?: string };
  /** False: no JetStream (operator mode without a system account cannot run it). Default true. */
  jetstream?: boolean;
}

export async function privateNatsServer(options: PrivateNatsOptions = {}): Promise<PrivateBroker> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'evpub-nats-'));
  let proc: ChildProcess | undefined;
  let output = '';
  const config: string[] = [];
  if (options.config !== undefined) {
    const file = join(dir, 'nats.conf');
    await writeFile(file, options.config);
    config.push('-c', file);
  }

  const start = async (): Promise<void> => {
    if (proc) return;
    output = '';
    const args = [
      '-a',
      '127.0.0.1',
      '-p',
      String(port),
      ...(options.jetstream === false ? [] : ['-js', '-sd', dir]),
      ...config,
      ...(options.tls ? ['--tls', '--tlscert', options.tls.cert, '--tlskey', options.tls.key] : []),
      ...(options.tls?.ca ? ['--tlsverify', '--tlscacert', options.tls.ca] : []),
      ...(options.args ?? []),
    ];
    const child = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = child;
    let ready = false;
    const log = (d: Buffer): void => {
      output = (output + d.toString()).slice(-4000);
      ready ||= output.includes('Server is ready');
    };
    child.stdout?.on('data', log);
    child.stderr?.on('data', log);
    // Never outlive the test process, whatever happens to it.
    const kill = (): void => void child.kill('SIGKILL');
    process.once('exit', kill);
    child.once('exit', () => {
      process.off('exit', kill);
      if (proc === child) proc = undefined;
    });
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`nats-server exited: ${output}`);
      return isListening(port);
    }, `the private nats-server on port ${port}`);
    // JetStream is ready once the server says so in its log.
    await waitFor(() => ready, 'the private nats-server to be ready');
  };

  const stop = async (): Promise<void> => {
    const child = proc;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
  };

  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    start,
    stop,
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
