/**
 * Snapshot progress for humans: the connectors' `snapshot` status events (rows done, total)
 * turned into "rows done / total (percent), rate, time left". The rate is measured from the
 * first report of the snapshot seen by this process (a resumed snapshot counts from there).
 */
export interface SnapshotReport {
  datasource: string;
  model: string;
  done: number;
  total?: number;
}

export interface SnapshotProgress extends SnapshotReport {
  /** Rows per second since the first report (undefined until two reports). */
  rate?: number;
  /** Seconds left at that rate (undefined without a total or a rate). */
  secondsLeft?: number;
  message: string;
}

const count = (n: number): string => n.toLocaleString('en-US');

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export class SnapshotMeter {
  private readonly first = new Map<string, { at: number; done: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  report(r: SnapshotReport): SnapshotProgress {
    const id = `${r.datasource}/${r.model}`;
    const at = this.now();
    let first = this.first.get(id);
    if (!first || r.done < first.done) {
      first = { at, done: r.done };
      this.first.set(id, first);
    }
    const elapsed = (at - first.at) / 1000;
    const rate = elapsed > 0 ? (r.done - first.done) / elapsed : undefined;
    const left = r.total === undefined ? undefined : Math.max(0, r.total - r.done);
    const secondsLeft = rate && left !== undefined ? left / rate : undefined;
    const parts = [
      `snapshot of ${r.model}: ${count(r.done)}` +
        (r.total === undefined
          ? ' rows'
          : ` / ${count(r.total)} rows (${r.total > 0 ? Math.min(100, Math.floor((r.done / r.total) * 100)) : 100}%)`),
    ];
    if (rate !== undefined) parts.push(`${count(Math.round(rate))} rows/s`);
    if (secondsLeft !== undefined) parts.push(`about ${formatDuration(secondsLeft)} left`);
    return { ...r, rate, secondsLeft, message: parts.join(', ') };
  }
}
