/**
 * NATS subjects for the NATS adapter: the `dotted` topic rule (src/pubsub/topics.ts) plus what
 * NATS adds to it.
 *
 * - A topic is published on `toDotted(topic)`; a received subject is `fromDotted(subject)`.
 * - A pattern is subscribed on `patternToDotted(pattern, '>')`. MQTT's `a/#` also matches `a`
 *   itself while NATS's `a.>` does not, so `a/#` is subscribed on both `a` and `a.>` (and `#`
 *   alone on `>`).
 * - `covers(wide, narrow)` says whether every subject matching `narrow` matches `wide`: JetStream
 *   refuses overlapping subjects, so the adapter must know which stream subject covers which.
 */
import { patternToDotted } from '../topics';

/** The NATS subjects that together match exactly the topics `pattern` matches. */
export function subjectsFor(pattern: string): string[] {
  if (pattern === '#') return ['>'];
  if (pattern.endsWith('/#')) {
    const parent = pattern.slice(0, -2);
    return [patternToDotted(parent, '>'), patternToDotted(pattern, '>')];
  }
  return [patternToDotted(pattern, '>')];
}

/** True when every subject that matches `narrow` (itself possibly a wildcard) matches `wide`. */
export function covers(wide: string, narrow: string): boolean {
  const w = wide.split('.');
  const n = narrow.split('.');
  for (let i = 0; i < w.length; i++) {
    const token = w[i];
    if (token === '>') return n.length > i;
    if (i >= n.length) return false;
    if (n[i] === '>') return false;
    if (token !== '*' && token !== n[i]) return false;
  }
  return w.length === n.length;
}

/** A translation with a small cache: a client sees few distinct topics, many times each. */
export class NameCache {
  private readonly map = new Map<string, string>();
  constructor(
    private readonly translate: (name: string) => string,
    private readonly limit = 1024,
  ) {}

  get(name: string): string {
    let out = this.map.get(name);
    if (out === undefined) {
      if (this.map.size >= this.limit) this.map.clear();
      out = this.translate(name);
      this.map.set(name, out);
    }
    return out;
  }
}

/**
 * Bytes the NATS header block takes on the wire (`NATS/1.0\r\nk: v\r\n...\r\n`), 0 when empty:
 * the server's max_payload counts headers and payload together.
 */
export function headerBytes(headers: Iterable<[string, string]>): number {
  let size = 0;
  for (const [k, v] of headers) size += 4 + Buffer.byteLength(k) + Buffer.byteLength(v);
  return size === 0 ? 0 : size + 12;
}

/** Stream and consumer names: no whitespace, `.`, `*`, `>`, path separators or control characters. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const BAD_NAME = /[\s.*>/\\\u0000-\u001f\u007f]/;

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= 200 && !BAD_NAME.test(name);
}
