/** The one back-off formula and the retry loop driven by EvpubError.retriable (src/util/retry.ts). */
import { describe, expect, it } from 'vitest';
import { ErrorCode, EvpubError } from '../../src/errors';
import { backoffDelay, retry } from '../../src/util/retry';

const transient = (n: number) => new EvpubError(ErrorCode.CONNECT_FAILED, `down ${n}`, { retriable: true });

describe('backoffDelay', () => {
  it('doubles from initialDelay per attempt, capped at maxDelay', () => {
    const o = { initialDelay: 100, maxDelay: 1_000 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, o))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(10_000, o)).toBe(1000); // no overflow to Infinity or NaN
    expect(backoffDelay(0, o)).toBe(100);
  });

  it('adds at most `jitter` of the delay at random', () => {
    const o = { initialDelay: 1_000, maxDelay: 1_000, jitter: 0.1 };
    const delays = Array.from({ length: 200 }, () => backoffDelay(3, o));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(1_000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1_100);
    expect(new Set(delays).size).toBeGreaterThan(1);
  });
});

describe('retry', () => {
  const fast = { initialDelay: 1, maxDelay: 4 };

  it('retries retriable errors with the back-off, then resolves', async () => {
    const waits: number[] = [];
    const result = await retry(
      async (attempt) => {
        if (attempt < 4) throw transient(attempt);
        return `ok after ${attempt}`;
      },
      { ...fast, onRetry: (_err, attempt, delay) => waits.push(attempt, delay) },
    );
    expect(result).toBe('ok after 4');
    expect(waits).toEqual([1, 1, 2, 2, 3, 4]);
  });

  it('rethrows a non-retriable error (or any non-EvpubError) at once', async () => {
    let calls = 0;
    const refused = new EvpubError(ErrorCode.AUTH_FAILED, 'no');
    await expect(retry(() => (calls++, Promise.reject(refused)), fast)).rejects.toBe(refused);
    await expect(retry(() => (calls++, Promise.reject(new Error('bug'))), fast)).rejects.toThrow('bug');
    expect(calls).toBe(2);
  });

  it('a custom predicate decides instead of `retriable`', async () => {
    let calls = 0;
    const result = await retry(
      async () => {
        if (++calls < 3) throw new Error('flaky');
        return calls;
      },
      { ...fast, retriable: (err) => (err as Error).message === 'flaky' },
    );
    expect(result).toBe(3);
  });

  it('gives up with the last error after maxAttempts, before a wait past the deadline, or on abort', async () => {
    let calls = 0;
    await expect(
      retry((n) => (calls++, Promise.reject(transient(n))), { ...fast, maxAttempts: 3 }),
    ).rejects.toThrow('down 3');
    expect(calls).toBe(3);

    await expect(
      retry((n) => Promise.reject(transient(n)), {
        initialDelay: 60_000,
        maxDelay: 60_000,
        deadline: Date.now() + 1000,
      }),
    ).rejects.toThrow('down 1');

    const stop = new AbortController();
    const running = retry((n) => Promise.reject(transient(n)), {
      initialDelay: 60_000,
      maxDelay: 60_000,
      signal: stop.signal,
      onRetry: () => stop.abort(),
    });
    await expect(running).rejects.toThrow('down 1'); // the 60 s wait was cut short
  });
});
