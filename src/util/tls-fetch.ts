/**
 * `fetch` with the `tls` settings (src/util/tls.ts) for the HTTP sources (CouchDB, HTTP poll).
 *
 * Node's global fetch takes no TLS options (its dispatcher is undici's, which evpub does not
 * depend on), so an `https:` request with TLS options goes through `node:https` with an Agent
 * holding them, and its answer is handed back as a standard `Response` (status, headers, the
 * body as a stream), so callers use one API either way.
 *
 * Protocol:
 * - `tlsFetch(undefined)` is the global fetch. `tlsFetch(loaded)` answers `http:` URLs with the
 *   global fetch too (TLS options do not apply there).
 * - Failures look like fetch's: a network or TLS error rejects with `TypeError('fetch failed')`
 *   whose `cause` is the socket's error (its `code`: `tlsFailure` finds it); an aborted
 *   request rejects with the signal's reason. Aborting after the answer errors its body.
 * - Bodies are not decompressed: no `accept-encoding` is sent unless the caller sends one.
 * - `close()` destroys the agent's sockets (the connector's stop).
 */
import { Agent, request } from 'node:https';
import { Readable } from 'node:stream';
import { toError } from '../errors';
import type { LoadedTls } from './tls';

export interface FetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}

export interface TlsFetch {
  (url: string, init?: FetchInit): Promise<Response>;
  close(): void;
}

/** Statuses whose Response has no body (the constructor refuses one). */
const NO_BODY = new Set([101, 103, 204, 205, 304]);

export function tlsFetch(tls: LoadedTls | undefined): TlsFetch {
  if (tls === undefined) {
    return Object.assign((url: string, init?: FetchInit) => fetch(url, init), { close: () => undefined });
  }
  const agent = new Agent({ ...tls, keepAlive: true });
  const call = (url: string, init: FetchInit = {}): Promise<Response> => {
    const target = new URL(url);
    if (target.protocol !== 'https:') return fetch(url, init);
    const { signal } = init;
    return new Promise<Response>((resolve, reject) => {
      if (signal?.aborted) return reject(toError(signal.reason));
      const req = request(
        target,
        { method: init.method ?? 'GET', headers: init.headers, agent, ...(signal ? { signal } : {}) },
        (res) => {
          const headers = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (value === undefined) continue;
            for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
          }
          const status = res.statusCode ?? 502;
          const empty = NO_BODY.has(status) || init.method === 'HEAD';
          if (empty) res.resume();
          resolve(
            new Response(empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), {
              status,
              statusText: res.statusMessage ?? '',
              headers,
            }),
          );
        },
      );
      req.on('error', (err) => {
        reject(signal?.aborted ? toError(signal.reason) : new TypeError('fetch failed', { cause: err }));
      });
      req.end(init.body);
    });
  };
  return Object.assign(call, { close: () => agent.destroy() });
}
