/**
 * What of an event is published: the operation filter and the field include/exclude lists,
 * applied to `before` and `after` (top-level fields) before the envelope encodes the event.
 * `include` keeps only the fields named; `exclude` then removes the fields named.
 */
import type { ChangeEvent, Row } from '../events/change-event';

export interface FieldFilter {
  include?: readonly string[];
  exclude?: readonly string[];
}

function project(
  row: Row | null | undefined,
  include: Set<string> | undefined,
  exclude: Set<string> | undefined,
) {
  if (row === null || row === undefined) return row;
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) {
    if (include && !include.has(k)) continue;
    if (exclude?.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** A function that projects events; the identity when there is nothing to filter. */
export function fieldProjector(filter: FieldFilter): (event: ChangeEvent) => ChangeEvent {
  const include = filter.include && filter.include.length > 0 ? new Set(filter.include) : undefined;
  const exclude = filter.exclude && filter.exclude.length > 0 ? new Set(filter.exclude) : undefined;
  if (!include && !exclude) return (e) => e;
  return (event) => {
    const out: ChangeEvent = { ...event };
    if ('before' in event) out.before = project(event.before, include, exclude);
    if ('after' in event) out.after = project(event.after, include, exclude);
    return out;
  };
}
