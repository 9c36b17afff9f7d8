/**
 * Names from configuration that end up in SQL text: tables, schemas, databases, columns (the
 * postgres, mysql and poll connectors). Values are always bound parameters; a name cannot be,
 * so each is validated here when the settings are read, and quoted (the dialect's quote
 * doubled) where it is used.
 *
 * The rule (`NAME_RULE`): 1 to `max` characters (63 for PostgreSQL, which cuts longer names;
 * 64 for MySQL/MariaDB), with no double quote, backtick, semicolon nor control character.
 * Mixed case, spaces, single quotes and any other Unicode remain usable (they are quoted), so
 * an odd but real table name works, while a name built to break out of its quotes
 * (`x"; drop table y; --`) is a CONFIG_INVALID naming the setting, before anything connects.
 *
 * Replication slot and publication names follow PostgreSQL's own rule for slots: `[a-z0-9_]`,
 * at most 63 (`SLOT_RULE`).
 */
import type { SettingsReader } from './settings';

// eslint-disable-next-line no-control-regex
const FORBIDDEN = /["`;\u0000-\u001f\u007f]/;

/** The rule, as error messages state it. */
export function nameRule(max: number): string {
  return `must be a name of 1 to ${max} characters without double quotes, backticks, semicolons or control characters`;
}

/** Is `name` a usable SQL name of at most `max` characters? */
export function isSafeName(name: string, max: number): boolean {
  return name.length > 0 && [...name].length <= max && !FORBIDDEN.test(name);
}

/**
 * Throws CONFIG_INVALID at `key` of `r` when `name` breaks the rule; `what` says which part
 * was wrong (`the schema "x"` of `schema.table`), `defaulted` that the name is the model's
 * because the setting is absent.
 */
export function checkName(
  r: SettingsReader,
  key: string,
  name: string,
  options: { max: number; what?: string; defaulted?: boolean },
): string {
  if (isSafeName(name, options.max)) return name;
  const shown = options.what ?? JSON.stringify(name);
  const from = options.defaulted ? ` (the model's name, as ${key} is not set)` : '';
  throw r.invalid(key, `${shown}${from} ${nameRule(options.max)}`);
}

export const SLOT_NAME = /^[a-z0-9_]{1,63}$/;
export const SLOT_RULE =
  'must be 1 to 63 lower-case letters, digits or underscores (PostgreSQL’s rule for slot names)';
