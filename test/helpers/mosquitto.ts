/**
 * A private mosquitto for tests that must stop and start a broker (fault tests), or need a
 * configuration of their own: never the shared one on 1883.
 *
 *   const broker = await startMosquitto();            // free port on 127.0.0.1, anonymous
 *   const broker = await startMosquitto({ users: { alice: 'secret' } });   // password file
 *   const broker = await startMosquitto({ acl: ['topic readwrite #', 'topic deny a/vip'] });
 *   const broker = await startMosquitto({ tlsListeners: [{ cafile, certfile, keyfile, requireCertificate: true }] });
 *   broker.tlsPorts[0]                                 // each TLS listener's (free) port
 *   await broker.stop();  await broker.start();       // same port, same config
 *   await broker.close();                              // kill it, remove its temp dir
 *
 * The config: `listener <port> 127.0.0.1`, `persistence false`, `max_queued_messages 0` (the
 * default 1000 drops QoS 1/2 messages for a subscriber more than 1,000 behind), plus `extraConfig`
 * lines. Its log is `<dir>/mosquitto.log`; a failed start includes its tail.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { freePort, isListening } from './services';
import { waitFor } from './wait';

export interface MosquittoOptions {
  /** Port to listen on (default: a free one). */
  port?: number;
  /** Users and passwords; when given, anonymous clients are refused. */
  users?: Record<string, string>;
  /** More mosquitto.conf lines (e.g. `message_size_limit 1024`, `max_inflight_messages 1`). */
  extraConfig?: string[];
  /** Lines of an `acl_file` (lines before any `user` line apply to anonymous clients). */
  acl?: string[];
  /** More listeners on 127.0.0.1, each with TLS; their ports are `tlsPorts`, in this order. */
  tlsListeners?: MosquittoTlsListener[];
}

export interface MosquittoTlsListener {
  /** The CA that client certificates must chain to (and mosquitto's own chain). */
  cafile: string;
  certfile: string;
  keyfile: string;
  /** `require_certificate true`: clients must present a certificate from `cafile`. */
  requireCertificate?: boolean;
  /** `use_identity_as_username true`: the certificate's CN is the user name (no password). */
  useIdentityAsUsername?: boolean;
}

export interface PrivateMosquitto extends PrivateBroker {
  port: number;
  /** The ports of `tlsListeners`, in order. */
  tlsPorts: number[];
  /** Temp dir with mosquitto.conf, the log and the password file. */
  dir: string;
  /** Stops the broker: SIGTERM (a clean shutdown) by default, SIGKILL for a crash. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** The broker's log so far. */
  log(): string;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

export async function startMosquitto(options: MosquittoOptions = {}): Promise<PrivateMosquitto> {
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'evpub-mosquitto-'));
  const logFile = join(dir, 'mosquitto.log');
  const lines = [
    `listener ${port} 127.0.0.1`,
    'persistence false',
    'max_queued_messages 0',
    `log_dest file ${logFile}`,
    'log_type error',
    'log_type warning',
    'log_type notice',
  ];
  if (process.getuid?.() === 0) lines.push('user root'); // as root it would switch to "mosquitto", who cannot read `dir`
  if (options.users) {
    const pwFile = join(dir, 'passwd');
    writeFileSync(pwFile, '');
    for (const [user, password] of Object.entries(options.users)) {
      execFileSync('mosquitto_passwd', ['-b', pwFile, user, password]);
    }
    lines.push('allow_anonymous false', `password_file ${pwFile}`);
  } else {
    lines.push('allow_anonymous true');
  }
  if (options.acl) {
    const aclFile = join(dir, 'acl');
    writeFileSync(aclFile, options.acl.join('\n') + '\n');
    lines.push(`acl_file ${aclFile}`);
  }
  const tlsPorts: number[] = [];
  for (const l of options.tlsListeners ?? []) {
    const tlsPort = await freePort();
    tlsPorts.push(tlsPort);
    lines.push(
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${l.cafile}`,
      `certfile ${l.certfile}`,
      `keyfile ${l.keyfile}`,
      `require_certificate ${l.requireCertificate === true}`,
      ...(l.useIdentityAsUsername ? ['use_identity_as_username true'] : []),
    );
  }
  lines.push(...(options.extraConfig ?? []));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, lines.join('\n') + '\n');

  let proc: ChildProcess | undefined;
  const log = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };

  const start = async (): Promise<void> => {
    if (proc) return;
    const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    let exited = false;
    child.once('exit', () => {
      exited = true;
      running.delete(child);
      if (proc === child) proc = undefined;
    });
    proc = child;
    running.add(child);
    try {
      await waitFor(
        async () => {
          if (exited) throw new Error('exited');
          for (const p of [port, ...tlsPorts]) if (!(await isListening(p))) return false;
          return true;
        },
        `mosquitto listening on 127.0.0.1:${port}`,
        10_000,
      );
    } catch (err) {
      child.kill('SIGKILL');
      throw new Error(
        `private mosquitto on port ${port} did not start (${(err as Error).message}):\n${stderr}${log().slice(-2000)}`,
      );
    }
  };

  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> => {
    const child = proc;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
    // The listening socket is gone once the process is.
    await waitFor(async () => !(await isListening(port)), `port ${port} to be free`, 10_000);
  };

  const close = async (): Promise<void> => {
    await stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };

  await start();
  return { url: `mqtt://127.0.0.1:${port}`, port, tlsPorts, dir, start, stop, close, log };
}
