/**
 * CouchDB revisions and the replay filter.
 *
 * A revision is `<generation>-<hash>`: the generation counts the edits of the document, the hash
 * tells apart revisions of the same generation (conflicts; CouchDB's winner among equal
 * generations is the one with the greater hash).
 *
 * CouchDB may send changes from before `since` again (a cluster node answering from its own
 * shard copy, a `since` it cannot honour exactly, a reconnect). The changes feed lists each
 * document once, with its current winning revision, so a replay carries a revision we already
 * published or an older one. `ReplayFilter` remembers, per document, the last revision passed
 * (an LRU of `limit` documents) and drops a change whose revision is not newer. One exception:
 * a live revision after a deleted one is always passed, even with a lower generation: that is
 * a conflict branch becoming the winner when the other branch was deleted, a real change.
 * A document evicted from the LRU (or seen before a process restart) is passed again: the
 * publisher is at-least-once, and the event id (database + id + rev) lets consumers drop it.
 */

export interface Revision {
  generation: number;
  hash: string;
}

/** Parses `3-abc`; an unparsable revision is generation 0 (older than any real one). */
export function parseRev(rev: string): Revision {
  const dash = rev.indexOf('-');
  const generation = dash > 0 ? Number(rev.slice(0, dash)) : NaN;
  if (!Number.isSafeInteger(generation)) return { generation: 0, hash: rev };
  return { generation, hash: rev.slice(dash + 1) };
}

/** Negative when `a` is older than `b`, 0 when equal, positive when newer. */
export function compareRevs(a: string, b: string): number {
  const ra = parseRev(a);
  const rb = parseRev(b);
  if (ra.generation !== rb.generation) return ra.generation - rb.generation;
  return ra.hash < rb.hash ? -1 : ra.hash > rb.hash ? 1 : 0;
}

interface Seen {
  rev: string;
  deleted: boolean;
}

export class ReplayFilter {
  private readonly seen = new Map<string, Seen>();

  constructor(private readonly limit: number) {}

  /** True when the change is new (and remembers it); false for a replay to drop. */
  accept(id: string, rev: string, deleted: boolean): boolean {
    const last = this.seen.get(id);
    if (last) {
      const resurrected = last.deleted && !deleted;
      if (!resurrected && compareRevs(rev, last.rev) <= 0) {
        // Still touch it: a document replayed is likely to be replayed again.
        this.seen.delete(id);
        this.seen.set(id, last);
        return false;
      }
      this.seen.delete(id);
    }
    this.seen.set(id, { rev, deleted });
    if (this.seen.size > this.limit) {
      const oldest = this.seen.keys().next();
      if (!oldest.done) this.seen.delete(oldest.value);
    }
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
