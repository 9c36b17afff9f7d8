/**
 * The `memory` event connector: a store of records inside this process whose every write is
 * appended to a change log, for demos, tests and applications that publish their own changes.
 *
 *   const ds = app.dataSource('local', { connector: 'memory' });
 *   await app.start();
 *   ds.connector.create('accounts', 'a1', { name: 'James Bond' });
 *
 * Settings: `store` (default: the datasource's name) names the process-wide store, so a store
 * outlives the connector: an app stopped and started again in the same process resumes after
 * its checkpoint. Positions are the log's sequence numbers (`"1"`, `"2"`, ...); event ids are
 * `memory:<store>:<position>`. The log is kept whole in memory (nothing is ever trimmed) and
 * nothing survives the process. Reading honours backpressure: when `sink.push` returns false,
 * the reader awaits `sink.drain()`.
 *
 * Several instances (contract point 10): each model resumes from its own position, so each is
 * its own unit (`units`). The store lives in one process: an instance of another process reads
 * its own, empty store, so a memory datasource only makes sense where its writes happen.
 */
import { ErrorCode, EvpubError } from '../../errors';
import type { ChangeEvent, Operation, Position, Row } from '../../events/change-event';
import type {
  ChangeSink,
  ConnectorHealth,
  ConnectorModule,
  EventConnector,
  ModelFeed,
  StartRequest,
} from '../contract';
import { Lifecycle } from '../kit/lifecycle';
import { SettingsReader } from '../kit/settings';
import { connectorInitializer } from '../kit/initialize';

/** The datasource keys this connector reads (besides `connector` and `name`, set by the app). */
export const MEMORY_SETTING_KEYS = ['store'] as const;

interface LogEntry {
  position: number;
  event: ChangeEvent;
}

/** A named in-process record store with a change log. */
export class MemoryStore {
  private readonly records = new Map<string, Map<string, Row>>();
  private readonly log: LogEntry[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(readonly name: string) {}

  /** The position of the last write ("0" when there is none). */
  get head(): number {
    return this.log.length;
  }

  get(model: string, key: string): Row | undefined {
    const row = this.records.get(model)?.get(key);
    return row === undefined ? undefined : { ...row };
  }

  /** Entries after `position` (1-based positions: entry n is at index n-1). */
  entryAt(position: number): LogEntry | undefined {
    return this.log[position - 1];
  }

  onAppend(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  write(datasource: string, model: string, op: Operation, key: string, record: Row | undefined): ChangeEvent {
    if (typeof model !== 'string' || model === '' || typeof key !== 'string') {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, 'memory connector: model and key must be strings');
    }
    let table = this.records.get(model);
    if (!table) this.records.set(model, (table = new Map<string, Row>()));
    const before = table.get(key);
    if (op === 'create' && before !== undefined) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `memory connector: ${model}/${key} already exists`);
    }
    if ((op === 'update' || op === 'delete') && before === undefined) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `memory connector: ${model}/${key} does not exist`);
    }
    const after = op === 'delete' ? undefined : { ...(record ?? {}) };
    if (after === undefined) table.delete(key);
    else table.set(key, after);
    const position = this.log.length + 1;
    const event: ChangeEvent = {
      id: `memory:${this.name}:${position}`,
      datasource,
      model,
      op,
      key,
      before: before === undefined ? null : { ...before },
      after: after === undefined ? null : { ...after },
      position: String(position),
      sourceTime: new Date().toISOString(),
    };
    this.log.push({ position, event });
    for (const listener of this.listeners) listener();
    return event;
  }
}

const stores = new Map<string, MemoryStore>();

/** The process's memory store called `name`, made on first use. */
export function memoryStore(name: string): MemoryStore {
  let store = stores.get(name);
  if (!store) stores.set(name, (store = new MemoryStore(name)));
  return store;
}

function parsePosition(position: Position, model: string): number {
  const n = Number(position);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new EvpubError(
      ErrorCode.CHECKPOINT_FAILED,
      `memory connector: checkpoint ${JSON.stringify(position)} of model ${model} is not a position of this connector`,
    );
  }
  return n;
}

export class MemoryConnector implements EventConnector {
  readonly name = 'memory';
  readonly resumable = true;
  readonly store: MemoryStore;
  private readonly life: Lifecycle<'failed'>;
  /** Per model, the position after which it reads. */
  private readonly after = new Map<string, number>();
  private readonly pushed = new Map<string, Position | null>();
  private readonly committed = new Map<string, Position>();
  private cursor = 0;
  private wakeUp: (() => void) | undefined;
  private stopping: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private detach: (() => void) | undefined;

  constructor(
    private readonly datasource: string,
    storeName: string,
  ) {
    this.store = memoryStore(storeName);
    this.life = new Lifecycle('memory', datasource);
  }

  /** Creates `key` in `model` (an error if it exists) and logs a `create`. */
  create(model: string, key: string, record: Row): ChangeEvent {
    return this.store.write(this.datasource, model, 'create', key, record);
  }

  /** Replaces `key`'s record and logs an `update` with before and after. */
  update(model: string, key: string, record: Row): ChangeEvent {
    return this.store.write(this.datasource, model, 'update', key, record);
  }

  /** Removes `key` and logs a `delete` with the record as `before`. */
  delete(model: string, key: string): ChangeEvent {
    return this.store.write(this.datasource, model, 'delete', key, undefined);
  }

  get(model: string, key: string): Row | undefined {
    return this.store.get(model, key);
  }

  /**
   * Point 10: the log is shared, but each model reads it from its own position (`after`) and
   * is checkpointed on its own, so each model is a unit of its own.
   */
  units(models: readonly string[]): string[][] {
    return models.map((model) => [model]);
  }

  async start({ models, sink }: StartRequest): Promise<void> {
    // Nothing to wait for: a bad setting or checkpoint leaves the connector idle.
    this.life.assertIdle();
    // Models of the memory connector have no settings: one given is a mistake, not ignored.
    for (const m of models) SettingsReader.forModel(m.name, m.settings).closed([]);
    for (const m of models) {
      const after = this.startAfter(m);
      this.after.set(m.name, after);
      // Commit where 'now' started, so a restart before any change resumes from here.
      if (m.from === 'now') sink.mark(m.name, String(after));
    }
    this.cursor = Math.min(...this.after.values(), this.store.head);
    this.life.begin();
    this.life.started();
    sink.status({ type: 'connected' });
    this.detach = this.store.onAppend(() => this.wakeUp?.());
    const stopSignal = new Promise<void>((resolve) => (this.stopping = resolve));
    this.loop = this.read(sink, stopSignal).catch((err: unknown) => {
      this.life.state = 'failed';
      const error = err instanceof Error ? err : new Error(String(err));
      for (const model of this.after.keys()) sink.fail(model, error);
    });
  }

  private startAfter(m: ModelFeed): number {
    if (m.from === 'now') return this.store.head;
    if (m.from === 'beginning') return 0;
    return parsePosition(m.from.after, m.name);
  }

  /** Reads the log in order and pushes each event of a started model; waits when caught up. */
  private async read(sink: ChangeSink, stopSignal: Promise<void>): Promise<void> {
    while (this.life.state === 'streaming') {
      const entry = this.store.entryAt(this.cursor + 1);
      if (!entry) {
        await Promise.race([new Promise<void>((resolve) => (this.wakeUp = resolve)), stopSignal]);
        this.wakeUp = undefined;
        continue;
      }
      this.cursor = entry.position;
      const after = this.after.get(entry.event.model);
      if (after === undefined || entry.position <= after) continue;
      this.pushed.set(entry.event.model, entry.event.position);
      // The store may be shared by datasources of other names: events carry the reader's.
      const event =
        entry.event.datasource === this.datasource
          ? entry.event
          : { ...entry.event, datasource: this.datasource };
      if (!sink.push(event)) await Promise.race([sink.drain(), stopSignal]);
    }
  }

  async commit(model: string, position: Position): Promise<void> {
    this.committed.set(model, position);
  }

  /** The last committed position of `model` (what the publisher confirmed and saved). */
  committedPosition(model: string): Position | undefined {
    return this.committed.get(model);
  }

  stop(): Promise<void> {
    return this.life.stop(async () => {
      this.detach?.();
      this.stopping?.();
      await this.loop;
    });
  }

  health(): ConnectorHealth {
    return { state: this.life.state, positions: Object.fromEntries(this.pushed) };
  }
}

/** The connector module, LoopBack style: `initialize(dataSource, cb?)` sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer((dataSource) => {
  const store = SettingsReader.forDataSource(dataSource.name, dataSource.settings)
    .closed(MEMORY_SETTING_KEYS)
    .string('store', dataSource.name);
  return new MemoryConnector(dataSource.name, store);
});

export const memoryConnector: ConnectorModule = { initialize };
