/**
 * Polling an HTTP JSON API that pages with a cursor or a `since` parameter.
 *
 * Model settings (`models.<name>.settings`), datasource values as defaults:
 * - `path` (default `/{model}`): appended to the datasource `url`; `{model}` is replaced.
 * - `itemsPath` (default `items`; `''` when the body is the array itself): the array of items.
 * - `cursorParam` (default `cursor`): the query parameter carrying the cursor.
 * - Exactly one way to get the next cursor:
 *   - `nextCursorPath`: the body's next-page cursor (e.g. `next`, `meta.next_cursor`); or
 *   - `cursorField`: the field of each item whose value is the next `since` (e.g.
 *     `updated_at`, `seq`): the API returns items with that field strictly greater, in order.
 * - `keyPath` (default `id`), `opPath` + `opMap` + `defaultOp` (default `update`), `idPath`:
 *   as for the webhook connector.
 * - `interval` (default 1000) ms between polls when there is nothing new; `query`: fixed
 *   query parameters (e.g. `{ "limit": "100" }`).
 * Datasource: `url` (required), `headers` (sent with every request; values never logged),
 * `requestTimeout` (default 30000 ms), `tls` (`{ ca, cert, key, passphrase, servername,
 * rejectUnauthorized }` for an `https://` API, src/util/tls.ts). A TLS failure is TLS_FAILED:
 * start() fails with it, and a later round's fails the model (not retried).
 *
 * Cursors and positions:
 * - `cursorField`: an item's position is `{"c": <its field value>}`; resuming asks for
 *   items after it.
 * - `nextCursorPath`: a page is identified by the cursor that fetched it, so an item's position
 *   is `{"c": <page cursor>, "n": <items of that page done>}`; resuming fetches that page again
 *   and skips its first n items. After a page, a next cursor moves on; no next cursor (the
 *   last page) keeps the page and its count, and the next poll reads it again for new items.
 *   This needs an API whose page for a cursor keeps its items in the same order (items are
 *   only appended to the last page).
 */
import {
  eventId,
  type ChangeEvent,
  type Operation,
  type Position,
  type StartFrom,
} from '../../events/change-event';
import { ErrorCode, EvpubError, redact, toError } from '../../errors';
import { tlsFailure } from '../../util/tls';
import type { TlsFetch } from '../../util/tls-fetch';
import { compilePath, getPath, scalarString, type JsonPath } from '../kit/json-path';
import { SettingsReader, type Settings } from '../kit/settings';
import type { Polled, PollRound, PollSource } from './loop';

export interface HttpCursor {
  /** The cursor (page cursor or `since` value); null: the first page. */
  c: string | number | null;
  /** `nextCursorPath` mode: items of page `c` already handled. */
  n?: number;
}

export interface HttpModelSettings {
  url: URL;
  itemsPath: JsonPath;
  cursorParam: string;
  nextCursorPath: JsonPath | undefined;
  cursorField: JsonPath | undefined;
  keyPath: JsonPath;
  opPath: JsonPath | undefined;
  opMap: Record<string, Operation>;
  defaultOp: Operation;
  idPath: JsonPath | undefined;
  interval: number;
  query: Record<string, string>;
  headers: Record<string, string>;
  requestTimeout: number;
  /** The fetch with the datasource's tls settings (the global fetch without them). */
  fetch: TlsFetch;
}

export const HTTP_MODEL_KEYS = [
  'path',
  'itemsPath',
  'cursorParam',
  'nextCursorPath',
  'cursorField',
  'keyPath',
  'opPath',
  'opMap',
  'defaultOp',
  'idPath',
  'interval',
  'query',
] as const;

const OPS: readonly string[] = ['create', 'update', 'delete'];

export function parseHttpModel(
  model: string,
  settings: Settings,
  dataSource: { url: string; headers: Record<string, string>; requestTimeout: number; fetch: TlsFetch },
): HttpModelSettings {
  const r = SettingsReader.forModel(model, settings);
  const next = r.string('nextCursorPath');
  const field = r.string('cursorField');
  if ((next === undefined) === (field === undefined)) {
    throw r.invalid(
      'nextCursorPath',
      'or cursorField: exactly one is required (how the next cursor is found)',
    );
  }
  const path = r.string('path', '/{model}').replace(/\{model\}/g, encodeURIComponent(model));
  const base = new URL(dataSource.url);
  const url = new URL(base.toString().replace(/\/$/, '') + (path.startsWith('/') ? path : `/${path}`));
  const opPath = r.string('opPath');
  const idPath = r.string('idPath');
  return {
    url,
    itemsPath: compilePath(settings.itemsPath === '' ? '' : r.string('itemsPath', 'items')),
    cursorParam: r.string('cursorParam', 'cursor'),
    nextCursorPath: next === undefined ? undefined : compilePath(next),
    cursorField: field === undefined ? undefined : compilePath(field),
    keyPath: compilePath(r.string('keyPath', 'id')),
    opPath: opPath === undefined ? undefined : compilePath(opPath),
    opMap: r.opMap('opMap'),
    defaultOp: r.op('defaultOp', 'update'),
    idPath: idPath === undefined ? undefined : compilePath(idPath),
    interval: r.int('interval', 1000),
    query: r.stringMap('query'),
    headers: dataSource.headers,
    requestTimeout: dataSource.requestTimeout,
    fetch: dataSource.fetch,
  };
}

export class HttpSource implements PollSource<HttpCursor> {
  constructor(private readonly o: { datasource: string; model: string; settings: HttpModelSettings }) {}

  positionOf(cursor: HttpCursor | undefined): Position {
    const paged = this.o.settings.nextCursorPath !== undefined;
    return JSON.stringify(cursor ?? (paged ? { c: null, n: 0 } : { c: null }));
  }

  parsePosition(position: Position): HttpCursor {
    let c: unknown;
    try {
      c = JSON.parse(position);
    } catch {
      c = undefined;
    }
    const cursor = c as Partial<HttpCursor> | undefined;
    const paged = this.o.settings.nextCursorPath !== undefined;
    if (
      !cursor ||
      typeof cursor !== 'object' ||
      !('c' in cursor) ||
      paged !== (typeof cursor.n === 'number')
    ) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `poll connector: models.${this.o.model}: the checkpoint ${JSON.stringify(position)} is not a cursor of this API's settings; reset the checkpoint`,
      );
    }
    return cursor as HttpCursor;
  }

  private async fetchPage(cursor: HttpCursor | undefined, signal: AbortSignal): Promise<unknown> {
    const s = this.o.settings;
    const url = new URL(s.url);
    for (const [k, v] of Object.entries(s.query)) url.searchParams.set(k, v);
    if (cursor && cursor.c !== null) url.searchParams.set(s.cursorParam, String(cursor.c));
    const timeout = AbortSignal.timeout(s.requestTimeout);
    let response: Response;
    try {
      response = await s.fetch(url.toString(), {
        headers: { accept: 'application/json', ...s.headers },
        signal: AbortSignal.any([signal, timeout]),
      });
    } catch (err) {
      const tls = signal.aborted || timeout.aborted ? undefined : tlsFailure(err, redact(url.toString()));
      if (tls) throw tls;
      throw new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `GET ${redact(url.toString())} failed: ${toError(err).message}`,
        {
          cause: err,
          retriable: true,
        },
      );
    }
    const text = await response.text();
    if (response.status === 401 || response.status === 403) {
      throw new EvpubError(ErrorCode.AUTH_FAILED, `GET ${redact(url.toString())}: HTTP ${response.status}`);
    }
    if (!response.ok) {
      throw new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `GET ${redact(url.toString())}: HTTP ${response.status}`,
        {
          retriable: true,
        },
      );
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new EvpubError(ErrorCode.SOURCE_FAILED, `GET ${redact(url.toString())}: the answer is not JSON`, {
        cause: err,
        retriable: true,
      });
    }
  }

  private itemsOf(body: unknown): unknown[] {
    const items = getPath(body, this.o.settings.itemsPath);
    if (!Array.isArray(items)) {
      throw new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `the answer has no array at "${this.o.settings.itemsPath.join('.')}"`,
        { retriable: true },
      );
    }
    return items;
  }

  async next(cursor: HttpCursor | undefined, signal: AbortSignal): Promise<PollRound<HttpCursor>> {
    const s = this.o.settings;
    const body = await this.fetchPage(cursor, signal);
    const items = this.itemsOf(body);
    const changes: Polled<HttpCursor>[] = [];
    if (s.cursorField) {
      for (const item of items) {
        const value = getPath(item, s.cursorField);
        if (typeof value !== 'string' && typeof value !== 'number') {
          throw new EvpubError(
            ErrorCode.SOURCE_FAILED,
            `an item has no "${s.cursorField.join('.')}" to continue from`,
          );
        }
        const at: HttpCursor = { c: value };
        changes.push({ event: this.event(item, at), cursor: at });
      }
      return { changes, more: items.length > 0 };
    }
    const page = cursor?.c ?? null;
    const done = cursor?.n ?? 0;
    items.forEach((item, i) => {
      if (i < done) return;
      const at: HttpCursor = { c: page, n: i + 1 };
      changes.push({ event: this.event(item, at), cursor: at });
    });
    const next = getPath(body, s.nextCursorPath!);
    const nextCursor = typeof next === 'string' || typeof next === 'number' ? next : null;
    if (nextCursor !== null && nextCursor !== page) {
      const moved: HttpCursor = { c: nextCursor, n: 0 };
      // The page's last change carries the move, so a restart after it starts on the next page.
      if (changes.length > 0) changes[changes.length - 1]!.cursor = moved;
      return { changes, more: true, cursor: moved };
    }
    return { changes, more: false };
  }

  async open(
    from: StartFrom,
    resumeAt: HttpCursor | undefined,
    signal: AbortSignal,
  ): Promise<HttpCursor | undefined> {
    let cursor = resumeAt;
    if (from !== 'now') {
      await this.fetchPage(cursor, signal).then((body) => this.itemsOf(body));
      return cursor;
    }
    // 'now': walk to the end without publishing.
    for (;;) {
      const round = await this.next(cursor, signal);
      const last = round.changes.at(-1)?.cursor ?? round.cursor;
      if (last) cursor = last;
      if (!round.more || round.changes.length === 0) return cursor;
    }
  }

  private opOf(item: unknown): Operation {
    const s = this.o.settings;
    if (!s.opPath) return s.defaultOp;
    const value = scalarString(getPath(item, s.opPath));
    if (value === undefined) return s.defaultOp;
    return s.opMap[value] ?? (OPS.includes(value) ? (value as Operation) : s.defaultOp);
  }

  private event(item: unknown, at: HttpCursor): ChangeEvent {
    const s = this.o.settings;
    const key = scalarString(getPath(item, s.keyPath));
    if (key === undefined) {
      throw new EvpubError(ErrorCode.SOURCE_FAILED, `an item has no key at "${s.keyPath.join('.')}"`);
    }
    const op = this.opOf(item);
    const row =
      item !== null && typeof item === 'object' ? (item as Record<string, unknown>) : { value: item };
    const position = this.positionOf(at);
    const senderId = s.idPath ? scalarString(getPath(item, s.idPath)) : undefined;
    return {
      id:
        senderId === undefined
          ? eventId(this.o.datasource, this.o.model, key, position)
          : eventId(this.o.datasource, this.o.model, senderId),
      datasource: this.o.datasource,
      model: this.o.model,
      op,
      key,
      before: op === 'delete' ? row : null,
      after: op === 'delete' ? null : row,
      position,
      sourceTime: new Date().toISOString(),
      source: { url: redact(s.url.toString()) },
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
