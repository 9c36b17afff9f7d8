/**
 * The one redaction of evpub: what logs (every level), `status()`, errors, CLI output and HTTP
 * responses pass their values through, so that no password, token or key is ever shown.
 * docs/security.md lists the rules for users; this comment is the reference.
 *
 * - `redactUrl(url)`: the password of a URL of any scheme becomes `***`
 *   (`amqp://guest:***@host`); for schemes where a user part alone is a token (`nats://TOKEN@`,
 *   `tls://`, `ws(s)://`, `http(s)://`) the user part becomes `***`; query and fragment
 *   parameters with a secret name (`?password=`, `?token=`, `?access_token=`, `?api_key=`,
 *   `?sig=`...) keep their name and lose their value. The rest of the URL is left as written
 *   (no normalisation). The placeholder passwords `password` and `pass` of the examples in
 *   messages (`postgres://user:password@host`) are kept. A password written with `/ ? # @`
 *   unencoded is masked up to the last `@` (a path holding an `@` may be masked with it: the
 *   safe side).
 * - `redactText(text)`: every URL in the text as above, `name=value` and `"name": "value"`
 *   pairs whose name is a secret, `Bearer …` tokens and `Authorization` header values, PEM
 *   private keys, NATS NKey seeds and JWTs; and any value in `known` (the secrets of the loaded
 *   configuration, see `collectSecrets`) wherever it appears.
 * - `redactValue(value)`: a copy of any value (config objects, log objects, error contexts) in
 *   which every property with a secret name (`isSecretKey`: password, secret, token, passphrase,
 *   key, apiKey, authorization, credentials, seed, nkey, creds, jwt, ... and names ending in
 *   one of them, at any depth, in arrays too) is `***`, every other string goes through
 *   `redactText`, and Errors become plain objects `{ type, message, stack, code?, ...,
 *   cause }` with their message, stack, own properties and cause chain redacted the same way.
 *   Cycles become `[Circular]`; objects deeper than 32 levels `[Deep]`. Values that need no
 *   change are returned as they are (no copy), so redacting a clean log object costs a walk.
 *
 * Every function is pure: no module state, safe to call on already redacted values (the
 * result is the same).
 */

export const MASK = '***';

/** Names (lower case, without `-` and `_`) whose value is a secret wherever they appear. */
const SECRET_NAMES = new Set([
  'password',
  'passwd',
  'pass',
  'pwd',
  'secret',
  'token',
  'passphrase',
  'key',
  'apikey',
  'accesskey',
  'secretkey',
  'privatekey',
  'accesstoken',
  'refreshtoken',
  'authorization',
  'proxyauthorization',
  'credentials',
  'credential',
  'creds',
  'seed',
  'nkey',
  'jwt',
  'cookie',
  'setcookie',
  'sig',
  'signature', // a string signature (a query parameter); an object `signature: {}` is walked
]);

/** Name endings that make a name secret (`adminPassword`, `clientSecret`, `sslpassword`...). */
const SECRET_SUFFIX =
  /(password|passwd|secret|token|passphrase|apikey|privatekey|accesskey|secretkey|credentials|authorization|jwt)$/;

/** Names whose value is masked only when it is a string (or a list of them): elsewhere a `key`
 * or a `signature` object is configuration (`signature: { header, secret }`) to be walked. */
const STRING_ONLY = new Set(['key', 'signature', 'sig']);

const normalise = (name: string): string => name.toLowerCase().replace(/[-_]/g, '');

/** Every secret name contains one of these: most names are ruled out by this one test. */
const MAYBE_SECRET_NAME = /pass|pwd|secret|token|key|auth|cred|seed|jwt|cookie|sig/i;

/** True for a property, setting, header or parameter name whose value is a secret. */
export function isSecretKey(name: string): boolean {
  if (!MAYBE_SECRET_NAME.test(name)) return false;
  const n = normalise(name);
  return SECRET_NAMES.has(n) || SECRET_SUFFIX.test(n);
}

/** Passwords that are the placeholder of an example (`postgres://user:password@host` in a
 * message saying what a URL looks like): kept, so the example reads right. */
const PLACEHOLDERS = new Set(['password', 'pass', MASK]);

/** Schemes where `scheme://USER@host` (a user part with no password) carries a token. */
const TOKEN_USER_SCHEMES = new Set(['nats', 'tls', 'ws', 'wss', 'http', 'https']);

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;
const PARAM = /([?&#;])([^=&#;?\s]+)=([^&#;\s]*)/g;

function maskParams(rest: string): string {
  return rest.replace(PARAM, (whole, sep: string, name: string) => {
    let decoded = name;
    try {
      decoded = decodeURIComponent(name);
    } catch {
      // keep the name as written
    }
    return isSecretKey(decoded) ? `${sep}${name}=${MASK}` : whole;
  });
}

/**
 * Where the user part of `rest` (a URL after `scheme://`) ends: the index of its `@`, or -1.
 * A password (or token) with `/ ? # @` written unencoded makes the URL parser take part of it
 * for the host, the path or the fragment: up to the last `@` is taken for the user part when
 * what precedes it looks like one (`user:` or a token scheme) and is no query (`?name=`). A
 * path with an `@` may be masked too: over-redacting is the safe side.
 */
function userinfoEnd(rest: string, scheme: string): number {
  const authEnd = rest.search(/[/?#\\]/);
  const authority = authEnd < 0 ? rest : rest.slice(0, authEnd);
  const at = authority.lastIndexOf('@');
  const last = rest.lastIndexOf('@');
  if (last > at) {
    const before = rest.slice(0, last);
    if (!/[?&][^=&]*=/.test(before) && (at >= 0 || before.includes(':') || TOKEN_USER_SCHEMES.has(scheme))) {
      return last;
    }
  }
  return at;
}

/**
 * The URL with its credentials masked (see the module comment). A string that is not a
 * `scheme://` URL is returned as it is.
 */
export function redactUrl(url: string): string {
  const m = SCHEME.exec(url);
  if (!m) return url;
  const prefix = m[0];
  const scheme = m[1]!.toLowerCase();
  const rest = url.slice(prefix.length);
  const at = userinfoEnd(rest, scheme);
  let head = '';
  let tail = rest;
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    const colon = userinfo.indexOf(':');
    if (colon >= 0) {
      const password = userinfo.slice(colon + 1);
      head = `${userinfo.slice(0, colon)}:${PLACEHOLDERS.has(password) ? password : MASK}@`;
    } else if (userinfo !== '' && TOKEN_USER_SCHEMES.has(scheme)) head = `${MASK}@`;
    else head = `${userinfo}@`;
    tail = rest.slice(at + 1);
  }
  return `${prefix}${head}${tail.includes('=') ? maskParams(tail) : tail}`;
}

// ---------------------------------------------------------------------------------------------
// Text

const URL_IN_TEXT = /[a-z][a-z0-9+.-]*:\/\/[^\s"<>]+/gi;
const PAIR =
  /\b([\w.-]*?(?:password|passwd|pwd|secret|token|passphrase|api[_-]?key|access[_-]?key|private[_-]?key))(\s*=\s*)('[^']*'|"[^"]*"|[^\s&,;'")]+)/gi;
const JSON_PAIR = /"([^"\\]{1,64})"(\s*:\s*)"((?:[^"\\]|\\.)*)"/g;
const BEARER = /\b(Bearer)\s+[A-Za-z0-9._~+/-]+=*/g;
const AUTH_HEADER =
  /\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)((?:Basic|Bearer|Digest|Token|Negotiate)\s+(?!\*\*\*)[^"'\r\n,}]+)/gi;
const PEM = /-----BEGIN ([A-Z0-9 ]*(?:PRIVATE KEY|SEED|JWT))-----(?! \*\*\*)[\s\S]*?(?:-----END \1-----|$)/g;
const NKEY_SEED = /\bS[UACNOPX][A-Z2-7]{56}\b/g;
const JWT = /\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]+/g;
/** Quick test: a text with none of these holds nothing the rules above would change. */
const MAYBE = /:\/\/|=|"|bearer|authorization|-----BEGIN|eyJ|\bS[UACNOPX][A-Z2-7]{20}/i;

/** Known secret values shorter than this are not searched for in text (too many false hits). */
const MIN_KNOWN = 6;

function maskKnown(text: string, known: readonly string[] | undefined): string {
  if (!known) return text;
  let out = text;
  for (const secret of known) {
    if (secret.length >= MIN_KNOWN && out.includes(secret)) out = out.split(secret).join(MASK);
  }
  return out;
}

/** The text with every credential it holds masked (see the module comment). */
export function redactText(text: string, known?: readonly string[]): string {
  let out = text;
  if (MAYBE.test(out)) {
    out = out
      .replace(PEM, (_whole, kind: string) => `-----BEGIN ${kind}----- ${MASK}`)
      .replace(URL_IN_TEXT, (url) => redactUrl(url))
      .replace(PAIR, (_whole, name: string, eq: string) => `${name}${eq}${MASK}`)
      // `"key": "..."` in JSON text is an event's key as often as key material: left as written
      .replace(JSON_PAIR, (whole, name: string, colon: string) =>
        isSecretKey(name) && normalise(name) !== 'key' ? `"${name}"${colon}"${MASK}"` : whole,
      )
      .replace(AUTH_HEADER, (_whole, name: string) => `${name}${MASK}`)
      .replace(BEARER, `$1 ${MASK}`)
      .replace(NKEY_SEED, MASK)
      .replace(JWT, MASK);
  }
  return maskKnown(out, known);
}

// ---------------------------------------------------------------------------------------------
// Values

export interface RedactOptions {
  /** Secret values to mask wherever they appear in a string (`collectSecrets(config)`). */
  known?: readonly string[];
}

/** An Error as a plain object, every part redacted (what the logger writes as `err`). */
export interface RedactedError {
  type: string;
  message: string;
  stack?: string;
  cause?: unknown;
  [property: string]: unknown;
}

const MAX_DEPTH = 32;

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Parents under which a `key` is key material (`tls.key`), not an event key or a setting's name. */
const KEY_PARENTS = new Set(['tls', 'ssl', 'sasl', 'auth', 'credentials', 'creds', 'nkey', 'jwt']);

function isSecretValue(name: string, v: unknown, parent: string | undefined): boolean {
  if (!isSecretKey(name)) return false;
  if (v === undefined || v === null || v === '' || v === MASK) return false;
  const n = normalise(name);
  if (!STRING_ONLY.has(n)) return true;
  const text =
    typeof v === 'string' ||
    Buffer.isBuffer(v) ||
    (Array.isArray(v) && v.every((x) => typeof x === 'string'));
  if (!text) return false;
  // `key` elsewhere (an event's key, `context.key` naming a setting) is masked only by the text
  // rules (a PEM private key is masked wherever it is).
  return n !== 'key' || (parent !== undefined && KEY_PARENTS.has(normalise(parent)));
}

class Walker {
  /** The objects being walked (the ancestors): one seen again is a cycle. */
  private readonly seen: object[] = [];
  constructor(private readonly known: readonly string[] | undefined) {}

  value(v: unknown, depth: number, name?: string): unknown {
    if (typeof v === 'string') return redactText(v, this.known);
    if (typeof v !== 'object' || v === null) return v;
    if (depth > MAX_DEPTH) return '[Deep]';
    if (this.seen.includes(v)) return '[Circular]';
    if (v instanceof Error) return this.error(v, depth);
    if (v instanceof URL) return redactUrl(v.href);
    if (v instanceof Date || Buffer.isBuffer(v) || ArrayBuffer.isView(v)) return v;
    this.seen.push(v);
    try {
      if (Array.isArray(v)) return this.array(v, depth, name);
      if (v instanceof Map)
        return this.object(Object.fromEntries(v as Map<string, unknown>), depth, true, name);
      if (v instanceof Set) return this.array([...v], depth);
      const toJSON = (v as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === 'function') return this.value((toJSON as () => unknown).call(v), depth + 1);
      return this.object(v as Record<string, unknown>, depth, !isPlain(v), name);
    } finally {
      this.seen.pop();
    }
  }

  private array(v: readonly unknown[], depth: number, name?: string): unknown[] {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const x = this.value(v[i], depth + 1, name);
      if (x !== v[i]) (out ??= v.slice())[i] = x;
    }
    return out ?? (v as unknown[]);
  }

  private object(
    v: Record<string, unknown>,
    depth: number,
    copy: boolean,
    parent: string | undefined,
  ): Record<string, unknown> {
    let out: Record<string, unknown> | undefined = copy ? {} : undefined;
    for (const name of Object.keys(v)) {
      const x = v[name];
      const y = isSecretValue(name, x, parent) ? MASK : this.value(x, depth + 1, name);
      if (y !== x && !out) {
        out = {};
        for (const k of Object.keys(v)) {
          if (k === name) break;
          out[k] = v[k];
        }
      }
      if (out) out[name] = y;
    }
    return out ?? v;
  }

  error(err: Error, depth: number): RedactedError {
    this.seen.push(err);
    try {
      const out: RedactedError = {
        type: err.name || err.constructor?.name || 'Error',
        message: redactText(String(err.message), this.known),
      };
      if (err.stack) out.stack = redactText(err.stack, this.known);
      for (const name of Object.keys(err)) {
        if (name === 'cause' || name === 'stack' || name === 'message') continue;
        const x = (err as unknown as Record<string, unknown>)[name];
        out[name] = isSecretValue(name, x, undefined) ? MASK : this.value(x, depth + 1, name);
      }
      if (err instanceof AggregateError) out.errors = this.value(err.errors, depth + 1);
      if (err.cause !== undefined) out.cause = this.value(err.cause, depth + 1);
      return out;
    } finally {
      this.seen.pop();
    }
  }
}

/** A copy of `value` with every secret masked (see the module comment); `value` itself is not changed. */
export function redactValue<T>(value: T, options: RedactOptions = {}): T {
  return new Walker(options.known).value(value, 0) as T;
}

/** An Error (with its cause chain) as a plain object with every secret masked. */
export function redactError(err: Error, options: RedactOptions = {}): RedactedError {
  return new Walker(options.known).error(err, 0);
}

// ---------------------------------------------------------------------------------------------
// Known secrets

/**
 * The secret values in a configuration: the values of secret-named settings at any depth,
 * URL passwords (as written and decoded) and the tokens of `nats://TOKEN@` URLs. Given to
 * `redactText` / `redactValue` as `known`, they are masked even where a driver prints them in
 * a shape no rule recognises. Longest first, so that a secret containing another is masked whole.
 */
export function collectSecrets(config: unknown): string[] {
  const found = new Set<string>();
  const add = (s: string): void => {
    if (s.length < MIN_KNOWN || PLACEHOLDERS.has(s)) return;
    found.add(s);
    try {
      const decoded = decodeURIComponent(s);
      if (decoded.length >= MIN_KNOWN) found.add(decoded);
    } catch {
      // not percent-encoded
    }
  };
  const fromUrl = (url: string): void => {
    const m = SCHEME.exec(url);
    if (!m) return;
    const rest = url.slice(m[0].length);
    const at = userinfoEnd(rest, m[1]!.toLowerCase());
    if (at >= 0) {
      const userinfo = rest.slice(0, at);
      const colon = userinfo.indexOf(':');
      if (colon >= 0) add(userinfo.slice(colon + 1));
      else if (TOKEN_USER_SCHEMES.has(m[1]!.toLowerCase())) add(userinfo);
    }
    for (const p of url.matchAll(PARAM)) {
      if (isSecretKey(p[2]!)) add(p[3]!);
    }
  };
  const seen = new Set<object>();
  const walk = (v: unknown, name: string | undefined, depth: number, parent?: string): void => {
    if (depth > MAX_DEPTH) return;
    if (typeof v === 'string') {
      // A `key` that is a file path is not the key itself (its content is never in the config).
      if (name !== undefined && isSecretValue(name, v, parent)) {
        if (normalise(name) !== 'key' || v.includes('\n') || v.includes('-----BEGIN')) add(v);
      } else fromUrl(v);
      return;
    }
    if (typeof v !== 'object' || v === null || seen.has(v)) return;
    seen.add(v);
    if (Array.isArray(v)) {
      for (const x of v) walk(x, name, depth + 1, parent);
      return;
    }
    for (const [k, x] of Object.entries(v)) {
      if (isSecretKey(k) && !STRING_ONLY.has(normalise(k)) && typeof x === 'object' && x !== null) {
        // `credentials: { user, pass }`: every string inside is a secret
        for (const s of Object.values(x as Record<string, unknown>)) if (typeof s === 'string') add(s);
      }
      walk(x, k, depth + 1, name);
    }
  };
  walk(config, undefined, 0);
  return [...found].sort((a, b) => b.length - a.length);
}
