/**
 * The CDC benchmark's child processes: each system measured (evpub, the relay) and the
 * subscriber run in processes of their own, so that one's CPU and memory are not another's.
 * Lines on a child's stdout are its protocol; RSS and CPU time are read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { buildSync } from 'esbuild';
import type { PhaseResult } from './stats';

export class LineProcess {
  readonly child: ChildProcess;
  private readonly waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  private exited: Error | undefined;
  private readonly tail: string[] = [];
  /** Where the process serves its management API, when it does (evpub). */
  apiUrl?: string;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ) {
    this.child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const keep = (line: string): void => {
      this.tail.push(line);
      if (this.tail.length > 20) this.tail.shift();
    };
    // BENCH_LOG_DIR: keep each child's whole output there (to read a run's logs or --trace-gc).
    if (process.env.BENCH_LOG_DIR) {
      const file = createWriteStream(join(process.env.BENCH_LOG_DIR, `${name}-${this.child.pid}.log`));
      this.child.stdout!.pipe(file);
      this.child.stderr!.pipe(file);
    }
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      keep(line);
      const i = this.waiters.findIndex((w) => w.match(line));
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(line);
    });
    createInterface({ input: this.child.stderr! }).on('line', keep);
    this.child.once('exit', (code, signal) => {
      this.exited = new Error(
        `${name} exited (${signal ?? code}); last output:\n  ${this.tail.join('\n  ')}`,
      );
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The next stdout line that matches, or an error when the process exits or time runs out. */
  line(match: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.exited) return reject(this.exited);
      const waiter = { match, resolve: (l: string) => done(() => resolve(l)) };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`${this.name}: no ${what} after ${timeoutMs} ms:\n  ${this.tail.join('\n  ')}`)),
          ),
        timeoutMs,
      );
      const onExit = (): void => done(() => reject(this.exited!));
      const done = (settle: () => void): void => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        settle();
      };
      this.child.once('exit', onExit);
      this.waiters.push(waiter);
    });
  }

  send(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it exited. */
  async stop(graceMs = 20_000): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }
}

/** The subscriber process (bench/cdc/subscriber.ts). */
export class Subscriber {
  private constructor(private readonly p: LineProcess) {}

  static async start(url: string, topic: string, options: unknown): Promise<Subscriber> {
    const p = new LineProcess('subscriber', process.execPath, [
      '--import',
      'tsx',
      `${__dirname}/subscriber.ts`,
      url,
      topic,
      JSON.stringify(options),
    ]);
    await p.line((l) => l === 'ready', 30_000, 'ready');
    return new Subscriber(p);
  }

  /** Starts a phase of `n` messages; the returned promise settles when they all arrived. */
  async expect(n: number, timeoutMs: number): Promise<() => Promise<PhaseResult & { complete: boolean }>> {
    const ok = this.p.line((l) => l === 'ok', 10_000, 'ok');
    this.p.send(`expect ${n}`);
    await ok;
    const result = this.p.line((l) => l.startsWith('{"count"'), timeoutMs, `${n} messages`);
    // Handled here too: when the writing fails first, the caller never awaits it, and its
    // rejection (the subscriber stopped by the cleanup) would hide the writer's error.
    result.catch(() => undefined);
    return async () => {
      try {
        return { ...(JSON.parse(await result) as PhaseResult), complete: true };
      } catch {
        const partial = this.p.line((l) => l.startsWith('{"count"'), 10_000, 'a report');
        this.p.send('report');
        return { ...(JSON.parse(await partial) as PhaseResult), complete: false };
      }
    };
  }

  async peek(): Promise<number> {
    const line = this.p.line((l) => l.startsWith('{"peek"'), 10_000, 'peek');
    this.p.send('peek');
    return (JSON.parse(await line) as { peek: number }).peek;
  }

  /** Stops the process without unsubscribing first (an interrupted run's cleanup). */
  async kill(): Promise<void> {
    await this.p.stop(2_000);
  }

  async end(): Promise<void> {
    this.p.send('end');
    await this.p.stop(5_000);
  }
}

/** Resident set size of a process in bytes (0 once it is gone). */
export function rss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** User + system CPU time of a process in ms (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS every 50 ms; `peak()` since the last `reset()`. */
export class RssSampler {
  private max = 0;
  private readonly samples: { at: number; rss: number }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.timer = setInterval(() => this.sample(), 50);
  }

  private sample(): void {
    const value = rss(this.pid);
    this.max = Math.max(this.max, value);
    this.samples.push({ at: Date.now(), rss: value });
  }

  reset(): void {
    this.max = rss(this.pid);
    this.samples.length = 0;
  }

  peak(): number {
    this.sample();
    return this.max;
  }

  /** The samples since the last reset, as [ms since `from`, MB]. */
  series(from: number): [number, number][] {
    return this.samples.map((s) => [s.at - from, Math.round(s.rss / 2 ** 20)]);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

let relayBundle: string | undefined;

/**
 * The minimal relay (relay.ts) as one plain JavaScript file (esbuild, dependencies left as
 * requires), so that it runs on bare `node` like evpub's build: no TypeScript loader in its CPU
 * time or memory. Built once per run, inside the project so that its requires resolve.
 */
export function relayScript(): string {
  if (!relayBundle) {
    relayBundle = join(__dirname, '..', '..', 'node_modules', '.cache', 'evpub-bench', 'relay.js');
    buildSync({
      entryPoints: [join(__dirname, 'relay.ts')],
      outfile: relayBundle,
      bundle: true,
      platform: 'node',
      target: 'node20',
      packages: 'external',
      logLevel: 'warning',
    });
  }
  return relayBundle;
}
