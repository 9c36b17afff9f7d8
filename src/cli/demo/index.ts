/**
 * `evpub demo`: the whole pipeline on embedded defaults, no external service.
 *
 *   evpub demo                               # runs until Ctrl-C
 *   evpub demo --once                        # the scripted scenario, then exit 0
 *   evpub demo --envelope legacy             # the seed's {"model": ..., "message": ...}
 *   evpub demo --broker mqtt://localhost:1883
 *
 * What runs, all in this process:
 * - an embedded CouchDB-compatible server (express-pouchdb, memory adapter) on a free port, with
 *   the database `accounts`;
 * - the publisher: an evpub app with the datasource `couch` (connector `couchdb`) and the model
 *   `accounts`, topic `demo/accounts/{op}/{key}` (`--prefix` replaces `demo`), checkpoints in memory;
 * - the broker: `memory://demo` (in process), or the one `--broker` names;
 * - a tail: a subscriber to `demo/accounts/#` on that broker printing one line per event;
 * - the management API with the dashboard, on 127.0.0.1:7401 (EVPUB_HTTP_PORT, 0 for a free
 *   port; a free one too when 7401 is taken and no port was asked for; EVPUB_HTTP_TOKEN sets a
 *   token), its address printed as `dashboard: <url>/`, so the events are seen in a browser too.
 *
 * The scenario writes a document, then waits until the tail printed its event before writing the
 * next (CouchDB's `_changes` shows a document once, at its latest revision: changes made faster
 * than they are read would be coalesced into one event). After the scenario the demo keeps
 * making a change every `--interval` ms until SIGINT/SIGTERM, or with `--once` stops at once.
 * Either way it stops the app, the subscriber and the server before it exits 0.
 */
import type { Command } from 'commander';
import { evpub, type App } from '../../app/app';
import { DEFAULT_HTTP_PORT } from '../../app/schema';
import type { EnvelopeName } from '../../app/config-types';
import { startCouchServer, type CouchServer } from './couchdb-server';
import { ErrorCode, EvpubError, redact } from '../../errors';
import { createLogger } from '../../logger';
import type { Client } from '../../pubsub/client';
import { createClient } from '../../pubsub/registry';
import { collect, parseClientOptions, parsePositiveInt } from '../options';

interface DemoFlags {
  once?: boolean;
  envelope: string;
  broker: string;
  interval: string;
  prefix: string;
  option: string[];
}

const ENVELOPES: EnvelopeName[] = ['cloudevents', 'cloudevents-binary', 'legacy'];
const DATABASE = 'accounts';
const STEP_TIMEOUT_MS = 15_000;

type Doc = Record<string, unknown> & { _id: string; _rev?: string };

/** One event as the tail saw it. */
interface Tailed {
  op: string;
  key: string;
  rev: string | undefined;
}

/** False once stdout is gone (`evpub demo | head`): the demo then stops as on Ctrl-C. */
let stdoutOpen = true;
const out = (line: string): void => {
  if (stdoutOpen) process.stdout.write(`${line}\n`);
};

/** The document fields worth showing: no `_id`/`_rev`, at most ~80 characters. */
function shortJson(doc: unknown): string {
  if (doc === null || doc === undefined) return '(no document)';
  if (typeof doc !== 'object') return JSON.stringify(doc);
  const shown = Object.fromEntries(Object.entries(doc).filter(([k]) => k !== '_id' && k !== '_rev'));
  const text = JSON.stringify(shown);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Reads op, key, revision and document from a message, whatever the envelope. */
function describe(topic: string, payload: Buffer): Tailed & { doc: unknown } {
  const [, , op = '?', ...rest] = topic.split('/');
  const key = rest.join('/');
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  } catch {
    // not JSON: shown as nothing
  }
  // structured CloudEvents: { ..., data: { after, source } }; binary: the data alone;
  // legacy: { model, message }.
  const data = (body.data ?? body) as { after?: unknown; source?: { rev?: string } };
  if ('message' in body) {
    const message = body.message as Doc | null;
    return { op, key, rev: message?._rev, doc: message };
  }
  return { op, key, rev: data.source?.rev, doc: data.after ?? null };
}

/** Calls the embedded server's HTTP API; a failure is a bug in the demo, reported as such. */
async function couch(base: string, method: string, path: string, body?: unknown): Promise<Doc> {
  const res = await fetch(new URL(path, base), {
    method,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `demo: ${method} ${path}: ${res.status} ${JSON.stringify(json)}`,
    );
  }
  return json as Doc;
}

/** The documents the demo writes, and what it expects the tail to show for each write. */
class Accounts {
  private readonly revs = new Map<string, string>();
  constructor(private readonly base: string) {}

  live(): string[] {
    return [...this.revs.keys()];
  }

  async put(doc: Doc): Promise<Tailed> {
    const rev = this.revs.get(doc._id);
    const body = rev ? { ...doc, _rev: rev } : doc;
    const res = await couch(this.base, 'PUT', `${DATABASE}/${encodeURIComponent(doc._id)}`, body);
    this.revs.set(doc._id, String(res.rev));
    return { op: rev ? 'update' : 'create', key: doc._id, rev: String(res.rev) };
  }

  async remove(id: string): Promise<Tailed> {
    const rev = this.revs.get(id);
    const path = `${DATABASE}/${encodeURIComponent(id)}?rev=${encodeURIComponent(rev ?? '')}`;
    const res = await couch(this.base, 'DELETE', path);
    this.revs.delete(id);
    return { op: 'delete', key: id, rev: String(res.rev) };
  }
}

/** The tail: prints each event and lets the scenario wait for the one it caused. */
class Tail {
  private readonly seen: Tailed[] = [];
  private waiters: { want: Tailed; resolve: () => void }[] = [];
  private timers = new Set<NodeJS.Timeout>();
  private printedEnvelope = false;

  onMessage(topic: string, payload: Buffer, headers: Record<string, string> | undefined): void {
    const event = describe(topic, payload);
    if (!this.printedEnvelope) {
      this.printedEnvelope = true;
      out('  first event as published:');
      if (headers) out(`    headers: ${JSON.stringify(headers)}`);
      out(`    ${payload.toString('utf8')}`);
    }
    const rev = event.rev ? ` ${event.rev.slice(0, 12)}` : '';
    out(`  ${topic}  ${event.op} ${event.key}${rev} ${shortJson(event.doc)}`);
    this.seen.push(event);
    this.waiters = this.waiters.filter((w) => {
      if (!this.matches(w.want)) return true;
      w.resolve();
      return false;
    });
  }

  private matches(want: Tailed): boolean {
    return this.seen.some(
      (e) => e.op === want.op && e.key === want.key && (e.rev === undefined || e.rev === want.rev),
    );
  }

  /** Resolves when the event of `want` was printed. */
  until(want: Tailed): Promise<void> {
    if (this.matches(want)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        reject(
          new EvpubError(
            ErrorCode.PUBLISH_TIMEOUT,
            `demo: the ${want.op} of ${want.key} was not tailed within ${STEP_TIMEOUT_MS} ms`,
          ),
        );
      }, STEP_TIMEOUT_MS);
      this.timers.add(timer);
      this.waiters.push({
        want,
        resolve: () => {
          clearTimeout(timer);
          this.timers.delete(timer);
          resolve();
        },
      });
    });
  }

  /** Stops waiting: pending `until()`s never settle and hold no timer. */
  close(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.waiters = [];
  }
}

const AGENTS = [
  { _id: 'james-bond', name: 'James Bond', type: 'Demo', region: 'Bangalore' },
  { _id: 'eve-moneypenny', name: 'Eve Moneypenny', type: 'Demo', region: 'London' },
  { _id: 'q', name: 'Q', type: 'Demo', region: 'London' },
];
const CITIES = ['Bangalore', 'London', 'Istanbul', 'Kingston', 'Havana', 'Tokyo', 'Venice'];

/** The scripted scenario: creates, updates and a delete, each tailed before the next. */
async function scenario(accounts: Accounts, tail: Tail): Promise<number> {
  const steps: [string, () => Promise<Tailed>][] = [
    ['create James Bond in Bangalore', () => accounts.put(AGENTS[0]!)],
    ['create Eve Moneypenny in London', () => accounts.put(AGENTS[1]!)],
    ['James Bond moves to Istanbul', () => accounts.put({ ...AGENTS[0]!, region: 'Istanbul' })],
    ['create Q', () => accounts.put(AGENTS[2]!)],
    ['Moneypenny is promoted', () => accounts.put({ ...AGENTS[1]!, type: 'Chief of Staff' })],
    ['delete Q', () => accounts.remove('q')],
  ];
  for (const [what, step] of steps) {
    out(`> ${what}`);
    await tail.until(await step());
  }
  return steps.length;
}

/** One more change: a new agent, a move, or a retirement, in turn. */
async function nextChange(accounts: Accounts, n: number): Promise<Tailed> {
  const live = accounts.live();
  const city = CITIES[n % CITIES.length]!;
  if (n % 3 === 0 || live.length === 0) {
    const id = `agent-${String(n).padStart(3, '0')}`;
    out(`> create ${id} in ${city}`);
    return accounts.put({ _id: id, name: `Agent ${n}`, type: 'Demo', region: city });
  }
  const id = live[n % live.length]!;
  if (n % 3 === 2 && live.length > 2) {
    out(`> delete ${id}`);
    return accounts.remove(id);
  }
  out(`> ${id} moves to ${city}`);
  const agent = AGENTS.find((a) => a._id === id) ?? { _id: id, name: id, type: 'Demo' };
  return accounts.put({ ...agent, region: city });
}

/** Resolves on the first SIGINT or SIGTERM, or when stdout is closed by its reader (EPIPE). */
function signalled(): { promise: Promise<string>; dispose(): void } {
  let handler!: (s: string) => void;
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    stdoutOpen = false;
    handler(err.code ?? 'stdout error');
  };
  const promise = new Promise<string>((resolve) => {
    handler = resolve;
    process.once('SIGINT', handler);
    process.once('SIGTERM', handler);
    process.stdout.on('error', onStdoutError);
  });
  return {
    promise,
    dispose: () => {
      process.removeListener('SIGINT', handler);
      process.removeListener('SIGTERM', handler);
      // The stdout listener stays: a write after the reader went away must not crash the stop.
    },
  };
}

/**
 * Serves the management API and the dashboard on EVPUB_HTTP_PORT, else 7401, as `evpub start`
 * does. A newcomer's first command should work: when 7401 is taken (an `evpub start` or another
 * demo) and no port was asked for, a free port is used instead and the line says so.
 */
async function listenForDemo(app: App): Promise<{ url: string; note: string }> {
  try {
    return { url: (await app.listen()).url, note: '' };
  } catch (err) {
    const inUse = (err as { cause?: NodeJS.ErrnoException }).cause?.code === 'EADDRINUSE';
    if (!inUse || process.env.EVPUB_HTTP_PORT !== undefined) throw err;
    const { url } = await app.listen({ port: 0 });
    return { url, note: `  (port ${DEFAULT_HTTP_PORT} is in use)` };
  }
}

async function runDemo(flags: DemoFlags): Promise<void> {
  const envelope = flags.envelope as EnvelopeName;
  if (!ENVELOPES.includes(envelope)) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, `--envelope: must be one of ${ENVELOPES.join(', ')}`);
  }
  const interval = parsePositiveInt(flags.interval, '--interval');
  const clientOptions = parseClientOptions(flags.option);
  if (!/^[\w-]+$/.test(flags.prefix)) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      '--prefix: must be one topic level of letters, digits, _ and -',
    );
  }
  const topic = `${flags.prefix}/${DATABASE}/{op}/{key}`;
  // Library logs (warnings and errors by default) go to stderr; stdout is the demo's own.
  const logger = createLogger({ level: process.env.EVPUB_LOG_LEVEL ?? 'warn' });
  const signal = signalled();
  const cleanups: (() => Promise<unknown>)[] = [];
  let server: CouchServer | undefined;
  let tailClient: Client | undefined;
  try {
    server = await startCouchServer({ port: 0 });
    const couchUrl = server.url;
    cleanups.push(() => server!.close());
    await couch(couchUrl, 'PUT', DATABASE);

    const tail = new Tail();
    tailClient = createClient(flags.broker, { ...clientOptions, logger });
    const client = tailClient;
    cleanups.push(() => client.end());
    client.on('message', (topic, payload, meta) => tail.onMessage(topic, payload, meta.headers));
    client.on('error', (err) => logger.error({ err }, 'demo tail: broker error'));
    await client.subscribe(`${flags.prefix}/${DATABASE}/#`);

    const app = evpub({
      logger,
      brokers: { default: { url: flags.broker, options: clientOptions } },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('couch', { connector: 'couchdb', url: couchUrl });
    app.model({ name: DATABASE, base: 'Model' }, { dataSource: 'couch', topic, envelope, from: 'beginning' });
    await app.start();
    cleanups.push(() => app.stop());
    // The management API and the dashboard (closed by app.stop()).
    const { url: dashboard, note } = await listenForDemo(app);

    out(`evpub demo`);
    out(`  source:    embedded CouchDB at ${couchUrl}${DATABASE}`);
    out(`  broker:    ${redact(flags.broker)}  (topic ${topic})`);
    out(`  envelope:  ${envelope}`);
    out(`  tail:      subscribed to ${flags.prefix}/${DATABASE}/#`);
    out(`  dashboard: ${dashboard}/${note}`);
    if (!flags.once) {
      out(`  try it:    curl -X PUT ${couchUrl}${DATABASE}/me -d '{"name":"you"}'   (Ctrl-C to stop)`);
    }
    out('');

    const accounts = new Accounts(couchUrl);
    cleanups.push(async () => tail.close());
    // A signal ends the demo wherever it is: the work in progress is abandoned (its failure,
    // once the server is closed, is expected and not reported).
    const untilSignal = <T>(work: Promise<T>): Promise<T | 'signal'> => {
      work.catch(() => undefined);
      return Promise.race([work, signal.promise.then(() => 'signal' as const)]);
    };
    const steps = await untilSignal(scenario(accounts, tail));
    if (!flags.once && steps !== 'signal') {
      for (let n = steps; ; n++) {
        const tick = new Promise<void>((r) => setTimeout(r, interval).unref());
        if ((await untilSignal(tick)) === 'signal') break;
        const change = async (): Promise<void> => tail.until(await nextChange(accounts, n));
        if ((await untilSignal(change())) === 'signal') break;
      }
    }
    out('');
    out('stopping: draining the publisher, closing the broker and the store');
  } finally {
    signal.dispose();
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => logger.warn({ err }, 'demo: cleanup failed'));
    }
  }
  out('done');
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the publisher on embedded defaults: a CouchDB-like store, a broker, and a live tail')
    .option('--once', 'run the scripted scenario, then stop (exit 0)')
    .option('-e, --envelope <name>', `envelope: ${ENVELOPES.join(', ')}`, 'cloudevents')
    .option('-b, --broker <url>', 'publish to this broker instead of the in-process one', 'memory://demo')
    .option('-i, --interval <ms>', 'after the scenario, a change every <ms> milliseconds', '2000')
    .option('-p, --prefix <level>', 'first topic level (topics are <prefix>/accounts/<op>/<id>)', 'demo')
    .option('-o, --option <k=v>', 'broker client option, e.g. nats.jetstream=true (repeatable)', collect, [])
    .action(async (flags: DemoFlags) => runDemo(flags));
}
