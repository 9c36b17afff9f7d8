/**
 * Helpers for the conformance fixtures of push sources (webhook, bridge, seed-style), whose
 * changes reach only the connectors listening when they are made.
 */
import type { ChangeSink, EventConnector, RawDeadLetter, StartRequest } from '../../src/connectors/contract';
import type { ChangeEvent } from '../../src/events/change-event';

/** A sink that hands everything to `sink` and commits each event at once, as a publisher does
 * once its broker confirmed it (here: straight away). */
class CommittingSink implements ChangeSink {
  constructor(
    private readonly sink: ChangeSink,
    private readonly connector: EventConnector,
  ) {}

  private commitLater(model: string, position: string | null | undefined): void {
    if (position === null || position === undefined || !this.connector.commit) return;
    queueMicrotask(() => void this.connector.commit?.(model, position));
  }

  push(event: ChangeEvent): boolean {
    const room = this.sink.push(event);
    this.commitLater(event.model, event.position);
    return room;
  }

  deadLetter(model: string, raw: RawDeadLetter): boolean {
    const room = this.sink.deadLetter(model, raw);
    this.commitLater(model, raw.position);
    return room;
  }

  drain(): Promise<void> {
    return this.sink.drain();
  }

  mark(model: string, position: string): void {
    this.sink.mark(model, position);
  }

  fail(model: string, err: Error): void {
    this.sink.fail(model, err);
  }

  status(...args: Parameters<ChangeSink['status']>): void {
    this.sink.status(...args);
  }
}

/**
 * `connector` as the suite drives it, with the publisher's commits: every event it pushes is
 * committed right away. A webhook answers its sender only on commit, and the bridge acks on
 * commit; the suite's RecordingSink never commits.
 */
export function committing(connector: EventConnector): EventConnector {
  return {
    name: connector.name,
    resumable: connector.resumable,
    start: (request: StartRequest) =>
      connector.start({ ...request, sink: new CommittingSink(request.sink, connector) }),
    stop: () => connector.stop(),
    ...(connector.commit ? { commit: connector.commit.bind(connector) } : {}),
    ...(connector.units ? { units: connector.units.bind(connector) } : {}),
    health: () => connector.health(),
  };
}
