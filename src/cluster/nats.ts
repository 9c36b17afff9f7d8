/**
 * Leases in a NATS JetStream KV bucket, written through the JetStream API of the @nats-io
 * packages evpub already uses. The bucket is the stream `KV_<bucket>` (subjects
 * `$KV.<bucket>.>`, one message kept per subject), created if missing, the layout of a KV bucket
 * so that `nats kv get <bucket> lease.<unit>` shows a lease. Keys (outside `[-_a-zA-Z0-9]`,
 * characters are written `=XX`):
 *
 *   lease.<unit>       {"holder": "..." | null, "epoch": n, "ttl": ms}
 *   member.<instance>  {"info": {...}, "ttl": ms}; `members()` purges the expired and left ones
 *   clock              empty; written to read the server's time (below)
 *
 * Every write is revision-checked (`Nats-Expected-Last-Subject-Sequence`): acquire expects the
 * revision it read (0: no entry yet), so of concurrent writers exactly one succeeds; renew and
 * release expect the lease's own revision, so they fail once anyone else wrote. The epoch is a
 * counter in the value, +1 on every acquire that is not a renewal by the live holder.
 *
 * Time with no clock API: every stored message carries the time the server stored it. A lease
 * expires at (the stored time of its last write) + ttl, by the server's clock. To judge that, a
 * contender needs the server's *now*: it writes the `clock` key and reads back that message's
 * stored time. So expiry is judged by one clock, the server's (the stream leader's in a cluster),
 * never by comparing clocks of two client machines; no client clock skew is assumed. What is
 * assumed: the server's clock does not step back by more than the holder's safety margin
 * (ttl / 5) – NTP slews rather than steps – and, in a replicated bucket, the servers' clocks
 * agree within that margin (a leader change may change whose clock stamps).
 *
 * A renew that reaches the server after the lease expired is accepted when nobody else wrote in
 * between (harmless: nobody else held the unit); the store refuses it (LEASE_LOST) once the
 * holder's own clock says send + ttl passed, and the holder stopped at its deadline before that.
 *
 * Timeouts: every JetStream request is bounded by `opTimeout` (default 5 s); nats.js reconnects
 * on its own, and requests during an outage fail as a retriable LEASE_FAILED.
 *
 * Security, as the NATS adapter's (the same code: pubsub/adapters/nats-auth.ts): `tls://` or
 * `tls` (`cluster.tls`) turns TLS on; credentials are the URL's user part, `username` /
 * `password`, `token`, `nkey` or `creds`. When the first connection fails, a TLS failure is
 * EVPUB_TLS_FAILED naming `cluster.tls` (a refused client certificate, which nats.js reports as a
 * timeout, is found by one probe connection: nats-tls.ts), refused credentials
 * EVPUB_AUTH_FAILED; neither is retriable.
 */
import type { JetStreamClient, JetStreamManager, StoredMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Logger } from '../logger';
import { isNatsAuthError, natsTarget, type NatsTlsTarget } from '../pubsub/adapters/nats-auth';
import type { NatsCredentials } from '../pubsub/adapters/nats-options';
import { probeNatsTls } from '../pubsub/adapters/nats-tls';
import { loadDriver } from '../util/driver';
import { tlsFailure, type TlsSettings } from '../util/tls';
import {
  checkName,
  checkTtl,
  deadlineOf,
  leaseFailed,
  leaseLost,
  monotonicNow,
  safetyMargin,
  type Lease,
  type LeaseState,
  type LeaseStore,
  type Member,
} from './lease';

export const DEFAULT_BUCKET = 'evpub_leases';

const BUCKET_NAME = /^[-A-Za-z0-9_]{1,64}$/;
const WRONG_LAST_SEQUENCE = 10071;

export interface NatsLeaseOptions extends NatsCredentials {
  url: string;
  /** The cluster's name: part of every key. */
  cluster: string;
  /** KV bucket, default `evpub_leases`. */
  bucket?: string;
  /** Bound on the connect and on every request, ms (default 5000). */
  opTimeout?: number;
  /** TLS (`cluster.tls`); `tls://` turns TLS on too. */
  tls?: TlsSettings;
  /** User and password; the URL's win. */
  username?: string;
  password?: string;
  /** Told once when TLS verification is turned off. */
  logger?: Logger;
}

type NatsModule = typeof import('@nats-io/transport-node');

interface Link {
  nm: NatsModule;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

interface LeaseValue {
  holder: string | null;
  epoch: number;
  ttl: number;
}

/** A NATS-store lease: the KV revision of its last write rides along. */
interface NatsLease extends Lease {
  readonly revision: number;
}

/** A key token: `[-_a-zA-Z0-9]` as is, every other UTF-8 byte as `=XX`. */
function token(name: string): string {
  return Array.from(Buffer.from(name, 'utf8'))
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[-_A-Za-z0-9]/.test(c) ? c : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    })
    .join('');
}

function untoken(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '=') {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(text.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

const isWrongSequence = (err: unknown): boolean => (err as { code?: unknown }).code === WRONG_LAST_SEQUENCE;

export class NatsLeaseStore implements LeaseStore {
  readonly name = 'nats';
  private readonly bucket: string;
  private readonly stream: string;
  private readonly prefix: string;
  private readonly endpoint: string;
  private link: Promise<Link> | undefined;

  constructor(private readonly options: NatsLeaseOptions) {
    checkName(options.cluster, 'cluster.name');
    this.bucket = options.bucket ?? DEFAULT_BUCKET;
    if (!BUCKET_NAME.test(this.bucket)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `cluster.bucket: ${JSON.stringify(this.bucket)} must be a KV bucket name: letters, digits, - and _`,
      );
    }
    this.stream = `KV_${this.bucket}`;
    this.prefix = `$KV.${this.bucket}.${token(options.cluster)}.`;
    this.endpoint = redact(options.url);
  }

  private connect(): Promise<Link> {
    this.link ??= (async () => {
      const nm = await loadDriver<NatsModule>('@nats-io/transport-node', 'NATS lease store');
      const jsmod = await loadDriver<typeof import('@nats-io/jetstream')>(
        '@nats-io/jetstream',
        'NATS lease store',
      );
      const timeout = this.options.opTimeout ?? 5000;
      const o = this.options;
      let target: ReturnType<typeof natsTarget>;
      try {
        target = natsTarget(
          nm,
          o.url,
          {
            username: o.username,
            password: o.password,
            token: o.token,
            nkey: o.nkey,
            creds: o.creds,
            tls: o.tls,
          },
          { path: 'cluster', tlsPath: 'cluster.tls', endpoint: this.endpoint, logger: o.logger },
        );
      } catch (err) {
        this.link = undefined; // a file that cannot be read, a seed that is none
        throw err;
      }
      let nc: NatsConnection | undefined;
      try {
        nc = await nm
          .connect({
            ...target.target,
            name: 'evpub-leases',
            timeout,
            reconnect: true,
            maxReconnectAttempts: -1,
            reconnectTimeWait: 250,
          })
          .catch(async (err: unknown) => {
            throw (await this.refusal(err, target.tls, timeout)) ?? err;
          });
        const jsm = await jsmod.jetstreamManager(nc, { timeout });
        const js = jsmod.jetstream(nc, { timeout });
        try {
          await jsm.streams.info(this.stream);
        } catch (err) {
          if ((err as Error).name !== 'StreamNotFoundError') throw err;
          await jsm.streams.add({
            name: this.stream,
            subjects: [`$KV.${this.bucket}.>`],
            max_msgs_per_subject: 1,
            discard: jsmod.DiscardPolicy.New,
            storage: jsmod.StorageType.File,
            allow_rollup_hdrs: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
          });
        }
        return { nm, nc, js, jsm };
      } catch (err) {
        this.link = undefined;
        await nc?.close().catch(() => undefined);
        if (err instanceof EvpubError) throw err;
        throw leaseFailed('nats', `open the KV bucket ${this.bucket} at ${this.endpoint}`, err);
      }
    })();
    return this.link;
  }

  /** TLS_FAILED or AUTH_FAILED when the server refused this configuration; else undefined. */
  private async refusal(
    err: unknown,
    tls: NatsTlsTarget | undefined,
    timeoutMs: number,
  ): Promise<EvpubError | undefined> {
    const failure = tlsFailure(err, this.endpoint, 'cluster.tls');
    if (failure) return failure;
    if (isNatsAuthError(err)) {
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `the NATS lease store at ${this.endpoint} refused the credentials (the URL's, or cluster.username / password / token / nkey / creds)`,
        { cause: err, context: { store: 'nats' } },
      );
    }
    if (tls === undefined) return undefined;
    // nats.js reports a client certificate refused under TLS 1.3 as a timeout (nats-tls.ts).
    const why = await probeNatsTls(tls.host, tls.port, tls.options, Math.min(timeoutMs, 5000));
    return why && tlsFailure(why, this.endpoint, 'cluster.tls');
  }

  private async run<T>(
    what: string,
    context: Record<string, unknown>,
    fn: (l: Link) => Promise<T>,
  ): Promise<T> {
    const link = await this.connect();
    try {
      return await fn(link);
    } catch (err) {
      throw leaseFailed('nats', what, err, context);
    }
  }

  private async last(key: string): Promise<StoredMsg | null> {
    const { jsm } = await this.connect();
    return jsm.streams.getMessage(this.stream, { last_by_subj: this.prefix + key });
  }

  /** The server's now (ms): the stored time of a write to the `clock` key. */
  private async serverNow(): Promise<number> {
    const { js, jsm } = await this.connect();
    const ack = await js.publish(`${this.prefix}clock`);
    // Another probe may have replaced ours (one message per key): it was stored later, but before
    // this read returns, so its time is still a time the server had already reached.
    const msg =
      (await jsm.streams.getMessage(this.stream, { seq: ack.seq })) ??
      (await jsm.streams.getMessage(this.stream, { last_by_subj: `${this.prefix}clock` }));
    if (!msg) throw new Error('the clock key is empty right after a write to it');
    return msg.time.getTime();
  }

  /** Writes `value` at `key` when its revision is still `revision` (0: absent); the new one, or null. */
  private async put(key: string, value: unknown, revision: number): Promise<number | null> {
    const { js } = await this.connect();
    try {
      const ack = await js.publish(this.prefix + key, JSON.stringify(value), {
        expect: { lastSubjectSequence: revision },
      });
      return ack.seq;
    } catch (err) {
      if (isWrongSequence(err)) return null;
      throw err;
    }
  }

  /** The expiry (server time) of our write `revision` at `key`: its stored time + ttl. */
  private async expiryOf(key: string, revision: number, ttlMs: number): Promise<number> {
    const stored = await this.last(key);
    // Overwritten already (by a newer owner): the expiry we had is at most that write's time.
    return (stored?.time.getTime() ?? 0) + (stored?.seq === revision ? ttlMs : 0);
  }

  /**
   * Whether the entry at `key` is still `lease`'s write: its revision, holder and epoch. The
   * write that follows expects that revision, so nothing can slip in between.
   */
  private async holds(key: string, lease: Lease): Promise<boolean> {
    const msg = await this.last(key);
    if (!msg || msg.seq !== (lease as NatsLease).revision) return false;
    const cur = msg.json<LeaseValue>();
    return cur.holder === lease.holder && cur.epoch === lease.epoch;
  }

  private lease(
    unit: string,
    holder: string,
    ttlMs: number,
    sentAt: number,
    epoch: number,
    revision: number,
    expiresAt: number,
  ): NatsLease {
    return { unit, holder, epoch, ttlMs, expiresAt, revision, deadline: deadlineOf(sentAt, ttlMs) };
  }

  async acquire(unit: string, holder: string, ttlMs: number, minEpoch = 1): Promise<Lease | null> {
    checkName(unit, 'unit');
    checkName(holder, 'holder');
    checkTtl(ttlMs);
    const sentAt = monotonicNow();
    return this.run(`acquire ${unit}`, { unit }, async () => {
      const key = `lease.${token(unit)}`;
      const msg = await this.last(key);
      const cur = msg ? msg.json<LeaseValue>() : undefined;
      let epoch = Math.max((cur?.epoch ?? 0) + 1, minEpoch);
      if (cur && msg && cur.holder !== null) {
        const live = (await this.serverNow()) < msg.time.getTime() + cur.ttl;
        if (live && cur.holder !== holder) return null;
        if (live) epoch = cur.epoch;
      }
      const revision = await this.put(key, { holder, epoch, ttl: ttlMs } satisfies LeaseValue, msg?.seq ?? 0);
      if (revision === null) return null;
      return this.lease(
        unit,
        holder,
        ttlMs,
        sentAt,
        epoch,
        revision,
        await this.expiryOf(key, revision, ttlMs),
      );
    });
  }

  async renew(lease: Lease): Promise<Lease> {
    const { revision } = lease as NatsLease;
    const sentAt = monotonicNow();
    // The holder's own clock: past send + ttl, the server may have judged it expired.
    if (sentAt > lease.deadline + safetyMargin(lease.ttlMs)) throw leaseLost(lease, this.name, 'it expired');
    const key = `lease.${token(lease.unit)}`;
    const next = await this.run(`renew ${lease.unit}`, { unit: lease.unit }, async () =>
      (await this.holds(key, lease))
        ? this.put(
            key,
            { holder: lease.holder, epoch: lease.epoch, ttl: lease.ttlMs } satisfies LeaseValue,
            revision,
          )
        : null,
    );
    if (next === null) throw leaseLost(lease, this.name, 'another instance wrote the lease');
    const expiresAt = await this.run(`renew ${lease.unit}`, { unit: lease.unit }, () =>
      this.expiryOf(key, next, lease.ttlMs),
    );
    return this.lease(lease.unit, lease.holder, lease.ttlMs, sentAt, lease.epoch, next, expiresAt);
  }

  async release(lease: Lease): Promise<boolean> {
    const { revision } = lease as NatsLease;
    const key = `lease.${token(lease.unit)}`;
    const next = await this.run(`release ${lease.unit}`, { unit: lease.unit }, async () =>
      (await this.holds(key, lease))
        ? this.put(key, { holder: null, epoch: lease.epoch, ttl: lease.ttlMs } satisfies LeaseValue, revision)
        : null,
    );
    return next !== null;
  }

  async read(unit: string): Promise<LeaseState | undefined> {
    return this.run(`read ${unit}`, { unit }, async () => {
      const msg = await this.last(`lease.${token(unit)}`);
      if (!msg) return undefined;
      const cur = msg.json<LeaseValue>();
      const expiresAt = msg.time.getTime() + cur.ttl;
      const live = cur.holder !== null && (await this.serverNow()) < expiresAt;
      return { unit, holder: cur.holder ?? undefined, epoch: cur.epoch, expiresAt, live };
    });
  }

  async join(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    checkName(instance, 'instance');
    checkTtl(ttlMs);
    await this.run(`register ${instance}`, { instance }, ({ js }) =>
      js.publish(`${this.prefix}member.${token(instance)}`, JSON.stringify({ info, ttl: ttlMs })),
    );
  }

  heartbeat(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    return this.join(instance, info, ttlMs);
  }

  async leave(instance: string): Promise<void> {
    // A KV delete: an empty message marked `KV-Operation: DEL`.
    await this.run(`remove ${instance}`, { instance }, async ({ js, nm }) => {
      const h = nm.headers();
      h.set('KV-Operation', 'DEL');
      await js.publish(`${this.prefix}member.${token(instance)}`, undefined, { headers: h });
    });
  }

  async members(): Promise<Member[]> {
    return this.run('list the members', {}, async ({ jsm }) => {
      const filter = `${this.prefix}member.>`;
      const info = await jsm.streams.info(this.stream, { subjects_filter: filter });
      const now = await this.serverNow();
      const out: Member[] = [];
      for (const subject of Object.keys(info.state.subjects ?? {})) {
        const msg = await jsm.streams.getMessage(this.stream, { last_by_subj: subject });
        if (!msg) continue;
        if (msg.header?.get('KV-Operation') || msg.data.length === 0) {
          await jsm.streams.purge(this.stream, { filter: subject, seq: msg.seq + 1 });
          continue;
        }
        const value = msg.json<{ info: Record<string, unknown>; ttl: number }>();
        const expiresAt = msg.time.getTime() + value.ttl;
        if (expiresAt <= now) {
          // Up to this message only: a join that came meanwhile stays.
          await jsm.streams.purge(this.stream, { filter: subject, seq: msg.seq + 1 });
          continue;
        }
        out.push({ instance: untoken(subject.slice(filter.length - 1)), info: value.info, expiresAt });
      }
      return out.sort((a, b) => a.instance.localeCompare(b.instance));
    });
  }

  async close(): Promise<void> {
    const pending = this.link;
    this.link = undefined;
    if (!pending) return;
    const link = await pending.catch(() => undefined);
    await link?.nc.close().catch(() => undefined);
  }
}
