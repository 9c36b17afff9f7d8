/**
 * The V8 settings `evpub start` gives itself for its workload, in its own process (no re-spawn:
 * the pid the user started is the publisher, so SIGTERM, SIGINT and kill -9 mean what they say,
 * and there is no second process's memory to pay for).
 *
 * A burst allocates some 30,000 events a second, each alive until the broker confirms it (a
 * window of 1,000), then garbage. With Node's defaults the heap grows to about 100 MB before a
 * full collection and the young generation to 3 × 16 MB. Set with `v8.setFlagsFromString`
 * before anything is loaded, only flags V8 reads while it runs:
 *
 * - `--no-allocation-site-pretenuring`: V8 may otherwise decide, at a scavenge that finds a whole
 *   window alive, that events are long-lived and allocate them in the old generation; from then
 *   on every event is promoted garbage (seen on Redis: +20-30% CPU per row, +60 MB peak RSS).
 * - `--heap-growing-percent=25`: after a full collection the old generation may grow 25% before
 *   the next one (V8's dynamic factor allows up to 100-400%). What a burst promotes is short-lived:
 *   a collection soon finds it dead, and the heap stays near what is really alive.
 * - The young generation's semi-space stops growing at 8 MB (V8's default maximum is 16 MB):
 *   `--max-semi-space-size` only works at startup, so once V8 has grown the semi-space to 8 MB,
 *   `--semi-space-growth-factor=1` (read at each growth) keeps it there (checked after each
 *   collection; the factor goes back to 2 when V8 has shrunk the new space). The check runs
 *   between tasks (a GC observer), so a long synchronous stretch can grow past it: measured on
 *   `evpub start` at idle, the new space had already reached V8's maximum (2 × 16 MB) while
 *   modules loaded under the low heap growth above (2 × 8 MB without the settings); the cap then
 *   holds only after V8 shrinks the new space. Setting the heap growth once started kept it at
 *   2 × 8 MB, but moved no burst's peak RSS measurably, so it was left as is.
 *
 * A flag the user gave node (`node --heap-growing-percent=50 ...`, `NODE_OPTIONS=...`) wins over
 * evpub's: it is left alone. `EVPUB_V8_TUNING=off` (or `evpub start --no-v8-tuning`) turns all of
 * this off.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** The semi-space size at which its growth stops, in MB. */
export const SEMI_SPACE_MB = 8;
export const HEAP_GROWING_PERCENT = 25;

/** What `tuneHeap` set (for the log line): flags given to V8, and whether the semi-space is capped. */
export interface HeapTuning {
  flags: string[];
  semiSpaceCapMb?: number;
  /** Why nothing was set: the opt-out. */
  off?: string;
}

/** The node flags the user gave: the process's execArgv and NODE_OPTIONS. */
function givenFlags(env: NodeJS.ProcessEnv): string[] {
  return [...process.execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].filter(Boolean);
}

/** Whether a V8 flag (`--name`, `--no-name`, `--name=value`; `-` and `_` alike) was given. */
function given(argv: readonly string[], name: string): boolean {
  const norm = (s: string): string => s.replace(/_/g, '-');
  const want = norm(name);
  return argv.some((a) => {
    const flag = norm(a.split('=')[0] ?? '');
    return flag === `--${want}` || flag === `--no-${want}`;
  });
}

/**
 * Applies the settings above to this process, each unless the user gave that flag; nothing with
 * `off` true or EVPUB_V8_TUNING=off|0|false. Call it before the publisher is loaded.
 */
export function tuneHeap(options: { off?: boolean; env?: NodeJS.ProcessEnv } = {}): HeapTuning {
  const env = options.env ?? process.env;
  const opt = (env.EVPUB_V8_TUNING ?? '').toLowerCase();
  if (options.off) return { flags: [], off: '--no-v8-tuning' };
  if (['off', '0', 'false', 'no'].includes(opt)) return { flags: [], off: 'EVPUB_V8_TUNING' };
  const argv = givenFlags(env);
  const flags: string[] = [];
  if (!given(argv, 'allocation-site-pretenuring')) flags.push('--no-allocation-site-pretenuring');
  if (!given(argv, 'heap-growing-percent')) flags.push(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  for (const flag of flags) setFlagsFromString(flag);
  const semi = ['max-semi-space-size', 'semi-space-growth-factor', 'max-new-space-size'];
  if (semi.some((name) => given(argv, name))) return { flags };
  capSemiSpace(SEMI_SPACE_MB);
  return { flags, semiSpaceCapMb: SEMI_SPACE_MB };
}

/**
 * Keeps the semi-space from growing past `mb`: after each garbage collection, growth factor 1
 * once it reached `mb` (the new space is two semi-spaces), V8's default 2 while below (V8 shrinks
 * the new space when allocation slows down; the next burst must be able to grow it again). The
 * observer is unreferenced: it never keeps the process alive.
 */
function capSemiSpace(mb: number): void {
  let capped: boolean | undefined;
  const check = (): void => {
    const space = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    const reached = space !== undefined && space.space_size >= 2 * mb * 1024 * 1024;
    if (reached === capped) return;
    capped = reached;
    setFlagsFromString(`--semi-space-growth-factor=${reached ? 1 : 2}`);
  };
  check();
  new PerformanceObserver(check).observe({ entryTypes: ['gc'] });
}

/** The log line of a tuning: what was set, or why nothing. */
export function describeTuning(tuning: HeapTuning): string {
  if (tuning.off) return `v8 tuning off (${tuning.off}): node's garbage collector defaults`;
  const parts = [...tuning.flags];
  if (tuning.semiSpaceCapMb) parts.push(`semi-space growth stops at ${tuning.semiSpaceCapMb} MB`);
  if (parts.length === 0) return 'v8 tuning: none (node was given these flags)';
  return `v8 tuning: ${parts.join(', ')} (EVPUB_V8_TUNING=off: none)`;
}
