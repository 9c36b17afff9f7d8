/**
 * What the log redaction (src/util/redact.ts through src/logger.ts) costs on the hot path: the
 * pipeline's per-event debug line, written by pino to /dev/null, with and without redaction,
 * at level debug (the line is written) and info (the call is a no-op), in 7 alternating rounds;
 * the median of each is printed. Also `redactValue` of the same object alone.
 *
 *   npx tsx bench/log-redaction.ts
 *
 * On the 2-CPU test machine under load (2026-12, tsx): a written debug line 5.9–6.0 µs plain,
 * 6.0–6.6 µs redacted (within 10%); a disabled debug call 10–13 ns either way; redactValue alone
 * about 0.9 µs.
 */
import pino from 'pino';
import { redactChildBindings, redactingLogOptions } from '../src/logger';
import { redactValue } from '../src/util/redact';

const N = Number(process.env.BENCH_N ?? 100_000);
const line = { feed: 'pg/rows', topic: 'evpub/rows/42', key: '42', position: '16/B374D848', inFlight: 3 };
const dest = pino.destination({ dest: '/dev/null', sync: true });

function logger(level: string, redacting: boolean): pino.Logger {
  const root = redacting
    ? redactChildBindings(pino({ level, ...redactingLogOptions(['s3cr3t-passw0rd']) }, dest))
    : pino({ level }, dest);
  return root.child({ component: 'pipeline', datasource: 'pg' });
}

function nsPerCall(f: () => void): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) f();
  return Number(process.hrtime.bigint() - t0) / N;
}

const results: Record<string, number[]> = {};
for (let round = 0; round < 7; round++) {
  for (const level of ['debug', 'info']) {
    for (const redacting of round % 2 === 0 ? [false, true] : [true, false]) {
      const log = logger(level, redacting);
      const name = `${level} line, ${redacting ? 'redacted' : 'plain'}`;
      (results[name] ??= []).push(nsPerCall(() => log.debug(line, 'published')));
    }
  }
  (results['redactValue alone'] ??= []).push(nsPerCall(() => redactValue(line)));
}
for (const [name, xs] of Object.entries(results)) {
  xs.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(24)} ${xs[Math.floor(xs.length / 2)]!.toFixed(0).padStart(6)} ns per call (median)`,
  );
}
