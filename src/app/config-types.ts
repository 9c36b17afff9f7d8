/**
 * The shape of evpub's configuration after loading and validation (see config.ts, schema.ts).
 * `evpub.config.json|yaml`, LoopBack's `datasources.json` + `model-config.json`, and the
 * programmatic API (`app.dataSource()`, `app.model()`) all produce this one shape; it is
 * validated once, against a closed schema, then frozen.
 */
import type { CheckpointConfig } from '../checkpoints/config';
import type { ClusterConfig } from '../cluster/config';
import type { Operation } from '../events/change-event';
import type { EnvelopeName } from '../events/envelopes/config';

export type { CheckpointConfig, ClusterConfig, EnvelopeName };

export interface BrokerConfig {
  /** Broker URL: mqtt://, redis://, amqp://, nats://, kafka://, memory:// (secrets allowed, never logged). */
  url: string;
  /** Client options (see evpub/pubsub ClientOptions), e.g. `{ nats: { jetstream: true } }`. */
  options?: Record<string, unknown>;
}

export interface DataSourceConfig {
  /** A built-in connector name (`couchdb`, `memory`, ...) or an npm module name. */
  connector: string;
  /** Everything else is the connector's own settings (url, credentials, ...). */
  [setting: string]: unknown;
}

export interface ModelConfig {
  dataSource: string;
  /** A broker name from `brokers`, or a broker URL. Default: the broker named `default`. */
  broker?: string;
  /** Topic template with {datasource}, {model}, {op}, {key}. Default `{datasource}/{model}/{op}`. */
  topic?: string;
  /** Default `cloudevents` (structured JSON). */
  envelope?: EnvelopeName;
  /** Only these fields of before/after are published. */
  include?: string[];
  /** These fields of before/after are never published. */
  exclude?: string[];
  /** Only these operations are published (default: all). */
  ops?: Operation[];
  /** Where to start when there is no checkpoint: `beginning` or `now` (default `now`, the seed's behaviour). */
  from?: 'beginning' | 'now';
  /** Ignore any checkpoint and start from `from` (default false). */
  resetCheckpoint?: boolean;
  /** Connector-specific model settings (a table name, a database name, ...). */
  settings?: Record<string, unknown>;
}

export interface PublisherConfig {
  /**
   * Events of one feed between read and commit (unconfirmed, or confirmed behind an unconfirmed
   * one) before the source is paused (default 1000).
   */
  maxInFlight?: number;
  /**
   * Bytes of encoded events one feed holds between read and commit before the source is paused
   * (default 16 MiB; one event larger than this still goes, alone).
   */
  maxInFlightBytes?: number;
  /** The dead-letter topic (default `evpub/dead-letter`); older name of `deadLetter.topic`. */
  deadLetterTopic?: string;
  /**
   * Where events that cannot be published go, with their reason: `topic` (default
   * `evpub/dead-letter`) on `broker` (a name in `brokers` or a URL; default: each event's own
   * broker, so a broker that refuses everything can still take the dead letters elsewhere).
   */
  deadLetter?: { broker?: string; topic?: string };
  /** Largest encoded event in bytes before it is dead-lettered (default: the broker's max payload). */
  maxEventBytes?: number;
  /**
   * Times the broker may refuse one event (transiently: a nack, a quota) before it goes to the
   * dead-letter topic (default: retried without end). Failures to reach the broker never count.
   */
  maxAttempts?: number;
  /**
   * Dead letters in a row with one code (no event published between them) after which the feed
   * fails instead of sending every event to the dead-letter topic (default 100; 0: no limit).
   */
  deadLetterLimit?: number;
  /**
   * Least ms between two checkpoint saves of a feed (default 200; 0 saves after every advance).
   * A crash publishes again at most this long's worth of confirmed events, plus those in flight.
   */
  checkpointInterval?: number;
}

/** The management HTTP server (`evpub start` serves it; `app.listen()` in the JS API). */
export interface HttpConfig {
  /** Address to bind (default 127.0.0.1). Any other than loopback requires a `token`. */
  host?: string;
  /** Port (default EVPUB_HTTP_PORT, else 7401; 0 picks a free one). */
  port?: number;
  /**
   * Bearer token every route but /health and /ready requires (default EVPUB_HTTP_TOKEN; none:
   * no authentication, allowed on loopback only). A secret: never logged or served.
   */
  token?: string;
  /** `evpub start` serves it (default true). */
  enabled?: boolean;
  /**
   * The live event stream (`/api/events`): `ring`, events held for a browser's replay (default
   * 1000); `clientQueue`, each browser's bound in events and bytes (defaults 1000 and 4 MiB).
   */
  events?: { ring?: number; clientQueue?: { messages?: number; bytes?: number } };
}

export interface EvpubConfig {
  brokers: Record<string, BrokerConfig>;
  checkpoints: CheckpointConfig;
  datasources: Record<string, DataSourceConfig>;
  models: Record<string, ModelConfig>;
  publisher: PublisherConfig;
  /** After validation: host, port and enabled always set (token when configured or in the env). */
  http: HttpConfig;
  /**
   * Several instances sharing the feeds through leases (docs/cluster.md). After validation the
   * parsed form (durations in ms, `instance` defaulted). Absent: this instance runs alone.
   */
  cluster?: ClusterConfig;
}
