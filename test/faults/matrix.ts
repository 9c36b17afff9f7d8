/**
 * The fault matrix's bookkeeping: every case in `test/faults/` counts each change it made and
 * each event that arrived, and reports one row. The row is printed (so `npm test` shows the
 * table as it runs) and, when `EVPUB_FAULTS_REPORT` names a file, appended to it as one JSON
 * line; `npx tsx test/faults/table.ts <file>` turns those lines into the README's table.
 *
 *   const rss = new RssSampler(child.pid);           // peak RSS of the publisher process
 *   ... make changes (keys), inject the fault, wait for every key ...
 *   const row = reportRow({ fault: 'kill -9 of the publisher', source: 'postgres',
 *     broker: 'redis streams', ...countDelivery(sentKeys, receivedKeys), maxRssMb: rss.stop(),
 *     seconds });
 *   expect(row.lost).toBe(0);
 */
import { appendFileSync, readFileSync } from 'node:fs';

export interface FaultRow {
  /** What was done: `kill -9 of the publisher`, `broker restarted`, `SIGSTOP 30 s`, ... */
  fault: string;
  /** The source (connector) of the case. */
  source: string;
  /** The broker of the case (and mode: `redis streams`, `nats jetstream`, `mqtt 5`). */
  broker: string;
  /** Distinct changes made at the source. */
  sent: number;
  /** Events that arrived, duplicates included. */
  received: number;
  /** Arrivals beyond the first of a change. */
  duplicates: number;
  /** Changes that never arrived. */
  lost: number;
  /** Events dead-lettered (poison cases), when the case counts them. */
  deadLettered?: number;
  /** Peak resident memory of the publisher process, in MB. */
  maxRssMb?: number;
  /** Wall time of the case, fault included. */
  seconds: number;
  note?: string;
}

/** Counts arrivals against the changes made; a change is identified by a unique string. */
export function countDelivery(
  sent: Iterable<string>,
  received: readonly string[],
): Pick<FaultRow, 'sent' | 'received' | 'duplicates' | 'lost'> {
  const expected = new Set(sent);
  const seen = new Map<string, number>();
  for (const id of received) seen.set(id, (seen.get(id) ?? 0) + 1);
  let duplicates = 0;
  let lost = 0;
  for (const id of expected) {
    const n = seen.get(id) ?? 0;
    if (n === 0) lost++;
    else duplicates += n - 1;
  }
  return { sent: expected.size, received: received.length, duplicates, lost };
}

/** Prints the row (and appends it to `EVPUB_FAULTS_REPORT` when set); returns it. */
export function reportRow(row: FaultRow): FaultRow {
  console.log(`[fault matrix] ${formatRow(row)}`);
  const file = process.env.EVPUB_FAULTS_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify(row)}\n`);
  return row;
}

export const TABLE_HEADER =
  '| fault | source | broker | sent | received | duplicates | lost | dead-lettered | peak RSS | time |\n' +
  '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |';

/** One markdown table row. */
export function formatRow(row: FaultRow): string {
  const cells = [
    row.fault + (row.note ? ` (${row.note})` : ''),
    row.source,
    row.broker,
    String(row.sent),
    String(row.received),
    String(row.duplicates),
    String(row.lost),
    row.deadLettered === undefined ? '' : String(row.deadLettered),
    row.maxRssMb === undefined ? '' : `${Math.round(row.maxRssMb)} MB`,
    `${row.seconds.toFixed(1)} s`,
  ];
  return `| ${cells.join(' | ')} |`;
}

/** Resident memory of a live process in MB, from /proc; undefined once it is gone. */
export function rssMb(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/**
 * Samples a process's RSS every `everyMs` (VmHWM alone cannot show that memory stayed flat
 * during one phase): `max` over the whole run, `maxSince(mark)` over a phase.
 */
export class RssSampler {
  private readonly samples: { at: number; mb: number }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    everyMs = 100,
  ) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
    this.sample();
  }

  private sample(): void {
    const mb = rssMb(this.pid);
    if (mb !== undefined) this.samples.push({ at: Date.now(), mb });
  }

  /** Highest sample so far, in MB (0 before any). */
  get max(): number {
    return this.samples.reduce((m, s) => Math.max(m, s.mb), 0);
  }

  /** Highest sample taken at or after `since` (a `Date.now()`), in MB. */
  maxSince(since: number): number {
    return this.samples.reduce((m, s) => (s.at >= since ? Math.max(m, s.mb) : m), 0);
  }

  /** Stops sampling; returns the peak in MB. */
  stop(): number {
    this.sample();
    clearInterval(this.timer);
    return this.max;
  }
}
