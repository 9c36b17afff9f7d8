/**
 * The `websocket` event connector: consumes a JSON event stream from a WebSocket URL.
 *
 * Each model opens its own connection to the datasource's `url` (its own subscribe messages,
 * its own cursor: each model is its own unit of ownership, `units`, contract point 10), reads one JSON message per frame, keeps those its `match` selects and maps
 * them to key, operation and record (kit/json-mapping.ts; protocol in feed.ts).
 *
 * Positions: with `resume` set on the datasource the connector is `resumable`: each message's
 * cursor (`cursorPath`) is its position and a feed resumes with `?<param>=<cursor>`. Without it
 * events carry no position; messages sent while evpub is disconnected or stopped are lost
 * unless the server replays them on its own.
 */
import { defaultLogger, type Logger } from '../../logger';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  StartRequest,
} from '../contract';
import { WsFeed } from './feed';
import { parseWebSocketModel, parseWebSocketSettings, type WebSocketSettings } from './settings';
import { connectorInitializer } from '../kit/initialize';
import { loadTls } from '../../util/tls';
import { FeedSet } from '../kit/feed-set';

export { parseWebSocketSettings, WEBSOCKET_SETTING_KEYS } from './settings';

export class WebSocketConnector implements EventConnector {
  readonly name = 'websocket';
  readonly resumable: boolean;
  readonly settings: WebSocketSettings;
  private readonly logger: Logger;
  private readonly feeds: FeedSet<WsFeed>;

  constructor(private readonly dataSource: DataSourceLike) {
    const settings = parseWebSocketSettings(dataSource.settings, dataSource.name);
    this.resumable = settings.resume !== undefined;
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'websocket',
      datasource: dataSource.name,
    });
    this.settings = settings.tls
      ? {
          ...settings,
          ssl: loadTls(settings.tls, settings.tlsPath, {
            endpoint: settings.displayUrl,
            logger: this.logger,
          }),
        }
      : settings;
    this.feeds = new FeedSet(this.name, dataSource.name);
  }

  /**
   * Point 10: each model has its own connection, subscribe messages and cursor, so each model
   * is a unit of its own.
   */
  units(models: readonly string[]): string[][] {
    return models.map((model) => [model]);
  }

  start(request: StartRequest): Promise<void> {
    return this.feeds.start(() =>
      request.models.map((model) => [
        model.name,
        new WsFeed({
          settings: this.settings,
          model: parseWebSocketModel(this.settings, model.name, model.settings),
          datasource: this.dataSource.name,
          name: model.name,
          from: model.from,
          sink: request.sink,
          logger: this.logger.child({ model: model.name }),
        }),
      ]),
    );
  }

  stop(): Promise<void> {
    return this.feeds.stop();
  }

  health(): ConnectorHealth {
    return this.feeds.health(
      this.feeds.notes((model, feed) => [
        feed.state === 'failed' && `${model}: failed`,
        feed.malformed.count > 0 && `${model}: ${feed.malformed.count} malformed`,
      ]),
    );
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new WebSocketConnector(dataSource),
);
