/**
 * Parsing helpers shared by the CLI's subcommands.
 */
import { ErrorCode, EvpubError } from '../errors';

/** Collects a repeatable option into an array (commander's `(value, previous)` reducer). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `k=v` pairs into an object; the flag is named in the error for a pair without `=`. */
export function parsePairs(pairs: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new EvpubError(ErrorCode.CONFIG_INVALID, `${flag} ${pair}: expected key=value`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/**
 * `-o nats.jetstream=true -o kafka.numPartitions=3` into nested client options. Values are read
 * as JSON when they parse (`true`, `3`, `["a"]`), else kept as strings.
 */
export function parseClientOptions(pairs: string[]): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const [path, raw] of Object.entries(parsePairs(pairs, '--option'))) {
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // a plain string
    }
    const keys = path.split('.');
    let target = options;
    keys.slice(0, -1).forEach((k) => {
      const next = target[k];
      target[k] = next !== null && typeof next === 'object' ? next : {};
      target = target[k] as Record<string, unknown>;
    });
    target[keys[keys.length - 1]!] = value;
  }
  return options;
}

export function parsePositiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, `${flag}: must be a positive integer, got ${value}`);
  }
  return n;
}

export function parseQos(value: string): 0 | 1 | 2 {
  if (value === '0' || value === '1' || value === '2') return Number(value) as 0 | 1 | 2;
  throw new EvpubError(ErrorCode.CONFIG_INVALID, `--qos: must be 0, 1 or 2, got ${value}`);
}

export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
