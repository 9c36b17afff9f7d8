/**
 * The event connector conformance suite: one set of tests every EventConnector runs against its
 * real source. Each connector has a `connector-<name>.test.ts` calling `connectorConformance()`
 * with a fixture that makes changes in the source. Honest differences are declared in
 * `features`, never hidden.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type {
  ChangeSink,
  ConnectorStatus,
  EventConnector,
  ModelFeed,
  RawDeadLetter,
} from '../../src/connectors/contract';
import type { ChangeEvent, Position, StartFrom } from '../../src/events/change-event';
import { deferred, waitFor } from '../helpers/wait';

/** One fresh model (table, database...) of the source that this test alone uses. */
export interface SourceModel {
  name: string;
  settings: Record<string, unknown>;
  create(key: string, value: number): Promise<void>;
  update(key: string, value: number): Promise<void>;
  remove(key: string): Promise<void>;
}

export interface ConnectorFeatures {
  /** Events carry positions and the connector resumes from them. Default true. */
  positions: boolean;
  /** `before` holds the previous values on update/delete. Default false. */
  before: boolean;
  /**
   * The source keeps only a key's latest change until it is read (CouchDB's `_changes`): two
   * changes of one key made before the connector reads the first arrive as one. Tests then wait
   * for each change of a key before making the next. Default false.
   */
  coalesces: boolean;
  /**
   * The source keeps its past: a connector started after a change can still read it
   * (`'beginning'`). False for push sources (a webhook, a plain broker subscription, a seed-style
   * feed): there is no older change for a `'now'` start to skip, so that test does not run.
   * Default true.
   */
  history: boolean;
  /**
   * While the sink is full, nothing more reaches it until `drain()`, and a `stop()` meanwhile
   * hands nothing more over (the connector stopped reading, or drops what it queued, e.g. the
   * bridge on a plain subscription). False for a connector that cannot pause its source (a
   * seed-style one): it buffers, and hands the buffer to the sink when stopped. Default true.
   */
  pauses: boolean;
}

export interface ConnectorFixture {
  name: string;
  /** Called once before all tests (start a private server...). */
  setup?(): Promise<void>;
  /** Called once after all tests. */
  teardown?(): Promise<void>;
  /** A new connector instance, not started. */
  connector(): Promise<EventConnector>;
  /** A fresh model in the source. */
  model(): Promise<SourceModel>;
  /** Reads `after` back into the value given to create/update. */
  valueOf(row: Record<string, unknown> | null | undefined): number | undefined;
  features?: Partial<ConnectorFeatures>;
}

/** A sink that records everything; `full` makes push return false until `release()`. */
export class RecordingSink implements ChangeSink {
  readonly events: ChangeEvent[] = [];
  readonly statuses: ConnectorStatus[] = [];
  readonly failures: { model: string; err: Error }[] = [];
  /** Positions marked through `mark()`, per model, in order. */
  readonly marks: { model: string; position: Position }[] = [];
  /** Raw input handed to `deadLetter()`, in order. */
  readonly deadLetters: { model: string; raw: RawDeadLetter }[] = [];
  full = false;
  drains = 0;
  private room = deferred();

  push(event: ChangeEvent): boolean {
    this.events.push(event);
    return !this.full;
  }

  drain(): Promise<void> {
    this.drains += 1;
    return this.full ? this.room.promise : Promise.resolve();
  }

  fail(model: string, err: Error): void {
    this.failures.push({ model, err });
  }

  mark(model: string, position: Position): void {
    this.marks.push({ model, position });
  }

  deadLetter(model: string, raw: RawDeadLetter): boolean {
    this.deadLetters.push({ model, raw });
    return !this.full;
  }

  status(status: ConnectorStatus): void {
    this.statuses.push(status);
  }

  /** Makes room: drain() resolves and push returns true again. */
  release(): void {
    this.full = false;
    this.room.resolve();
    this.room = deferred();
  }

  keys(): string[] {
    return this.events.map((e) => e.key);
  }
}

/** A started connector and the sink it writes to. */
export interface Feed {
  connector: EventConnector;
  sink: RecordingSink;
}

/**
 * What went wrong on a feed, or undefined: the errors the connector passed to `sink.fail()` and
 * a 'failed' health. Either is final (contract.ts), so a wait on that feed can stop at once.
 */
export function feedTrouble({ connector, sink }: Feed): string | undefined {
  const problems = sink.failures.map((f) => `sink.fail(${f.model}): ${f.err.message}`);
  const health = connector.health();
  if (health.state === 'failed')
    problems.push(`health() is 'failed'${health.detail ? ` (${health.detail})` : ''}`);
  return problems.length > 0 ? problems.join('; ') : undefined;
}

/** How a feed stands, for a timeout message: what reached the sink, the last statuses, health. */
export function feedSummary({ connector, sink }: Feed): string {
  const health = connector.health();
  const statuses = sink.statuses
    .slice(-3)
    .map((s) => ('error' in s && s.error ? `${s.type} (${s.error})` : s.type))
    .join(', ');
  return (
    `${sink.events.length} events, ${sink.marks.length} marks, ${sink.drains} drain() calls, ` +
    `statuses [${statuses}], health ${health.state}${health.detail ? ` (${health.detail})` : ''}`
  );
}

/**
 * waitFor on feeds: gives up at once, naming the failure, when a feed's connector failed (an
 * event that will never come otherwise costs the whole timeout, and says nothing of why), and
 * a timeout says how each feed stood.
 */
export async function waitOnFeeds(feeds: Feed | Feed[], check: () => boolean, what: string): Promise<void> {
  const list = Array.isArray(feeds) ? feeds : [feeds];
  let failed: string | undefined;
  try {
    await waitFor(() => {
      if (check()) return true;
      failed = list
        .map(feedTrouble)
        .filter((t) => t !== undefined)
        .join('; ');
      if (failed) throw new Error(`gave up waiting for ${what}: the connector failed: ${failed}`);
      return false;
    }, what);
  } catch (err) {
    if (failed) throw err;
    const states = list.map((f, i) => (list.length > 1 ? `feed ${i + 1}: ` : '') + feedSummary(f)).join('; ');
    throw new Error(`${(err as Error).message} (${states})`, { cause: err });
  }
}

export function connectorConformance(fixture: ConnectorFixture): void {
  const features: ConnectorFeatures = {
    positions: true,
    before: false,
    coalesces: false,
    history: true,
    pauses: true,
    ...fixture.features,
  };

  describe(`event connector conformance: ${fixture.name}`, () => {
    const running: EventConnector[] = [];

    beforeAll(async () => {
      await fixture.setup?.();
    });

    afterAll(async () => {
      await Promise.all(running.map((c) => c.stop().catch(() => undefined)));
      await fixture.teardown?.();
    });

    async function started(model: SourceModel, from: StartFrom, sink = new RecordingSink()) {
      const connector = await fixture.connector();
      running.push(connector);
      const feed: ModelFeed = { name: model.name, settings: model.settings, from };
      await connector.start({ models: [feed], sink });
      return { connector, sink };
    }

    it('maps create, update and delete in source order, with keys and values', async () => {
      const model = await fixture.model();
      const { connector, sink } = await started(model, 'beginning');
      const settle = async (n: number): Promise<void> => {
        if (features.coalesces)
          await waitOnFeeds({ connector, sink }, () => sink.events.length >= n, `event ${n}`);
      };
      await model.create('a', 1);
      await model.create('b', 2);
      await settle(2);
      await model.update('a', 3);
      await model.remove('b');
      await waitOnFeeds({ connector, sink }, () => sink.events.length >= 4, '4 events');
      const events = sink.events;
      expect(events.map((e) => [e.op, e.key])).toEqual([
        ['create', 'a'],
        ['create', 'b'],
        ['update', 'a'],
        ['delete', 'b'],
      ]);
      expect(events.map((e) => fixture.valueOf(e.after))).toEqual([1, 2, 3, undefined]);
      for (const e of events) {
        expect(e.model).toBe(model.name);
        expect(typeof e.id).toBe('string');
        expect(Number.isNaN(Date.parse(e.sourceTime))).toBe(false);
        if (features.positions) expect(typeof e.position).toBe('string');
      }
      expect(new Set(events.map((e) => e.id)).size).toBe(4);
      if (features.before) expect(fixture.valueOf(events[2]!.before)).toBe(1);
      await connector.stop();
    });

    it.runIf(features.positions)('resumes after a position: nothing replayed, nothing skipped', async () => {
      const model = await fixture.model();
      const first = await started(model, 'beginning');
      for (const k of ['r1', 'r2', 'r3']) await model.create(k, 1);
      await waitOnFeeds(first, () => first.sink.events.length >= 3, '3 events');
      const last = first.sink.events[2]!.position!;
      expect(first.connector.health().positions?.[model.name]).toBe(last);
      await first.connector.stop();
      for (const k of ['r4', 'r5']) await model.create(k, 2);
      const second = await started(model, { after: last });
      await model.create('r6', 3);
      await waitOnFeeds(second, () => second.sink.keys().includes('r6'), 'the change made after the restart');
      expect(second.sink.keys()).toEqual(['r4', 'r5', 'r6']);
      await second.connector.stop();
    });

    it.runIf(features.positions)('gives the same idempotency key when a change is read again', async () => {
      const model = await fixture.model();
      await model.create('i1', 1);
      await model.update('i1', 2);
      const one = await started(model, 'beginning');
      await waitOnFeeds(one, () => one.sink.events.length >= 1, 'the first read');
      const two = await started(model, 'beginning');
      await waitOnFeeds(two, () => two.sink.events.length >= 1, 'the second read');
      // Each read may be at a different point of the same log (one saw the update already, the
      // other not yet): the changes both read carry the same ids.
      const n = Math.min(one.sink.events.length, two.sink.events.length);
      expect(two.sink.events.slice(0, n).map((e) => e.id)).toEqual(
        one.sink.events.slice(0, n).map((e) => e.id),
      );
      await Promise.all([one.connector.stop(), two.connector.stop()]);
    });

    it.runIf(features.history)("starts from 'now': older changes are not read", async () => {
      const model = await fixture.model();
      await model.create('old1', 1);
      await model.create('old2', 1);
      const { connector, sink } = await started(model, 'now');
      await model.create('new1', 2);
      await waitOnFeeds({ connector, sink }, () => sink.events.length >= 1, 'the new change');
      expect(sink.keys()).toEqual(['new1']);
      await connector.stop();
    });

    it.runIf(features.positions)(
      "marks where 'now' started; resuming there reads exactly the changes made since",
      async () => {
        const model = await fixture.model();
        await model.create('old', 1);
        const first = await started(model, 'now');
        await waitOnFeeds(first, () => first.sink.marks.length >= 1, "the mark of 'now'");
        await first.connector.stop();
        expect(first.sink.events).toEqual([]);
        await model.create('while-down', 2);
        const second = await started(model, { after: first.sink.marks[0]!.position });
        await waitOnFeeds(second, () => second.sink.events.length >= 1, 'the change made while stopped');
        expect(second.sink.keys()).toEqual(['while-down']);
        await second.connector.stop();
      },
    );

    it('reports health through its lifecycle; stop is harmless twice, and before start', async () => {
      const model = await fixture.model();
      const idle = await fixture.connector();
      expect(idle.health().state).toBe('idle');
      await idle.stop();
      await idle.stop();
      const { connector, sink } = await started(model, 'beginning');
      expect(connector.health().state).toBe('streaming');
      expect(sink.statuses.some((s) => s.type === 'connected')).toBe(true);
      await model.create('h1', 1);
      await waitOnFeeds({ connector, sink }, () => sink.events.length === 1, 'one event');
      if (features.positions)
        expect(connector.health().positions?.[model.name]).toBe(sink.events[0]!.position);
      await Promise.all([connector.stop(), connector.stop()]);
      await connector.stop();
      expect(connector.health().state).toBe('stopped');
      // A witness connector sees h2: had the stopped one still been reading, it would have too.
      // (Started before h2 is made, so that a source without history shows it h2 as well.)
      const witness = await started(model, 'beginning');
      await model.create('h2', 1);
      await waitOnFeeds(witness, () => witness.sink.keys().includes('h2'), 'h2 through a second connector');
      expect(sink.keys()).toEqual(['h1']);
      await witness.connector.stop();
    });

    it('splits its models into units (point 10); an instance given one unit streams its models', async (ctx) => {
      const probe = await fixture.connector();
      // Without units() the whole datasource is one unit: the other tests cover that instance.
      if (!probe.units) return ctx.skip();
      const models = [await fixture.model(), await fixture.model(), await fixture.model()];
      const names = models.map((m) => m.name);
      const units = probe.units(names);
      // A partition: every model in exactly one group, no group empty; the same answer again,
      // and from another instance with the same configuration.
      expect([...units.flat()].sort()).toEqual([...names].sort());
      expect(units.every((unit) => unit.length > 0)).toBe(true);
      expect(probe.units(names)).toEqual(units);
      const other = await fixture.connector();
      expect(other.units?.(names)).toEqual(units);
      await Promise.all([probe.stop(), other.stop()]);

      // As cluster mode runs them: one instance per unit, each given only that unit's models.
      const feeds: (Feed & { unit: string[] })[] = [];
      for (const unit of units) {
        const connector = await fixture.connector();
        running.push(connector);
        const sink = new RecordingSink();
        const unitModels = unit.map((name) => models[names.indexOf(name)]!);
        await connector.start({
          models: unitModels.map((m) => ({ name: m.name, settings: m.settings, from: 'beginning' })),
          sink,
        });
        feeds.push({ connector, sink, unit });
      }
      for (const [i, model] of models.entries()) await model.create(`u${i}`, i);
      await waitOnFeeds(
        feeds,
        () => feeds.every((f) => f.sink.events.length >= f.unit.length),
        "each unit's changes through its own instance",
      );
      for (const { sink, unit } of feeds) {
        expect(sink.events.map((e) => `${e.model}/${e.key}`).sort()).toEqual(
          unit.map((name) => `${name}/u${names.indexOf(name)}`).sort(),
        );
      }
      await Promise.all(feeds.map((f) => f.connector.stop()));
    });

    it('pauses when the sink is full and goes on after drain', async () => {
      const model = await fixture.model();
      const sink = new RecordingSink();
      sink.full = true;
      const { connector } = await started(model, 'beginning', sink);
      // Once a second, unthrottled connector has all five, the first had them offered too.
      const witness = await started(model, 'beginning');
      for (let i = 0; i < 5; i++) await model.create(`p${i}`, i);
      await waitOnFeeds(
        [{ connector, sink }, witness],
        () => witness.sink.events.length >= 5,
        'all five through a second connector',
      );
      await waitOnFeeds({ connector, sink }, () => sink.drains >= 1, 'the connector to await drain()');
      expect(sink.events.length).toBe(1);
      sink.release();
      await waitOnFeeds({ connector, sink }, () => sink.events.length >= 5, 'the rest after drain');
      expect(sink.keys()).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
      await Promise.all([connector.stop(), witness.connector.stop()]);
    });

    it('stops promptly while paused on a full sink', async () => {
      const model = await fixture.model();
      const sink = new RecordingSink();
      sink.full = true;
      const { connector } = await started(model, 'beginning', sink);
      await model.create('s1', 1);
      await model.create('s2', 1);
      await waitOnFeeds({ connector, sink }, () => sink.drains >= 1, 'the connector to await drain()');
      await connector.stop();
      expect(connector.health().state).toBe('stopped');
      if (features.pauses) expect(sink.keys()).toEqual(['s1']);
      // A connector that cannot pause hands over what it buffered (s2, if it had arrived).
      else expect(['s1', 's1,s2']).toContain(sink.keys().join(','));
    });
  });
}
