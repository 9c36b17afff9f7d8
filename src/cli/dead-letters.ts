/**
 * `evpub dead-letters replay|setup`: publish dead letters' originals again, once the reason they
 * failed is fixed (docs/dead-letters.md).
 *
 *   evpub dead-letters setup amqp://localhost                # before letters are produced (AMQP)
 *   evpub dead-letters replay redis://localhost -o redis.mode=streams --code EVPUB_NOT_AUTHORIZED
 *   evpub dead-letters replay nats://localhost -o nats.jetstream=true --dry-run
 *   evpub dead-letters replay redis://dlq -o redis.mode=streams --to mqtt://events:1883
 *
 * Protocol of `replay`:
 * - It reads the dead-letter topic (`--topic`, default `evpub/dead-letter`) through the durable
 *   subscription `--group` (default `evpub-dead-letters`: a Redis Streams consumer group, a
 *   JetStream durable consumer, the AMQP durable queue `evpub.<group>`, a Kafka consumer group),
 *   with manual acks, from the earliest letter the broker still holds when the group is new.
 *   Brokers in a mode that stores nothing (MQTT, Redis pub/sub, NATS core) are refused at once,
 *   with what to use instead: replay cannot find letters published before it started.
 * - Letters are handled one at a time, in delivery order. A letter of an event, with an
 *   `original` and a `topic` (and a `code` among `--code`, when given), is published again to
 *   `topic` on the target broker (`--to`, default the same broker) with its headers, content
 *   type, the event's key (ordering) and id (message id); the letter is acknowledged only after
 *   the broker confirmed that publish. Every other letter is reported and left unacknowledged,
 *   so it stays with the group (not lost): no `original` (too large to keep in the letter), raw
 *   input (no topic to go back to), not a dead letter at all, not selected by `--code`, or a
 *   publish that failed. `--dry-run` publishes and acknowledges nothing.
 * - A letter delivered again within one run (a broker redelivers what is left unacknowledged)
 *   is recognised by its bytes: it is not reported twice, and a copy of a replayed letter is
 *   acknowledged without a second publish.
 * - It stops when no new letter arrived for `--idle-ms` (default 2000), after `--limit` letters,
 *   or on SIGINT/SIGTERM once the letter in hand is done.
 * - Output: one line per letter on stdout (`replayed|would replay|skipped|failed id=... code=...
 *   topic=...: why`), or one JSON object per letter with `--json`; then a summary line. Exit 0
 *   when every selected letter was replayed, 2 when some were not (reported), 1 on an error.
 *
 * `setup` makes the durable subscription and leaves: for AMQP, whose durable queue only keeps
 * letters published after it exists, it is the step to run before letters are produced. On the
 * other brokers the letters are kept by the topic itself (stream, log) and `replay` finds them.
 */
import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import { ErrorCode, EvpubError, redact, toError } from '../errors';
import { DATA_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE } from '../events/envelopes/cloudevents';
import { DEFAULT_DEAD_LETTER_TOPIC } from '../pipeline/dead-letter';
import type { MessageMeta, PublishOptions, SubscribeOptions } from '../pubsub/adapter';
import type { Client } from '../pubsub/client';
import { createClient } from '../pubsub/registry';
import { collect, parseClientOptions, parsePositiveInt } from './options';

export const DEFAULT_GROUP = 'evpub-dead-letters';
const DEFAULT_IDLE_MS = 2000;

/** The MIME type each envelope gives its payload, for letters that do not name one. */
const ENVELOPE_CONTENT_TYPES: Record<string, string> = {
  cloudevents: STRUCTURED_CONTENT_TYPE,
  'cloudevents-binary': DATA_CONTENT_TYPE,
  legacy: 'application/json',
};

interface CommonFlags {
  topic: string;
  group: string;
  option: string[];
}

interface ReplayFlags extends CommonFlags {
  code: string[];
  limit?: string;
  idleMs?: string;
  dryRun?: boolean;
  json?: boolean;
  to?: string;
  toOption: string[];
}

type Outcome = 'replayed' | 'would replay' | 'skipped' | 'failed';

export interface LetterReport {
  outcome: Outcome;
  /** The event's id; for raw input `datasource/model@position`; `?` when the letter says none. */
  id: string;
  code: string;
  topic?: string;
  why?: string;
}

/** What replay needs of one letter; `unusable` says why it cannot be replayed. */
interface ParsedLetter {
  id: string;
  code: string;
  topic?: string;
  original?: Buffer;
  options: PublishOptions;
  unusable?: string;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function isStringRecord(v: unknown): v is Record<string, string> {
  return (
    v !== null &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string')
  );
}

/** Reads a dead letter (format in src/pipeline/dead-letter.ts). */
export function parseLetter(payload: Buffer): ParsedLetter {
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    json = undefined;
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    return { id: '?', code: '?', options: {}, unusable: 'not a dead letter (not a JSON object)' };
  }
  const letter = json as Record<string, unknown>;
  const event = (letter.event ?? undefined) as Record<string, unknown> | undefined;
  const input = (letter.input ?? undefined) as Record<string, unknown> | undefined;
  const code = str(letter.code) ?? '?';
  const topic = str(letter.topic);
  let id = str(event?.id);
  if (id === undefined && input) {
    id = `${String(input.datasource)}/${String(input.model)}@${JSON.stringify(input.position ?? null)}`;
  }
  const parsed: ParsedLetter = { id: id ?? '?', code, options: {}, ...(topic ? { topic } : {}) };
  if (!event && !input) {
    return { ...parsed, unusable: 'not a dead letter (no "event" nor "input")' };
  }
  if (typeof letter.original !== 'string') {
    const size = typeof letter.originalBytes === 'number' ? ` (${letter.originalBytes} bytes)` : '';
    return {
      ...parsed,
      unusable:
        letter.originalBytes === undefined
          ? 'no original: the event could not be encoded'
          : `no original: the encoded event${size} did not fit in the letter`,
    };
  }
  if (!event || topic === undefined) {
    return { ...parsed, unusable: 'raw input a connector could not read: it has no topic to go back to' };
  }
  const original =
    letter.originalEncoding === 'base64'
      ? Buffer.from(letter.original, 'base64')
      : Buffer.from(letter.original, 'utf8');
  const options: PublishOptions = {};
  const headers = isStringRecord(letter.headers) ? letter.headers : undefined;
  if (headers) options.headers = headers;
  const contentType =
    str(letter.contentType) ??
    headers?.['content-type'] ??
    ENVELOPE_CONTENT_TYPES[str(letter.envelope) ?? ''];
  if (contentType !== undefined) options.contentType = contentType;
  const key = str(event.key);
  if (key !== undefined) options.key = key;
  if (id !== undefined) options.messageId = id;
  return { ...parsed, original, options };
}

function formatReport(r: LetterReport): string {
  const topic = r.topic === undefined ? '' : ` topic=${r.topic}`;
  return `${r.outcome} id=${r.id} code=${r.code}${topic}${r.why ? `: ${r.why}` : ''}\n`;
}

/**
 * Refuses a client whose broker mode keeps no durable subscription, with what to use instead.
 * Checked before connecting: replay would otherwise wait and find nothing.
 */
function assertDurable(client: Client, brokerUrl: string, command: string): void {
  if (client.adapter.features.durable) return;
  const url = redact(brokerUrl);
  const store =
    'Keep dead letters on a broker that stores them (Redis Streams, JetStream, AMQP or Kafka: ' +
    "the publisher's dead-letter broker), then replay from there with --to <this broker>.";
  const why: Record<string, string> = {
    mqtt:
      'MQTT has no named durable subscriptions: a letter published while no session listened is gone, ' +
      'and a persistent session acknowledges each letter as it is delivered (a letter replay skips would be lost). ' +
      `${store} To keep letters on MQTT, collect them with a persistent-session subscriber: ` +
      `evpub sub ${url} <dead-letter topic> --json -o clientId=<name> -o mqtt.clean=false`,
    redis:
      'Redis pub/sub (redis.mode "pubsub", the default) stores nothing: a letter published while nobody listened is gone. ' +
      `Publish dead letters in Redis Streams mode (broker option redis.mode=streams), then: evpub dead-letters ${command} ${url} -o redis.mode=streams`,
    nats:
      'NATS core stores nothing: a letter published while nobody listened is gone. ' +
      `Publish dead letters through JetStream (broker option nats.jetstream=true), then: evpub dead-letters ${command} ${url} -o nats.jetstream=true`,
  };
  const name = client.adapter.name;
  throw new EvpubError(
    ErrorCode.CONFIG_INVALID,
    `evpub dead-letters ${command}: ${why[name] ?? `the ${name} broker keeps no durable subscription in this mode. ${store}`}`,
  );
}

/** The reading client: a fixed client id by default, so that a run finds the letters the last one left. */
function readingClient(url: string, flags: CommonFlags, command: string): Client {
  const options = parseClientOptions(flags.option);
  // Redis Streams re-reads a consumer's own pending entries at once; under a new consumer name
  // they would only come back after the claim idle time (30 s).
  options.clientId ??= flags.group;
  const client = createClient(url, options);
  assertDurable(client, url, command);
  return client;
}

function subscribeOptions(group: string): SubscribeOptions {
  return { durable: group, ack: 'manual', from: 'earliest' };
}

interface Delivery {
  payload: Buffer;
  meta: MessageMeta;
}

export interface ReplaySummary {
  reports: LetterReport[];
  /** Letters selected (matching `--code`) and not replayed. */
  notReplayed: number;
}

/** Runs `replay`; writes one line per letter and the summary to `out`. */
export async function replayDeadLetters(
  url: string,
  flags: ReplayFlags,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<ReplaySummary> {
  const limit = flags.limit === undefined ? Infinity : parsePositiveInt(flags.limit, '--limit');
  const idleMs = flags.idleMs === undefined ? DEFAULT_IDLE_MS : parsePositiveInt(flags.idleMs, '--idle-ms');
  const codes = new Set(flags.code);
  const reader = readingClient(url, flags, 'replay');
  const target = flags.to === undefined ? reader : createClient(flags.to, parseClientOptions(flags.toOption));
  const inbox: Delivery[] = [];
  let wake: (() => void) | undefined;
  let lastActivity = Date.now();
  let failure: Error | undefined;
  reader.on('message', (_topic, payload, meta) => {
    inbox.push({ payload, meta });
    wake?.();
  });
  reader.on('error', (e) => {
    failure ??= e;
    wake?.();
  });
  /** Outcome per letter digest: a redelivered copy is not handled twice. */
  const seen = new Map<string, Outcome>();
  const reports: LetterReport[] = [];
  let notReplayed = 0;
  const report = (r: LetterReport): void => {
    reports.push(r);
    out.write(flags.json ? JSON.stringify(r) + '\n' : formatReport(r));
  };

  /** Handles one delivery; false for a letter already handled in this run. */
  const handle = async ({ payload, meta }: Delivery): Promise<boolean> => {
    const digest = createHash('sha256').update(payload).digest('base64');
    const before = seen.get(digest);
    if (before !== undefined) {
      // The same letter again (redelivered, or published twice): acked if it was replayed.
      if (before === 'replayed') await meta.ack();
      return false;
    }
    const letter = parseLetter(payload);
    const base = { id: letter.id, code: letter.code, ...(letter.topic ? { topic: letter.topic } : {}) };
    let outcome: Outcome;
    if (codes.size > 0 && !codes.has(letter.code)) {
      outcome = 'skipped';
      report({ outcome, ...base, why: 'code not selected by --code; left unacknowledged' });
    } else if (letter.unusable !== undefined || !letter.original || letter.topic === undefined) {
      outcome = 'skipped';
      notReplayed++;
      report({ outcome, ...base, why: `${letter.unusable ?? 'nothing to replay'}; left unacknowledged` });
    } else if (flags.dryRun) {
      outcome = 'would replay';
      report({ outcome, ...base });
    } else {
      try {
        await target.publish(letter.topic, letter.original, targetOptions(target, letter.options));
        outcome = 'replayed';
      } catch (e) {
        outcome = 'failed';
        notReplayed++;
        report({ outcome, ...base, why: `${toError(e).message}; left unacknowledged` });
      }
      if (outcome === 'replayed') {
        // Acknowledged only once the broker confirmed the publish.
        try {
          await meta.ack();
          report({ outcome, ...base });
        } catch (e) {
          report({
            outcome,
            ...base,
            why: `but the acknowledgement failed (${toError(e).message}): a later run replays it again`,
          });
        }
      }
    }
    seen.set(digest, outcome);
    return true;
  };

  // Ctrl-C: stop after the letter in hand (its publish and acknowledgement), then summarise.
  let interrupted = false;
  const interrupt = (): void => {
    interrupted = true;
    wake?.();
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    await reader.subscribe(flags.topic, subscribeOptions(flags.group));
    err.write(
      `reading dead letters from ${flags.topic} as "${flags.group}"` +
        `${flags.dryRun ? ' (dry run: nothing is published or acknowledged)' : ''}; ` +
        `stopping after ${idleMs} ms without a letter\n`,
    );
    lastActivity = Date.now();
    for (;;) {
      if (failure) throw failure;
      if (seen.size >= limit || interrupted) break;
      const next = inbox.shift();
      if (next) {
        // Only a new letter keeps the run going: the broker redelivers what is left
        // unacknowledged (JetStream after its ack wait), which would otherwise never let it end.
        if (await handle(next)) lastActivity = Date.now();
        continue;
      }
      const left = idleMs - (Date.now() - lastActivity);
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    process.removeListener('SIGINT', interrupt);
    process.removeListener('SIGTERM', interrupt);
    await reader.end();
    if (target !== reader) await target.end();
  }
  const count = (o: Outcome): number => reports.filter((r) => r.outcome === o).length;
  const summary =
    `${reports.length} dead letter${reports.length === 1 ? '' : 's'}: ` +
    (flags.dryRun ? `${count('would replay')} would be replayed, ` : `${count('replayed')} replayed, `) +
    `${count('skipped')} skipped, ${count('failed')} failed` +
    (count('skipped') + count('failed') > 0 ? ' (left unacknowledged: still with the group)' : '');
  if (flags.json) out.write(JSON.stringify({ summary, notReplayed }) + '\n');
  else out.write(summary + '\n');
  return { reports, notReplayed };
}

/** The letter's publish options less what the target broker does not carry (key, headers). */
function targetOptions(target: Client, options: PublishOptions): PublishOptions {
  const features = target.adapter.features;
  const result: PublishOptions = { ...options };
  if (!features.orderingKey) delete result.key;
  if (!features.headers) {
    delete result.headers;
    delete result.contentType;
  }
  return result;
}

export function registerDeadLetters(program: Command): void {
  const deadLetters = program
    .command('dead-letters')
    .description('replay dead letters (events that could not be published) once the cause is fixed');
  const common = (cmd: Command): Command =>
    cmd
      .argument('<url>', 'broker URL holding the dead-letter topic')
      .option('-t, --topic <topic>', 'the dead-letter topic', DEFAULT_DEAD_LETTER_TOPIC)
      .option(
        '-g, --group <name>',
        'durable subscription name (consumer group, queue, consumer)',
        DEFAULT_GROUP,
      )
      .option('-o, --option <k=v>', 'client option, e.g. redis.mode=streams (repeatable)', collect, []);

  common(deadLetters.command('replay'))
    .description(
      "publish each dead letter's original to its topic again and acknowledge the letter; letters without an original are reported and kept",
    )
    .option(
      '--code <code>',
      'only letters with this code, e.g. EVPUB_NOT_AUTHORIZED (repeatable)',
      collect,
      [],
    )
    .option('-n, --limit <n>', 'stop after n letters')
    .option('--idle-ms <ms>', `stop after this long without a letter (default ${DEFAULT_IDLE_MS})`)
    .option('--dry-run', 'report what would be replayed; publish and acknowledge nothing')
    .option('--json', 'one JSON object per letter: {outcome, id, code, topic, why}')
    .option('--to <url>', 'broker to publish the originals to (default: the same broker)')
    .option('--to-option <k=v>', 'client option for --to (repeatable)', collect, [])
    .action(async (url: string, flags: ReplayFlags) => {
      const { notReplayed } = await replayDeadLetters(url, flags, process.stdout, process.stderr);
      // 2: some selected letters were not replayed (each was reported); 1 is for errors.
      if (notReplayed > 0) process.exitCode = 2;
    });

  common(deadLetters.command('setup'))
    .description(
      'create the durable subscription so dead letters are kept from now on (needed for AMQP before letters are produced)',
    )
    .action(async (url: string, flags: CommonFlags) => {
      const client = readingClient(url, flags, 'setup');
      try {
        // Letters delivered meanwhile are left unacknowledged: they stay for `replay`.
        await client.subscribe(flags.topic, subscribeOptions(flags.group));
      } finally {
        await client.end();
      }
      process.stdout.write(`durable subscription "${flags.group}" is ready on ${flags.topic}\n`);
    });
}
