/**
 * Where and as whom a nats.js connection connects: the server, the credentials and TLS, for
 * every NATS connection evpub makes (the broker adapter, nats.ts, and the NATS lease store,
 * src/cluster/nats.ts), so both read the same settings the same way.
 *
 *   const { target, tls } = natsTarget(nm, url, settings, { path, tlsPath, endpoint, logger })
 *   nm.connect({ ...target, ... })
 *
 * - Host and port come from the URL (port 4222 by default); `tls://` asks for TLS.
 * - The URL's user part is a user and password (`nats://user:pass@host`), or a token when it has
 *   no password (`nats://TOKEN@host`); it wins over `username` / `password`. `token` wins over
 *   the URL's token. `nkey` is an NKey user seed (`SU...`) or the path of a file holding one,
 *   `creds` a `.creds` file (user JWT and seed) or its text: nats.js's authenticators answer the
 *   server's challenge with them. Files are read here: one that cannot be read, or a value that
 *   is not a seed / a .creds file, is CONFIG_INVALID naming `<path>.<key>`, never the content.
 * - TLS when the URL is `tls://` or `tls` is given: `loadTls` at `tlsPath` (files read, a warning
 *   when verification is off). `tls` in the result is where and how, for `probeNatsTls` when a
 *   connect fails without a reason (nats-tls.ts).
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from '@nats-io/transport-node';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import { loadTls, type LoadedTls, type TlsSettings } from '../../util/tls';
import type { NatsCredentials } from './nats-options';

type NatsModule = typeof import('@nats-io/transport-node');

export const NATS_DEFAULT_PORT = 4222;

export interface NatsTargetSettings extends NatsCredentials {
  username?: string;
  password?: string;
  tls?: TlsSettings;
}

export type NatsConnectTarget = Pick<
  ConnectionOptions,
  'servers' | 'user' | 'pass' | 'token' | 'authenticator' | 'tls'
>;

/** Where TLS is used, for probeNatsTls. */
export interface NatsTlsTarget {
  host: string;
  port: number;
  options: LoadedTls;
}

/** A secret given as its text or as a file's path (`nkey`, `creds`). */
function secretText(value: string, key: string, isText: (v: string) => boolean): string {
  if (isText(value)) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? toError(err).message;
    throw new EvpubError(ErrorCode.CONFIG_INVALID, `${key}: cannot read the file (${reason})`, {
      context: { key },
    });
  }
}

export function natsTarget(
  nm: NatsModule,
  url: string,
  settings: NatsTargetSettings,
  where: { path: string; tlsPath: string; endpoint: string; logger?: Logger },
): { target: NatsConnectTarget; tls: NatsTlsTarget | undefined } {
  const u = new URL(url);
  const servers = `${u.hostname || 'localhost'}:${u.port || NATS_DEFAULT_PORT}`;
  const target: NatsConnectTarget = { servers };
  const user = u.username ? decodeURIComponent(u.username) : settings.username;
  const pass = u.password ? decodeURIComponent(u.password) : settings.password;
  // `nats://TOKEN@host` is token authentication.
  if (user !== undefined && pass === undefined) target.token = user;
  else if (user !== undefined) Object.assign(target, { user, pass });
  if (settings.token !== undefined) target.token = settings.token;
  if (settings.nkey !== undefined) {
    const key = `${where.path}.nkey`;
    const seed = secretText(settings.nkey, key, (v) => /^\s*SU[A-Z2-7]+\s*$/.test(v)).trim();
    try {
      nm.nkeys.fromSeed(new TextEncoder().encode(seed));
    } catch {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `${key}: not an NKey user seed (one starts with SU)`, {
        context: { key },
      });
    }
    target.authenticator = nm.nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  if (settings.creds !== undefined) {
    const key = `${where.path}.creds`;
    const creds = secretText(settings.creds, key, (v) => v.includes('-----BEGIN'));
    if (!creds.includes('NATS USER JWT') || !creds.includes('USER NKEY SEED')) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${key}: not a .creds file (it holds a NATS USER JWT and a USER NKEY SEED block)`,
        { context: { key } },
      );
    }
    target.authenticator = nm.credsAuthenticator(new TextEncoder().encode(creds));
  }
  let tls: NatsTlsTarget | undefined;
  if (u.protocol === 'tls:' || settings.tls !== undefined) {
    // nats.js hands these to tls.connect (its own type lists fewer of them); the PEM is text.
    const options = loadTls(settings.tls ?? {}, where.tlsPath, {
      endpoint: where.endpoint,
      logger: where.logger,
    });
    target.tls = options as ConnectionOptions['tls'];
    tls = {
      host: u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost',
      port: Number(u.port || NATS_DEFAULT_PORT),
      options,
    };
  }
  return { target, tls };
}

/** True for nats.js's refusal of the credentials. */
export function isNatsAuthError(err: unknown): boolean {
  const e = toError(err);
  return e.name === 'AuthorizationError' || /authorization violation/i.test(e.message);
}
