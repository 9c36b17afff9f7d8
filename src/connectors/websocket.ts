/**
 * The `websocket` event connector: consumes a JSON event stream from a WebSocket URL.
 *
 * Each model opens its own connection to the datasource's `url` (its own subscribe messages,
 * its own cursor), reads one JSON message per frame, keeps those its `match` selects and maps
 * them to key, operation and record (json-mapping.ts; protocol in websocket-feed.ts).
 *
 * Positions: with `resume` set on the datasource the connector is `resumable`: each message's
 * cursor (`cursorPath`) is its position and a feed resumes with `?<param>=<cursor>`. Without it
 * events carry no position; messages sent while evpub is disconnected or stopped are lost
 * unless the server replays them on its own.
 */
import { ErrorCode, EvpubError } from '../errors';
import { defaultLogger, type Logger } from '../logger';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  StartRequest,
} from './contract';
import { WsFeed } from './websocket-feed';
import { parseWebSocketModel, parseWebSocketSettings, type WebSocketSettings } from './websocket-settings';
import { connectorInitializer } from './initialize';

export { parseWebSocketSettings, WEBSOCKET_SETTING_KEYS } from './websocket-settings';

type LifeState = 'idle' | 'starting' | 'streaming' | 'stopped';

export class WebSocketConnector implements EventConnector {
  readonly name = 'websocket';
  readonly resumable: boolean;
  readonly settings: WebSocketSettings;
  private readonly logger: Logger;
  private readonly feeds = new Map<string, WsFeed>();
  private life: LifeState = 'idle';
  private stopping: Promise<void> | undefined;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parseWebSocketSettings(dataSource.settings, dataSource.name);
    this.resumable = this.settings.resume !== undefined;
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'websocket',
      datasource: dataSource.name,
    });
  }

  async start(request: StartRequest): Promise<void> {
    if (this.life !== 'idle') {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `websocket connector "${this.dataSource.name}" was already started`,
      );
    }
    const feeds = request.models.map(
      (model) =>
        new WsFeed({
          settings: this.settings,
          model: parseWebSocketModel(this.settings, model.name, model.settings),
          datasource: this.dataSource.name,
          name: model.name,
          from: model.from,
          sink: request.sink,
          logger: this.logger.child({ model: model.name }),
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
          `websocket connector "${this.dataSource.name}" was stopped while starting`,
          { cause: failure.reason },
        );
      }
      throw failure.reason;
    }
    if ((this.life as LifeState) === 'starting') this.life = 'streaming';
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
  (dataSource) => new WebSocketConnector(dataSource),
);
