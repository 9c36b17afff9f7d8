/** Reads Prometheus text exposition (format 0.0.4) strictly enough to catch a malformed line. */
import { waitFor } from './wait';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
  /** The value of the sample `name` whose labels include `labels` (undefined when none, an error when several). */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Every sample named `name`. */
  all(name: string): Sample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (\\S+)(?: -?\\d+)?$`);
const HELP = new RegExp(`^# HELP ${NAME} .*$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const ONE_LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g;

function number(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (/^nan$/i.test(text)) return NaN; // prom-client writes "Nan"; Prometheus parses any case
  const n = Number(text);
  if (Number.isNaN(n)) throw new Error(`not a sample value: ${text}`);
  return n;
}

/** Parses the text; throws naming the first line that is not valid exposition. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = TYPE.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (HELP.test(line)) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not Prometheus exposition: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(ONE_LABEL)) {
      labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1]!, labels, value: number(m[3]!) });
  }
  const all = (name: string): Sample[] => samples.filter((s) => s.name === name);
  return {
    samples,
    types,
    all,
    value(name, want = {}) {
      const hits = all(name).filter((s) => Object.entries(want).every(([k, v]) => s.labels[k] === v));
      if (hits.length > 1) throw new Error(`${hits.length} samples of ${name} match ${JSON.stringify(want)}`);
      return hits[0]?.value;
    },
  };
}

/** Scrapes (`text()`) until `ok` holds of the exposition; returns that exposition. */
export async function scrapeUntil(
  text: () => Promise<string>,
  ok: (e: Exposition) => boolean,
  what: string,
): Promise<Exposition> {
  let last: Exposition | undefined;
  await waitFor(async () => ok((last = parseExposition(await text()))), what);
  return last!;
}
