/**
 * What the management API serves, built from `app.status()` (nothing is tracked twice): a feed's
 * view, the list, readiness with its reasons, and in cluster mode the cluster (members, units,
 * owners). Each comes with its JSON schema, which both serializes the reply and describes it in
 * the OpenAPI document.
 */
import type { App, AppStatus } from '../app/app';
import type { FeedState } from '../app/runtime';
import type { ClusterView } from '../cluster/coordinator';

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
  /** Cluster mode: the unit the feed belongs to (what one instance owns through a lease). */
  unit?: string;
  /**
   * Cluster mode: who publishes the feed, as far as this instance knows (its own units, the
   * other members' entries); absent while nobody owns the unit. `mine`: this instance.
   */
  owner?: FeedOwner;
}

export interface FeedOwner {
  instance: string;
  /** The lease's epoch: it grows on every change of owner. */
  epoch: number;
  /** When that owner acquired the unit (ISO). */
  since: string;
  mine: boolean;
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
  /** Cluster mode: this instance, the cluster and the lease store's state (GET /api/cluster has the rest). */
  cluster?: ClusterSummary;
}

export interface ClusterSummary {
  instance: string;
  name: string;
  store: string;
  state: ClusterView['state'];
  error?: { code: string; message: string };
}

/** A live instance as GET /api/cluster shows it: only what an operator needs, no other `info`. */
export interface MemberView {
  instance: string;
  info: {
    host?: string;
    pid?: number;
    /** Its management API, when it serves one. */
    api?: string;
    /** The units it holds, with their epochs and since when (ISO). */
    units: Record<string, { epoch: number; since: string }>;
  };
  /** When its entry expires unless refreshed (the lease store's time, ISO). */
  expiresAt: string;
}

/** GET /api/cluster: the ClusterView of src/cluster/coordinator.ts with its members' info reduced. */
export interface ClusterApiView extends Omit<ClusterView, 'members'> {
  members: MemberView[];
}

export interface ReadyView {
  ready: boolean;
  /** Why not, one line each (empty when ready). */
  reasons: string[];
}

/**
 * States a ready feed may be in: reading, deliberately not, or (cluster mode) published by
 * another instance.
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
    ...(f.unit !== undefined ? { unit: f.unit } : {}),
    ...(f.owner ? { owner: f.owner } : {}),
  };
}

function clusterSummary(c: ClusterView): ClusterSummary {
  return {
    instance: c.instance,
    name: c.name,
    store: c.store,
    state: c.state,
    ...(c.error ? { error: c.error } : {}),
  };
}

export function feedsView(app: App): FeedsView {
  const status = app.status();
  return {
    state: status.state,
    startedAt: status.startedAt,
    feeds: Object.entries(status.feeds).map(([id, f]) => feedView(id, f)),
    brokers: Object.entries(status.brokers).map(([name, b]) => ({ name, ...b })),
    ...(status.cluster ? { cluster: clusterSummary(status.cluster) } : {}),
  };
}

/** A member's entry reduced to host, pid, API address and units (entries are written by other processes). */
function memberView(m: ClusterView['members'][number]): MemberView {
  const { host, pid, api, units } = m.info as {
    host?: unknown;
    pid?: unknown;
    api?: unknown;
    units?: unknown;
  };
  const held: MemberView['info']['units'] = {};
  if (units && typeof units === 'object') {
    for (const [unit, u] of Object.entries(units as Record<string, { epoch?: unknown; since?: unknown }>)) {
      if (typeof u?.epoch === 'number' && typeof u.since === 'string')
        held[unit] = { epoch: u.epoch, since: u.since };
    }
  }
  return {
    instance: m.instance,
    info: {
      ...(typeof host === 'string' ? { host } : {}),
      ...(typeof pid === 'number' ? { pid } : {}),
      ...(typeof api === 'string' ? { api } : {}),
      units: held,
    },
    expiresAt: m.expiresAt,
  };
}

/** The cluster as this instance sees it; undefined when the app runs no cluster (yet). */
export function clusterView(app: App): ClusterApiView | undefined {
  const cluster = app.status().cluster;
  if (!cluster) return undefined;
  return { ...cluster, members: cluster.members.map(memberView) };
}

/**
 * Ready: running, every feed reading (or paused on purpose, or published by another instance of
 * the cluster), every broker connected, and in cluster mode the lease store answering.
 */
export function readyView(app: App): ReadyView {
  const status = app.status();
  const reasons: string[] = [];
  if (status.state !== 'running') reasons.push(`the app is ${status.state}`);
  for (const [id, f] of Object.entries(status.feeds)) {
    if (READY_STATES.has(f.state)) continue;
    const error = f.error ? `: ${f.error.code} ${f.error.message}` : '';
    reasons.push(`feed ${id} is ${f.state}${error}`);
  }
  for (const [name, b] of Object.entries(status.brokers)) {
    if (b.state !== 'connected') reasons.push(`broker ${name} is ${b.state}`);
  }
  // Cluster mode: without the lease store no unit can be renewed or taken over; the units held
  // stop at their deadline. A standby feed is fine (another instance publishes it).
  if (status.cluster?.state === 'unreachable') {
    const error = status.cluster.error
      ? `: ${status.cluster.error.code} ${status.cluster.error.message}`
      : '';
    reasons.push(`the lease store (${status.cluster.store}) does not answer${error}`);
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
        'standby',
      ],
      description:
        'paused: by the operator; waiting: another feed of the same datasource is paused (one stream per datasource); standby (cluster mode): another instance owns its unit, or nobody yet (see owner)',
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
    unit: {
      type: 'string',
      description: 'cluster mode: the unit the feed belongs to (owned through one lease)',
    },
    owner: {
      type: 'object',
      properties: {
        instance: { type: 'string' },
        epoch: {
          type: 'integer',
          minimum: 0,
          description: "the lease's epoch: grows on every change of owner",
        },
        since: { type: 'string', description: 'when that instance acquired the unit' },
        mine: { type: 'boolean', description: 'whether it is this instance' },
      },
      description:
        'cluster mode: the instance publishing the feed, as far as this one knows; absent while nobody owns it',
    },
  },
} as const;

const statusErrorSchema = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' } },
} as const;

const clusterSummarySchema = {
  type: 'object',
  properties: {
    instance: { type: 'string', description: 'this instance' },
    name: { type: 'string', description: "the cluster's name" },
    store: { type: 'string', enum: ['postgres', 'redis', 'nats'], description: 'the lease store' },
    state: {
      type: 'string',
      enum: ['ok', 'unreachable'],
      description: 'unreachable: the lease store does not answer (held units stop at their deadline)',
    },
    error: statusErrorSchema,
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
    cluster: { ...clusterSummarySchema, description: 'cluster mode only' },
  },
} as const;

export const clusterSchema = {
  type: 'object',
  properties: {
    ...clusterSummarySchema.properties,
    members: {
      type: 'array',
      description: 'the live instances (membership entries not expired)',
      items: {
        type: 'object',
        properties: {
          instance: { type: 'string' },
          info: {
            type: 'object',
            properties: {
              host: { type: 'string' },
              pid: { type: 'integer' },
              api: { type: 'string', description: 'its management API, when it serves one' },
              units: {
                type: 'object',
                additionalProperties: {
                  type: 'object',
                  properties: { epoch: { type: 'integer' }, since: { type: 'string' } },
                },
                description: 'the units it holds: epoch and since when',
              },
            },
          },
          expiresAt: { type: 'string', description: 'when its entry expires unless refreshed' },
        },
      },
    },
    units: {
      type: 'array',
      description: 'every unit of the configuration with its owner (absent: nobody owns it now)',
      items: {
        type: 'object',
        properties: {
          unit: { type: 'string' },
          feeds: { type: 'array', items: { type: 'string' } },
          owner: { type: 'string' },
          epoch: { type: 'integer' },
          since: { type: 'string' },
          mine: { type: 'boolean', description: 'owned by this instance' },
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
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    code: { type: 'string', description: 'an EVPUB_* code, where one applies' },
    owner: { type: 'string', description: 'EVPUB_FEED_OWNED_ELSEWHERE: the instance that owns the feed' },
  },
} as const;
