/**
 * Memory with big transactions (big-transaction-*.test.ts): one source transaction of N small
 * rows, published through `evpub start` (the built CLI) to a private mosquitto, QoS 1, with the
 * publisher's RSS sampled all along.
 *
 * The broker: a private mosquitto with `max_queued_messages 0` (nothing dropped for a subscriber
 * behind) and `max_inflight_messages 1000` (the benchmark's setting; the default 20 makes the
 * subscriber the bottleneck), MQTT the fastest end-to-end broker of the benchmark here. The
 * topic is `evpub/faults/<unique>/{key}`: the subscriber reads the row id from the topic's last
 * level (no JSON parse per message) and counts arrivals per id in a byte array.
 */
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger } from '../helpers/publisher';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { uniqueName } from '../helpers/services';
import type { CliProcess } from '../e2e/cli';
import { waitFor } from '../helpers/wait';
import { problems } from './evpub-process';
import { reportRow, RssSampler, type FaultRow } from './matrix';

export async function startBroker(): Promise<PrivateMosquitto> {
  return startMosquitto({ extraConfig: ['max_inflight_messages 1000'] });
}

/** Counts arrivals of ids 1..rows from `<prefix>/<id>` topics. */
export class IdCounter {
  readonly prefix = `evpub/faults/${uniqueName('bigtx')}`;
  /** The model's topic template. */
  readonly template = `${this.prefix}/{key}`;
  private readonly counts: Uint8Array;
  received = 0;
  /** Distinct ids seen. */
  distinct = 0;
  /** Arrivals of something that is not an id in 1..rows (should stay 0). */
  strays = 0;
  private client: Client | undefined;

  constructor(readonly rows: number) {
    this.counts = new Uint8Array(rows + 1);
  }

  async subscribe(url: string): Promise<void> {
    this.client = createClient(url, { logger: quietLogger() });
    const from = this.prefix.length + 1;
    this.client.on('message', (topic) => {
      this.received++;
      const id = Number(topic.slice(from));
      if (!Number.isInteger(id) || id < 1 || id > this.rows) {
        this.strays++;
        return;
      }
      const n = this.counts[id]!;
      if (n === 0) this.distinct++;
      if (n < 255) this.counts[id] = n + 1;
    });
    await this.client.subscribe(`${this.prefix}/#`, { qos: 1 });
  }

  /** The delivery counts of the matrix's row (what `countDelivery` gives, without a million strings). */
  delivery(): Pick<FaultRow, 'sent' | 'received' | 'duplicates' | 'lost'> {
    return {
      sent: this.rows,
      received: this.received,
      duplicates: this.received - this.distinct - this.strays,
      lost: this.rows - this.distinct,
    };
  }

  async end(): Promise<void> {
    await this.client?.end();
  }
}

/**
 * Runs one big transaction against a started publisher and reports its row: samples the
 * publisher's RSS (idle, up to half the rows, the second half: a buffered transaction would show
 * as growth), waits for every row, stops the publisher with SIGTERM (exit 0 asserted by the
 * caller through `exited`) and returns the row.
 */
export async function measureBigTransaction(o: {
  publisher: CliProcess;
  counter: IdCounter;
  insert: () => Promise<unknown>;
  started: number;
  fault: string;
  source: string;
  timeoutMs: number;
}): Promise<FaultRow> {
  const { publisher, counter } = o;
  const rows = counter.rows;
  const rss = new RssSampler(publisher.pid, 200);
  const idleMb = rss.max;
  await o.insert();
  const committed = Date.now();
  let firstHalfMb: number | undefined;
  let halfAt = Infinity;
  const done = (): boolean => {
    if (firstHalfMb === undefined && counter.distinct >= rows / 2) {
      firstHalfMb = rss.max;
      halfAt = Date.now();
    }
    return counter.distinct >= rows;
  };
  await waitFor(done, `all ${rows} rows`, o.timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message} (got ${counter.distinct}):\n${problems(publisher)}`);
  });
  const publishSeconds = (Date.now() - committed) / 1000;
  const secondHalfMb = rss.maxSince(halfAt);
  publisher.child.kill('SIGTERM');
  return reportRow({
    fault: o.fault,
    source: o.source,
    broker: 'mqtt 5 (qos 1)',
    ...counter.delivery(),
    maxRssMb: rss.stop(),
    seconds: (Date.now() - o.started) / 1000,
    note: `RSS idle ${idleMb.toFixed(0)} MB, first half ${firstHalfMb!.toFixed(0)} MB, second half ${secondHalfMb.toFixed(0)} MB; insert ${((committed - o.started) / 1000).toFixed(1)} s, published in ${publishSeconds.toFixed(1)} s after the commit (${Math.round(rows / publishSeconds)} rows/s)`,
  });
}
