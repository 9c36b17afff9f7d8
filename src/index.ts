/**
 * `evpub`: the event publisher. The pub/sub client lives in `evpub/pubsub` (also re-exported
 * here as `pubsub`).
 */
export { evpub, App } from './app/app';
export type { AppState, AppStatus, AppEventMap, EvpubOptions, Listening } from './app/app';
export type { FeedState } from './app/runtime';
export type { ChangeToPublish, PublishChangeResult } from './app/publish-change';
export type { FeedView, FeedsView, ReadyView } from './http/views';
export { DataSource } from './app/datasource';
export type { Model, ModelDefinition, ModelOptions } from './app/datasource';
export type {
  BrokerConfig,
  CheckpointConfig,
  DataSourceConfig,
  EnvelopeName,
  EvpubConfig,
  HttpConfig,
  ModelConfig,
  PublisherConfig,
} from './app/config-types';
export type { PublisherStatus, PublisherStatusType, StatusError } from './pipeline/status';
export type { ChangeEvent, Operation, Position, Row, StartFrom } from './events/change-event';
export { OPERATIONS } from './events/change-event';
export type {
  ChangeSink,
  ConnectorHealth,
  ConnectorModule,
  ConnectorStatus,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  SnapshotStart,
  StartRequest,
} from './connectors/contract';
export { ConnectorRegistry, builtinConnectors } from './connectors/registry';
export { loadConfig, loadConfigFrom, validateConfig, redactConfig } from './app/config';
export { MemoryConnector, MemoryStore, memoryStore } from './connectors/memory';
export type { CheckpointStore } from './checkpoints/contract';
export {
  createCheckpointStore,
  FileCheckpointStore,
  MemoryCheckpointStore,
  PostgresCheckpointStore,
  RedisCheckpointStore,
} from './checkpoints/index';
export type { Envelope, EncodedEvent } from './events/envelopes/index';
export { createEnvelope, structuredEnvelope, binaryEnvelope, legacyEnvelope } from './events/envelopes/index';
export * as pubsub from './pubsub/index';
export { EvpubError, ErrorCode, isEvpubError, redact, redactText } from './errors';
export { redactValue } from './util/redact';
export { createLogger, redactChildBindings, redactingLogOptions } from './logger';
export type { Logger } from './logger';
// Live events for browsers (issue 12): `app.events()` and the SSE/WebSocket routes as a plugin.
export type { PublishedEvent, PublishedEventSource, PublishedListener } from './app/published-events';
export { eventsRoutes, EventStream } from './http/events';
export type { EventsRoutesOptions, EventStreamOptions, EventStreamStats } from './http/events';
