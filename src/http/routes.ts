/**
 * The management API as a fastify plugin: `evpub start` and `app.listen()` serve it on their own
 * server (server.ts); an application with its own fastify registers it:
 *
 *   await fastify.register(evpubApi, { app, token: process.env.EVPUB_HTTP_TOKEN, prefix: '/evpub' });
 *
 * Routes (each with a JSON schema; the whole API is OpenAPI 3 at `/openapi.json`):
 *   GET  /health                      200 while the process answers (no token needed)
 *   GET  /ready                       200 when running, every feed reading or paused on purpose
 *                                     (or, in a cluster, run by another instance), every broker
 *                                     connected, the lease store answering; 503 with the reasons
 *                                     (no token)
 *   GET  /api/feeds                   every feed: state, position, in flight, counters, rate
 *   GET  /api/feeds/:datasource/:model  one feed (or /api/feeds/:feed with the id URL-encoded)
 *   POST /api/feeds/:datasource/:model/pause | /resume   idempotent; 404 for an unknown feed
 *   POST /api/feeds/:datasource/:model/snapshot   re-snapshot beside the stream: 202 started or
 *                                     already running (with its progress), 404 unknown feed, 409
 *                                     when its connector cannot (the reason in `message`), 503
 *                                     when the source failed as it began
 *   (cluster mode: pause, resume and snapshot of a feed another instance owns: 409 with
 *    `code: EVPUB_FEED_OWNED_ELSEWHERE` and `owner`; ask that instance)
 *   GET  /api/cluster                 cluster mode: the live instances, every unit with its owner,
 *                                     epoch and since when, the lease store's state (404 alone,
 *                                     503 until the app has started)
 *   GET  /api/config                  the effective configuration, secrets redacted
 *   GET  /metrics                     Prometheus text format
 *   GET  /openapi.json                this API
 *   GET  /api/events                  live events as Server-Sent Events (events.ts)
 *   GET  /api/events/ws               the same over a WebSocket
 *   GET  /, /dashboard/*              the dashboard: static files, no token (they hold no data;
 *                                     the page sends the token on its calls) (dashboard.ts)
 *
 * Security: with a token, every route but /health and /ready wants `Authorization: Bearer
 * <token>`, compared in constant time (SHA-256 digests of equal length); anything else gets 401
 * with no detail. The event stream, which a browser opens without headers, also takes it as
 * `?token=` or the `evpub_token` cookie. Bodies are validated by an Ajv of this plugin that rejects unknown keys (400
 * naming the field). No reply carries a secret: the config is redacted, broker URLs too.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import swagger from '@fastify/swagger';
import Ajv, { type ErrorObject } from 'ajv';
import type {
  FastifyError,
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
} from 'fastify';
import type { App } from '../app/app';
import type { SnapshotStart } from '../connectors/contract';
import { redactConfig } from '../app/config';
import { ErrorCode, isEvpubError } from '../errors';
import { collectSecrets, redactText, redactValue } from '../util/redact';
import { createMetrics } from '../metrics/index';
import { dashboardRoutes } from './dashboard';
import { eventsRoutes, type EventsRoutesOptions } from './events';
import {
  clusterSchema,
  clusterView,
  errorSchema,
  feedSchema,
  feedsSchema,
  feedsView,
  feedView,
  readySchema,
  readyView,
} from './views';

export interface EvpubApiOptions {
  app: App;
  /** The bearer token the API requires (none: open, for loopback only). */
  token?: string;
  /** The live event stream's bounds (config `http.events`; see events.ts). */
  events?: Pick<EventsRoutesOptions, 'ringSize' | 'clientQueue'>;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the token (/health, /ready). */
    public?: boolean;
    /**
     * A route a browser opens itself (EventSource, WebSocket), which cannot set a header: the
     * token may also come as `?token=` or the `evpub_token` cookie.
     */
    browserToken?: boolean;
  }
}

/** The field an Ajv error is about, as `body.reason`, and what is wrong with it. */
function validationMessage(context: string, err: ErrorObject): string {
  const at = [context, ...err.instancePath.split('/').filter(Boolean)].join('.');
  const params = err.params as { additionalProperty?: string; missingProperty?: string };
  if (params.additionalProperty !== undefined)
    return `${at}.${params.additionalProperty}: is not a known field`;
  if (params.missingProperty !== undefined) return `${at}.${params.missingProperty}: is required`;
  return `${at}: ${err.message ?? 'is invalid'}`;
}

/** A constant-time comparison with the token (SHA-256 digests of equal length). */
function tokenCheck(token: string): (given: string | undefined) => boolean {
  const expected = createHash('sha256').update(token).digest();
  return (given) => {
    const digest = createHash('sha256')
      .update(given ?? '')
      .digest();
    return timingSafeEqual(digest, expected) && given !== undefined;
  };
}

/** The token of `Authorization: Bearer <token>`. */
function bearerToken(header: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];
}

/** The token a browser sends on a route it opens itself: `?token=`, else the `evpub_token` cookie. */
function browserToken(request: FastifyRequest): string | undefined {
  const query = request.query as { token?: unknown } | undefined;
  if (typeof query?.token === 'string') return query.token;
  const cookie = /(?:^|;\s*)evpub_token=([^;]*)/.exec(request.headers.cookie ?? '')?.[1];
  return cookie === undefined ? undefined : decodeURIComponent(cookie);
}

const feedParams = {
  type: 'object',
  required: ['datasource', 'model'],
  properties: { datasource: { type: 'string' }, model: { type: 'string' } },
} as const;
const encodedFeedParams = {
  type: 'object',
  required: ['feed'],
  properties: { feed: { type: 'string', description: 'the feed id datasource/model, URL-encoded' } },
} as const;
const pauseBody = {
  type: 'object',
  nullable: true,
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 200, description: 'logged with the pause' } },
} as const;
const changedSchema = {
  type: 'object',
  properties: {
    changed: { type: 'boolean', description: 'false when the feed already was in that state' },
    feed: { $ref: 'evpub-feed#' },
  },
} as const;

type FeedRequest = FastifyRequest<{
  Params: { datasource?: string; model?: string; feed?: string };
  Body: { reason?: string } | null | undefined;
}>;

function feedIdOf(request: FeedRequest): string {
  const p = request.params;
  return p.feed ?? `${p.datasource}/${p.model}`;
}

function notFound(reply: FastifyReply, feedId: string): FastifyReply {
  return reply.code(404).send({ error: 'Not Found', message: `no feed ${JSON.stringify(feedId)}` });
}

export const evpubApi: FastifyPluginAsync<EvpubApiOptions> = async (fastify, options) => {
  const { app } = options;
  const ajv = new Ajv({ allErrors: false, strict: false, coerceTypes: false, removeAdditional: false });
  fastify.setValidatorCompiler(({ schema }) => ajv.compile(schema));
  fastify.addSchema(feedSchema);

  await fastify.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'evpub management API',
        description:
          'Health, readiness, feeds (pause/resume/re-snapshot), configuration and metrics of an evpub process.',
        version: '1',
      },
      ...(options.token
        ? {
            components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
            security: [{ bearer: [] }],
          }
        : {}),
    },
    refResolver: {
      buildLocalReference: (json, _base, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    // The plugin marks every body required; pause, resume and snapshot take none, or `{ reason }`.
    transformObject: (doc) => {
      const openapi = 'openapiObject' in doc ? doc.openapiObject : doc.swaggerObject;
      for (const item of Object.values(openapi.paths ?? {})) {
        const body = (item as { post?: { requestBody?: { required?: boolean } } } | undefined)?.post
          ?.requestBody;
        if (body) body.required = false;
      }
      return openapi;
    },
  });

  if (options.token) {
    const check = tokenCheck(options.token);
    fastify.addHook('onRequest', (request, reply, done) => {
      const config = request.routeOptions.config;
      if (config.public || check(bearerToken(request.headers.authorization))) return done();
      if (config.browserToken && check(browserToken(request))) return done();
      // Answered here: the route never runs (no `done()`).
      void reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'Unauthorized' });
    });
  }

  fastify.setErrorHandler((err: FastifyError, request, reply) => {
    if (err.validation) {
      const message = err.validation.map((e) =>
        validationMessage(err.validationContext ?? 'request', e as ErrorObject),
      );
      return reply.code(400).send({ error: 'Bad Request', message: message.join('; ') });
    }
    if (isEvpubError(err, ErrorCode.FEED_NOT_FOUND)) return notFound(reply, String(err.context.feed));
    if (isEvpubError(err, ErrorCode.FEED_OWNED_ELSEWHERE)) {
      const owner = err.context.owner;
      return reply.code(409).send({
        error: 'Conflict',
        code: err.code,
        message: err.message,
        ...(typeof owner === 'string' ? { owner } : {}),
      });
    }
    if (isEvpubError(err, ErrorCode.INVALID_STATE)) {
      return reply.code(409).send({ error: 'Conflict', message: err.message });
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: 'Bad Request', message: err.message });
    }
    request.log.error({ err, route: request.routeOptions.url }, 'management API: request failed');
    return reply.code(500).send({ error: 'Internal Server Error' });
  });

  // No reply carries a secret, whatever a route returns (feed and broker errors with their
  // causes, metric labels): JSON bodies go through redactValue, text bodies (/metrics) through
  // redactText, with the configuration's own secret values as known ones. The event streams
  // write user events themselves (not through these hooks); the API's own OpenAPI document is
  // left as written.
  const known = collectSecrets(app.effectiveConfig() ?? app.toConfig());
  fastify.addHook('preSerialization', async (request, _reply, payload: unknown) =>
    request.routeOptions.url?.endsWith('/openapi.json') ? payload : redactValue(payload, { known }),
  );
  fastify.addHook('onSend', async (_request, reply, payload: unknown) => {
    const type = String(reply.getHeader('content-type') ?? '');
    return typeof payload === 'string' && type.startsWith('text/plain')
      ? redactText(payload, known)
      : payload;
  });

  const metrics = createMetrics(app);
  fastify.addHook('onClose', () => metrics.close());

  const errors = { 401: errorSchema, 404: errorSchema };

  fastify.get(
    '/health',
    {
      config: { public: true },
      schema: {
        summary: 'Liveness: the process and its event loop answer',
        tags: ['health'],
        security: [],
        response: { 200: { type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } } },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  fastify.get(
    '/ready',
    {
      config: { public: true },
      schema: {
        summary: 'Readiness: every feed streaming, snapshotting or paused on purpose, every broker connected',
        tags: ['health'],
        security: [],
        response: { 200: readySchema, 503: readySchema },
      },
    },
    async (_request, reply) => {
      const view = readyView(app);
      return reply.code(view.ready ? 200 : 503).send(view);
    },
  );

  fastify.get(
    '/api/feeds',
    { schema: { summary: 'Every feed', tags: ['feeds'], response: { 200: feedsSchema, 401: errorSchema } } },
    async () => feedsView(app),
  );

  const getFeed = async (request: FeedRequest, reply: FastifyReply) => {
    const id = feedIdOf(request);
    const feed = app.status().feeds[id];
    if (!feed) return notFound(reply, id);
    return feedView(id, feed);
  };
  const oneFeed = {
    summary: 'One feed',
    tags: ['feeds'],
    response: { 200: { $ref: 'evpub-feed#' }, ...errors },
  };
  fastify.get('/api/feeds/:datasource/:model', { schema: { ...oneFeed, params: feedParams } }, getFeed);
  fastify.get('/api/feeds/:feed', { schema: { ...oneFeed, params: encodedFeedParams } }, getFeed);

  for (const action of ['pause', 'resume'] as const) {
    const handler = async (request: FeedRequest) => {
      const id = feedIdOf(request);
      const changed = action === 'pause' ? app.pause(id) : app.resume(id);
      const reason = request.body?.reason;
      if (changed) request.log.info({ feed: id, ...(reason ? { reason } : {}) }, `feed ${action}d over HTTP`);
      return { changed, feed: feedView(id, app.status().feeds[id]!) };
    };
    const schema = {
      summary:
        action === 'pause'
          ? 'Pause a feed: its datasource is no longer read (every feed of it waits), the checkpoint stays, nothing is lost'
          : 'Resume a paused feed from where it stopped',
      tags: ['feeds'],
      body: pauseBody,
      response: { 200: changedSchema, 400: errorSchema, ...errors, 409: errorSchema },
    };
    fastify.post(
      `/api/feeds/:datasource/:model/${action}`,
      { schema: { ...schema, params: feedParams } },
      handler,
    );
    fastify.post(`/api/feeds/:feed/${action}`, { schema: { ...schema, params: encodedFeedParams } }, handler);
  }

  const resnapshot = async (request: FeedRequest, reply: FastifyReply) => {
    const id = feedIdOf(request);
    let start: SnapshotStart;
    try {
      start = await app.resnapshot(id);
    } catch (err) {
      const handled: string[] = [ErrorCode.FEED_NOT_FOUND, ErrorCode.FEED_OWNED_ELSEWHERE];
      if (!isEvpubError(err) || handled.includes(err.code)) throw err;
      // The connector cannot (NOT_SUPPORTED), not now (INVALID_STATE), or not this table
      // (CONFIG_INVALID: no primary key): 409, the operator reads why. Anything else (the source
      // unreachable while the snapshot begins): 503, try again. Messages carry no secrets.
      const cannot: string[] = [ErrorCode.NOT_SUPPORTED, ErrorCode.INVALID_STATE, ErrorCode.CONFIG_INVALID];
      if (cannot.includes(err.code)) {
        return reply.code(409).send({ error: 'Conflict', message: err.message });
      }
      return reply.code(503).send({ error: 'Service Unavailable', message: `${err.code}: ${err.message}` });
    }
    const reason = request.body?.reason;
    if (start.started)
      request.log.info({ feed: id, ...(reason ? { reason } : {}) }, 'feed re-snapshot over HTTP');
    const { started, done, total } = start;
    return reply.code(202).send({
      started,
      snapshot: { done, ...(total !== undefined ? { total } : {}) },
      feed: feedView(id, app.status().feeds[id]!),
    });
  };
  const snapshotSchema = {
    summary:
      'Re-snapshot a feed: its connector reads the table again from the first row, as snapshot events, beside the stream (which goes on); a restart mid-way resumes it',
    tags: ['feeds'],
    body: pauseBody,
    response: {
      202: {
        type: 'object',
        properties: {
          started: {
            type: 'boolean',
            description: 'true: this call started it; false: a snapshot was already running',
          },
          snapshot: {
            type: 'object',
            properties: { done: { type: 'integer', minimum: 0 }, total: { type: 'integer', minimum: 0 } },
            description: "the running snapshot's progress in rows",
          },
          feed: { $ref: 'evpub-feed#' },
        },
      },
      400: errorSchema,
      ...errors,
      409: {
        ...errorSchema,
        description: 'its connector cannot re-snapshot this feed (now); message says why',
      },
      503: { ...errorSchema, description: 'the snapshot could not begin (the source failed); try again' },
    },
  };
  fastify.post(
    '/api/feeds/:datasource/:model/snapshot',
    { schema: { ...snapshotSchema, params: feedParams } },
    resnapshot,
  );
  fastify.post(
    '/api/feeds/:feed/snapshot',
    { schema: { ...snapshotSchema, params: encodedFeedParams } },
    resnapshot,
  );

  fastify.get(
    '/api/cluster',
    {
      schema: {
        summary:
          'Cluster mode: the live instances and their units, every unit with its owner, epoch and since when, the lease store state',
        tags: ['cluster'],
        response: {
          200: clusterSchema,
          401: errorSchema,
          404: { ...errorSchema, description: 'this evpub runs alone (no `cluster` in its configuration)' },
          503: { ...errorSchema, description: 'the app has not started (joined the cluster) yet' },
        },
      },
    },
    async (_request, reply) => {
      const view = clusterView(app);
      if (view) return view;
      if (!app.toConfig().cluster) {
        return reply.code(404).send({
          error: 'Not Found',
          message: 'this evpub runs alone: its configuration has no `cluster` section (docs/cluster.md)',
        });
      }
      return reply.code(503).send({
        error: 'Service Unavailable',
        message: `the app is ${app.state}: it has not joined the cluster yet`,
      });
    },
  );

  fastify.get(
    '/api/config',
    {
      schema: {
        summary: 'The effective configuration, every secret redacted',
        tags: ['config'],
        response: { 200: { type: 'object', additionalProperties: true }, 401: errorSchema },
      },
    },
    async () => redactConfig(app.effectiveConfig() ?? app.toConfig()),
  );

  fastify.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics (text format)',
        tags: ['metrics'],
        produces: ['text/plain'],
        response: { 200: { type: 'string' }, 401: errorSchema },
      },
    },
    async (_request, reply) => reply.type(metrics.contentType).send(await metrics.text()),
  );

  fastify.get(
    '/openapi.json',
    {
      schema: {
        summary: 'This API as OpenAPI 3',
        tags: ['meta'],
        response: { 200: { type: 'object', additionalProperties: true }, 401: errorSchema },
      },
    },
    async () => fastify.swagger(),
  );

  // The live event stream (events.ts), under the same token hook and error handler.
  await fastify.register(eventsRoutes, { app, ...options.events });
  await fastify.register(dashboardRoutes);
};

/** The routes' own instance type, for callers that want to inject requests in tests. */
export type EvpubApiInstance = FastifyInstance;
