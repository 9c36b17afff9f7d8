/**
 * A PostgreSQL table name that evpub itself creates and writes (the checkpoint store's, the
 * lease store's): `table` or `schema.table`, plain identifiers only, returned quoted. Anything
 * else is CONFIG_INVALID naming the setting and an example, so a name from configuration can
 * never carry SQL.
 */
import { ErrorCode, EvpubError } from '../errors';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** `name` quoted (`"schema"."table"`); `key` and `example` (`evpub_leases`) name it in the error. */
export function quotePgTable(name: string, key: string, example: string): string {
  const parts = name.split('.');
  if (parts.length > 2 || !parts.every((p) => IDENTIFIER.test(p))) {
    const bare = example.replace(/^evpub_/, '');
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${key}: ${JSON.stringify(name)} must be a table name like ${example} or myschema.${bare}`,
    );
  }
  return parts.map((p) => `"${p}"`).join('.');
}
