/**
 * What the management API serves, built from `app.status()` (nothing is tracked twice): a feed's
 * view, the list, and readiness with its reasons. Each comes with its JSON schema, which both
 * serializes the reply and describes it in the OpenAPI document.
 */
import type { App, AppStatus } from '../app/app';
import type { FeedState } from '../app/runtime';

export interface FeedView {
  id: string;
  datasource: string;
  model: string;
  broker: string;
  topic: string;
  envelope: string;
  state: FeedState;
  /** For `failed`: its last error. */
  error?: { code: string; message: string };
  /** For `snapshotting`: rows done and the total where known. */
  snapshot?: { done: number; total?: number };
  /** For `paused` and `waiting`: the paused feeds that hold the datasource. */
  pausedBy?: string[];
  /** Whether its connector can re-snapshot it (POST .../snapshot). */
  canSnapshot: boolean;
  position: { committed: string | null; saved: string | null };
  inFlight: number;
  inFlightBytes: number;
  counters: { received: number; published: number; deadLettered: number; filtered: number; retries: number };
  eventsPerSecond: number;
  /**
   * How far behind its source the connector reads, as it last reported it (bytes of the
   * source's log, seconds) and when. Absent when the connector reports no lag.
   */
  lag?: { bytes?: number; seconds?: number; at: string };
}

export interface BrokerView {
  name: string;
  adapter: string;
  state: string;
  /** Without credentials. */
  url: string;
}

export interface FeedsView {
  state: AppStatus['state'];
  startedAt: string | null;
  feeds: FeedView[];
  brokers: BrokerView[];
}

export interface ReadyView {
  ready: boolean;
  /** Why not, one line each (empty when ready). */
  reasons: string[];
}

/**
 * States a ready feed may be in: reading, or deliberately not. `standby` (cluster mode): another
 * instance runs the feed's unit, or will take it; this instance is ready to.
 */
const READY_STATES = new Set<FeedState>(['streaming', 'snapshotting', 'paused', 'waiting', 'standby']);

export function feedView(id: string, f: AppStatus['feeds'][string]): FeedView {
  return {
    id,
    datasource: f.datasource,
    model: f.model,
    broker: f.broker,
    topic: f.topic,
    envelope: f.envelope,
    state: f.state,
    ...(f.error ? { error: f.error } : {}),
    ...(f.snapshot ? { snapshot: f.snapshot } : {}),
    ...(f.pausedBy ? { pausedBy: f.pausedBy } : {}),
    canSnapshot: f.canSnapshot,
    position: { committed: f.committed, saved: f.saved },
    inFlight: f.inFlight ?? 0,
    inFlightBytes: f.inFlightBytes ?? 0,
    counters: {
      received: f.received ?? 0,
      published: f.published ?? 0,
      deadLettered: f.deadLettered ?? 0,
      filtered: f.filtered ?? 0,
      retries: f.retries ?? 0,
    },
    eventsPerSecond: f.eventsPerSecond,
    ...(f.lag ? { lag: f.lag } : {}),
  };
}

export function feedsView(app: App): FeedsView {
  const status = app.status();
  return {
    state: status.state,
    startedAt: status.startedAt,
    feeds: Object.entries(status.feeds).map(([id, f]) => feedView(id, f)),
    brokers: Object.entries(status.brokers).map(([name, b]) => ({ name, ...b })),
  };
}

/**
 * Ready: running, every feed reading (or paused on purpose, or run by another instance of the
 * cluster), every broker connected, and in cluster mode the lease store answering (while it does
 * not, this instance's units stop at their deadlines and none can be taken).
 */
export function readyView(app: App): ReadyView {
  const status = app.status();
  const reasons: string[] = [];
  if (status.state !== 'running') reasons.push(`the app is ${status.state}`);
  const cluster = status.cluster;
  if (cluster && cluster.state !== 'ok') {
    const error = cluster.error ? `: ${cluster.error.code} ${cluster.error.message}` : '';
    reasons.push(`the ${cluster.store} lease store is ${cluster.state}${error}`);
  }
  for (const [id, f] of Object.entries(status.feeds)) {
    if (READY_STATES.has(f.state)) continue;
    const error = f.error ? `: ${f.error.code} ${f.error.message}` : '';
    reasons.push(`feed ${id} is ${f.state}${error}`);
  }
  for (const [name, b] of Object.entries(status.brokers)) {
    if (b.state !== 'connected') reasons.push(`broker ${name} is ${b.state}`);
  }
  return { ready: reasons.length === 0, reasons };
}

// ---------------------------------------------------------------------------------------------
// Schemas

const counter = { type: 'integer', minimum: 0 } as const;
const nullableString = { type: 'string', nullable: true } as const;

export const feedSchema = {
  $id: 'evpub-feed',
  type: 'object',
  required: ['id', 'datasource', 'model', 'state', 'position', 'inFlight', 'counters', 'eventsPerSecond'],
  properties: {
    id: { type: 'string', description: 'datasource/model' },
    datasource: { type: 'string' },
    model: { type: 'string' },
    broker: { type: 'string' },
    topic: { type: 'string', description: 'the topic template' },
    envelope: { type: 'string' },
    state: {
      type: 'string',
      enum: [
        'starting',
        'streaming',
        'snapshotting',
        'paused',
        'waiting',
        'reconnecting',
        'failed',
        'stopped',
      ],
      description:
        'paused: by the operator; waiting: another feed of the same datasource is paused (one stream per datasource)',
    },
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
      description: 'the last error of a failed feed',
    },
    snapshot: {
      type: 'object',
      properties: { done: counter, total: counter },
      description: 'snapshot progress in rows (total where the connector knows it)',
    },
    pausedBy: { type: 'array', items: { type: 'string' } },
    canSnapshot: {
      type: 'boolean',
      description: 'whether its connector can re-snapshot it (POST /api/feeds/{datasource}/{model}/snapshot)',
    },
    position: {
      type: 'object',
      properties: { committed: nullableString, saved: nullableString },
      description: 'committed: confirmed by the broker up to here; saved: in the checkpoint store',
    },
    inFlight: counter,
    inFlightBytes: counter,
    counters: {
      type: 'object',
      properties: {
        received: counter,
        published: counter,
        deadLettered: counter,
        filtered: counter,
        retries: counter,
      },
    },
    eventsPerSecond: { type: 'number', description: 'events published per second over the last minute' },
    lag: {
      type: 'object',
      properties: {
        bytes: { type: 'number', minimum: 0 },
        seconds: { type: 'number', minimum: 0 },
        at: { type: 'string', description: 'when the connector reported it' },
      },
      description:
        "how far behind its source the connector reads, as last reported (PostgreSQL: the slot's WAL in bytes; MySQL/MariaDB: binlog bytes and seconds); absent for connectors that do not report it",
    },
  },
} as const;

export const feedsSchema = {
  type: 'object',
  properties: {
    state: { type: 'string', enum: ['idle', 'starting', 'running', 'stopping'] },
    startedAt: nullableString,
    feeds: { type: 'array', items: { $ref: 'evpub-feed#' } },
    brokers: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          adapter: { type: 'string' },
          state: { type: 'string' },
          url: { type: 'string', description: 'without credentials' },
        },
      },
    },
  },
} as const;

export const readySchema = {
  type: 'object',
  properties: { ready: { type: 'boolean' }, reasons: { type: 'array', items: { type: 'string' } } },
} as const;

export const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
} as const;
