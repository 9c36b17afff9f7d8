/**
 * TLS settings: one shape for every connection evpub makes or serves (broker adapters, sources,
 * checkpoint stores, the webhook server):
 *
 *   tls: { ca, cert, key, passphrase, servername, rejectUnauthorized }
 *
 * - `ca`, `cert`, `key`: a file path, or the PEM text itself (it starts with `-----BEGIN`);
 *   `ca` may be a list. Values pass through the config loader first, so `${ENV}` and
 *   `${file:/run/secrets/...}` references work here like everywhere. `tls: true` means TLS with
 *   the system's CAs and nothing else.
 * - `key` and `passphrase` are secrets: never echoed in a message, redacted in every output.
 * - Host names are verified. `rejectUnauthorized: false` turns verification off (a certificate
 *   from any CA and any name is accepted); `loadTls` warns once, when the connection is
 *   configured, naming the endpoint.
 *
 * Protocol for a user of this module (an adapter, a connector, a store):
 * 1. When its settings are validated (before anything connects), `parseTls(raw, path)`: a
 *    closed schema, CONFIG_INVALID naming `<path>.<key>` and the nearest valid key.
 * 2. Once, when it builds its driver's options, `loadTls(settings, path, { endpoint, logger })`:
 *    reads the files (a file that cannot be read is CONFIG_INVALID naming the key and the file,
 *    never its content; an encrypted key the passphrase does not open, or with none, is
 *    CONFIG_INVALID naming `<path>.passphrase`) and returns options for `tls.connect` / the driver.
 * 3. When a connection attempt fails, `tlsFailure(err, endpoint)`: a certificate the client
 *    does not trust, an expired one, a name mismatch, a client certificate the server refused,
 *    or a port that does not speak TLS becomes EVPUB_TLS_FAILED (not retriable: the same
 *    attempt fails the same way), naming the endpoint, the reason and the setting that fixes it.
 *    Undefined for errors that are not about TLS.
 */
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { ErrorCode, EvpubError, toError } from '../errors';
import type { Logger } from '../logger';
import { nearest } from './nearest';

export interface TlsSettings {
  /** CA certificate(s) to trust instead of the system's: file path(s) or PEM. */
  ca?: string | string[];
  /** Client certificate (chain): file path or PEM. */
  cert?: string;
  /** Client private key: file path or PEM. A secret. */
  key?: string;
  /** The key's passphrase. A secret. */
  passphrase?: string;
  /** The name to verify the server's certificate against (and to send as SNI), when it is not the host connected to. */
  servername?: string;
  /** False turns certificate and host name verification off (warned once). Default true. */
  rejectUnauthorized?: boolean;
}

export const TLS_KEYS = ['ca', 'cert', 'key', 'passphrase', 'servername', 'rejectUnauthorized'] as const;

/** The options `loadTls` gives: what `tls.connect` and the drivers built on it take. */
export type LoadedTls = Pick<
  ConnectionOptions,
  'ca' | 'cert' | 'key' | 'passphrase' | 'servername' | 'rejectUnauthorized'
>;

function invalid(path: string, rule: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${path}: ${rule}`, { context: { setting: path } });
}

/**
 * Validates `tls` settings at `path` (`brokers.main.options.tls`): `true`, an object of
 * TLS_KEYS, or absent/false (undefined: no TLS asked).
 */
export function parseTls(raw: unknown, path: string): TlsSettings | undefined {
  if (raw === undefined || raw === null || raw === false) return undefined;
  if (raw === true) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalid(path, 'must be true or an object like { ca: "/etc/evpub/ca.pem" }');
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if ((TLS_KEYS as readonly string[]).includes(key)) continue;
    const near = nearest(key, TLS_KEYS);
    throw invalid(
      `${path}.${key}`,
      near !== undefined
        ? `unknown TLS setting; did you mean ${near}?`
        : `unknown TLS setting; the settings are ${TLS_KEYS.join(', ')}`,
    );
  }
  const text = (key: 'cert' | 'key' | 'passphrase' | 'servername', secret = false): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || v === '') {
      throw invalid(
        `${path}.${key}`,
        `must be a non-empty string${secret ? '' : ` (got ${JSON.stringify(v)})`}`,
      );
    }
    return v;
  };
  const settings: TlsSettings = {};
  if (o.ca !== undefined && o.ca !== null) {
    const list = Array.isArray(o.ca) ? o.ca : [o.ca];
    if (list.length === 0 || !list.every((c) => typeof c === 'string' && c !== '')) {
      throw invalid(`${path}.ca`, 'must be a file path or PEM text, or a non-empty list of them');
    }
    settings.ca = Array.isArray(o.ca) ? (list as string[]) : (o.ca as string);
  }
  const cert = text('cert');
  const key = text('key', true);
  const passphrase = text('passphrase', true);
  const servername = text('servername');
  if (cert !== undefined) settings.cert = cert;
  if (key !== undefined) settings.key = key;
  if (passphrase !== undefined) settings.passphrase = passphrase;
  if (servername !== undefined) settings.servername = servername;
  if ((cert === undefined) !== (key === undefined)) {
    throw invalid(
      `${path}.${cert === undefined ? 'cert' : 'key'}`,
      'a client certificate needs both cert and key',
    );
  }
  if (o.rejectUnauthorized !== undefined && o.rejectUnauthorized !== null) {
    if (typeof o.rejectUnauthorized !== 'boolean') {
      throw invalid(`${path}.rejectUnauthorized`, 'must be true or false');
    }
    settings.rejectUnauthorized = o.rejectUnauthorized;
  }
  return settings;
}

const isPem = (value: string): boolean => value.trimStart().startsWith('-----BEGIN');

function pem(value: string, path: string, secret: boolean): string {
  if (isPem(value)) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? toError(err).message;
    throw invalid(path, `cannot read ${secret ? 'the key file' : JSON.stringify(value)} (${reason})`);
  }
}

/**
 * An encrypted client key opens with the passphrase given: else CONFIG_INVALID naming
 * `tls.passphrase`, here rather than as an OpenSSL error from inside a driver's connect (some
 * only log it and retry). Neither the key nor the passphrase is echoed.
 */
function checkKey(key: string, passphrase: string | undefined, path: string): void {
  try {
    createPrivateKey(passphrase === undefined ? { key } : { key, passphrase });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const encrypted = /-----BEGIN (ENCRYPTED PRIVATE KEY|RSA PRIVATE KEY-----\s*Proc-Type: 4,ENCRYPTED)/.test(
      key,
    );
    // Any other trouble with the key is left to the TLS library, which reports it on connect.
    if (!encrypted && code !== 'ERR_OSSL_BAD_DECRYPT') return;
    throw invalid(
      `${path}.passphrase`,
      passphrase === undefined
        ? `the key (${path}.key) is encrypted: set ${path}.passphrase to its passphrase`
        : `does not open the key (${path}.key): wrong passphrase`,
    );
  }
}

/**
 * Reads the files of `settings` (validated by parseTls) and returns the driver options. Warns
 * once (here) when verification is off.
 */
export function loadTls(
  settings: TlsSettings,
  path: string,
  options: { endpoint: string; logger?: Logger },
): LoadedTls {
  const loaded: LoadedTls = {};
  if (settings.ca !== undefined) {
    loaded.ca = Array.isArray(settings.ca)
      ? settings.ca.map((c, i) => pem(c, `${path}.ca[${i}]`, false))
      : pem(settings.ca, `${path}.ca`, false);
  }
  if (settings.cert !== undefined) loaded.cert = pem(settings.cert, `${path}.cert`, false);
  if (settings.key !== undefined) {
    loaded.key = pem(settings.key, `${path}.key`, true);
    checkKey(loaded.key, settings.passphrase, path);
  }
  if (settings.passphrase !== undefined) loaded.passphrase = settings.passphrase;
  if (settings.servername !== undefined) loaded.servername = settings.servername;
  if (settings.rejectUnauthorized === false) {
    loaded.rejectUnauthorized = false;
    options.logger?.warn(
      { endpoint: options.endpoint, setting: `${path}.rejectUnauthorized` },
      `TLS verification is off for ${options.endpoint} (${path}.rejectUnauthorized: false): ` +
        'any certificate is accepted, so the connection is not protected from a man in the middle',
    );
  } else {
    loaded.rejectUnauthorized = true;
  }
  return loaded;
}

/** What a TLS error code means and what fixes it. */
const REASONS: Record<string, { reason: string; fix: string }> = {};
const reason = (codes: string[], text: string, fix: string): void => {
  for (const code of codes) REASONS[code] = { reason: text, fix };
};
reason(
  [
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    'UNABLE_TO_GET_ISSUER_CERT',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    'SELF_SIGNED_CERT_IN_CHAIN',
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    'CERT_SIGNATURE_FAILURE',
    'CERT_UNTRUSTED',
  ],
  "the server's certificate is not signed by a CA evpub trusts",
  'set tls.ca to the CA certificate that signed it',
);
reason(['CERT_HAS_EXPIRED'], "the server's certificate has expired", 'renew the server certificate');
reason(
  ['CERT_NOT_YET_VALID'],
  "the server's certificate is not valid yet",
  "check the server's and this machine's clocks",
);
reason(
  ['ERR_TLS_CERT_ALTNAME_INVALID'],
  "the server's certificate is not for this host name",
  'connect by a name the certificate lists, or set tls.servername to it',
);
reason(
  [
    'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
    'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
    'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
    'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED',
    'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED',
    'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
  ],
  'the server refused the TLS handshake (client certificate missing, expired or from a CA it does not trust)',
  'set tls.cert and tls.key to a client certificate the server accepts',
);
reason(
  ['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG'],
  'the server does not speak TLS on this port',
  'use the server’s TLS port, or drop tls for this connection',
);

/** The first error in `err`'s cause chain (and AggregateError members) with a TLS code. */
function findTlsCode(err: unknown, depth = 0): { code: string; message: string } | undefined {
  if (err === null || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && REASONS[e.code]) {
    return { code: e.code, message: typeof e.message === 'string' ? e.message : '' };
  }
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const found = findTlsCode(inner, depth + 1);
      if (found) return found;
    }
  }
  return findTlsCode(e.cause, depth + 1);
}

/**
 * EVPUB_TLS_FAILED for an error caused by TLS (see the protocol above), naming `endpoint`
 * (already redacted by the caller); undefined for any other error. `setting` is where the TLS
 * settings sit in the configuration when the fix should name the full path (`cluster.tls`: "set
 * cluster.tls.ca ..."); by default the fix names `tls.<key>`.
 */
export function tlsFailure(err: unknown, endpoint: string, setting = 'tls'): EvpubError | undefined {
  const found = findTlsCode(err);
  if (!found) return undefined;
  const { reason: why, fix } = REASONS[found.code]!;
  const named = setting === 'tls' ? fix : fix.replace(/\btls\b/g, setting);
  return new EvpubError(
    ErrorCode.TLS_FAILED,
    `TLS with ${endpoint} failed: ${why} (${found.code}); ${named}`,
    {
      cause: err,
      retriable: false,
      context: { endpoint, tlsCode: found.code, ...(setting === 'tls' ? {} : { setting }) },
    },
  );
}

/**
 * `loaded` for a driver that sets `servername` itself from the host it connects to (pg): the
 * `servername` setting then goes into the identity check instead, so the certificate is still
 * verified against the name the user gave.
 */
export function verifyServername(loaded: LoadedTls): ConnectionOptions {
  const { servername } = loaded;
  if (servername === undefined || loaded.rejectUnauthorized === false) return loaded;
  return { ...loaded, checkServerIdentity: (_host, cert) => checkServerIdentity(servername, cert) };
}

/**
 * Why a TLS connection to `host:port` ends, for a protocol that starts with TLS and where the
 * client speaks first (Redis, MQTT): with TLS 1.3 the server judges the client's
 * certificate after the client's side of the handshake is done, so a driver that writes at once
 * may see only a reset of its write. The probe completes a handshake and writes nothing: a
 * refusal then arrives as the server's alert, an error with a TLS code (give it to tlsFailure).
 * Undefined when the server keeps the session open for `waitMs` after the handshake (TLS was
 * not the problem) or cannot be reached; leaves no socket. Bounded by `timeoutMs` in all.
 */
export function probeTls(
  host: string,
  port: number,
  tls: LoadedTls,
  options: { waitMs?: number; timeoutMs?: number } = {},
): Promise<Error | undefined> {
  const waitMs = options.waitMs ?? 300;
  return new Promise((resolve) => {
    const servername = tls.servername ?? (isIP(host) === 0 ? host : undefined);
    const socket = tlsConnect({ ...tls, host, port, ...(servername ? { servername } : {}) });
    let settled = false;
    const done = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(undefined), options.timeoutMs ?? 5000);
    socket.once('error', (err: Error) => done(err));
    socket.once('close', () => done(undefined));
    socket.once('secureConnect', () => {
      setTimeout(() => done(undefined), waitMs).unref();
    });
  });
}
