/**
 * Small typed readers for connector settings, shared by the webhook, poll, couchdb, mysql and
 * postgres connectors. Each reader returns the value or the fallback when absent (undefined or
 * null), and throws CONFIG_INVALID naming the setting's path otherwise
 * (`webhook connector: setting "models.orders.path" must be ...`). Values are quoted in
 * messages except for secrets, which are never echoed.
 *
 * `checkSettingKeys` is for the connectors whose messages name the full path instead
 * (`datasources.<name>.<key> ...`, json-mapping.ts's `invalidSetting`: websocket, bridge).
 */
import { ErrorCode, EvpubError } from '../errors';
import type { Operation } from '../events/change-event';
import { invalidSetting } from './json-mapping';

export type Settings = Readonly<Record<string, unknown>>;

/** CONFIG_INVALID for setting `key` (a path): `<connector> connector: setting "<key>" <rule>`. */
export function settingError(connector: string, key: string, rule: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${connector} connector: setting "${key}" ${rule}`, {
    context: { setting: key },
  });
}

export class SettingReader {
  constructor(
    private readonly connector: string,
    private readonly settings: Settings,
    /** Prefix of the paths in messages, e.g. `models.orders.` (empty for the datasource). */
    private readonly prefix = '',
  ) {}

  invalid(key: string, rule: string): EvpubError {
    return settingError(this.connector, `${this.prefix}${key}`, rule);
  }

  private got(key: string): string {
    return `(got ${JSON.stringify(this.settings[key])})`;
  }

  /** Throws for a key not in `allowed` (a typo must not silently fall back to a default). */
  closed(allowed: readonly string[]): this {
    for (const key of Object.keys(this.settings)) {
      if (!allowed.includes(key)) {
        throw this.invalid(
          key,
          `is unknown; the ${this.connector} connector's settings here are ${allowed.join(', ')}`,
        );
      }
    }
    return this;
  }

  has(key: string): boolean {
    return this.settings[key] !== undefined && this.settings[key] !== null;
  }

  int(key: string, fallback: number, min = 1): number {
    if (!this.has(key)) return fallback;
    const value = this.settings[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
      throw this.invalid(key, `must be an integer of at least ${min} ${this.got(key)}`);
    }
    return value;
  }

  /** An integer of at least 1 ("must be a positive integer"). */
  positiveInt(key: string, fallback: number): number {
    if (!this.has(key)) return fallback;
    const value = this.settings[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
      throw this.invalid(key, `must be a positive integer ${this.got(key)}`);
    }
    return value;
  }

  bool(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const value = this.settings[key];
    if (typeof value !== 'boolean') throw this.invalid(key, `must be true or false ${this.got(key)}`);
    return value;
  }

  string(key: string, fallback: string): string;
  string(key: string, fallback?: undefined): string | undefined;
  string(key: string, fallback?: string): string | undefined {
    if (!this.has(key)) return fallback;
    const value = this.settings[key];
    if (typeof value !== 'string' || value === '') {
      throw this.invalid(key, `must be a non-empty string ${this.got(key)}`);
    }
    return value;
  }

  /** A string that must not appear in messages (a secret). */
  secret(key: string): string | undefined {
    if (!this.has(key)) return undefined;
    const value = this.settings[key];
    if (typeof value !== 'string' || value === '') throw this.invalid(key, 'must be a non-empty string');
    return value;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    if (!this.has(key)) return fallback;
    const value = this.settings[key];
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
      throw this.invalid(key, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')} ${this.got(key)}`);
    }
    return value as T;
  }

  op(key: string, fallback: Operation): Operation {
    return this.oneOf(key, OPS, fallback);
  }

  /** A table from the source's values to operations, e.g. `{ "order.created": "create" }`. */
  opMap(key: string): Record<string, Operation> {
    if (!this.has(key)) return {};
    const value = this.settings[key];
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw this.invalid(key, `must be an object mapping the source's values to ${OPS.join('/')}`);
    }
    const out: Record<string, Operation> = {};
    for (const [from, to] of Object.entries(value as Record<string, unknown>)) {
      if (typeof to !== 'string' || !(OPS as readonly string[]).includes(to)) {
        throw this.invalid(`${key}.${from}`, `must be one of ${OPS.join(', ')} (got ${JSON.stringify(to)})`);
      }
      out[from] = to as Operation;
    }
    return out;
  }

  /** A string-to-string object (HTTP headers...). Values are not echoed: they may be secrets. */
  stringMap(key: string): Record<string, string> {
    if (!this.has(key)) return {};
    const value = this.settings[key];
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw this.invalid(key, 'must be an object of strings');
    }
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (typeof v !== 'string') throw this.invalid(`${key}.${k}`, 'must be a string');
      out[k] = v;
    }
    return out;
  }
}

/**
 * Throws for a key of `settings` not in `allowed`, naming it under `where` (e.g.
 * `datasources.feed`): a typo must not silently fall back to a default.
 */
export function checkSettingKeys(settings: Settings, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(settings)) {
    if (!allowed.includes(key)) {
      throw invalidSetting(where, key, `is not a setting of this connector; allowed: ${allowed.join(', ')}`);
    }
  }
}

/** Datasource keys the app itself sets or reads. */
export const APP_KEYS = ['connector', 'name'] as const;

/** The operations a source may map to (not `snapshot`/`truncate`, which are connector-made). */
const OPS = ['create', 'update', 'delete'] as const satisfies readonly Operation[];
