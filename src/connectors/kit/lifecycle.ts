/**
 * The guarded lifecycle of an event connector: `idle → starting → streaming → stopped`, plus
 * any states of its own (`reconnecting`, `failed`...). One connector start per instance:
 *
 * - `begin()`, first thing in `start()`: throws INVALID_STATE `<connector> connector
 *   "<datasource>" was already started` unless idle (a second `start()`, also after a stop),
 *   then the state is `starting`.
 * - `startFailed(err, translate?)`, in `start()`'s catch before its cleanup: the state becomes
 *   `stopped`; returns the error `start()` throws: INVALID_STATE `... was stopped while
 *   starting` with `err` as cause when `stop()` came during the start, otherwise
 *   `translate(err)` (default: `err`).
 * - `started()`, last thing in `start()`: `streaming`, unless `stop()` came meanwhile (the
 *   state stays `stopped`; whether that start resolves is the connector's choice).
 * - `stop(close)`: the state becomes `stopped` (a `failed` connector stays `failed`) and
 *   `close()` runs once; a second `stop()` returns the same promise.
 */
import { ErrorCode, EvpubError, toError } from '../../errors';

export type LifeState = 'idle' | 'starting' | 'streaming' | 'stopped';

export class Lifecycle<Extra extends string = never> {
  state: LifeState | Extra = 'idle';
  private stopping: Promise<void> | undefined;

  /** `connector` and `datasource` name the connector in messages. */
  constructor(
    private readonly connector: string,
    private readonly datasource: string,
  ) {}

  /** True once `stop()` was called or the start failed. */
  get stopRequested(): boolean {
    return this.stopping !== undefined || this.state === 'stopped';
  }

  /** Throws INVALID_STATE unless `start()` was never called. */
  assertIdle(): void {
    if (this.state !== 'idle') {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `${this.connector} connector "${this.datasource}" was already started`,
      );
    }
  }

  begin(): void {
    this.assertIdle();
    this.state = 'starting';
  }

  startFailed(err: unknown, translate: (err: unknown) => Error = toError): Error {
    const stoppedMeanwhile = this.stopRequested;
    this.state = 'stopped';
    if (!stoppedMeanwhile) return translate(err);
    return new EvpubError(
      ErrorCode.INVALID_STATE,
      `${this.connector} connector "${this.datasource}" was stopped while starting`,
      { cause: err },
    );
  }

  started(): void {
    if (this.state === 'starting') this.state = 'streaming';
  }

  stop(close: () => Promise<void>): Promise<void> {
    this.stopping ??= (async () => {
      if (this.state !== 'failed') this.state = 'stopped';
      await close();
      // A reconnect loop may have set its own state while closing.
      if (this.state !== 'failed') this.state = 'stopped';
    })();
    return this.stopping;
  }
}
