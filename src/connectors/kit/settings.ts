/**
 * The one reader of connector settings, used by every built-in connector.
 *
 * A reader covers one object of settings, named by where it sits in the configuration:
 * `datasources.<name>` for a datasource's own settings, `models.<name>.settings` for a model's
 * (`SettingsReader.forDataSource` / `forModel`), or a nested object (`at('signature')`).
 *
 * - `closed(allowed)` rejects every key not in `allowed` (for a datasource, `connector` and
 *   `name`, which the app sets, are always allowed): a misspelt key must not silently fall
 *   back to a default. The error names the key and the nearest valid key:
 *   `datasources.shop.heartbeet: unknown setting; did you mean heartbeat?`, or lists the valid
 *   keys when none is near.
 * - Each typed read (`int`, `bool`, `string`, `oneOf`...) returns the value, or the fallback
 *   when the key is absent (undefined or null), and throws otherwise.
 * - Every error is CONFIG_INVALID with the message `<path>: <rule>` and `context.setting` =
 *   the path. Values are quoted in messages, except secrets (`secret()`, `stringMap()`), which
 *   are never echoed.
 */
import { ErrorCode, EvpubError } from '../../errors';
import type { Operation } from '../../events/change-event';
import { nearest } from '../../util/nearest';

export type Settings = Readonly<Record<string, unknown>>;

/** Datasource keys the app itself sets or reads, allowed in every datasource's settings. */
export const APP_KEYS = ['connector', 'name'] as const;

/** The operations a source may map to (not `snapshot`/`truncate`, which are connector-made). */
const OPS = ['create', 'update', 'delete'] as const satisfies readonly Operation[];

/** CONFIG_INVALID for the setting at `path` (`datasources.db.url`): `<path>: <rule>`. */
export function settingsError(path: string, rule: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${path}: ${rule}`, { context: { setting: path } });
}

/** CONFIG_INVALID for `key` of the settings at `where` (`where` may be empty). */
export function invalidSetting(where: string, key: string, rule: string): EvpubError {
  return settingsError(where === '' ? key : `${where}.${key}`, rule);
}

export { nearest };

export class SettingsReader {
  /**
   * `where` names the object in messages (`datasources.shop`); `appKeys` are allowed by
   * `closed()` besides the connector's own keys.
   */
  constructor(
    readonly where: string,
    private readonly settings: Settings,
    private readonly appKeys: readonly string[] = [],
  ) {}

  /** A reader of datasource `name`'s settings (`datasources.<name>`). */
  static forDataSource(name: string, settings: Settings): SettingsReader {
    return new SettingsReader(`datasources.${name}`, settings, APP_KEYS);
  }

  /** A reader of model `name`'s settings (`models.<name>.settings`). */
  static forModel(name: string, settings: Settings): SettingsReader {
    return new SettingsReader(`models.${name}.settings`, settings);
  }

  /** The path of `key` in messages. */
  path(key: string): string {
    return `${this.where}.${key}`;
  }

  /** A reader of the object at `key` (absent: an empty one); throws when it is not an object. */
  at(key: string, shape: string): SettingsReader {
    const value = this.has(key) ? this.settings[key] : {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw this.invalid(key, `must be an object ${shape}`);
    }
    return new SettingsReader(this.path(key), value as Settings);
  }

  invalid(key: string, rule: string): EvpubError {
    return settingsError(this.path(key), rule);
  }

  private got(key: string): string {
    return `(got ${JSON.stringify(this.settings[key])})`;
  }

  /** Throws for the first key not in `allowed` (nor an app key), naming the nearest valid key. */
  closed(allowed: readonly string[]): this {
    for (const key of Object.keys(this.settings)) {
      if (allowed.includes(key) || this.appKeys.includes(key)) continue;
      const near = nearest(key, allowed);
      throw this.invalid(
        key,
        near !== undefined
          ? `unknown setting; did you mean ${near}?`
          : allowed.length > 0
            ? `unknown setting; the settings here are ${allowed.join(', ')}`
            : 'unknown setting; this connector takes none here',
      );
    }
    return this;
  }

  has(key: string): boolean {
    return this.settings[key] !== undefined && this.settings[key] !== null;
  }

  /** The value as given (undefined when absent), for the checks a typed read does not cover. */
  raw(key: string): unknown {
    return this.has(key) ? this.settings[key] : undefined;
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

  /** The reconnect back-off pair: `reconnectDelay` doubling up to `maxReconnectDelay`. */
  reconnect(fallback: { reconnectDelay: number; maxReconnectDelay: number }): {
    reconnectDelay: number;
    maxReconnectDelay: number;
  } {
    const reconnectDelay = this.positiveInt('reconnectDelay', fallback.reconnectDelay);
    const maxReconnectDelay = this.positiveInt('maxReconnectDelay', fallback.maxReconnectDelay);
    if (maxReconnectDelay < reconnectDelay) {
      throw this.invalid('maxReconnectDelay', `must be at least reconnectDelay (${reconnectDelay})`);
    }
    return { reconnectDelay, maxReconnectDelay };
  }
}
