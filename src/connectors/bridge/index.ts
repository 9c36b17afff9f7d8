/**
 * The `bridge` event connector: consumes from any broker the pub/sub client supports and
 * republishes through the publisher, so events from one broker reach consumers on another.
 *
 * Each model is one client on the source broker (`url`, `options`), subscribed to the model's
 * `topics`, with a durable subscription when `durable` is set (recommended: at-least-once), and
 * so its own unit of ownership (`units`, contract point 10).
 * Messages are decoded (`format`: json, cloudevents, raw), mapped to key/op/record
 * (kit/json-mapping.ts) and pushed; protocol in feed.ts.
 *
 * Not `resumable`: positions are a sequence of this process, good for acknowledging in order
 * (`commit`) and nothing else. Durability comes from the source: a durable subscription keeps
 * what evpub has not acknowledged, across restarts and crashes; a plain subscription loses
 * what is published while evpub is not subscribed.
 */
import type { Position } from '../../events/change-event';
import { defaultLogger, type Logger } from '../../logger';
import { BridgeFeed } from './feed';
import { parseBridgeModel, parseBridgeSettings, type BridgeSettings } from './settings';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  StartRequest,
} from '../contract';
import { connectorInitializer } from '../kit/initialize';
import { FeedSet } from '../kit/feed-set';

export { parseBridgeSettings, BRIDGE_SETTING_KEYS } from './settings';

export class BridgeConnector implements EventConnector {
  readonly name = 'bridge';
  readonly resumable = false;
  readonly settings: BridgeSettings;
  private readonly logger: Logger;
  private readonly feeds: FeedSet<BridgeFeed>;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parseBridgeSettings(dataSource.settings, dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'bridge',
      datasource: dataSource.name,
    });
    this.feeds = new FeedSet(this.name, dataSource.name);
  }

  /** A durable subscription keeps, on the source broker, what is published while evpub is stopped. */
  whileStopped(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): { text: string; lossless: boolean } | undefined {
    let plain: string[];
    try {
      plain = models
        .filter((m) => parseBridgeModel(this.settings, m.name, m.settings).durable === undefined)
        .map((m) => m.name);
    } catch {
      return undefined; // start() reports the bad settings
    }
    if (plain.length === 0) {
      return {
        lossless: true,
        text: 'the source broker keeps what is published meanwhile for their durable subscriptions, and evpub reads it on restart',
      };
    }
    if (plain.length === models.length) return undefined;
    return {
      lossless: false,
      text:
        `the source broker keeps what is published meanwhile for the durable subscriptions, but ` +
        `${plain.length === 1 ? 'model' : 'models'} ${plain.join(', ')} ${plain.length === 1 ? 'has' : 'have'} none (set durable): what is published to them while evpub is not running is lost`,
    };
  }

  /**
   * Point 10: each model has its own client and its own subscription (no consumer is shared
   * between models), acknowledged on its own, so each model is a unit of its own. Read by one
   * instance at a time, a plain subscription's messages are published once, not once per
   * instance.
   */
  units(models: readonly string[]): string[][] {
    return models.map((model) => [model]);
  }

  start(request: StartRequest): Promise<void> {
    return this.feeds.start(() => {
      // Every model's settings are checked before any feed is built.
      const models = request.models.map((m) => ({
        m,
        settings: parseBridgeModel(this.settings, m.name, m.settings),
      }));
      return models.map(({ m, settings }) => [
        m.name,
        new BridgeFeed({
          settings: this.settings,
          model: settings,
          datasource: this.dataSource.name,
          name: m.name,
          sink: request.sink,
          logger: this.logger.child({ model: m.name }),
        }),
      ]);
    });
  }

  /** Everything of `model` up to `position` is published: acknowledge it to the source. */
  commit(model: string, position: Position): Promise<void> {
    return this.feeds.commit(model, position);
  }

  stop(): Promise<void> {
    return this.feeds.stop();
  }

  health(): ConnectorHealth {
    return this.feeds.health(
      this.feeds.notes((model, feed) => [
        feed.state === 'failed' && `${model}: failed`,
        feed.malformed.count > 0 && `${model}: ${feed.malformed.count} malformed`,
        feed.duplicates > 0 && `${model}: ${feed.duplicates} redeliveries of held messages dropped`,
      ]),
    );
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new BridgeConnector(dataSource),
);
