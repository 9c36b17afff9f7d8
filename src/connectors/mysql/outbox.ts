/**
 * The outbox of a MySQL/MariaDB datasource (src/events/outbox.ts, docs/outbox.md): one binlog
 * stream of the outbox table feeds every model with `outbox: true`.
 *
 * The stream (binlog.ts) is built as the stream of the *lead* outbox model (the first in the
 * datasource's configured order) on the outbox table, and hands its rows to an `OutboxSink`,
 * which stands between it and the publisher's sink:
 * - an INSERT row becomes the event it describes (`outboxRowToEvent`: the row's id as event id,
 *   the stream's position, the binlog event's time) pushed for the model it names;
 * - a row that does not follow the protocol, or names a model that is not one of this
 *   connector's outbox models, is a dead letter with its reason, charged to the lead model;
 * - a DELETE or UPDATE row is no event: its position is marked for the lead model, and the
 *   stream's own marks (an idle commit) are marked for every outbox model, so that idle ones
 *   move on too;
 * - a failure of the stream fails every outbox model.
 *
 * Positions are the stream's, so every outbox model's checkpoint is a position of the same
 * binlog stream. A restart starts the stream at the earliest of them (connector.ts), and each
 * model skips what its own checkpoint covers (`comparePositions`): nothing is lost, and nothing is
 * published twice unless two checkpoints cannot be ordered (then a model reads rather than
 * skips, and the repeats carry their row's id).
 */
import { ErrorCode, toError } from '../../errors';
import type { ChangeEvent, Position } from '../../events/change-event';
import { outboxRowToEvent } from '../../events/outbox';
import type { ChangeSink, ConnectorStatus, RawDeadLetter } from '../contract';
import { unknownOutboxModel } from '../kit/outbox';
import { comparePositions, decodePosition, type BinlogPosition } from './position';

export class OutboxSink implements ChangeSink {
  /** Per model, the last position handed over for it (health). */
  readonly lastPushed = new Map<string, Position>();
  /** Per model, what its start already covers: its rows up to there are skipped. */
  private readonly skips = new Map<string, BinlogPosition>();

  constructor(
    private readonly o: {
      datasource: string;
      /** The publisher's sink. */
      sink: ChangeSink;
      /** The outbox models, the lead first. */
      models: readonly string[];
      /** The models with a table of their own (for a clearer dead letter). */
      own: ReadonlySet<string>;
      /** `database.table` of the outbox, for the dead letters' source. */
      table: string;
    },
  ) {}

  /** Model `model` starts after `position`: its rows up to there are not handed over again. */
  skipUntil(model: string, position: Position): void {
    this.skips.set(model, decodePosition(position));
  }

  private get lead(): string {
    return this.o.models[0]!;
  }

  /** Whether `position` is covered by `model`'s start; once past it, the model stops checking. */
  private covered(model: string, position: Position): boolean {
    const until = this.skips.get(model);
    if (until === undefined) return false;
    const order = comparePositions(decodePosition(position), until);
    if (order !== undefined && order <= 0) return true;
    this.skips.delete(model);
    return false;
  }

  push(event: ChangeEvent): boolean {
    const position = event.position!;
    const values = event.after;
    if (event.op !== 'create' || values === null || values === undefined) {
      // A DELETE (or UPDATE) of the outbox: no event; its place is passed.
      if (!this.covered(this.lead, position)) {
        this.lastPushed.set(this.lead, position);
        this.o.sink.mark(this.lead, position);
      }
      return true;
    }
    let out: ChangeEvent | undefined;
    let reason: string;
    try {
      out = outboxRowToEvent(this.o.datasource, values, {
        position,
        sourceTime: event.sourceTime,
        ...(event.tx ? { tx: event.tx } : {}),
      });
      reason = unknownOutboxModel(out.model, this.o.own);
    } catch (err) {
      reason = toError(err).message;
    }
    const row = event.source?.row;
    const gtid = event.source?.gtid;
    if (out && this.o.models.includes(out.model)) {
      if (this.covered(out.model, position)) return true;
      out.source = { outbox: true, ...(gtid !== undefined ? { gtid } : {}), row };
      this.lastPushed.set(out.model, position);
      return this.o.sink.push(out);
    }
    if (this.covered(this.lead, position)) return true;
    const letter: RawDeadLetter = {
      payload: JSON.stringify(values),
      reason,
      code: ErrorCode.MALFORMED_INPUT,
      position,
      source: { outbox: this.o.table, ...(gtid !== undefined ? { gtid } : {}), row },
    };
    this.lastPushed.set(this.lead, position);
    return this.o.sink.deadLetter(this.lead, letter);
  }

  deadLetter(model: string, raw: RawDeadLetter): boolean {
    return this.o.sink.deadLetter(model, raw);
  }

  drain(): Promise<void> {
    return this.o.sink.drain();
  }

  /** The stream's mark (an idle commit, the start point): every outbox model is there. */
  mark(_model: string, position: Position): void {
    for (const model of this.o.models) {
      if (this.covered(model, position)) continue;
      this.lastPushed.set(model, position);
      this.o.sink.mark(model, position);
    }
  }

  fail(_model: string, err: Error): void {
    for (const model of this.o.models) this.o.sink.fail(model, err);
  }

  status(status: ConnectorStatus): void {
    this.o.sink.status(status);
  }
}
