/** Shared shapes and arithmetic of the CDC benchmark. */

export interface Latency {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** What the subscriber reports for one phase. Times are epoch ms with sub-millisecond precision. */
export interface PhaseResult {
  count: number;
  bytes: number;
  firstAt: number;
  lastAt: number;
  ops: Record<string, number>;
  latency: Latency;
}

/** p50/p95/p99/max (ms, 2 decimals) of the values, by the nearest-rank method. */
export function percentiles(values: Float64Array): Latency {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  const rank = (p: number): number => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.ceil((p / 100) * n) - 1)]!);
  const round = (v: number): number => Math.round(v * 100) / 100;
  return {
    count: n,
    p50: round(rank(50)),
    p95: round(rank(95)),
    p99: round(rank(99)),
    max: round(rank(100)),
  };
}

const TIMESTAMP = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(Z|[+-]\d\d(?::?\d\d)?)?$/;

/**
 * Epoch ms (with microseconds as the fraction) of a PostgreSQL timestamptz in ISO 8601
 * (`2026-11-28T04:20:00.123456Z`, evpub) or PostgreSQL's text output
 * (`2026-11-28 04:20:00.123456+00`, the relay); undefined for anything else.
 */
export function parseTimestamp(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = TIMESTAMP.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac = '', zone = 'Z'] = m;
  let ms = Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +s!) + Number(frac.padEnd(6, '0')) / 1000;
  if (zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offset = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || '0');
    ms -= sign * offset * 60_000;
  }
  return ms;
}
