/**
 * The Redis adapter's connections: one ioredis client per role (commands, the pub/sub
 * subscriber, one per blocking stream reader), all with evpub's back-off, watched as one.
 *
 * Protocol:
 * - `first(role)` opens the connection `connect()` waits for. ioredis retries forever by default,
 *   so until that connection's first `ready` the retry strategy gives up when the next attempt
 *   would pass `connectTimeout`; at the deadline the client is disconnected (no timer or socket
 *   remains) and the promise rejects with CONNECT_FAILED naming host:port, or at once with
 *   AUTH_FAILED when the server refuses the credentials and TLS_FAILED when the TLS handshake
 *   fails (`tlsFailure`: the reason and the setting that fixes it).
 * - Security: `rediss://` or the `tls` option turns TLS on (every connection, with the CA,
 *   client certificate and key, servername and rejectUnauthorized of `loadTls`); an ACL user and
 *   password come from the URL (`rediss://user:pass@host`) or the `username` / `password` options.
 * - `open(role)` starts a connection that keeps trying (commands sent meanwhile wait in ioredis's
 *   offline queue). Once a connection has been ready it reconnects forever with back-off
 *   (`reconnect.initialDelay` doubling up to `reconnect.maxDelay`); in-flight commands are resent
 *   after the reconnect (unless `resendUnanswered: false`: then they never settle, and the
 *   owner re-issues what it needs) and pub/sub channels resubscribed (ioredis does both).
 * - Watching: a ready connection that closes is down; `events.offline()` is called when the first
 *   one goes down, `events.reconnect()` when the last is ready again (after its `onReady` barrier,
 *   e.g. a PING proving the resubscribe went through).
 */
import type { Socket } from 'node:net';
import type { Redis, RedisOptions } from 'ioredis';
import { backoffDelay } from '../../util/retry';
import type { AdapterEvents, ResolvedClientOptions } from '../adapter';
import { ErrorCode, EvpubError, redact } from '../../errors';
import { loadTls, probeTls, tlsFailure } from '../../util/tls';

export type RedisModule = typeof import('ioredis');
export type { Redis };

export interface OpenOptions {
  /** Called on every `ready`; the connection counts as up when it settles. */
  onReady?: (client: Redis) => Promise<unknown>;
  /** Resend commands left unanswered by a lost connection (default true; false for readers). */
  resendUnanswered?: boolean;
  /** Wait for Redis to have loaded its data (INFO) before the first command (default true). */
  readyCheck?: boolean;
}

const AUTH_ERROR = /^(WRONGPASS|NOAUTH|NOPERM)|invalid password|invalid username-password/i;

export function isAuthError(err: unknown): boolean {
  return err instanceof Error && AUTH_ERROR.test(err.message);
}

/**
 * Closes a client at once, leaving no timer behind. ioredis's disconnect() ends the socket and
 * arms a 2 s fallback timer that only the socket's next 'close' clears, so the socket is then
 * destroyed; a client whose socket is already closed (waiting to reconnect) only has its pending
 * reconnect cancelled, since disconnect() would arm that timer with nothing left to clear it.
 */
export function shut(client: Redis): void {
  if (client.status === 'end') return;
  const stream = client.stream as Socket | undefined;
  const internals = client as unknown as { reconnectTimeout?: NodeJS.Timeout | null };
  if (stream?.destroyed && internals.reconnectTimeout !== undefined) {
    if (internals.reconnectTimeout) clearTimeout(internals.reconnectTimeout);
    internals.reconnectTimeout = null;
    return;
  }
  client.disconnect();
  stream?.destroy();
}

/** A connection reset or broken pipe: the server closed while the client wrote. */
const isReset = (err: Error): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE';
};

interface Watched {
  role: string;
  everReady: boolean;
  /** Until the first ready: the time after which no attempt is made. */
  deadline: number;
}

export class RedisConnections {
  private readonly watched = new Map<Redis, Watched>();
  private readonly down = new Set<Redis>();
  private closing = false;
  readonly where: string;
  private readonly base: RedisOptions;

  constructor(
    private readonly driver: RedisModule,
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    const url = new URL(options.url ?? 'redis://localhost:6379');
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
    const port = url.port === '' ? 6379 : Number(url.port);
    this.where = `${redact(url.toString())} (${host}:${port})`;
    const username = options.username ?? (decodeURIComponent(url.username) || undefined);
    const password = options.password ?? (decodeURIComponent(url.password) || undefined);
    const db = /^\/\d+$/.test(url.pathname) ? Number(url.pathname.slice(1)) : 0;
    this.base = {
      host,
      port,
      db,
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password }),
      ...(url.protocol === 'rediss:' || options.tls !== undefined
        ? { tls: loadTls(options.tls ?? {}, 'options.tls', { endpoint: this.where, logger: options.logger }) }
        : {}),
      lazyConnect: true,
      connectTimeout: options.connectTimeout,
      // Commands wait for the reconnect; the Client bounds a publish with publishTimeout.
      maxRetriesPerRequest: null,
    };
  }

  /** The connection `connect()` waits for, from `startedAt` on; see the protocol above. */
  first(role: string, open: OpenOptions = {}, startedAt = Date.now()): Promise<Redis> {
    const ms = this.options.connectTimeout;
    const deadline = startedAt + ms;
    const client = this.create(role, open, deadline);
    return new Promise<Redis>((resolve, reject) => {
      let lastError: Error | undefined;
      const cleanup = (): void => {
        clearTimeout(timer);
        client.off('error', onError);
        client.off('ready', onReady);
        client.off('end', onEnd);
      };
      const fail = (err: EvpubError): void => {
        cleanup();
        this.forget(client);
        shut(client);
        reject(err);
      };
      const connectFailed = (): EvpubError =>
        new EvpubError(
          ErrorCode.CONNECT_FAILED,
          `could not connect to Redis at ${this.where} within ${ms} ms` +
            (lastError ? `: ${lastError.message}` : ''),
          { cause: lastError, retriable: true, context: { adapter: 'redis' } },
        );
      let probed = false;
      const onError = (err: Error): void => {
        lastError = err;
        const tls = tlsFailure(err, this.where);
        if (tls) {
          fail(tls); // the next handshake would fail the same way
        } else if (this.base.tls && !probed && isReset(err)) {
          // TLS 1.3: a client certificate the server refuses may show only as a reset of
          // ioredis's first write; a probe that writes nothing reads the server's alert.
          probed = true;
          const { host, port } = this.base as { host: string; port: number };
          void probeTls(host, port, this.base.tls, { timeoutMs: Math.max(0, deadline - Date.now()) }).then(
            (why) => {
              const failure = why && tlsFailure(why, this.where);
              if (failure) fail(failure);
            },
          );
        } else if (isAuthError(err)) {
          fail(
            new EvpubError(
              ErrorCode.AUTH_FAILED,
              `Redis at ${this.where} refused the credentials: ${err.message}`,
              {
                cause: err,
                context: { adapter: 'redis' },
              },
            ),
          );
        }
      };
      const onReady = (): void => {
        cleanup();
        resolve(client);
      };
      const onEnd = (): void => fail(connectFailed());
      const timer = setTimeout(() => fail(connectFailed()), Math.max(0, deadline - Date.now()));
      client.on('error', onError);
      client.once('ready', onReady);
      client.once('end', onEnd);
      client.connect().catch(() => undefined); // settled through the events above
    });
  }

  /** A connection that keeps trying until it is up, then reconnects forever. */
  open(role: string, open: OpenOptions = {}): Redis {
    const client = this.create(role, open, Infinity);
    client.connect().catch(() => undefined); // failures are retried; `ready` says when it is up
    return client;
  }

  /** Closes one connection: gracefully (QUIT after pending replies) or at once (blocking readers). */
  async close(client: Redis, graceful: boolean): Promise<void> {
    this.forget(client);
    if (graceful && client.status === 'ready') {
      await client.quit().catch(() => shut(client));
    } else {
      shut(client);
    }
  }

  /** Closes every connection; no offline event is reported for them. */
  async closeAll(graceful: Redis[]): Promise<void> {
    this.closing = true;
    const all = [...this.watched.keys()];
    await Promise.all(all.map((c) => this.close(c, graceful.includes(c))));
  }

  private forget(client: Redis): void {
    this.watched.delete(client);
    if (this.down.delete(client) && this.down.size === 0 && !this.closing) this.events.reconnect();
  }

  private create(role: string, open: OpenOptions, deadline: number): Redis {
    const state: Watched = { role, everReady: false, deadline };
    const { initialDelay, maxDelay } = this.options.reconnect;
    const client = new this.driver.Redis({
      ...this.base,
      autoResendUnfulfilledCommands: open.resendUnanswered ?? true,
      enableReadyCheck: open.readyCheck ?? true,
      retryStrategy: (times: number) => {
        // Closed by us: a socket that was closing when shut() ran must not schedule a reconnect.
        if (!this.watched.has(client)) return null;
        const delay = backoffDelay(times, { initialDelay, maxDelay });
        if (!state.everReady && Date.now() + delay >= state.deadline) return null;
        return delay;
      },
    });
    this.watched.set(client, state);
    const logger = this.options.logger;
    client.on('error', (err: Error) => {
      if (!this.watched.has(client)) return;
      logger.debug({ err, role }, 'redis connection error');
      const tls = state.everReady ? tlsFailure(err, this.where) : undefined;
      if (tls) this.events.error(tls);
      else if (state.everReady && isAuthError(err)) {
        this.events.error(
          new EvpubError(
            ErrorCode.AUTH_FAILED,
            `Redis at ${this.where} refused the credentials on reconnect`,
            {
              cause: err,
              context: { adapter: 'redis', role },
            },
          ),
        );
      }
    });
    client.on('close', () => {
      if (!state.everReady || this.closing || !this.watched.has(client)) return;
      if (this.down.size === 0) this.events.offline();
      this.down.add(client);
    });
    client.on('ready', () => {
      state.everReady = true;
      const barrier = open.onReady ? open.onReady(client) : Promise.resolve();
      barrier
        .catch((err: unknown) => logger.warn({ err, role }, 'redis connection setup after ready failed'))
        .finally(() => {
          if (this.down.delete(client) && this.down.size === 0 && !this.closing) this.events.reconnect();
        });
    });
    return client;
  }
}
