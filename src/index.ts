/**
 * `evpub`: the event publisher. The app, datasources and models arrive with the publisher
 * issue; the pub/sub client is re-exported here and lives in `evpub/pubsub`.
 */
export * as pubsub from './pubsub/index';
export { EvpubError, ErrorCode, isEvpubError, redact } from './errors';
export { createLogger } from './logger';
export type { Logger } from './logger';
