/**
 * The management API as the CLI's subcommands call it (`evpub status`, `evpub feeds`): where
 * (`--url`, else EVPUB_URL, else http://127.0.0.1:<EVPUB_HTTP_PORT or 7401>), with which token
 * (`--token`, else EVPUB_HTTP_TOKEN), and its failures as EvpubErrors a user can act on. The
 * token is never printed.
 */
import { DEFAULT_HTTP_PORT } from '../app/schema';
import { ErrorCode, EvpubError, redact } from '../errors';

export interface ApiFlags {
  url?: string;
  token?: string;
}

export interface ApiReply {
  status: number;
  body: unknown;
}

export function apiUrl(flags: ApiFlags, env = process.env): string {
  const port = env.EVPUB_HTTP_PORT && env.EVPUB_HTTP_PORT !== '0' ? env.EVPUB_HTTP_PORT : DEFAULT_HTTP_PORT;
  return (flags.url ?? env.EVPUB_URL ?? `http://127.0.0.1:${port}`).replace(/\/+$/, '');
}

/**
 * One request. Resolves with any status the caller handles (`ok` lists them); 401 and the
 * others reject with a message naming the URL (without credentials) and what to do.
 */
export async function callApi(
  flags: ApiFlags,
  method: 'GET' | 'POST',
  path: string,
  ok: number[] = [200],
): Promise<ApiReply> {
  const base = apiUrl(flags);
  const token = flags.token ?? process.env.EVPUB_HTTP_TOKEN;
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `cannot reach the evpub management API at ${redact(base)} (${(err as Error).message}); ` +
        'is `evpub start` running? Give its address with --url or EVPUB_URL',
      { cause: err },
    );
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  if (ok.includes(res.status)) return { status: res.status, body };
  if (res.status === 401) {
    throw new EvpubError(
      ErrorCode.AUTH_FAILED,
      `the management API at ${redact(base)} wants a token: give --token or EVPUB_HTTP_TOKEN (the one in http.token)`,
    );
  }
  const message = (body as { message?: unknown } | undefined)?.message;
  const detail = typeof message === 'string' ? message : `HTTP ${res.status}`;
  throw new EvpubError(
    res.status === 404 ? ErrorCode.FEED_NOT_FOUND : ErrorCode.INVALID_STATE,
    `${method} ${path}: ${detail}`,
  );
}
