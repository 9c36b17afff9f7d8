/**
 * The webhook connector (built-in `webhook`): an HTTP(S) endpoint per model that third-party
 * systems POST events to (settings: settings.ts; who may post: auth.ts).
 *
 * Protocol of one request (POST {basePath}{path}):
 * 1. The endpoint's rate limit takes a token (none left: 429 with `Retry-After`).
 * 2. The body is read as bytes up to `bodyLimit` (larger: 413). It is checked against the
 *    endpoint's `auth` (auth.ts; failing: 401 with a body that says nothing more). With
 *    standard-webhooks, the `webhook-id` is then claimed in the endpoint's ReplayGuard: an id
 *    seen inside the tolerance window is a replay (401); the claim is released again when the
 *    request is not answered 202, so the sender's retry is accepted. The body must be JSON (else
 *    400) and hold a key at `keyPath` (else 400). Nothing of a refused request is published.
 * 3. While the publisher's window is full (a previous `push` returned false and `drain()` has
 *    not resolved), the request is answered 503 with `Retry-After` and not pushed: the sender
 *    holds the backlog, not our memory.
 * 4. Otherwise the event gets the model's next position (1, 2, 3... within this process) and is
 *    pushed. The request waits: `commit(model, p)` with p ≥ its position means the broker
 *    accepted it (and every earlier one), and it is answered 202 `{ id, position }`. Without
 *    that within `ackTimeout` ms it is answered 503 + `Retry-After`: the sender retries, so
 *    delivery is at-least-once. The pipeline may still publish the timed-out event later, so a
 *    retry can duplicate it; with `idPath`/`idHeader` (or the `webhook-id` of
 *    standard-webhooks) both copies carry the same event id.
 *
 * `start()` refuses (CONFIG_INVALID naming the model's `auth`) to listen on an address other
 * than loopback for an endpoint with no auth, unless `auth: 'none'` or required client
 * certificates (`tls.ca`) are configured.
 *
 * Several instances (contract point 10): the endpoints of a datasource are one server on one
 * address (`host`, `port`), so they are one unit of ownership, held by one instance at a time:
 * no `units()` (the default). Senders reach the holder (e.g. through a load balancer that
 * checks the port); the others do not listen.
 *
 * Not resumable: a position means something only inside this process (the counter restarts
 * at 1), and nothing is lost by a restart that the sender does not retry. The checkpoint
 * store is used only as the pipeline's path to `commit()`.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode, EvpubError, toError } from '../../errors';
import { eventId, type ChangeEvent, type Operation, type Position } from '../../events/change-event';
import { defaultLogger, type Logger } from '../../logger';
import { loadDriver } from '../../util/driver';
import type {
  ChangeSink,
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  StartRequest,
} from '../contract';
import { getPath, scalarString } from '../kit/json-path';
import { ReplayGuard, verify } from './auth';
import { TokenBucket } from './rate-limit';
import {
  isLoopback,
  parseWebhookModel,
  parseWebhookSettings,
  type WebhookModelSettings,
  type WebhookSettings,
} from './settings';
import { loadTls } from '../../util/tls';
import { connectorInitializer } from '../kit/initialize';
import { Lifecycle } from '../kit/lifecycle';

export { WEBHOOK_SETTING_KEYS } from './settings';
export { signatureMatches } from './auth';

interface Waiting {
  position: number;
  settle(accepted: boolean): void;
}

interface Endpoint {
  model: string;
  settings: WebhookModelSettings;
  next: number;
  lastPushed: Position | null;
  /** Requests waiting for their commit, in position order. */
  waiting: Waiting[];
  bucket: TokenBucket | undefined;
  replays: ReplayGuard | undefined;
}

const OPS: readonly Operation[] = ['create', 'update', 'delete'];

export class WebhookConnector implements EventConnector {
  readonly name = 'webhook';
  readonly resumable = false;
  readonly settings: WebhookSettings;
  private readonly logger: Logger;
  private readonly endpoints = new Map<string, Endpoint>();
  private server: FastifyInstance | undefined;
  private sink: ChangeSink | undefined;
  private readonly life: Lifecycle;
  private paused = false;
  private address: string | undefined;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parseWebhookSettings(dataSource.settings, dataSource.name);
    this.life = new Lifecycle('webhook', dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'webhook',
      datasource: dataSource.name,
    });
  }

  /** `http://host:port` once listening (the bound port when `port` was 0). */
  get url(): string | undefined {
    return this.address;
  }

  async start(request: StartRequest): Promise<void> {
    this.life.begin();
    this.sink = request.sink;
    const routes = new Set<string>();
    try {
      for (const model of request.models) {
        const settings = parseWebhookModel(
          model.name,
          model.settings,
          this.dataSource.settings,
          this.settings,
        );
        if (routes.has(settings.route)) {
          throw new EvpubError(
            ErrorCode.CONFIG_INVALID,
            `webhook connector: models.${model.name}.path: ${settings.route} is already another model's path`,
          );
        }
        this.checkExposure(settings);
        routes.add(settings.route);
        const auth = settings.auth;
        this.endpoints.set(model.name, {
          model: model.name,
          settings,
          next: 1,
          lastPushed: null,
          waiting: [],
          bucket:
            settings.rateLimit && new TokenBucket(settings.rateLimit.perSecond, settings.rateLimit.burst),
          replays: auth?.scheme === 'standard-webhooks' ? new ReplayGuard(auth.replayCache) : undefined,
        });
      }
    } catch (err) {
      throw this.life.startFailed(err);
    }
    const tls = this.settings.tls;
    let https: Record<string, unknown> | undefined;
    if (tls) {
      try {
        const { rejectUnauthorized, ...loaded } = loadTls(tls, `datasources.${this.dataSource.name}.tls`, {
          endpoint: `the webhook server of ${this.dataSource.name}`,
          logger: this.logger,
        });
        const clientCerts = tls.ca !== undefined;
        https = {
          ...loaded,
          requestCert: clientCerts,
          rejectUnauthorized: clientCerts && rejectUnauthorized,
        };
      } catch (err) {
        throw this.life.startFailed(err);
      }
    }
    const fastify = await loadDriver<typeof import('fastify')>('fastify', 'webhook connector');
    const server = fastify.default({
      logger: false,
      return503OnClosing: true,
      ...(https ? { https } : {}),
    }) as unknown as FastifyInstance;
    this.server = server;
    server.removeAllContentTypeParsers();
    server.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    for (const endpoint of this.endpoints.values()) {
      server.post(
        endpoint.settings.route,
        {
          bodyLimit: endpoint.settings.bodyLimit,
          // Before the body is read: a flood costs neither the read nor the signature check.
          onRequest: (_req, reply, done) => {
            const wait = endpoint.bucket?.take() ?? 0;
            if (wait === 0) return done();
            void reply.code(429).header('retry-after', String(wait)).send({ error: 'too many requests' });
          },
        },
        (req, reply) => this.handle(endpoint, req, reply),
      );
    }
    server.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
      const status = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 500;
      void reply.code(status).send({ error: err.message });
    });
    try {
      await server.listen({ port: this.settings.port, host: this.settings.host });
    } catch (err) {
      const error = this.life.startFailed(
        err,
        (e) =>
          new EvpubError(
            ErrorCode.SOURCE_FAILED,
            `webhook connector "${this.dataSource.name}": cannot listen on ${this.settings.host}:${this.settings.port}: ${toError(e).message}`,
            { cause: e, context: { datasource: this.dataSource.name } },
          ),
      );
      await server.close().catch(() => undefined);
      throw error;
    }
    const bound = server.server.address() as AddressInfo;
    const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
    this.address = `${https ? 'https' : 'http'}://${host}:${bound.port}`;
    this.life.started();
    this.logger.info({ address: this.address, routes: [...routes] }, 'webhook endpoints listening');
    for (const model of this.endpoints.keys()) request.sink.status({ type: 'connected', model });
  }

  /** An endpoint anyone on the network can reach needs authentication, or `auth: 'none'`. */
  private checkExposure(s: WebhookModelSettings): void {
    const tls = this.settings.tls;
    const clientCerts = tls?.ca !== undefined && tls.rejectUnauthorized !== false;
    if (s.auth !== undefined || isLoopback(this.settings.host) || clientCerts) return;
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${s.authSetting}: the endpoint ${s.route} would listen on ${this.settings.host}, which is not loopback, ` +
        "and accept requests from anyone: set auth to { scheme: 'standard-webhooks', secret: 'whsec_...' } " +
        "(or scheme 'hmac' / 'token'), or auth: 'none' to accept unauthenticated requests on purpose",
      { context: { setting: s.authSetting } },
    );
  }

  private async handle(endpoint: Endpoint, req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const s = endpoint.settings;
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (this.life.state !== 'streaming' || !this.sink) return this.unavailable(reply, 'not accepting events');
    let claimed: string | undefined;
    if (s.auth) {
      const verdict = verify(s.auth, raw, req.headers, Date.now());
      let refused = verdict.ok ? undefined : verdict.reason;
      if (verdict.ok && verdict.id !== undefined && endpoint.replays) {
        const claim = endpoint.replays.claim(verdict.id, verdict.expiresAt ?? 0, Date.now());
        if (claim === 'full') return this.unavailable(reply, 'too many webhook ids to remember');
        if (claim === 'replay') refused = 'replayed webhook-id';
        else claimed = verdict.id;
      }
      if (refused !== undefined) {
        this.logger.warn({ model: endpoint.model, ip: req.ip, reason: refused }, 'webhook refused');
        return void reply.code(401).send({ error: 'unauthorized' });
      }
    }
    let answered = false;
    try {
      answered = await this.accept(endpoint, req, reply, raw, claimed);
    } finally {
      // Not answered 202: the sender may retry with the same id.
      if (!answered && claimed !== undefined) endpoint.replays?.release(claimed);
    }
  }

  /** Parses and pushes an authenticated request; true when it was answered 202. */
  private async accept(
    endpoint: Endpoint,
    req: FastifyRequest,
    reply: FastifyReply,
    raw: Buffer,
    webhookId: string | undefined,
  ): Promise<boolean> {
    const s = endpoint.settings;
    if (!this.sink) return false;
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      void reply.code(400).send({ error: 'the body is not JSON' });
      return false;
    }
    const key = scalarString(getPath(body, s.keyPath));
    if (key === undefined) {
      void reply.code(400).send({ error: `no key at "${s.keyPath.join('.')}"` });
      return false;
    }
    if (this.paused) {
      this.unavailable(reply, 'the publisher is busy');
      return false;
    }
    const op = this.opOf(s, body);
    const record = getPath(body, s.dataPath);
    const row =
      record !== null && typeof record === 'object' ? (record as Record<string, unknown>) : { value: record };
    const senderId = s.idHeader ? req.headers[s.idHeader] : s.idPath ? getPath(body, s.idPath) : undefined;
    const senderKey = scalarString(Array.isArray(senderId) ? senderId[0] : senderId) ?? webhookId;
    const position = endpoint.next++;
    const event: ChangeEvent = {
      id: senderKey === undefined ? randomUUID() : eventId(this.dataSource.name, endpoint.model, senderKey),
      datasource: this.dataSource.name,
      model: endpoint.model,
      op,
      key,
      before: op === 'delete' ? row : null,
      after: op === 'delete' ? null : row,
      position: String(position),
      sourceTime: new Date().toISOString(),
      source: { path: s.route, ...(senderKey === undefined ? {} : { senderId: senderKey }) },
    };
    const accepted = this.waitFor(endpoint, position);
    endpoint.lastPushed = event.position;
    if (!this.sink.push(event)) this.pause();
    if (await accepted) {
      void reply.code(202).send({ id: event.id, position: event.position });
      return true;
    }
    this.logger.warn(
      { model: endpoint.model, position },
      'webhook event not confirmed in time; answered 503',
    );
    this.unavailable(reply, `the broker did not confirm the event within ${this.settings.ackTimeout} ms`);
    return false;
  }

  private opOf(s: WebhookModelSettings, body: unknown): Operation {
    if (!s.opPath) return s.defaultOp;
    const value = scalarString(getPath(body, s.opPath));
    if (value === undefined) return s.defaultOp;
    const mapped = s.opMap[value];
    if (mapped) return mapped;
    return (OPS as readonly string[]).includes(value) ? (value as Operation) : s.defaultOp;
  }

  private unavailable(reply: FastifyReply, why: string): void {
    void reply.code(503).header('retry-after', String(this.settings.retryAfter)).send({ error: why });
  }

  /** Stops taking events until the sink has room again. */
  private pause(): void {
    if (this.paused || !this.sink) return;
    this.paused = true;
    this.sink.drain().then(
      () => (this.paused = false),
      () => (this.paused = false),
    );
  }

  /** Resolves true when the position is committed, false after ackTimeout. */
  private waitFor(endpoint: Endpoint, position: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiting: Waiting = {
        position,
        settle: (accepted) => {
          clearTimeout(timer);
          resolve(accepted);
        },
      };
      const timer = setTimeout(() => {
        const i = endpoint.waiting.indexOf(waiting);
        if (i >= 0) endpoint.waiting.splice(i, 1);
        resolve(false);
      }, this.settings.ackTimeout);
      endpoint.waiting.push(waiting);
    });
  }

  /** Every event of the model up to `position` was accepted: answer their requests. */
  commit(model: string, position: Position): Promise<void> {
    const endpoint = this.endpoints.get(model);
    const upTo = Number(position);
    if (endpoint && Number.isInteger(upTo)) {
      while (endpoint.waiting.length > 0 && endpoint.waiting[0]!.position <= upTo) {
        endpoint.waiting.shift()!.settle(true);
      }
    }
    return Promise.resolve();
  }

  /**
   * Stops taking requests (new ones get 503) and closes the listener once the requests in
   * flight are answered: each when its event is accepted, or at its ackTimeout.
   */
  stop(): Promise<void> {
    // The server exists once start() began listening.
    return this.life.stop(async () => {
      if (this.server) await this.server.close();
    });
  }

  health(): ConnectorHealth {
    const positions: Record<string, Position | null> = {};
    for (const [model, e] of this.endpoints) positions[model] = e.lastPushed;
    return {
      state: this.life.state,
      positions,
      ...(this.address ? { detail: `listening on ${this.address}` } : {}),
    };
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new WebhookConnector(dataSource),
);
