/**
 * The waits of a connector's read loop, each cut short by the feed's stop signal (an
 * AbortSignal aborted by `stop()`), so that `stop()` never waits out a back-off or a full
 * publisher window. The back-off itself (`backoffDelay`, `sleepUnlessStopped`, `retry`) is
 * src/util/retry.ts, shared with the pipeline and the broker adapters.
 */
import { toError } from '../../errors';
import type { ChangeSink } from '../contract';

/**
 * Resolves when the publisher's window has room again (`sink.drain()`), or as soon as `stop`
 * is aborted (at once if it already is). Rejects with `drain()`'s error, as an Error.
 */
export function drainUnlessStopped(sink: Pick<ChangeSink, 'drain'>, stop: AbortSignal): Promise<void> {
  if (stop.aborted) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onStop = (): void => resolve();
    stop.addEventListener('abort', onStop, { once: true });
    sink.drain().then(
      () => {
        stop.removeEventListener('abort', onStop);
        resolve();
      },
      (err: unknown) => {
        stop.removeEventListener('abort', onStop);
        reject(toError(err));
      },
    );
  });
}
