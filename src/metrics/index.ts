/**
 * evpub's Prometheus metrics: what `GET /metrics` serves.
 *
 *   const metrics = createMetrics(app);
 *   reply.type(metrics.contentType).send(await metrics.text());
 *   ...
 *   metrics.close();
 *
 * Protocol:
 * - One prom-client `Registry` per call (never prom-client's global registry): two apps in one
 *   process, or two `createMetrics()` of one app, never share or clash. It holds prom-client's
 *   default process metrics and evpub's own (the list, with labels, is in docs/operate.md).
 * - Nothing is added to the path of an event. The counters the pipeline already keeps per feed
 *   (received, published, dead-lettered, filtered, retries) and the gauges (in flight, paused,
 *   failed, broker and connector state) are read from `app.status()` when scraped. The rest comes
 *   from the app's `status` events, which are rare (a dead letter, a retry, a pause, a saved
 *   checkpoint, a connector report): each one is a map update here.
 * - Counters stay monotonic across `app.stop()`/`app.start()` in one process: the pipeline's own
 *   counters start again at zero on each start, so the values of the previous run are kept and
 *   added. While the app is stopped they keep their last value; gauges of feeds disappear.
 * - The WAL each PostgreSQL slot retains is queried at scrape time (see postgres-slots.ts),
 *   waiting at most `slotTimeoutMs` for the database, on a connection per datasource opened at
 *   the first scrape of a run and closed when the app stops (and by `close()`).
 * - Cluster mode only (the app's configuration has `cluster`): the members, the units owned and
 *   their epochs and the lease store's state are read from `app.status().cluster` when scraped;
 *   unit changes (acquired, released, lost, failed) are counted from the `unit` status events.
 *   Without `cluster` these metrics are not registered at all.
 * - `close()` removes the status listener, closes the slot probes' connections and empties the
 *   registry. `text()` after `close()` answers an empty exposition. Make the metrics once per
 *   app, not per request: prom-client's default metrics start a GC observer and an event-loop
 *   delay monitor per registry that live as long as the process (`close()` cannot stop them).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { App } from '../app/app';
import type { ConnectorStatus } from '../connectors/contract';
import { OPERATIONS, type Operation } from '../events/change-event';
import type { PublisherStatus } from '../pipeline/status';
import { SlotProbe } from './postgres-slots';

export interface Metrics {
  /** The Content-Type of `text()` (Prometheus text format 0.0.4). */
  contentType: string;
  /** The metrics in Prometheus text format, collected now. */
  text(): Promise<string>;
  /** Detaches from the app and releases the slot probes' connections. Idempotent. */
  close(): void;
}

export interface MetricsOptions {
  /** Longest a scrape waits for a PostgreSQL slot query, in ms (default 1000). */
  slotTimeoutMs?: number;
}

type FeedLabels = { datasource: string; model: string };

/** The datasource and model of a feed id (`datasource/model`; a model may contain `/`). */
function splitFeed(feed: string): FeedLabels {
  const at = feed.indexOf('/');
  return at < 0
    ? { datasource: feed, model: '' }
    : { datasource: feed.slice(0, at), model: feed.slice(at + 1) };
}

/** Counters of a feed kept by the pipeline, read from snapshots, monotonic across restarts. */
const FEED_COUNTERS = ['received', 'published', 'deadLettered', 'filtered', 'retries'] as const;
type FeedCounter = (typeof FEED_COUNTERS)[number];

interface FeedTotals {
  labels: FeedLabels & { broker: string };
  /** Sums of the previous runs. */
  base: Record<FeedCounter, number>;
  /** The latest values of the current run. */
  last: Record<FeedCounter, number>;
  /** `published` by operation, the same way (they add up to it). */
  opsBase: Record<Operation, number>;
  opsLast: Record<Operation, number>;
}

function zeros(): Record<FeedCounter, number> {
  return { received: 0, published: 0, deadLettered: 0, filtered: 0, retries: 0 };
}

function opZeros(): Record<Operation, number> {
  return { create: 0, update: 0, delete: 0, snapshot: 0, truncate: 0 };
}

/** A counter keyed by label values, for counts of status events. */
class Tally<L extends string> {
  private readonly counts = new Map<string, { labels: Record<L, string>; value: number }>();

  add(labels: Record<L, string>, n = 1): void {
    const key = JSON.stringify(labels);
    const entry = this.counts.get(key);
    if (entry) entry.value += n;
    else this.counts.set(key, { labels, value: n });
  }

  fill(counter: Counter<L>): void {
    counter.reset();
    for (const { labels, value } of this.counts.values()) counter.inc(labels, value);
  }
}

export function createMetrics(app: App, options: MetricsOptions = {}): Metrics {
  const register = new Registry();
  collectDefaultMetrics({ register });

  // ---------------------------------------------------------------------------------------------
  // State fed by status events and snapshots (per app; nothing module-global).

  const totals = new Map<string, FeedTotals>();
  const deadLetters = new Tally<'datasource' | 'model' | 'code'>();
  const errors = new Tally<'datasource' | 'model' | 'kind' | 'code'>();
  const pauses = new Tally<'datasource' | 'model' | 'reason'>();
  const reconnects = new Tally<'datasource'>();
  const checkpointSavedAt = new Map<string, number>();
  const snapshots = new Map<string, { labels: FeedLabels; done: number; total?: number }>();
  const lag = new Map<string, { labels: FeedLabels; seconds?: number; bytes?: number }>();
  const unitChanges = new Tally<'unit' | 'event'>();
  /** The slot probes by datasource, opened at the first scrape of a run, closed when it ends. */
  const probes = new Map<string, SlotProbe>();
  const closeProbes = (): void => {
    for (const p of probes.values()) void p.close();
    probes.clear();
  };

  /** Records a feed's counters as the pipeline reports them (a snapshot or a `published` status). */
  function observe(
    feed: string,
    values: Partial<Record<FeedCounter, number>> & { publishedOps?: Record<Operation, number> },
    broker?: string,
  ): void {
    let t = totals.get(feed);
    if (!t) {
      // First seen in a status event (once per feed): its broker from the app, so the series keeps one label set.
      broker ??= app.status().feeds[feed]?.broker;
      t = {
        labels: { ...splitFeed(feed), broker: broker ?? '' },
        base: zeros(),
        last: zeros(),
        opsBase: opZeros(),
        opsLast: opZeros(),
      };
      totals.set(feed, t);
    }
    if (broker !== undefined) t.labels.broker = broker;
    for (const k of FEED_COUNTERS) {
      const v = values[k];
      if (v !== undefined) t.last[k] = Math.max(t.last[k], v);
    }
    const ops = values.publishedOps;
    if (ops) for (const op of OPERATIONS) t.opsLast[op] = Math.max(t.opsLast[op], ops[op]);
  }

  /**
   * The run ended (its last counts were emitted before `stopped`): the next run's pipelines
   * count from zero again, so this run's values become the base.
   */
  function endRun(): void {
    for (const t of totals.values()) {
      for (const k of FEED_COUNTERS) t.base[k] += t.last[k];
      t.last = zeros();
      for (const op of OPERATIONS) t.opsBase[op] += t.opsLast[op];
      t.opsLast = opZeros();
    }
    snapshots.clear();
    lag.clear();
    checkpointSavedAt.clear();
    // The app's connections are gone; the probes' go too (the next run's first scrape reopens them).
    closeProbes();
  }

  function onConnector(datasource: string, status: ConnectorStatus): void {
    switch (status.type) {
      case 'reconnecting':
        reconnects.add({ datasource });
        break;
      case 'snapshot': {
        const labels = { datasource, model: status.model };
        snapshots.set(`${datasource}/${status.model}`, { labels, done: status.done, total: status.total });
        break;
      }
      case 'lagging': {
        const labels = { datasource, model: status.model ?? '' };
        const key = `${datasource}/${labels.model}`;
        lag.set(key, { ...lag.get(key), labels, seconds: status.seconds, bytes: status.bytes });
        break;
      }
      case 'connected':
        break;
    }
  }

  // Sampled: the pipeline's `published` status (at most one a second per feed) carries the
  // source's commit time of the event whose confirmation emitted it, where the source gives one
  // (PostgreSQL): sources without a commit time give no sample.
  const latency = new Histogram({
    name: 'evpub_end_to_end_latency_seconds',
    help: 'Source commit time of an event to its confirmation by the broker, sampled (about one event a second per feed), where the source gives a commit time.',
    labelNames: ['datasource', 'model'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
    registers: [register],
  });

  const listener = (s: PublisherStatus): void => {
    switch (s.type) {
      case 'stopped':
        endRun();
        break;
      case 'published':
        observe(s.feed, s);
        if (s.sourceTime !== undefined) {
          const at = Date.parse(s.sourceTime);
          if (!Number.isNaN(at)) latency.observe(splitFeed(s.feed), Math.max(0, Date.now() - at) / 1000);
        }
        break;
      case 'dead-lettered':
        deadLetters.add({ ...splitFeed(s.feed), code: s.error.code });
        break;
      case 'retrying':
        errors.add({ ...splitFeed(s.feed), kind: 'publish', code: s.error.code });
        break;
      case 'checkpoint-failed':
        errors.add({ ...splitFeed(s.feed), kind: `checkpoint-${s.during}`, code: s.error.code });
        break;
      case 'feed-failed':
        errors.add({ ...splitFeed(s.feed), kind: 'feed-failed', code: s.error.code });
        break;
      case 'paused':
        pauses.add({ ...splitFeed(s.feed), reason: s.reason });
        break;
      case 'checkpoint':
        checkpointSavedAt.set(s.feed, Date.now());
        break;
      case 'connector':
        onConnector(s.datasource, s.status);
        break;
      case 'unit':
        unitChanges.add({ unit: s.unit, event: s.event });
        break;
      default:
        break;
    }
  };
  app.on('status', listener);

  /** Reads the app's snapshot into the counters; returns it for the gauges. */
  function scrape(): ReturnType<App['status']> {
    const status = app.status();
    for (const [feed, f] of Object.entries(status.feeds)) observe(feed, f, f.broker);
    return status;
  }

  // One snapshot per scrape: the first collect callback reads it, the others reuse it.
  let current: ReturnType<App['status']> | undefined;
  const snapshot = (): ReturnType<App['status']> => (current ??= scrape());

  // ---------------------------------------------------------------------------------------------
  // Counters

  const feedCounter = (name: string, help: string, key: FeedCounter): void => {
    new Counter({
      name,
      help,
      labelNames: ['datasource', 'model', 'broker'] as const,
      registers: [register],
      collect() {
        snapshot();
        this.reset();
        for (const t of totals.values()) this.inc(t.labels, t.base[key] + t.last[key]);
      },
    });
  };
  feedCounter(
    'evpub_events_received_total',
    'Events (and raw dead letters) the connector handed to the feed.',
    'received',
  );
  // By operation: the pipeline counts them per feed beside the total (they add up to it).
  new Counter({
    name: 'evpub_events_published_total',
    help: 'Events the broker confirmed, by operation (create, update, delete, snapshot, truncate).',
    labelNames: ['datasource', 'model', 'broker', 'op'] as const,
    registers: [register],
    collect() {
      snapshot();
      this.reset();
      for (const t of totals.values()) {
        for (const op of OPERATIONS) this.inc({ ...t.labels, op }, t.opsBase[op] + t.opsLast[op]);
      }
    },
  });
  feedCounter('evpub_events_filtered_total', 'Events left out by the model\'s "ops" filter.', 'filtered');
  feedCounter(
    'evpub_events_dead_lettered_total',
    'Dead letters the broker confirmed on the dead-letter topic.',
    'deadLettered',
  );
  feedCounter(
    'evpub_publish_retries_total',
    'Back-offs after a failed publish (each re-publishes the feed from its first unconfirmed event).',
    'retries',
  );

  const tallyCounter = <L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    tally: Tally<L>,
  ): void => {
    new Counter({
      name,
      help,
      labelNames,
      registers: [register],
      collect() {
        tally.fill(this);
      },
    });
  };
  tallyCounter(
    'evpub_dead_letters_total',
    'Events and raw input sent to the dead-letter topic, by reason code.',
    ['datasource', 'model', 'code'],
    deadLetters,
  );
  tallyCounter(
    'evpub_errors_total',
    'Errors by kind (publish, checkpoint-save, checkpoint-commit, feed-failed) and code.',
    ['datasource', 'model', 'kind', 'code'],
    errors,
  );
  tallyCounter(
    'evpub_backpressure_pauses_total',
    'Times the feed paused its source (window full, or retrying).',
    ['datasource', 'model', 'reason'],
    pauses,
  );
  tallyCounter(
    'evpub_connector_reconnects_total',
    'Reconnection attempts the connector reported.',
    ['datasource'],
    reconnects,
  );

  // ---------------------------------------------------------------------------------------------
  // Gauges read from the snapshot at scrape time

  const feedGauge = (
    name: string,
    help: string,
    value: (f: ReturnType<App['status']>['feeds'][string]) => number | undefined,
  ): void => {
    new Gauge({
      name,
      help,
      labelNames: ['datasource', 'model'] as const,
      registers: [register],
      collect() {
        this.reset();
        for (const f of Object.values(snapshot().feeds)) {
          const v = value(f);
          if (v !== undefined) this.set({ datasource: f.datasource, model: f.model }, v);
        }
      },
    });
  };
  feedGauge(
    'evpub_in_flight_events',
    "Events between push and commit (the feed's window).",
    (f) => f.inFlight,
  );
  feedGauge(
    'evpub_in_flight_bytes',
    'Bytes of encoded events between push and commit.',
    (f) => f.inFlightBytes,
  );
  feedGauge(
    'evpub_backpressure_paused',
    '1 while the feed holds its source back (window full or retrying), else 0.',
    (f) => (f.paused === undefined ? undefined : f.paused ? 1 : 0),
  );
  feedGauge('evpub_feed_failed', '1 once the feed failed (it publishes nothing more), else 0.', (f) =>
    f.failed === undefined ? 0 : 1,
  );
  feedGauge(
    'evpub_feed_paused',
    '1 while the feed is paused by an operator (POST /api/feeds/.../pause), or waits for one of its datasource that is, else 0.',
    (f) => (f.state === 'paused' || f.state === 'waiting' ? 1 : 0),
  );

  new Gauge({
    name: 'evpub_checkpoint_age_seconds',
    help: 'Seconds since the feed last saved its checkpoint (absent before the first save of this run).',
    labelNames: ['datasource', 'model'] as const,
    registers: [register],
    collect() {
      this.reset();
      const now = Date.now();
      for (const [feed, at] of checkpointSavedAt) this.set(splitFeed(feed), (now - at) / 1000);
    },
  });

  new Gauge({
    name: 'evpub_broker_connected',
    help: '1 while the broker client is connected, else 0.',
    labelNames: ['broker', 'adapter'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const [broker, b] of Object.entries(snapshot().brokers)) {
        this.set({ broker, adapter: b.adapter }, b.state === 'connected' ? 1 : 0);
      }
    },
  });

  new Gauge({
    name: 'evpub_connector_streaming',
    help: "1 while the datasource's connector is streaming, else 0 (starting, reconnecting, failed...).",
    labelNames: ['datasource', 'connector'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const [datasource, d] of Object.entries(snapshot().datasources)) {
        this.set({ datasource, connector: d.connector }, d.health.state === 'streaming' ? 1 : 0);
      }
    },
  });

  // ---------------------------------------------------------------------------------------------
  // Gauges fed by connector reports

  new Gauge({
    name: 'evpub_snapshot_rows_done',
    help: 'Rows the initial snapshot of the model has published so far.',
    labelNames: ['datasource', 'model'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const s of snapshots.values()) this.set(s.labels, s.done);
    },
  });
  new Gauge({
    name: 'evpub_snapshot_rows_expected',
    help: 'Rows the snapshot expects (an estimate, where the connector gives one).',
    labelNames: ['datasource', 'model'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const s of snapshots.values()) if (s.total !== undefined) this.set(s.labels, s.total);
    },
  });
  new Gauge({
    name: 'evpub_source_lag_seconds',
    help: 'How far behind the source the connector reads, in seconds, where it reports it (MySQL/MariaDB: since the time of the last binlog event read; 0 when caught up).',
    labelNames: ['datasource', 'model'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const l of lag.values()) if (l.seconds !== undefined) this.set(l.labels, l.seconds);
    },
  });
  new Gauge({
    name: 'evpub_source_lag_bytes',
    help: "How far behind the end of the source's log the connector is, in bytes, at its last report (PostgreSQL: the slot's retained WAL, per datasource; MySQL/MariaDB: the binlog after each model's reader).",
    labelNames: ['datasource', 'model'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const l of lag.values()) if (l.bytes !== undefined) this.set(l.labels, l.bytes);
    },
  });

  // ---------------------------------------------------------------------------------------------
  // Cluster mode (docs/cluster.md): read from the coordinator's view at scrape time

  if (app.toConfig().cluster) {
    const cluster = (): NonNullable<ReturnType<App['status']>['cluster']> | undefined => snapshot().cluster;
    new Gauge({
      name: 'evpub_cluster_members',
      help: 'Live instances of the cluster this instance sees (membership entries not expired, itself included).',
      registers: [register],
      collect() {
        this.reset();
        const c = cluster();
        if (c) this.set(c.members.length);
      },
    });
    new Gauge({
      name: 'evpub_cluster_units_owned',
      help: 'Units this instance holds the lease of.',
      registers: [register],
      collect() {
        this.reset();
        const c = cluster();
        if (c) this.set(c.units.filter((u) => u.mine).length);
      },
    });
    new Gauge({
      name: 'evpub_cluster_store_up',
      help: '1 while the lease store answers, else 0 (the units held stop at their deadline).',
      registers: [register],
      collect() {
        this.reset();
        const c = cluster();
        if (c) this.set(c.state === 'ok' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'evpub_unit_owned',
      help: '1 while this instance owns the unit (holds its lease), else 0.',
      labelNames: ['unit'] as const,
      registers: [register],
      collect() {
        this.reset();
        for (const u of cluster()?.units ?? []) this.set({ unit: u.unit }, u.mine ? 1 : 0);
      },
    });
    new Gauge({
      name: 'evpub_unit_epoch',
      help: "The epoch of the unit's lease as this instance knows it (its own, or the owner's entry); absent while nobody owns it.",
      labelNames: ['unit'] as const,
      registers: [register],
      collect() {
        this.reset();
        for (const u of cluster()?.units ?? [])
          if (u.epoch !== undefined) this.set({ unit: u.unit }, u.epoch);
      },
    });
    tallyCounter(
      'evpub_unit_changes_total',
      'Units this instance acquired, released (handed over), lost (lease not renewed in time, or fenced) or failed to start.',
      ['unit', 'event'],
      unitChanges,
    );
  }

  // ---------------------------------------------------------------------------------------------
  // PostgreSQL slots, queried at scrape time

  const probeOf = (datasource: string): SlotProbe | undefined => {
    let probe = probes.get(datasource);
    if (probe) return probe;
    const settings = app.toConfig().datasources[datasource];
    if (settings?.connector !== 'postgres') return undefined;
    try {
      probe = new SlotProbe(datasource, settings, { timeoutMs: options.slotTimeoutMs, logger: app.logger });
    } catch {
      return undefined; // settings the connector refuses: start() reports them
    }
    probes.set(datasource, probe);
    return probe;
  };

  new Gauge({
    name: 'evpub_postgres_slot_wal_retained_bytes',
    help: 'Bytes of WAL the replication slot keeps (pg_current_wal_lsn() - confirmed_flush_lsn), asked at scrape time.',
    labelNames: ['datasource', 'slot'] as const,
    registers: [register],
    async collect() {
      this.reset();
      const probed = Object.entries(snapshot().datasources)
        .filter(([, d]) => d.connector === 'postgres')
        .map(([name]) => probeOf(name))
        .filter((p): p is SlotProbe => p !== undefined);
      const readings = await Promise.all(probed.map(async (p) => ({ p, r: await p.read() })));
      for (const { p, r } of readings) {
        if (r?.bytes !== null && r?.bytes !== undefined)
          this.set({ datasource: p.datasource, slot: r.slot }, r.bytes);
      }
    },
  });

  let closed = false;
  return {
    contentType: register.contentType,
    async text(): Promise<string> {
      current = undefined;
      try {
        return await register.metrics();
      } finally {
        current = undefined;
      }
    },
    close(): void {
      if (closed) return;
      closed = true;
      app.off('status', listener);
      register.clear();
      closeProbes();
    },
  };
}
