/**
 * The waits of a connector's read loop, each cut short by the feed's stop signal (an
 * AbortSignal aborted by `stop()`), so that `stop()` never waits out a back-off or a full
 * publisher window.
 */
import { toError } from '../errors';
import type { ChangeSink } from './contract';

/**
 * The delay before reconnect attempt `attempt` (1, 2, ...): `base` doubled per attempt after
 * the first, at most `max`.
 */
export function backOffDelay(attempt: number, base: number, max: number): number {
  return Math.min(base * 2 ** Math.min(attempt - 1, 30), max);
}

/** Resolves after `ms`, or as soon as `stop` is aborted (at once if it already is). */
export function sleepUnlessStopped(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (stop.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      stop.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    stop.addEventListener('abort', done, { once: true });
  });
}

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
