/**
 * Back-off and retry, one formula for the whole code base (connectors, checkpoint tracker,
 * pipeline, broker adapters).
 *
 * - `backoffDelay(attempt, { initialDelay, maxDelay, jitter? })`: the wait before retry
 *   `attempt` (1, 2, ...): `initialDelay` doubled per attempt after the first, at most
 *   `maxDelay`; with `jitter` (a fraction, e.g. 0.1), up to that much more at random, so that
 *   clients cut off together do not all come back at the same moment.
 * - `retry(fn, options)`: calls `fn(attempt)` until it resolves. An error is retried when
 *   `options.retriable(err)` says so (default: an EvpubError with `retriable: true`; anything
 *   else is rethrown at once), after `backoffDelay(attempt)`. It gives up, rethrowing the last
 *   error, when `maxAttempts` calls failed, when the next wait would end at or after
 *   `deadline`, or when `signal` is aborted (at once: the wait is cut short).
 */
import { isEvpubError } from '../errors';

export interface BackoffOptions {
  /** The first wait, ms. */
  initialDelay: number;
  /** The longest wait, ms. */
  maxDelay: number;
  /** Adds up to this fraction of the delay at random (default 0: none). */
  jitter?: number;
}

/** The wait before retry `attempt` (1, 2, ...): `initialDelay · 2^(attempt-1)`, at most `maxDelay`. */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const { initialDelay, maxDelay, jitter = 0 } = options;
  // The exponent is bounded so that no attempt count overflows to Infinity.
  const delay = Math.min(initialDelay * 2 ** Math.min(Math.max(attempt, 1) - 1, 30), maxDelay);
  return jitter > 0 ? delay * (1 + Math.random() * jitter) : delay;
}

/** Resolves after `ms`, or as soon as `signal` is aborted (at once if it already is). */
export function sleepUnlessStopped(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

export interface RetryOptions extends BackoffOptions {
  /** Whether `err` is worth another attempt (default: an EvpubError with `retriable: true`). */
  retriable?: (err: unknown) => boolean;
  /** Calls in all, the first included (default: no limit). */
  maxAttempts?: number;
  /** Epoch ms: no wait that would end at or after it (default: none). */
  deadline?: number;
  /** Stops retrying: the wait in progress ends and the last error is rethrown. */
  signal?: AbortSignal;
  /** Called before each wait, with the failed attempt's number and the wait. */
  onRetry?: (err: unknown, attempt: number, delay: number) => void;
}

const isRetriable = (err: unknown): boolean => isEvpubError(err) && err.retriable;

/** Calls `fn` until it resolves, waiting `backoffDelay` between the retriable failures. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const retriable = options.retriable ?? isRetriable;
  const signal = options.signal ?? new AbortController().signal;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal.aborted || !retriable(err)) throw err;
      if (options.maxAttempts !== undefined && attempt >= options.maxAttempts) throw err;
      const delay = backoffDelay(attempt, options);
      if (options.deadline !== undefined && Date.now() + delay >= options.deadline) throw err;
      options.onRetry?.(err, attempt, delay);
      await sleepUnlessStopped(delay, signal);
      if (signal.aborted) throw err;
    }
  }
}
