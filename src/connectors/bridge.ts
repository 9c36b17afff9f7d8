/**
 * The `bridge` event connector: consumes from any broker the pub/sub client supports and
 * republishes through the publisher, so events from one broker reach consumers on another.
 *
 * Each model is one client on the source broker (`url`, `options`), subscribed to the model's
 * `topics`, with a durable subscription when `durable` is set (recommended: at-least-once).
 * Messages are decoded (`format`: json, cloudevents, raw), mapped to key/op/record
 * (json-mapping.ts) and pushed; protocol in bridge-feed.ts.
 *
 * Not `resumable`: positions are a sequence of this process, good for acknowledging in order
 * (`commit`) and nothing else. Durability comes from the source: a durable subscription keeps
 * what evpub has not acknowledged, across restarts and crashes; a plain subscription loses
 * what is published while evpub is not subscribed.
 */
import { ErrorCode, EvpubError } from '../errors';
import type { Position } from '../events/change-event';
import { defaultLogger, type Logger } from '../logger';
import { BridgeFeed } from './bridge-feed';
import { parseBridgeModel, parseBridgeSettings, type BridgeSettings } from './bridge-settings';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  StartRequest,
} from './contract';
import { connectorInitializer } from './initialize';

export { parseBridgeSettings, BRIDGE_SETTING_KEYS } from './bridge-settings';

type LifeState = 'idle' | 'starting' | 'streaming' | 'stopped';

export class BridgeConnector implements EventConnector {
  readonly name = 'bridge';
  readonly resumable = false;
  readonly settings: BridgeSettings;
  private readonly logger: Logger;
  private readonly feeds = new Map<string, BridgeFeed>();
  private life: LifeState = 'idle';
  private stopping: Promise<void> | undefined;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parseBridgeSettings(dataSource.settings, dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'bridge',
      datasource: dataSource.name,
    });
  }

  async start(request: StartRequest): Promise<void> {
    if (this.life !== 'idle') {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `bridge connector "${this.dataSource.name}" was already started`,
      );
    }
    const models = request.models.map((m) => ({
      m,
      settings: parseBridgeModel(this.settings, m.name, m.settings),
    }));
    const feeds = models.map(
      ({ m, settings }) =>
        new BridgeFeed({
          settings: this.settings,
          model: settings,
          datasource: this.dataSource.name,
          name: m.name,
          sink: request.sink,
          logger: this.logger.child({ model: m.name }),
        }),
    );
    this.life = 'starting';
    for (const feed of feeds) this.feeds.set(feed.name, feed);
    const opened = await Promise.allSettled(feeds.map((f) => f.open()));
    const failure = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) {
      const stoppedMeanwhile = (this.life as LifeState) === 'stopped';
      this.life = 'stopped';
      await Promise.all(feeds.map((f) => f.stop()));
      if (stoppedMeanwhile) {
        throw new EvpubError(
          ErrorCode.INVALID_STATE,
          `bridge connector "${this.dataSource.name}" was stopped while starting`,
          {
            cause: failure.reason,
          },
        );
      }
      throw failure.reason;
    }
    if ((this.life as LifeState) === 'starting') this.life = 'streaming';
  }

  /** Everything of `model` up to `position` is published: acknowledge it to the source. */
  async commit(model: string, position: Position): Promise<void> {
    await this.feeds.get(model)?.commit(position);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.life = 'stopped';
      await Promise.all([...this.feeds.values()].map((f) => f.stop()));
    })();
    return this.stopping;
  }

  health(): ConnectorHealth {
    const positions: Record<string, string | null> = {};
    const states = new Set<string>();
    const notes: string[] = [];
    for (const [model, feed] of this.feeds) {
      positions[model] = feed.lastPushed;
      states.add(feed.state);
      if (feed.state === 'failed') notes.push(`${model}: failed`);
      if (feed.malformed.count > 0) notes.push(`${model}: ${feed.malformed.count} malformed`);
      if (feed.duplicates > 0)
        notes.push(`${model}: ${feed.duplicates} redeliveries of held messages dropped`);
    }
    let state: ConnectorHealth['state'];
    if (this.life !== 'streaming') state = this.life;
    else if (states.has('failed')) state = 'failed';
    else if (states.has('reconnecting')) state = 'reconnecting';
    else state = 'streaming';
    return { state, positions, ...(notes.length > 0 ? { detail: notes.join('; ') } : {}) };
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new BridgeConnector(dataSource),
);
