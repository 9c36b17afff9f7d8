/**
 * The WAL a PostgreSQL replication slot retains (`pg_current_wal_lsn() - confirmed_flush_lsn`),
 * asked at scrape time: the first thing a PostgreSQL user alerts on, before a stalled slot
 * fills the disk.
 *
 * Protocol:
 * - One probe per `postgres` datasource, with its own admin connection (the connector's
 *   `connectAdmin`), opened at the first scrape, not before: an app that is never scraped
 *   never connects. It connects as the connector does (the datasource's url and `tls`
 *   settings, TLS included) and reads the slot the connector reads (the datasource's `slot` setting, or
 *   its default), through the connector's own settings parser and slot query.
 * - `read()` starts one query unless one is in flight, and waits for it at most `timeoutMs`;
 *   it then answers the latest value known (possibly from an earlier scrape), or undefined when
 *   none is known yet. A slow or unreachable database never holds a scrape longer than that.
 * - A failed query drops the connection (the next scrape reconnects) and keeps the last value
 *   for at most `staleMs`, after which the probe answers undefined (the series disappears
 *   rather than show an old number).
 * - `close()` ends the connection at once; a probe answers nothing after it.
 */
import type { Client } from 'pg';
import { parsePostgresSettings, pgSsl, type PostgresSettings } from '../connectors/postgres/settings';
import type { ConnectionOptions } from 'node:tls';
import { connectAdmin, slotState } from '../connectors/postgres/slot-admin';
import { toError } from '../errors';
import type { Logger } from '../logger';

export interface SlotReading {
  slot: string;
  /** Bytes of WAL the slot keeps past what it confirmed; null when the slot has no confirmed LSN. */
  bytes: number | null;
}

export interface SlotProbeOptions {
  /** Longest a scrape waits for the database, in ms (default 1000). */
  timeoutMs?: number;
  /** How long a value stays reported after queries started failing, in ms (default 60000). */
  staleMs?: number;
  logger: Logger;
}

export class SlotProbe {
  private readonly settings: PostgresSettings;
  private client: Client | undefined;
  /** pg's `ssl` option from the datasource's `tls` setting, read at the first connect. */
  private ssl: { value: ConnectionOptions | undefined } | undefined;
  private inFlight: Promise<void> | undefined;
  private last: { reading: SlotReading | undefined; at: number } | undefined;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly staleMs: number;

  constructor(
    readonly datasource: string,
    settings: Readonly<Record<string, unknown>>,
    private readonly options: SlotProbeOptions,
  ) {
    this.settings = parsePostgresSettings(datasource, settings);
    this.timeoutMs = options.timeoutMs ?? 1000;
    this.staleMs = options.staleMs ?? 60_000;
  }

  get slot(): string {
    return this.settings.slot;
  }

  async read(): Promise<SlotReading | undefined> {
    if (this.closed) return undefined;
    this.inFlight ??= this.query().finally(() => (this.inFlight = undefined));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.inFlight,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, this.timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!this.last || Date.now() - this.last.at > this.staleMs) return undefined;
    return this.last.reading;
  }

  private async query(): Promise<void> {
    try {
      // No logger: the connector warns about `rejectUnauthorized: false` already.
      this.ssl ??= { value: pgSsl(this.settings) };
      this.client ??= await connectAdmin(
        this.settings.url,
        this.settings.displayUrl,
        this.settings.connectTimeout,
        this.ssl.value,
      );
      if (this.closed) return this.end();
      const state = await slotState(this.client, this.settings.slot);
      if (this.closed) return this.end();
      this.last = {
        reading: state ? { slot: state.name, bytes: state.lagBytes } : undefined,
        at: Date.now(),
      };
    } catch (err) {
      // Errors of the connector's admin helpers are redacted (no password in the URL).
      this.options.logger.debug(
        { datasource: this.datasource, err: toError(err).message },
        'metrics: the slot query failed',
      );
      await this.end();
    }
  }

  private async end(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  /**
   * Ends the connection now. A query or connect still in flight is not awaited: it ends its
   * connection itself when it settles (at the latest after the datasource's `connectTimeout`).
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.end();
  }
}
