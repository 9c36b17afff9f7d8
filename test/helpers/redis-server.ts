/**
 * A private `redis-server` for fault tests: its own free port and temp dir, never the shared
 * service. Append-only file with fsync on every write, so streams (and consumer groups) survive
 * a stop/start: what Redis acknowledged is on disk. `stop()` sends SIGTERM and waits for the
 * process to exit; `start()` runs it again on the same port and directory.
 *
 * TLS: `{ tls: { cert, key, ca, authClients } }` adds a TLS port (`tlsPort`, `tlsUrl`) beside the
 * plain one (which the launcher pings); an ACL user is `args: ['--user', 'alice', 'on', '>pw', '~*', '&*', '+@all']`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { freePort } from './services';
import { waitFor } from './wait';

/** True when something on `port` answers a Redis PING (PONG, or NOAUTH with requirepass). */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let data = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) done(data.startsWith('+PONG') || data.startsWith('-NOAUTH'));
    });
  });
}

export interface RedisServerOptions {
  /** Extra redis-server arguments, e.g. ['--requirepass', 'secret']. */
  args?: string[];
  /** A TLS port with this certificate and key; clients' certificates checked against `ca`. */
  tls?: { cert: string; key: string; ca: string; authClients?: 'yes' | 'no' | 'optional' };
}

export interface PrivateRedis extends PrivateBroker {
  /** The TLS port, when `tls` was given. */
  tlsPort?: number;
  /** `rediss://127.0.0.1:<tlsPort>`, when `tls` was given. */
  tlsUrl?: string;
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const tlsPort = options.tls ? await freePort() : undefined;
  const tlsArgs = options.tls
    ? [
        '--tls-port',
        String(tlsPort),
        '--tls-cert-file',
        options.tls.cert,
        '--tls-key-file',
        options.tls.key,
        '--tls-ca-cert-file',
        options.tls.ca,
        '--tls-auth-clients',
        options.tls.authClients ?? 'yes',
      ]
    : [];
  const dir = await mkdtemp(join(tmpdir(), 'evpub-redis-'));
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const start = async (): Promise<void> => {
    if (child) return;
    const proc = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
        '--daemonize',
        'no',
        '--logfile',
        join(dir, 'redis.log'),
        ...tlsArgs,
        ...(options.args ?? []),
      ],
      { stdio: 'ignore' },
    );
    child = proc;
    exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === proc) child = undefined;
    });
    await waitFor(async () => {
      if (proc.exitCode !== null)
        throw new Error(`redis-server exited (${proc.exitCode}); see ${dir}/redis.log`);
      return answersPing(port);
    }, `the private redis-server on port ${port}`);
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    if (!proc) return;
    proc.kill('SIGTERM');
    await exited;
    child = undefined;
  };

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    ...(tlsPort === undefined ? {} : { tlsPort, tlsUrl: `rediss://127.0.0.1:${tlsPort}` }),
    start,
    stop,
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
