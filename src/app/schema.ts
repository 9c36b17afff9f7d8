/**
 * The closed JSON schema of evpub's configuration (the shape in config-types.ts).
 *
 * Closed means every object lists its keys and anything else is an error, with two deliberate
 * openings: a datasource holds its connector's own settings next to `connector`, and
 * `brokers.*.options` / `models.*.settings` are passed through to the client / connector.
 * What a schema cannot say (a model's datasource exists, a URL scheme has an adapter, a topic
 * template uses known placeholders, a connector is installed) is checked in config.ts.
 */
import { OPERATIONS } from '../events/change-event';

export const ENVELOPES = ['cloudevents', 'cloudevents-binary', 'legacy'] as const;
export const CHECKPOINT_STORES = ['file', 'redis', 'postgres', 'memory'] as const;
export const TOPIC_PLACEHOLDERS = ['datasource', 'model', 'op', 'key'] as const;
export const DEFAULT_CHECKPOINT_PATH = '.evpub/checkpoints';
export const DEFAULT_HTTP_HOST = '127.0.0.1';
export const DEFAULT_HTTP_PORT = 7401;

const name = { type: 'string', minLength: 1 } as const;
const stringList = { type: 'array', items: name, uniqueItems: true } as const;

const broker = {
  type: 'object',
  additionalProperties: false,
  required: ['url'],
  properties: {
    url: { type: 'string', format: 'uri' },
    options: { type: 'object' },
  },
} as const;

const checkpoints = {
  type: 'object',
  required: ['store'],
  properties: { store: { enum: [...CHECKPOINT_STORES] } },
  discriminator: { propertyName: 'store' },
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      properties: { store: { const: 'file' }, path: name },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        store: { const: 'redis' },
        url: { type: 'string', format: 'uri' },
        prefix: { type: 'string' },
        // Checked by parseTls in config.ts (naming the nearest key).
        tls: { anyOf: [{ type: 'boolean' }, { type: 'object' }] },
        username: name,
        password: { type: 'string' },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        store: { const: 'postgres' },
        url: { type: 'string', format: 'uri' },
        table: name,
        // Checked by parseTls in config.ts (naming the nearest key).
        tls: { anyOf: [{ type: 'boolean' }, { type: 'object' }] },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      properties: { store: { const: 'memory' } },
    },
  ],
} as const;

const datasource = {
  type: 'object',
  required: ['connector'],
  properties: { connector: name },
} as const;

export const MODEL_KEYS = [
  'dataSource',
  'broker',
  'topic',
  'envelope',
  'include',
  'exclude',
  'ops',
  'from',
  'resetCheckpoint',
  'settings',
] as const;

const model = {
  type: 'object',
  additionalProperties: false,
  required: ['dataSource'],
  properties: {
    dataSource: name,
    broker: name,
    topic: name,
    envelope: { enum: [...ENVELOPES] },
    include: stringList,
    exclude: stringList,
    ops: { type: 'array', items: { enum: [...OPERATIONS] }, uniqueItems: true, minItems: 1 },
    from: { enum: ['beginning', 'now'] },
    resetCheckpoint: { type: 'boolean' },
    settings: { type: 'object' },
  },
} as const;

const publisher = {
  type: 'object',
  additionalProperties: false,
  properties: {
    maxInFlight: { type: 'integer', minimum: 1 },
    maxInFlightBytes: { type: 'integer', minimum: 1 },
    deadLetterTopic: name,
    deadLetter: {
      type: 'object',
      additionalProperties: false,
      properties: { broker: name, topic: name },
    },
    maxEventBytes: { type: 'integer', minimum: 1 },
    maxAttempts: { type: 'integer', minimum: 1 },
    deadLetterLimit: { type: 'integer', minimum: 0 },
    checkpointInterval: { type: 'integer', minimum: 0 },
  },
} as const;

const http = {
  type: 'object',
  additionalProperties: false,
  properties: {
    host: name,
    port: { type: 'integer', minimum: 0, maximum: 65535 },
    token: { type: 'string', minLength: 1 },
    enabled: { type: 'boolean' },
    events: {
      type: 'object',
      additionalProperties: false,
      properties: {
        ring: { type: 'integer', minimum: 1 },
        clientQueue: {
          type: 'object',
          additionalProperties: false,
          properties: {
            messages: { type: 'integer', minimum: 1 },
            bytes: { type: 'integer', minimum: 1 },
          },
        },
      },
    },
  },
} as const;

export const configSchema = {
  $id: 'https://evpub.dev/schema/config.json',
  type: 'object',
  additionalProperties: false,
  required: ['datasources', 'models'],
  properties: {
    brokers: { type: 'object', additionalProperties: broker },
    checkpoints,
    datasources: { type: 'object', additionalProperties: datasource },
    models: { type: 'object', additionalProperties: model },
    publisher,
    http,
    // Checked by parseClusterConfig (src/cluster/config.ts) in config.ts: a closed schema of its
    // own whose keys depend on the store, with messages that name the store a key belongs to.
    cluster: { type: 'object' },
  },
} as const;
