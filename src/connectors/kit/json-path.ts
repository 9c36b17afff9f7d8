/**
 * Simple dotted JSON paths for connector settings: `data.id`, `items`, `events.0.type`.
 * Each segment is an object key, or an array index when the value is an array. No wildcards,
 * no filters: one value or undefined. An empty path is the value itself.
 */

export type JsonPath = readonly string[];

export function compilePath(path: string): JsonPath {
  return path === '' || path === '.' ? [] : path.split('.');
}

export function getPath(value: unknown, path: JsonPath): unknown {
  let current = value;
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return undefined;
    if (Array.isArray(current)) {
      if (!/^\d+$/.test(segment)) return undefined;
      current = current[Number(segment)];
    } else {
      if (!Object.prototype.hasOwnProperty.call(current, segment)) return undefined;
      current = (current as Record<string, unknown>)[segment];
    }
  }
  return current;
}

/** A scalar as a key string: strings as they are, numbers/booleans/bigints via String(). */
export function scalarString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  return undefined;
}
