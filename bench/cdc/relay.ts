/**
 * The minimal hand-written relay: the CDC benchmark's baseline for what any correct relay must
 * do, and nothing more. pg-logical-replication (pgoutput) → the raw broker client.
 *
 *   tsx bench/cdc/relay.ts <pgUrl> <slot> <publication> <broker> <brokerUrl> <topic>
 *
 * The slot (pgoutput, permanent) and the publication must exist; the caller makes and drops
 * them. `broker` is one of mqtt redis amqp nats jetstream kafka; `topic` is in evpub's topic
 * syntax (raw-publishers.ts maps it as evpub does).
 *
 * Protocol:
 * - stdout: the line `ready` once PostgreSQL streams; nothing else.
 * - Each insert/update/delete becomes one message, the JSON
 *     { op: 'create'|'update'|'delete', table, lsn, before, after }
 *   `table` is the relation's name (no schema); `lsn` the transaction's commit LSN as
 *   PostgreSQL writes it (`0/16B3748`, from BEGIN); `before`/`after` the row objects, every
 *   value PostgreSQL's text (timestamptz keeps its microseconds, jsonb is a string), null where
 *   absent: `before` is the old row (REPLICA IDENTITY FULL) or else the key columns (a delete,
 *   an update that changed the key), `after` the new row (null for a delete). A TOASTed
 *   value an update left unchanged is absent from `after` (pgoutput does not send it).
 * - At most WINDOW (1,000) messages are unconfirmed by the broker. When the window is full the
 *   replication socket is paused (TCP then holds the walsender back); the few messages already
 *   read from it wait in a queue and go out as confirmations free the window; the socket
 *   resumes when the window has room and that queue is empty. The data handler never awaits.
 * - The slot is acknowledged only up to the end LSN of the last COMMIT all of whose messages
 *   (and all earlier ones) the broker confirmed: a FIFO of transactions, the head retired when
 *   committed and fully confirmed. The standby status is sent every STATUS_MS when that LSN
 *   moved, and on every keepalive that asks for a reply. Before the first retired transaction
 *   it reports the slot's confirmed_flush_lsn read at start.
 * - SIGTERM (or SIGINT): acknowledges what is confirmed, stops replication, ends the publisher,
 *   exits 0. Any error: printed on stderr, exit 1.
 */
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type { Socket } from 'node:net';
import { Client } from 'pg';
import { isBrokerName, openRawPublisher, type RawPublisher } from './raw-publishers';

const WINDOW = 1000;
const STATUS_MS = 100;

/** pgoutput with column values left as text: each column's parser becomes the identity. */
class TextPgoutputPlugin extends PgoutputPlugin {
  override parse(buffer: Buffer): Pgoutput.Message {
    const msg = super.parse(buffer);
    if (msg.tag === 'relation') for (const column of msg.columns) column.parser = (raw: unknown) => raw;
    return msg;
  }
}

function parseLsn(text: string): bigint {
  const [hi, lo] = text.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A transaction in commit order: retired when committed (`end` set) and nothing is pending. */
interface Tx {
  lsn: string;
  pending: number;
  end: bigint | undefined;
}

function fail(err: unknown): never {
  process.stderr.write(`relay: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  const [pgUrl, slot, publication, broker, brokerUrl, topic] = process.argv.slice(2);
  if (!pgUrl || !slot || !publication || !broker || !brokerUrl || !topic || !isBrokerName(broker)) {
    throw new Error(
      'usage: relay.ts <pgUrl> <slot> <publication> <mqtt|redis|amqp|nats|jetstream|kafka> <brokerUrl> <topic>',
    );
  }

  // Where the slot stands: what a keepalive reply reports until the first transaction retires.
  const probe = new Client({ connectionString: pgUrl });
  await probe.connect();
  const row = await probe.query<{ lsn: string | null }>(
    'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  await probe.end();
  if (!row.rows[0]?.lsn) throw new Error(`replication slot ${slot} does not exist or is not logical`);
  let confirmed = parseLsn(row.rows[0].lsn);
  let reported = confirmed;

  const publisher: RawPublisher = await openRawPublisher(broker, brokerUrl, topic);
  const service = new LogicalReplicationService(
    { connectionString: pgUrl, application_name: 'bench-relay' },
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
  );
  // The library keeps pg's Connection in a private field; its `stream` is the socket.
  const socket = (): Socket | undefined =>
    (service as unknown as { _connection?: { stream?: Socket } | null })._connection?.stream;

  /** Sends the standby status: the library reports its argument + 1, hence `confirmed - 1`. */
  const report = (): void => {
    reported = confirmed;
    service.acknowledge(formatLsn(confirmed - 1n)).catch(fail);
  };

  const txs: Tx[] = [];
  let head = 0; // index of the oldest unretired transaction in txs
  let current: Tx | undefined;
  let inFlight = 0;
  let paused = false;
  /** Messages read while the window was full, waiting for room. */
  const waiting: ({ tx: Tx; payload: Buffer } | undefined)[] = [];
  let waitingHead = 0;

  const retire = (): void => {
    while (head < txs.length) {
      const tx = txs[head]!;
      if (tx.end === undefined || tx.pending > 0) break;
      confirmed = tx.end;
      head++;
    }
    if (head > 1024 && head * 2 > txs.length) {
      txs.splice(0, head);
      head = 0;
    }
  };

  const send = (tx: Tx, payload: Buffer): void => {
    inFlight++;
    publisher.publish(payload).then(() => {
      inFlight--;
      tx.pending--;
      if (tx.pending === 0 && tx === txs[head]) retire();
      if (waitingHead < waiting.length) {
        const next = waiting[waitingHead]!;
        waiting[waitingHead++] = undefined;
        if (waitingHead === waiting.length) waiting.length = waitingHead = 0;
        send(next.tx, next.payload);
      } else if (paused && inFlight < WINDOW) {
        paused = false;
        socket()?.resume();
      }
    }, fail);
  };

  const emit = (tx: Tx, op: string, table: string, before: unknown, after: unknown): void => {
    const payload = Buffer.from(JSON.stringify({ op, table, lsn: tx.lsn, before, after }));
    tx.pending++;
    if (inFlight < WINDOW && waitingHead === waiting.length) {
      send(tx, payload);
      return;
    }
    waiting.push({ tx, payload });
    if (!paused) {
      paused = true;
      socket()?.pause();
    }
  };

  service.on('data', (_lsn: string, msg: Pgoutput.Message) => {
    switch (msg.tag) {
      case 'begin':
        current = { lsn: formatLsn(parseLsn(msg.commitLsn!)), pending: 0, end: undefined };
        txs.push(current);
        break;
      case 'insert':
        emit(current!, 'create', msg.relation.name, null, msg.new);
        break;
      case 'update':
        emit(current!, 'update', msg.relation.name, msg.old ?? msg.key ?? null, msg.new);
        break;
      case 'delete':
        emit(current!, 'delete', msg.relation.name, msg.old ?? msg.key ?? null, null);
        break;
      case 'commit':
        current!.end = parseLsn(msg.commitEndLsn!);
        current = undefined;
        if (txs[head]?.end !== undefined && txs[head]!.pending === 0) retire();
        break;
      default:
        break;
    }
  });
  service.on('heartbeat', (_lsn: string, _time: number, shouldRespond: boolean) => {
    if (shouldRespond) report();
  });
  service.on('error', fail);

  const plugin = new TextPgoutputPlugin({ protoVersion: 1, publicationNames: [publication] });
  const started = new Promise<void>((resolve) => service.once('start', () => resolve()));
  let stopping = false;
  const running = service.subscribe(plugin, slot, '0/0');
  running.then(
    () => {
      if (!stopping) fail(new Error('replication ended'));
    },
    (err: unknown) => {
      if (!stopping) fail(err);
    },
  );
  await started;
  const timer = setInterval(() => {
    if (confirmed > reported) report();
  }, STATUS_MS);
  process.stdout.write('ready\n');

  const shutdown = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    if (confirmed > reported) report();
    await service.stop();
    await publisher.end();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown().catch(fail));
  process.once('SIGINT', () => void shutdown().catch(fail));
}

main().catch(fail);
