/**
 * `EvpubConsumersObserver`: the LoopBack life-cycle observer that runs the consumers
 * (`@subscribe` methods of classes bound with `asConsumer`, decorator.ts).
 *
 *   app.lifeCycleObserver(EvpubConsumersObserver);  // EvpubComponent adds it too; once is enough
 *   app.configure(CONSUMERS_OBSERVER).to({ stopTimeoutMs: 10000, logger });
 *
 * Protocol:
 * - `start()` (at `app.start()`, group `evpub-consumers`: after observers without a group and
 *   datasources, before servers). It checks everything before subscribing anything: every
 *   binding whose class has `@subscribe` methods must be a consumer (else CONFIG_INVALID naming
 *   the class, method and binding key); a consumer must have a `@subscribe` method; `broker`
 *   must name a broker of `EvpubBindings.CONFIG` (or be a URL); no two patterns on one broker
 *   may match one topic (a client delivers such a message once, to one of them). Each consumer
 *   is resolved once from the context. Then each method is subscribed, in binding order; a
 *   subscribe the broker refuses is an error naming the method, and what was subscribed is
 *   undone (own clients ended) before `start()` rejects.
 * - Clients: the default broker is `EvpubBindings.CLIENT` (the component's; the observer never
 *   ends it). Another broker gets a client of the observer's own, made at start from the
 *   configuration's `brokers` entry (or the URL) and ended at stop.
 * - `stop()` (at `app.stop()`, before the component ends its client): no message delivered
 *   after it begins is handled. Plain subscriptions are unsubscribed. Durable ones are not:
 *   unsubscribing one can drop it at the broker for every subscriber of the name (AMQP unbinds
 *   the durable queue), so messages published while the app is down would not be kept; they are
 *   closed by the client's end, and what they deliver meanwhile stays unacknowledged (the broker
 *   delivers it again). Messages already received are handled until `stopTimeoutMs` (10 s);
 *   then what is still queued is left (logged), and own clients are ended.
 * - `start()` while started, and `stop()` while stopped, do nothing; each waits for a start or
 *   stop in progress. Bound twice in one application (under two keys), one instance runs the
 *   consumers and the other does nothing.
 */
import {
  BindingScope,
  config,
  extensionFilter,
  inject,
  lifeCycleObserver,
  type Binding,
  type Context,
  type LifeCycleObserver,
} from '@loopback/core';
import { ErrorCode, EvpubError, isEvpubError, redact, toError } from '../../errors';
import { defaultLogger, type Logger } from '../../logger';
import type { MessageMeta, SubscribeOptions } from '../../pubsub/adapter';
import type { Client } from '../../pubsub/client';
import { createClient } from '../../pubsub/registry';
import { matches } from '../../pubsub/topics';
import { EvpubBindings } from '../keys';
import { subscribeSpecs } from './decorator';
import { ConsumerSubscription, type ConsumerStats, type ConsumerTarget } from './subscription';

/** Binding key of the observer (`app.lifeCycleObserver(EvpubConsumersObserver)` binds it here). */
export const CONSUMERS_OBSERVER = 'lifeCycleObservers.EvpubConsumersObserver';

/** The observer running the consumers of a context, bound while it runs (one per application). */
const ACTIVE = 'evpub.consumers.activeObserver';

export interface ConsumersObserverOptions {
  /** How long `stop()` lets received messages finish, in ms (default 10000). */
  stopTimeoutMs?: number;
  /** Default: evpub's logger (EVPUB_LOG_LEVEL). */
  logger?: Logger;
}

type State = 'stopped' | 'starting' | 'started' | 'stopping';

/** One broker connection the consumers use, and the subscriptions on it by pattern. */
interface ClientUse {
  broker: string;
  client: Client;
  /** Made by the observer (ended at stop), not the component's `EvpubBindings.CLIENT`. */
  owned: boolean;
  subs: Map<string, ConsumerSubscription>;
  listener?: (topic: string, payload: Buffer, meta: MessageMeta) => void;
  subscribed: ConsumerSubscription[];
}

const DEFAULT_STOP_TIMEOUT_MS = 10_000;

function configError(where: string, key: string, message: string, context: Record<string, unknown> = {}) {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${where}: ${key}: ${message}`, {
    context: { ...context, key },
  });
}

type AnyClass = NonNullable<Binding<unknown>['valueConstructor']>;

function classOf(binding: Readonly<Binding<unknown>>, instance?: unknown): AnyClass | undefined {
  if (binding.valueConstructor) return binding.valueConstructor;
  if (instance !== null && typeof instance === 'object')
    return (instance as { constructor: AnyClass }).constructor;
  return undefined;
}

/** True when some topic matches both patterns (`#` also matches its parent level). */
export function overlaps(a: string, b: string): boolean {
  const p = a.split('/');
  const q = b.split('/');
  for (let i = 0; ; i++) {
    if (p[i] === '#' || q[i] === '#') return true;
    if (i >= p.length || i >= q.length) return p.length === q.length;
    if (p[i] !== q[i] && p[i] !== '+' && q[i] !== '+') return false;
  }
}

@lifeCycleObserver('evpub-consumers', { scope: BindingScope.SINGLETON })
export class EvpubConsumersObserver implements LifeCycleObserver {
  private state: State = 'stopped';
  private transition: Promise<void> | undefined;
  private uses: ClientUse[] = [];
  private readonly logger: Logger;
  private readonly stopTimeoutMs: number;

  constructor(
    @inject.context() private readonly ctx: Context,
    @config() options: ConsumersObserverOptions = {},
  ) {
    const timeout = options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    if (typeof timeout !== 'number' || !(timeout >= 0)) {
      throw configError(CONSUMERS_OBSERVER, 'stopTimeoutMs', 'must be a number of milliseconds (0 or more)');
    }
    this.stopTimeoutMs = timeout;
    this.logger = (options.logger ?? defaultLogger()).child({ component: 'loopback-consumers' });
  }

  async start(): Promise<void> {
    while (this.transition) await this.transition.catch(() => undefined);
    if (this.state === 'started') return;
    // Bound twice (by the component and by hand, under two keys): one instance runs the consumers.
    const active = this.ctx.getSync<unknown>(ACTIVE, { optional: true });
    if (active !== undefined && active !== this) {
      this.logger.debug('another EvpubConsumersObserver runs the consumers of this application');
      return;
    }
    this.ctx.bind(ACTIVE).to(this);
    this.state = 'starting';
    this.transition = this.doStart().then(
      () => {
        this.state = 'started';
      },
      (err: unknown) => {
        this.state = 'stopped';
        this.ctx.unbind(ACTIVE);
        throw err;
      },
    );
    try {
      await this.transition;
    } finally {
      this.transition = undefined;
    }
  }

  async stop(): Promise<void> {
    while (this.transition) await this.transition.catch(() => undefined);
    if (this.state !== 'started') return;
    this.state = 'stopping';
    this.transition = this.doStop().finally(() => {
      this.state = 'stopped';
      this.ctx.unbind(ACTIVE);
    });
    try {
      await this.transition;
    } finally {
      this.transition = undefined;
    }
  }

  /** The counters of every `@subscribe` method of the current (or last) run. */
  stats(): ConsumerStats[] {
    return this.uses.flatMap((u) => [...u.subs.values()].map((s) => s.stats()));
  }

  // -------------------------------------------------------------------------------------------

  private async doStart(): Promise<void> {
    const targets = await this.findTargets();
    if (targets.length === 0) {
      this.uses = [];
      return;
    }
    const uses = await this.planClients(targets);
    this.uses = uses;
    try {
      for (const use of uses) {
        const listener = (topic: string, payload: Buffer, meta: MessageMeta): void => {
          const sub =
            (meta.pattern === undefined ? undefined : use.subs.get(meta.pattern)) ??
            (meta.pattern === undefined
              ? [...use.subs.values()].find((s) => matches(s.target.spec.pattern, topic))
              : undefined);
          sub?.deliver(topic, payload, meta);
        };
        use.listener = listener;
        use.client.on('message', listener);
        for (const sub of use.subs.values()) {
          await this.subscribeOne(use, sub);
          use.subscribed.push(sub);
        }
      }
    } catch (err) {
      await this.undo(uses);
      throw err;
    }
    this.logger.info(
      {
        consumers: this.stats().map((s) => ({ consumer: s.consumer, pattern: s.pattern, broker: s.broker })),
      },
      'consumers subscribed',
    );
  }

  /** Every `@subscribe` method of every consumer binding, checked, with its instance resolved. */
  private async findTargets(): Promise<ConsumerTarget[]> {
    const isConsumer = extensionFilter(EvpubBindings.CONSUMERS);
    const consumers = this.ctx.find(isConsumer);
    const consumerClasses = new Set(consumers.map((b) => b.valueConstructor).filter((c) => c !== undefined));
    // A class with @subscribe methods bound only as something else would never consume: an error.
    for (const binding of this.ctx.find((b) => !isConsumer(b) && b.valueConstructor !== undefined)) {
      const cls = binding.valueConstructor!;
      if (consumerClasses.has(cls)) continue;
      const methods = Object.keys(subscribeSpecs(cls));
      if (methods.length === 0) continue;
      throw configError(
        `${cls.name}.${methods[0]!}`,
        binding.key,
        `@subscribe on a class not bound as a consumer (binding "${binding.key}"); bind it with ` +
          `@injectable(asConsumer) or app.add(createBindingFromClass(${cls.name}).apply(asConsumer))`,
        { consumer: `${cls.name}.${methods[0]!}`, binding: binding.key },
      );
    }
    const targets: ConsumerTarget[] = [];
    for (const binding of consumers) {
      let instance: unknown;
      try {
        instance = await this.ctx.get<unknown>(binding.key);
      } catch (err) {
        const name = binding.valueConstructor?.name ?? binding.key;
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `${name}: ${binding.key}: the consumer could not be resolved from the context: ${toError(err).message}`,
          { cause: err, context: { binding: binding.key } },
        );
      }
      const cls = classOf(binding, instance);
      const specs = cls ? subscribeSpecs(cls) : {};
      const name = cls?.name ?? binding.key;
      if (Object.keys(specs).length === 0) {
        throw configError(
          name,
          binding.key,
          `bound as a consumer (binding "${binding.key}") but has no @subscribe method; add one, or drop asConsumer`,
          { binding: binding.key },
        );
      }
      for (const [method, spec] of Object.entries(specs)) {
        targets.push({
          className: name,
          method,
          binding: binding.key,
          broker: '',
          spec,
          instance: instance as object,
        });
      }
    }
    return targets;
  }

  /** Which client each target subscribes on; a client of our own per other broker. */
  private async planClients(targets: ConsumerTarget[]): Promise<ClientUse[]> {
    const cfg = await this.ctx.get(EvpubBindings.CONFIG, { optional: true });
    const shared = await this.ctx.get(EvpubBindings.CLIENT, { optional: true });
    const defaultName = cfg?.clientBroker ?? 'default';
    const brokers = cfg?.brokers ?? {};
    const planned: {
      target: ConsumerTarget;
      broker: string;
      url?: string;
      options?: Record<string, unknown>;
    }[] = [];
    for (const target of targets) {
      const where = `${target.className}.${target.method}`;
      const ref = target.spec.options.broker ?? defaultName;
      if (ref === defaultName && shared) {
        planned.push({ target, broker: defaultName });
      } else if (ref.includes('://')) {
        planned.push({ target, broker: redact(ref), url: ref });
      } else if (Object.hasOwn(brokers, ref)) {
        const entry = brokers[ref]!;
        planned.push({ target, broker: ref, url: entry.url, options: entry.options ?? {} });
      } else {
        const known = Object.keys(brokers);
        throw configError(
          where,
          'broker',
          ref === defaultName && target.spec.options.broker === undefined
            ? `no client for the default broker: ${EvpubBindings.CLIENT.key} is not bound (add EvpubComponent, or bind a Client there)`
            : `unknown broker "${ref}"; ` +
                (known.length > 0
                  ? `the configuration's brokers are ${known.map((k) => `"${k}"`).join(', ')}`
                  : `no brokers are configured (${EvpubBindings.CONFIG.key})`) +
                ', or give a broker URL',
          { consumer: where, binding: target.binding },
        );
      }
    }
    // No two patterns of one client may match one topic: the client keeps one subscription per
    // pattern, and MQTT, AMQP and memory deliver a message matching two patterns once.
    for (let i = 0; i < planned.length; i++) {
      const p = planned[i]!;
      for (const q of planned.slice(0, i)) {
        if (q.broker !== p.broker || !overlaps(q.target.spec.pattern, p.target.spec.pattern)) continue;
        const where = `${p.target.className}.${p.target.method}`;
        const other = `${q.target.className}.${q.target.method}`;
        throw configError(
          where,
          'pattern',
          `"${p.target.spec.pattern}" and "${q.target.spec.pattern}" (${other}) on broker "${p.broker}" match the same topics, ` +
            'and one client delivers such a message once; handle both in one method, or give one of them ' +
            'another broker entry (a second name in brokers, same URL: a connection of its own)',
          { consumer: where, binding: p.target.binding, other },
        );
      }
    }
    // Clients last, once everything above is known to be right.
    const byBroker = new Map<string, ClientUse>();
    try {
      for (const p of planned) {
        p.target.broker = p.broker;
        let use = byBroker.get(p.broker);
        if (!use) {
          use = { broker: p.broker, client: shared!, owned: false, subs: new Map(), subscribed: [] };
          if (p.url !== undefined) {
            const where = `${p.target.className}.${p.target.method}`;
            try {
              use.client = createClient(p.url, { ...(p.options ?? {}), logger: this.logger });
            } catch (err) {
              throw new EvpubError(
                isEvpubError(err) ? err.code : ErrorCode.CONFIG_INVALID,
                `${where}: broker: "${p.broker}": ${toError(err).message}`,
                { cause: err, context: { consumer: where, binding: p.target.binding, key: 'broker' } },
              );
            }
            use.owned = true;
          }
          byBroker.set(p.broker, use);
        }
        use.subs.set(p.target.spec.pattern, new ConsumerSubscription(p.target, this.logger));
      }
    } catch (err) {
      await this.undo([...byBroker.values()]);
      throw err;
    }
    return [...byBroker.values()];
  }

  private async subscribeOne(use: ClientUse, sub: ConsumerSubscription): Promise<void> {
    const { spec } = sub.target;
    const o = spec.options;
    const options: SubscribeOptions = {};
    if (o.qos !== undefined) options.qos = o.qos;
    if (o.durable !== undefined) {
      options.durable = o.durable;
      options.ack = 'manual'; // acknowledged by the subscription, after the method resolved
      if (o.from !== undefined) options.from = o.from;
    }
    try {
      await use.client.subscribe(spec.pattern, options);
    } catch (err) {
      const e = toError(err);
      throw new EvpubError(
        isEvpubError(err) ? err.code : ErrorCode.SUBSCRIBE_FAILED,
        `${sub.name} (binding "${sub.target.binding}"): subscribe to ${JSON.stringify(spec.pattern)} on broker "${use.broker}" failed: ${e.message}`,
        {
          cause: err,
          context: {
            consumer: sub.name,
            binding: sub.target.binding,
            pattern: spec.pattern,
            broker: use.broker,
          },
        },
      );
    }
  }

  /** After a failed start: undoes the subscriptions made and ends own clients. */
  private async undo(uses: ClientUse[]): Promise<void> {
    for (const use of uses) {
      if (use.listener) use.client.off('message', use.listener);
      if (use.owned) {
        await use.client.end().catch((err: unknown) => this.logger.warn({ err }, 'ending a consumer client'));
        continue;
      }
      for (const sub of use.subscribed) {
        if (sub.target.spec.options.durable !== undefined) continue;
        await use.client
          .unsubscribe(sub.target.spec.pattern)
          .catch((err: unknown) => this.logger.warn({ err, consumer: sub.name }, 'undoing a subscription'));
      }
    }
  }

  private async doStop(): Promise<void> {
    const uses = this.uses;
    const subs = uses.flatMap((u) => [...u.subs.values()]);
    subs.forEach((s) => s.stopAccepting());
    for (const use of uses) {
      for (const sub of use.subscribed) {
        if (sub.target.spec.options.durable !== undefined) continue;
        try {
          await use.client.unsubscribe(sub.target.spec.pattern);
        } catch (err) {
          this.logger.warn(
            { err, consumer: sub.name, pattern: sub.target.spec.pattern },
            `consumer ${sub.name}: unsubscribe at stop failed`,
          );
        }
      }
    }
    const deadline = Date.now() + this.stopTimeoutMs;
    const busy = subs.filter((s) => s.stats().running + s.stats().queued > 0);
    if (busy.length > 0) {
      this.logger.info(
        { consumers: busy.map((s) => s.name), stopTimeoutMs: this.stopTimeoutMs },
        'stopping: waiting for the consumers still handling messages',
      );
    }
    const drained = await Promise.all(subs.map((s) => s.drain(deadline)));
    const late = subs.filter((_, i) => !drained[i]);
    if (late.length > 0) {
      this.logger.warn(
        { consumers: late.map((s) => s.stats()) },
        `consumers still running after stopTimeoutMs (${this.stopTimeoutMs} ms): ${late
          .map((s) => s.name)
          .join(', ')}; their queued messages were not handled (durable ones stay unacknowledged)`,
      );
    }
    for (const use of uses) {
      if (use.listener) use.client.off('message', use.listener);
      if (use.owned) {
        await use.client
          .end()
          .catch((err: unknown) => this.logger.warn({ err, broker: use.broker }, 'ending a consumer client'));
      }
    }
    const notHandled = subs.reduce((n, s) => n + s.stats().notHandled, 0);
    this.logger.info({ consumers: subs.map((s) => s.stats()) }, 'consumers stopped');
    if (notHandled > 0) {
      this.logger.warn(
        { notHandled },
        `${notHandled} message(s) arrived after stop began or were left at the deadline and were not handled (durable ones are delivered again by the broker)`,
      );
    }
  }
}
