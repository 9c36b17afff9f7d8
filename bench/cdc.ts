/**
 * The end-to-end CDC benchmark: PostgreSQL → evpub → broker → a subscriber process, beside two
 * baselines measured in the same run on the same table:
 *   ceiling: the raw client library publishing pre-built messages of evpub's message size;
 *   relay:   a minimal hand-written relay (bench/cdc/relay.ts): pg-logical-replication → the raw
 *            client, 1,000 in flight, slot acknowledged only after the broker confirmed.
 *
 *   npm run bench                          # every broker (about 3 minutes each)
 *   npm run bench -- mqtt redis            # some of them
 *   npm run bench -- outage                # only the broker-outage scenario
 *   BENCH_ROWS=20000 BENCH_STEADY_SECONDS=10 npm run bench -- mqtt    # a quick run
 *   BENCH_PROFILE=1 npm run bench -- mqtt  # also writes evpub's CPU profile (bench/results/profiles)
 *   BENCH_SYSTEMS=none npm run bench -- nats   # only the API off/on pairs (cdc-partial-<date>.json)
 *   EVPUB_NODE=/path/to/node npm run bench -- nats   # evpub on another Node (e.g. 24), the rest on this one
 *
 * Scenarios, per broker, for the relay and for evpub (each in its own process, started fresh):
 *   burst:  BENCH_ROWS (100,000) rows inserted in transactions of 1,000; throughput = rows /
 *           (last event received − first insert).
 *   steady: 1,000 and 5,000 rows/s for BENCH_STEADY_SECONDS (30) each; latency = arrival −
 *           the row's updated_at (clock_timestamp() at insert), p50/p95/p99/max.
 *   mixed:  100 transactions of 100 changes: 34 inserts, 33 updates, 33 deletes.
 *   RSS:    the process's peak resident memory during each scenario (sampled every 50 ms).
 *   variants: per broker, BENCH_VARIANT_ROUNDS (3) rounds of bursts, each in a fresh evpub, of
 *           every variant of BENCH_VARIANTS, interleaved: `default` (as users run it, `/metrics`
 *           scraped every BENCH_SCRAPE_MS), `api-off` (`http.enabled: false`), `sse` (a browser-
 *           like client on `/api/events` throughout), `v8-off` (EVPUB_V8_TUNING=off: node's own
 *           heap settings), `node24` (Node.js 24 LTS, from .ci/node24.sh); medians of rows/s, CPU
 *           per 1k rows and RSS.
 *   targets: what the performance issue asks, each met or missed (printed and in the JSON).
 * Then, for MQTT only, evpub's burst with the broker stopped for 30 s in the middle of it:
 * RSS must stay bounded (the source is paused, not buffered).
 *
 * Prints a table, writes bench/results/cdc-<date>.json and a chart, cdc-<date>.svg.
 * evpub runs from dist/ (npm run bench builds first) with its defaults: CloudEvents envelope,
 * file checkpoints, 1,000 in flight, log level info.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMosquitto, type PrivateMosquitto } from '../test/helpers/mosquitto';
import { startKafkaMock } from '../test/helpers/kafka-mock';
import { openRawPublisher, type BrokerName } from './cdc/raw-publishers';
import { LineProcess, RssSampler, Subscriber, cpuMs, relayScript } from './cdc/processes';
import type { Latency, PhaseResult } from './cdc/stats';
import { PG_URL, Workload } from './cdc/workload';
import { renderChart } from './cdc/chart';
import { windowed } from './windowed';

const ROWS = Number(process.env.BENCH_ROWS ?? 100_000);
const STEADY_SECONDS = Number(process.env.BENCH_STEADY_SECONDS ?? 30);
const RATES = (process.env.BENCH_RATES ?? '1000,5000')
  .split(',')
  .map(Number)
  .filter((r) => r > 0);
const MIXED_TXS = 100;
const OUTAGE_SECONDS = Number(process.env.BENCH_OUTAGE_SECONDS ?? 30);
const PROFILE = process.env.BENCH_PROFILE === '1';
/**
 * Rounds of the variants' bursts per broker (each variant once per round, in a fresh evpub, the
 * order turned each round so that none always has the warmer machine). 0 skips them.
 */
const VARIANT_ROUNDS = Number(process.env.BENCH_VARIANT_ROUNDS ?? 3);
const VARIANT_NAMES = ['default', 'api-off', 'sse', 'v8-off', 'node24'] as const;
type VariantName = (typeof VARIANT_NAMES)[number];
const VARIANTS = (process.env.BENCH_VARIANTS ?? VARIANT_NAMES.join(','))
  .split(',')
  .filter(Boolean)
  .map((v) => {
    if (!(VARIANT_NAMES as readonly string[]).includes(v))
      throw new Error(`BENCH_VARIANTS: unknown variant "${v}" (known: ${VARIANT_NAMES.join(', ')})`);
    return v as VariantName;
  });
/** In those bursts with the API on, `GET /metrics` every BENCH_SCRAPE_MS (1000; 0: never). */
const SCRAPE_MS = Number(process.env.BENCH_SCRAPE_MS ?? 1000);
/** BENCH_SYSTEMS=evpub: the baselines (relay, ceiling) left out, for quick evpub-only runs. */
const SYSTEMS = (process.env.BENCH_SYSTEMS ?? 'relay,evpub').split(',');
// EVPUB_NODE: the node binary evpub runs on (default: the one running the benchmark).
const EVPUB_NODE = process.env.EVPUB_NODE || process.execPath;
const WINDOW = 1000;
const RESULTS = join(__dirname, 'results');
const now = (): number => performance.timeOrigin + performance.now();
const MB = (bytes: number): number => Math.round(bytes / 2 ** 20);
const log = (msg: string): void => void process.stderr.write(`[bench] ${msg}\n`);

interface Target {
  broker: BrokerName;
  url: string;
  /** evpub's client options for this broker (publisher side). */
  options: Record<string, unknown>;
  /** Rows of the burst (and ceiling) on this broker: ROWS unless the broker cannot hold them. */
  rows: number;
  note?: string;
}

interface ScenarioResult {
  rows: number;
  received: number;
  complete: boolean;
  perSec: number;
  latency: Latency;
  peakRssMb: number;
  cpuMsPerKRows: number;
  ops?: Record<string, number>;
}

interface SystemResult {
  burst: ScenarioResult;
  steady: Record<string, ScenarioResult>;
  mixed: ScenarioResult;
  messageBytes: number;
  peakRssMb: number;
}

type System = 'relay' | 'evpub';

/** Runs one scenario: starts a subscriber phase, writes, waits for the events. */
async function scenario(
  sub: Subscriber,
  proc: LineProcess,
  sampler: RssSampler,
  expected: number,
  write: () => Promise<unknown>,
  timeoutMs: number,
): Promise<ScenarioResult & { bytes: number }> {
  const result = await sub.expect(expected, timeoutMs);
  sampler.reset();
  const cpu0 = cpuMs(proc.pid);
  const t0 = now();
  await write();
  const r: PhaseResult & { complete: boolean } = await result();
  return {
    rows: expected,
    received: r.count,
    complete: r.complete,
    perSec: r.count > 0 ? Math.round(r.count / ((r.lastAt - t0) / 1000)) : 0,
    latency: r.latency,
    peakRssMb: MB(sampler.peak()),
    cpuMsPerKRows: +(((cpuMs(proc.pid) - cpu0) / Math.max(1, r.count)) * 1000).toFixed(1),
    ops: r.ops,
    bytes: r.count > 0 ? r.bytes / r.count : 0,
  };
}

/** Starts the system measured: the relay, or `evpub start` with a generated configuration. */
async function startSystem(
  system: System,
  target: Target,
  wl: Workload,
  names: { slot: string; publication: string; topic: string },
  dir: string,
  variant: { http?: boolean; node?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<LineProcess> {
  const http = variant.http ?? true;
  const profile = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${join(RESULTS, 'profiles')}`] : [];
  if (system === 'relay') {
    await wl.createSlot(names.slot, names.publication);
    const p = new LineProcess('relay', process.execPath, [
      ...profile,
      relayScript(),
      PG_URL,
      names.slot,
      names.publication,
      target.broker,
      target.url,
      names.topic,
    ]);
    await p.line((l) => l === 'ready', 30_000, 'ready');
    return p;
  }
  const config = {
    brokers: { default: { url: target.url, options: target.options } },
    datasources: {
      db: { connector: 'postgres', url: PG_URL, slot: names.slot, publication: names.publication },
    },
    models: { [wl.table]: { dataSource: 'db', topic: names.topic } },
    // BENCH_CHECKPOINTS=memory: an experiment to see what durable checkpoints cost.
    checkpoints:
      process.env.BENCH_CHECKPOINTS === 'memory'
        ? { store: 'memory' }
        : { store: 'file', path: join(dir, 'checkpoints') },
    // Off: evpub without its management API (server, metrics, event stream), to see its cost.
    ...(http ? {} : { http: { enabled: false } }),
  };
  const file = join(dir, 'evpub.config.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const p = new LineProcess(
    'evpub',
    variant.node ?? EVPUB_NODE,
    [
      ...profile,
      // BENCH_EVPUB_FLAGS: node flags for evpub alone (an experiment, e.g. GC settings).
      ...(process.env.BENCH_EVPUB_FLAGS ?? '').split(' ').filter(Boolean),
      join(__dirname, '..', 'dist', 'cli', 'index.js'),
      'start',
      '--config',
      file,
    ],
    // The management API on a free port: a leftover process may hold 7401.
    { EVPUB_LOG_LEVEL: 'info', EVPUB_HTTP_PORT: '0', ...variant.env },
  );
  const listening = http
    ? p.line((l) => l.includes('management API listening at'), 30_000, 'the API listening')
    : undefined;
  await p.line((l) => l.includes('"msg":"started"'), 30_000, 'started');
  if (listening) p.apiUrl = /listening at (http:\/\/[^"\s]+)/.exec(await listening)?.[1];
  return p;
}

async function runSystem(system: System, target: Target, wl: Workload, run: string): Promise<SystemResult> {
  const names = {
    slot: `bench_${system}_${run}`,
    publication: `bench_${system}_${run}`,
    topic: `bench/${system}_${run}`,
  };
  const dir = mkdtempSync(join(tmpdir(), `evpub-bench-${system}-`));
  const sub = await Subscriber.start(target.url, names.topic, subscriberOptions(target));
  let proc: LineProcess | undefined;
  let sampler: RssSampler | undefined;
  try {
    proc = await startSystem(system, target, wl, names, dir);
    sampler = new RssSampler(proc.pid);
    log(`${target.broker} ${system}: burst of ${target.rows}`);
    const burst = await scenario(sub, proc, sampler, target.rows, () => wl.burst(target.rows, 1000), 300_000);
    const steady: Record<string, ScenarioResult> = {};
    for (const rate of RATES) {
      log(`${target.broker} ${system}: steady ${rate} rows/s for ${STEADY_SECONDS} s`);
      const rows = Math.round((STEADY_SECONDS * 1000) / 10) * Math.max(1, Math.round(rate / 100));
      steady[rate] = await scenario(
        sub,
        proc,
        sampler,
        rows,
        () => wl.steady(rate, STEADY_SECONDS),
        120_000 + STEADY_SECONDS * 1000,
      );
    }
    // A small run (BENCH_ROWS) leaves fewer rows than 100 transactions update and delete.
    const txs = Math.min(MIXED_TXS, Math.floor((await wl.count()) / 66));
    log(`${target.broker} ${system}: mixed, ${txs} transactions`);
    const mixed = await scenario(sub, proc, sampler, txs * 100, () => wl.mixed(txs), 120_000);
    const peakRssMb = Math.max(
      burst.peakRssMb,
      mixed.peakRssMb,
      ...Object.values(steady).map((s) => s.peakRssMb),
    );
    return { burst, steady, mixed, messageBytes: Math.round(burst.bytes), peakRssMb };
  } finally {
    sampler?.stop();
    await proc?.stop();
    await sub.end();
    await wl.dropSlot(names.slot, names.publication);
    rmSync(dir, { recursive: true, force: true });
  }
}

interface BurstResult extends ScenarioResult {
  /** RSS once started, before the burst. */
  idleRssMb: number;
  /** Scrapes of `/metrics` answered 200 during the burst. */
  scrapes?: number;
  /** The live event stream's client (variant `sse`): events read, and whether evpub ended it. */
  sse?: { events: number; ended: boolean };
}

/**
 * Scrapes `url` every `everyMs` (one at a time) until the returned function is called, which
 * resolves with the number of scrapes answered 200 with metrics in them.
 */
function scraper(url: string, everyMs: number): () => Promise<number> {
  let ok = 0;
  let inFlight: Promise<void> | undefined;
  const scrape = async (): Promise<void> => {
    try {
      const res = await fetch(url);
      const text = await res.text();
      if (res.status === 200 && text.includes('evpub_events_published_total')) ok++;
    } catch {
      // counted as not answered
    }
  };
  const tick = (): void => {
    inFlight ??= scrape().finally(() => (inFlight = undefined));
  };
  const timer = setInterval(tick, everyMs);
  tick();
  return async () => {
    clearInterval(timer);
    await inFlight;
    return ok;
  };
}

/**
 * A browser-like client of the live event stream (`GET /api/events`, Server-Sent Events) until the
 * returned function is called, which resolves with the events it read (`id:` lines) and whether
 * evpub ended the stream first (a client too slow for its bounds is disconnected).
 */
function sseClient(url: string): () => Promise<{ events: number; ended: boolean }> {
  const abort = new AbortController();
  let events = 0;
  let ended = false;
  const reading = (async () => {
    const res = await fetch(url, { signal: abort.signal, headers: { accept: 'text/event-stream' } });
    const decoder = new TextDecoder();
    let rest = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split('\n');
      rest = lines.pop()!;
      for (const line of lines) if (line.startsWith('id:')) events++;
    }
    ended = true;
  })().catch(() => undefined);
  return async () => {
    abort.abort();
    await reading;
    return { events, ended };
  };
}

interface VariantSetup {
  http?: boolean;
  node?: string;
  env?: NodeJS.ProcessEnv;
  /** A client on the live event stream during the burst. */
  sse?: boolean;
}

/** What each variant changes against `default` (evpub start as users run it). */
function variantSetup(name: VariantName, node24: string | undefined): VariantSetup {
  switch (name) {
    case 'default':
      return {};
    case 'api-off':
      return { http: false };
    case 'sse':
      return { sse: true };
    case 'v8-off':
      return { env: { EVPUB_V8_TUNING: 'off' } };
    case 'node24':
      return { node: node24 };
  }
}

/** A fresh evpub of one variant and one burst: the throughput and memory. */
async function runBurst(
  target: Target,
  wl: Workload,
  run: string,
  setup: VariantSetup,
): Promise<BurstResult> {
  const names = { slot: `bench_${run}`, publication: `bench_${run}`, topic: `bench/${run}` };
  const dir = mkdtempSync(join(tmpdir(), 'evpub-bench-burst-'));
  const sub = await Subscriber.start(target.url, names.topic, subscriberOptions(target));
  let proc: LineProcess | undefined;
  let sampler: RssSampler | undefined;
  try {
    proc = await startSystem('evpub', target, wl, names, dir, setup);
    sampler = new RssSampler(proc.pid);
    const idleRssMb = MB(sampler.peak());
    const api = proc.apiUrl;
    let scrapes: (() => Promise<number>) | undefined;
    let sse: ReturnType<typeof sseClient> | undefined;
    const { bytes: _bytes, ...burst } = await scenario(
      sub,
      proc,
      sampler,
      target.rows,
      () => {
        // The first scrape at once: the metrics' collectors are all running from the start.
        if (api && SCRAPE_MS > 0) scrapes = scraper(`${api}/metrics`, SCRAPE_MS);
        if (api && setup.sse) sse = sseClient(`${api}/api/events`);
        return wl.burst(target.rows, 1000);
      },
      300_000,
    );
    return {
      ...burst,
      idleRssMb,
      ...(scrapes ? { scrapes: await scrapes() } : {}),
      ...(sse ? { sse: await sse() } : {}),
    };
  } finally {
    sampler?.stop();
    await proc?.stop();
    await sub.end();
    await wl.dropSlot(names.slot, names.publication);
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : +((sorted[mid - 1]! + sorted[mid]!) / 2).toFixed(1);
};

interface VariantResult {
  runs: BurstResult[];
  /** Medians of the runs. */
  perSec: number;
  cpuMsPerKRows: number;
  peakRssMb: number;
  idleRssMb: number;
  /** Median rows/s against the `default` variant's (when it ran). */
  vsDefault?: number;
  /** The node binary's version (node24). */
  node?: string;
  /** Why the variant did not run. */
  skipped?: string;
}

/**
 * The variants' bursts on one broker: VARIANT_ROUNDS rounds, each variant once per round in a
 * fresh evpub, the order turned every round; medians per variant.
 */
async function runVariants(
  target: Target,
  wl: Workload,
  run: string,
  node24: { path?: string; version?: string; error?: string },
): Promise<Partial<Record<VariantName, VariantResult>>> {
  const names = VARIANTS.filter((v) => v !== 'node24' || node24.path);
  const runs = new Map<VariantName, BurstResult[]>(names.map((v) => [v, []]));
  for (let round = 0; round < VARIANT_ROUNDS; round++) {
    const order = names.map((_, i) => names[(i + round) % names.length]!);
    if (round % 2) order.reverse();
    for (const v of order) {
      log(`${target.broker} evpub ${v}: burst of ${target.rows} (round ${round + 1})`);
      runs
        .get(v)!
        .push(
          await runBurst(target, wl, `${v.replace('-', '')}${round}_${run}`, variantSetup(v, node24.path)),
        );
    }
  }
  const out: Partial<Record<VariantName, VariantResult>> = {};
  for (const [v, list] of runs) {
    const m = (key: 'perSec' | 'peakRssMb' | 'idleRssMb' | 'cpuMsPerKRows'): number =>
      median(list.map((b) => b[key]));
    out[v] = {
      runs: list,
      perSec: Math.round(m('perSec')),
      cpuMsPerKRows: m('cpuMsPerKRows'),
      peakRssMb: m('peakRssMb'),
      idleRssMb: m('idleRssMb'),
      ...(v === 'node24' ? { node: node24.version } : {}),
    };
  }
  const base = out.default?.perSec;
  if (base) for (const r of Object.values(out)) r.vsDefault = ratio(r.perSec, base);
  if (VARIANTS.includes('node24') && !node24.path)
    out.node24 = { runs: [], perSec: 0, cpuMsPerKRows: 0, peakRssMb: 0, idleRssMb: 0, skipped: node24.error };
  return out;
}

/** Node.js 24 for the `node24` variant: EVPUB_NODE24, or the one .ci/node24.sh installs and caches. */
function findNode24(): { path?: string; version?: string; error?: string } {
  if (!VARIANTS.includes('node24') || VARIANT_ROUNDS === 0) return {};
  try {
    const path = execFileSync('bash', [join(__dirname, '..', '.ci', 'node24.sh'), '--print-node'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    return { path, version: execFileSync(path, ['--version'], { encoding: 'utf8' }).trim() };
  } catch (err) {
    return { error: `no Node.js 24: ${(err as Error).message.split('\n')[0]}` };
  }
}

/** The broker ceiling: the raw client publishing `ROWS` pre-built messages of `bytes` bytes. */
async function runCeiling(target: Target, bytes: number, run: string): Promise<ScenarioResult> {
  const topic = `bench/ceiling_${run}`;
  const payload = Buffer.from(JSON.stringify({ ceiling: 'x'.repeat(Math.max(0, bytes - 16)) }));
  const sub = await Subscriber.start(target.url, topic, subscriberOptions(target));
  const raw = await openRawPublisher(target.broker, target.url, topic);
  try {
    const result = await sub.expect(target.rows, 300_000);
    const t0 = now();
    await windowed(target.rows, WINDOW, () => raw.publish(payload));
    const r = await result();
    return {
      rows: target.rows,
      received: r.count,
      complete: r.complete,
      perSec: r.count > 0 ? Math.round(r.count / ((r.lastAt - t0) / 1000)) : 0,
      latency: r.latency,
      peakRssMb: 0,
      cpuMsPerKRows: 0,
    };
  } finally {
    await raw.end();
    await sub.end();
  }
}

/**
 * evpub's burst with the (private) MQTT broker stopped for OUTAGE_SECONDS once a quarter of the
 * rows arrived. Reports RSS over time: the source must be paused, not buffered in memory.
 */
async function runOutage(
  broker: PrivateMosquitto,
  wl: Workload,
  run: string,
): Promise<Record<string, unknown>> {
  const target: Target = { broker: 'mqtt', url: broker.url, options: {}, rows: ROWS };
  const names = {
    slot: `bench_outage_${run}`,
    publication: `bench_outage_${run}`,
    topic: `bench/outage_${run}`,
  };
  const dir = mkdtempSync(join(tmpdir(), 'evpub-bench-outage-'));
  const sub = await Subscriber.start(target.url, names.topic, {});
  const proc = await startSystem('evpub', target, wl, names, dir);
  const sampler = new RssSampler(proc.pid);
  try {
    const result = await sub.expect(ROWS, 600_000);
    sampler.reset();
    const t0 = Date.now();
    const writing = wl.burst(ROWS, 1000);
    while ((await sub.peek()) < ROWS / 4) await new Promise((r) => setTimeout(r, 20));
    log(`mqtt outage: stopping the broker for ${OUTAGE_SECONDS} s`);
    const stoppedAt = Date.now() - t0;
    await broker.stop();
    await new Promise((r) => setTimeout(r, OUTAGE_SECONDS * 1000));
    await broker.start();
    const startedAt = Date.now() - t0;
    await writing;
    const r = await result();
    const series = sampler.series(t0);
    const during = series.filter(([at]) => at >= stoppedAt && at <= startedAt).map(([, mb]) => mb);
    const firstHalf = during.slice(0, Math.ceil(during.length / 2));
    const secondHalf = during.slice(Math.ceil(during.length / 2));
    return {
      rows: ROWS,
      received: r.count,
      complete: r.complete,
      outageSeconds: OUTAGE_SECONDS,
      peakRssMb: MB(sampler.peak()),
      rssDuringOutageFirstHalfMaxMb: Math.max(0, ...firstHalf),
      rssDuringOutageSecondHalfMaxMb: Math.max(0, ...secondHalf),
      series: series.filter((_, i) => i % 10 === 0),
      note: 'the subscriber (clean MQTT session) loses what the broker held when it stopped: received may be below rows',
    };
  } finally {
    sampler.stop();
    await proc.stop();
    await sub.end();
    await wl.dropSlot(names.slot, names.publication);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The subscriber reads plain subscriptions everywhere (JetStream subjects are core subjects too). */
function subscriberOptions(_target: Target): Record<string, unknown> {
  return {};
}

const ratio = (a: number, b: number): number => (b > 0 ? +(a / b).toFixed(2) : 0);

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const run = Date.now().toString(36);
  if (EVPUB_NODE !== process.execPath) log(`evpub runs on ${EVPUB_NODE} (EVPUB_NODE)`);
  // Mosquitto's default max_inflight_messages 20 (unacknowledged QoS 1 messages to one
  // subscriber) stalls delivery to a busy subscriber: p99 30+ ms at 5,000/s for the relay as for
  // evpub, a figure of the broker's configuration, not of either publisher.
  const mosquitto = await startMosquitto({ extraConfig: ['max_inflight_messages 1000'] });
  const kafka = await startKafkaMock();
  const node24 = findNode24();
  if (node24.path) log(`variant node24: ${node24.version} at ${node24.path}`);
  else if (node24.error) log(`variant node24 left out: ${node24.error}`);
  const all: Target[] = [
    { broker: 'mqtt', url: mosquitto.url, options: {}, rows: ROWS },
    { broker: 'redis', url: 'redis://127.0.0.1:6379', options: {}, rows: ROWS },
    { broker: 'amqp', url: 'amqp://guest:guest@127.0.0.1:5672', options: {}, rows: ROWS },
    { broker: 'nats', url: 'nats://127.0.0.1:4222', options: {}, rows: ROWS },
    {
      broker: 'jetstream',
      url: 'nats://127.0.0.1:4222',
      options: { nats: { jetstream: true, stream: `BENCH_CDC_${run.toUpperCase()}` } },
      rows: ROWS,
    },
    {
      broker: 'kafka',
      url: kafka.url,
      options: {},
      rows: Math.min(ROWS, 5_000),
      note: "librdkafka's mock cluster keeps about 5 MB of a partition: a burst of 5,000; its latencies (p50 about 255 ms for relay and evpub alike) come from the consumer's fetch cycle against the mock, and none of its figures say much about a real Kafka",
    },
  ];
  const targets = all.filter((t) => only.length === 0 || only.includes(t.broker));
  const results: Record<string, unknown>[] = [];
  const started = new Date();
  let outage: Record<string, unknown> | undefined;
  try {
    for (const [i, target] of targets.entries()) {
      const wl = await Workload.create(`bench_cdc_${run}`);
      try {
        // Alternate which system runs first, so that neither always has the warmer machine.
        const order = (i % 2 === 0 ? ['relay', 'evpub'] : ['evpub', 'relay']).filter((s) =>
          SYSTEMS.includes(s),
        ) as System[];
        const sys: Partial<Record<System, SystemResult>> = {};
        for (const system of order) sys[system] = await runSystem(system, target, wl, run);
        const variants = VARIANT_ROUNDS > 0 ? await runVariants(target, wl, run, node24) : undefined;
        let ceiling: ScenarioResult | undefined;
        if (SYSTEMS.includes('relay') && sys.evpub) {
          log(`${target.broker}: ceiling`);
          ceiling = await runCeiling(target, sys.evpub.messageBytes, run);
        }
        results.push({
          broker: target.broker,
          rows: target.rows,
          ...(target.note ? { note: target.note } : {}),
          ceiling,
          relay: sys.relay,
          evpub: sys.evpub,
          variants,
        });
      } catch (err) {
        log(`${target.broker}: ${(err as Error).message}`);
        results.push({ broker: target.broker, error: (err as Error).message });
      } finally {
        await wl.close();
      }
    }
    if (only.length === 0 || only.includes('outage')) {
      const wl = await Workload.create(`bench_cdc_outage_${run}`);
      try {
        outage = await runOutage(mosquitto, wl, run);
      } catch (err) {
        outage = { error: (err as Error).message };
      } finally {
        await wl.close();
      }
    }
  } finally {
    await mosquitto.close();
    await kafka.close();
  }
  const checks = checkTargets(results, outage);
  print(results, outage, checks);
  const machine = {
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    evpubNode: execFileSync(EVPUB_NODE, ['--version'], { encoding: 'utf8' }).trim(),
    note: 'PostgreSQL, the broker, evpub (or the relay) and the subscriber share these cores',
  };
  const report = {
    date: started.toISOString(),
    machine,
    settings: {
      rows: ROWS,
      steadySeconds: STEADY_SECONDS,
      rates: RATES,
      mixedTxs: MIXED_TXS,
      window: WINDOW,
      variantRounds: VARIANT_ROUNDS,
      variants: VARIANTS,
      scrapeMs: SCRAPE_MS,
    },
    results,
    outage,
    targets: checks,
  };
  mkdirSync(RESULTS, { recursive: true });
  // A run without the baselines (BENCH_SYSTEMS) is not the whole benchmark: a file of its own.
  const whole = SYSTEMS.includes('relay') && SYSTEMS.includes('evpub');
  const stem = join(RESULTS, `cdc-${whole ? '' : 'partial-'}${started.toISOString().slice(0, 10)}`);
  writeFileSync(`${stem}.json`, JSON.stringify(report, null, 2) + '\n');
  if (results.every((r) => r.error || (r.ceiling && r.relay && r.evpub))) {
    writeFileSync(`${stem}.svg`, renderChart(report));
    console.log(`results: ${stem}.json, chart: ${stem}.svg`);
  } else console.log(`results: ${stem}.json`);
}

interface TargetCheck {
  target: string;
  broker: string;
  measured: string;
  limit: string;
  /** undefined: printed for information, no limit. */
  met?: boolean;
}

/** The rows/s of evpub's bursts with its defaults: the full run's and the `default` variant's. */
const defaultBursts = (r: Record<string, unknown>): BurstResult[] | ScenarioResult[] => [
  (r.evpub as SystemResult).burst,
  ...((r.variants as Partial<Record<VariantName, VariantResult>> | undefined)?.default?.runs ?? []),
];

/**
 * The performance targets, each against its baseline in this run: burst at least 0.9× the
 * relay's, peak RSS under 150 MB in the burst and flat while the broker is stopped, p99 no more
 * than 2 ms above the relay's, the management API (and a live-stream client) at most 5% of the
 * burst; CPU per row beside the relay's, for information.
 */
function checkTargets(
  results: Record<string, unknown>[],
  outage: Record<string, unknown> | undefined,
): TargetCheck[] {
  const out: TargetCheck[] = [];
  for (const r of results) {
    if (r.error || !r.relay || !r.evpub) continue;
    const broker = String(r.broker);
    const relay = r.relay as SystemResult;
    const evpub = r.evpub as SystemResult;
    const bursts = defaultBursts(r);
    const evpubBurst = median(bursts.map((b) => b.perSec));
    const burstRatio = ratio(evpubBurst, relay.burst.perSec);
    out.push({
      target: 'burst ≥ 0.9 × relay',
      broker,
      measured: `${burstRatio} (${Math.round(evpubBurst)} / ${relay.burst.perSec} rows/s, evpub median of ${bursts.length})`,
      limit: '0.9',
      met: burstRatio >= 0.9,
    });
    const peak = Math.max(...bursts.map((b) => b.peakRssMb));
    out.push({
      target: 'peak RSS < 150 MB in the burst',
      broker,
      measured: `${peak} MB (highest of ${bursts.length}; relay ${relay.burst.peakRssMb})`,
      limit: '150 MB',
      met: peak < 150,
    });
    for (const rate of RATES) {
      const a = relay.steady[rate]?.latency.p99;
      const b = evpub.steady[rate]?.latency.p99;
      if (a === undefined || b === undefined) continue;
      out.push({
        target: `p99 at ${rate} rows/s ≤ relay + 2 ms`,
        broker,
        measured: `${b} ms (relay ${a} ms)`,
        limit: `${+(a + 2).toFixed(2)} ms`,
        met: b <= a + 2,
      });
    }
    out.push({
      target: 'CPU per row (burst)',
      broker,
      measured: `evpub ${evpub.burst.cpuMsPerKRows} µs, relay ${relay.burst.cpuMsPerKRows} µs`,
      limit: 'information',
    });
    const v = r.variants as Partial<Record<VariantName, VariantResult>> | undefined;
    const off = v?.['api-off']?.perSec;
    for (const [name, what] of [
      ['default', 'management API on (metrics scraped)'],
      ['sse', 'API on + a live-stream client'],
    ] as const) {
      const on = v?.[name]?.perSec;
      if (!off || !on) continue;
      out.push({
        target: `${what} ≥ 0.95 × API off`,
        broker,
        measured: `${ratio(on, off)} (${on} / ${off} rows/s, medians)`,
        limit: '0.95',
        met: ratio(on, off) >= 0.95,
      });
    }
  }
  if (outage && typeof outage.rssDuringOutageFirstHalfMaxMb === 'number') {
    const first = outage.rssDuringOutageFirstHalfMaxMb;
    const second = outage.rssDuringOutageSecondHalfMaxMb as number;
    out.push({
      target: 'RSS flat and < 150 MB while the broker is stopped',
      broker: 'mqtt',
      measured: `${first} MB first half, ${second} MB second half; ${String(outage.received)}/${String(outage.rows)} rows`,
      limit: 'second ≤ first + 10%, both < 150 MB',
      met: second <= first * 1.1 && Math.max(first, second) < 150,
    });
  }
  return out;
}

function print(
  results: Record<string, unknown>[],
  outage: Record<string, unknown> | undefined,
  targets: TargetCheck[],
): void {
  const complete = (r: Record<string, unknown>): boolean =>
    !r.error && r.ceiling !== undefined && r.relay !== undefined && r.evpub !== undefined;
  const rows = results.flatMap((r) => {
    if (typeof r.error === 'string')
      return [{ broker: r.broker, error: r.error.split('\n')[0]!.slice(0, 120) }];
    if (!complete(r)) return [];
    const { ceiling, relay, evpub } = r as {
      ceiling: ScenarioResult;
      relay: SystemResult;
      evpub: SystemResult;
    };
    const row: Record<string, unknown> = {
      broker: r.broker,
      'ceiling/s': ceiling.perSec,
      'relay burst/s': relay.burst.perSec,
      'evpub burst/s': evpub.burst.perSec,
      'evpub/relay': ratio(evpub.burst.perSec, relay.burst.perSec),
      'evpub/ceiling': ratio(evpub.burst.perSec, ceiling.perSec),
    };
    for (const rate of RATES) {
      row[`p99 @${rate / 1000}k relay`] = relay.steady[rate]?.latency.p99;
      row[`p99 @${rate / 1000}k evpub`] = evpub.steady[rate]?.latency.p99;
    }
    row['mixed/s relay'] = relay.mixed.perSec;
    row['mixed/s evpub'] = evpub.mixed.perSec;
    row['RSS MB relay'] = relay.peakRssMb;
    row['RSS MB evpub'] = evpub.peakRssMb;
    row['CPU µs/row relay'] = relay.burst.cpuMsPerKRows;
    row['CPU µs/row evpub'] = evpub.burst.cpuMsPerKRows;
    const incomplete = [
      relay.burst,
      evpub.burst,
      relay.mixed,
      evpub.mixed,
      ...Object.values(relay.steady),
      ...Object.values(evpub.steady),
    ].some((s) => !s.complete);
    if (incomplete) row.note = 'some events missing: see the JSON';
    return [row];
  });
  if (rows.length > 0) console.table(rows);
  for (const r of results) if (typeof r.note === 'string') console.log(`  ${String(r.broker)}: ${r.note}`);
  const variants = results.flatMap((r) => {
    const v = r.variants as Partial<Record<VariantName, VariantResult>> | undefined;
    if (!v) return [];
    return Object.entries(v).map(([name, x]) =>
      x.skipped
        ? { broker: r.broker, variant: name, note: x.skipped }
        : {
            broker: r.broker,
            variant: name + (x.node ? ` (${x.node})` : ''),
            'burst/s': x.perSec,
            'vs default': x.vsDefault,
            runs: x.runs.map((b) => b.perSec).join(' '),
            'CPU ms/1k rows': x.cpuMsPerKRows,
            'peak RSS MB': x.peakRssMb,
            'idle RSS MB': x.idleRssMb,
            ...(x.runs.some((b) => b.sse)
              ? {
                  'stream events': x.runs
                    .map((b) => `${b.sse?.events ?? 0}${b.sse?.ended ? ' ended' : ''}`)
                    .join(' '),
                }
              : {}),
            ...(x.runs.some((b) => !b.complete) ? { note: 'some events missing' } : {}),
          },
    );
  });
  if (variants.length > 0) {
    console.log(
      `evpub's variants, ${VARIANT_ROUNDS} bursts each in fresh processes, medians (default: as users run it, /metrics scraped every ${SCRAPE_MS} ms; api-off: no management API; sse: a client on the live event stream; v8-off: EVPUB_V8_TUNING=off; node24: on Node.js 24):`,
    );
    console.table(variants);
  }
  const latency = results.filter(complete).flatMap((r) =>
    (['relay', 'evpub'] as const).flatMap((system) =>
      RATES.map((rate) => {
        const s = (r[system] as SystemResult).steady[rate]!;
        return {
          broker: r.broker,
          system,
          'rows/s': rate,
          ...s.latency,
          'CPU ms/1k rows': s.cpuMsPerKRows,
        };
      }),
    ),
  );
  if (latency.length > 0) {
    console.log('steady-state latency (ms, arrival − updated_at):');
    console.table(latency);
  }
  if (outage) {
    const { series: _series, ...summary } = outage;
    console.log('evpub burst with the MQTT broker stopped mid-way:');
    console.table([summary]);
  }
  if (targets.length > 0) {
    console.log('targets (each against its baseline in this run):');
    console.table(
      targets.map((t) => ({
        target: t.target,
        broker: t.broker,
        measured: t.measured,
        limit: t.limit,
        '': t.met === undefined ? '' : t.met ? 'met' : 'MISSED',
      })),
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
