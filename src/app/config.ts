/**
 * Loading and validating evpub's configuration (docs/configuration.md describes the format).
 *
 * - `validateConfig(input)` checks a configuration object against the closed schema
 *   (schema.ts), then what a schema cannot say: a model's datasource and broker exist, broker
 *   URLs have an adapter, topic templates use known placeholders, connectors are built in or
 *   installed. Every problem is collected; one CONFIG_INVALID error lists them all, each naming
 *   its path and what is allowed. Nothing connects. The result has the defaults applied and is
 *   deep-frozen.
 * - `loadConfig({ file, dir, env })` reads `evpub.config.json|yaml|yml`, or LoopBack's layout
 *   (`datasources.json` + `model-config.json`, with `evpub.json` or `config.json`'s `evpub` key
 *   for brokers, checkpoints and publisher), substitutes `${VAR}` / `${VAR:-default}` /
 *   `${file:/run/secrets/x}` in string values, and validates.
 * - Secrets never appear in messages: values are not echoed, URLs go through `redact()`.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import addFormats from 'ajv-formats';
import YAML from 'yaml';
import { ConnectorRegistry, builtinConnectors } from '../connectors/registry';
import { parseClusterConfig } from '../cluster/config';
import { ErrorCode, EvpubError, isEvpubError, redact, toError } from '../errors';
import { AdapterRegistry, builtinAdapters } from '../pubsub/registry';
import { compileTopic } from '../pipeline/topics';
import { assertTopic } from '../pubsub/topics';
import type { EvpubConfig } from './config-types';
import type { HttpConfig } from './config-types';
import { DEFAULT_CHECKPOINT_PATH, DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT, configSchema } from './schema';
import { isLoopback } from '../util/loopback';
import { nearest } from '../util/nearest';
import { parseTls } from '../util/tls';
import { redactValue } from '../util/redact';

export interface ValidateOptions {
  /** The application's directory, where npm connectors are resolved (default: process.cwd()). */
  cwd?: string;
  connectors?: ConnectorRegistry;
  adapters?: AdapterRegistry;
  /** Where the configuration came from, for the error message (`evpub.config.yaml`). */
  source?: string;
  /** Maps a path in evpub's shape to where the user wrote it (LoopBack layout). */
  describePath?: (path: string) => string;
  /** Where EVPUB_HTTP_PORT and EVPUB_HTTP_TOKEN are read (default: process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * The checkpoint store is an object the application gave (`checkpoints` shows `memory`):
   * whether it can serve `cluster` is checked at start, by its `fencing`.
   */
  storeObject?: boolean;
}

export interface Problem {
  path: string;
  message: string;
}

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Errors

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Dotted path from segments; a segment with a dot or a space is quoted. */
function joinPath(segments: readonly (string | number)[]): string {
  return segments
    .map((s, i) => {
      const text = String(s);
      if (/^[\w$-]+$/.test(text)) return i === 0 ? text : `.${text}`;
      return `[${JSON.stringify(text)}]`;
    })
    .join('');
}

function fromPointer(pointer: string): (string | number)[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function problemsError(problems: Problem[], options: ValidateOptions): EvpubError {
  const describe = options.describePath ?? ((p: string) => p);
  const seen = new Set<string>();
  const lines: string[] = [];
  const sorted = problems.map((p, i) => ({ p, i }));
  sorted.sort((a, b) => (a.p.path < b.p.path ? -1 : a.p.path > b.p.path ? 1 : a.i - b.i));
  for (const { p } of sorted) {
    const line = `${describe(p.path || 'config')}: ${p.message}`;
    if (!seen.has(line)) lines.push(line);
    seen.add(line);
  }
  const where = options.source ? ` in ${options.source}` : '';
  const message =
    lines.length === 1
      ? `invalid evpub configuration${where}: ${lines[0]}`
      : `invalid evpub configuration${where} (${lines.length} problems):\n${lines.map((l) => `  - ${l}`).join('\n')}`;
  return new EvpubError(ErrorCode.CONFIG_INVALID, message, {
    context: { problems: problems.map((p) => ({ ...p, path: describe(p.path || 'config') })) },
  });
}

function didYouMean(word: string, allowed: readonly string[]): string {
  const near = nearest(word, allowed);
  return near !== undefined ? ` (did you mean "${near}"?)` : '';
}

const URL_EXAMPLES: Record<string, string> = {
  brokers: 'mqtt://localhost:1883',
  redis: 'redis://localhost:6379',
  postgres: 'postgres://user@localhost:5432/db',
};

function urlExample(segments: readonly (string | number)[], data: unknown): string {
  if (segments[0] === 'checkpoints') {
    const store = isObject(data) && isObject(data.checkpoints) ? data.checkpoints.store : undefined;
    return URL_EXAMPLES[String(store)] ?? URL_EXAMPLES.redis!;
  }
  return URL_EXAMPLES.brokers!;
}

const REQUIRED_HINTS: Record<string, string> = {
  url: 'give the URL',
  connector: 'name a built-in connector or an npm connector module',
  dataSource: 'name the datasource this model reads from',
  datasources: 'add `datasources:`, e.g. { db: { connector: memory } }',
  models: 'add `models:`, e.g. { accounts: { dataSource: db } }',
  store: 'one of file, redis, postgres, memory',
};

/** One readable line per ajv error, naming the path and what is allowed; values never echoed. */
function fromAjv(err: ErrorObject, data: unknown): Problem {
  const segments = fromPointer(err.instancePath);
  const at = joinPath(segments);
  const params = err.params as Record<string, unknown>;
  const parent = err.parentSchema as { properties?: Record<string, unknown> } | undefined;
  switch (err.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const allowed = Object.keys(parent?.properties ?? {});
      return {
        path: at,
        message: `unknown key "${key}"${didYouMean(key, allowed)}; allowed: ${allowed.join(', ')}`,
      };
    }
    case 'required': {
      const key = String(params.missingProperty);
      const full = joinPath([...segments, key]);
      let hint = REQUIRED_HINTS[key] ?? 'required';
      if (key === 'url') hint = `a URL like ${urlExample(segments, data)} is required`;
      return { path: full, message: `missing; ${hint}` };
    }
    case 'enum':
      return {
        path: at,
        message: `must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}`,
      };
    case 'discriminator':
      return {
        path: joinPath([...segments, 'store']),
        message:
          params.error === 'tag'
            ? 'missing; must be one of file, redis, postgres, memory'
            : 'must be one of file, redis, postgres, memory',
      };
    case 'format':
      return { path: at, message: `must be a URL like ${urlExample(segments, data)}` };
    case 'type': {
      const type = String(params.type);
      const article = /^[aeiou]/.test(type) ? 'an' : 'a';
      return { path: at, message: `must be ${article} ${type}` };
    }
    case 'minLength':
    case 'minItems':
      return { path: at, message: 'must not be empty' };
    case 'minimum':
      return { path: at, message: `must be at least ${String(params.limit)}` };
    case 'uniqueItems':
      return { path: at, message: 'must not list an item twice' };
    default:
      return { path: at, message: err.message ?? `fails ${err.keyword}` };
  }
}

// ---------------------------------------------------------------------------------------------
// Schema validation

let compiled: ReturnType<Ajv['compile']> | undefined;

function schemaValidator(): ReturnType<Ajv['compile']> {
  if (!compiled) {
    const ajv = new Ajv({
      allErrors: true,
      verbose: true,
      discriminator: true,
      strict: true,
      coerceTypes: true,
    });
    addFormats(ajv, ['uri']);
    compiled = ajv.compile(configSchema);
  }
  return compiled;
}

// ---------------------------------------------------------------------------------------------
// Semantic checks

const safeUrl = (url: string): string => redact(url);

function checkUrl(
  url: string,
  at: string,
  schemes: readonly string[],
  what: string,
  problems: Problem[],
): URL | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    problems.push({ path: at, message: `${JSON.stringify(safeUrl(url))} is not a valid URL` });
    return undefined;
  }
  const scheme = parsed.protocol.replace(/:$/, '');
  if (!schemes.includes(scheme)) {
    problems.push({
      path: at,
      message: `unknown ${what} URL scheme "${scheme}:"; use one of ${schemes.map((s) => `${s}://`).join(', ')}`,
    });
    return undefined;
  }
  return parsed;
}

function checkBrokerUrl(url: string, at: string, adapters: AdapterRegistry, problems: Problem[]): void {
  if (!checkUrl(url, at, adapters.schemes(), 'broker', problems)) return;
  try {
    adapters.resolve(url);
  } catch (err) {
    problems.push({ path: at, message: toError(err).message });
  }
}

/** Topic templates are checked by the same compiler the publisher uses. */
function checkTopicTemplate(template: string, at: string, problems: Problem[]): void {
  try {
    compileTopic(template, at);
  } catch (err) {
    const message = toError(err).message;
    problems.push({
      path: at,
      message: message.startsWith(`${at}: `) ? message.slice(at.length + 2) : message,
    });
  }
}

const entries = (value: unknown): [string, Json][] =>
  isObject(value) ? (Object.entries(value).filter(([, v]) => isObject(v)) as [string, Json][]) : [];

const str = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;

/** `tls` settings (src/util/tls.ts) at `at`; a problem names the key (`<at>.<key>`). */
function tlsProblem(raw: unknown, at: string, problems: Problem[]): void {
  try {
    parseTls(raw, at);
  } catch (err) {
    const e = toError(err);
    const path = isEvpubError(e) && typeof e.context.setting === 'string' ? e.context.setting : at;
    problems.push({
      path,
      message: e.message.startsWith(`${path}: `) ? e.message.slice(path.length + 2) : e.message,
    });
  }
}

/**
 * What the schema cannot say. Runs even when the schema found problems (every check guards
 * the types it reads), so that one run reports everything.
 */
function semanticChecks(config: Json, options: ValidateOptions, problems: Problem[]): void {
  const adapters = options.adapters ?? builtinAdapters();
  const connectors = options.connectors ?? builtinConnectors();
  const cwd = options.cwd ?? process.cwd();

  for (const [name, broker] of entries(config.brokers)) {
    const url = str(broker.url);
    if (url && !problems.some((p) => p.path === joinPath(['brokers', name, 'url']))) {
      checkBrokerUrl(url, joinPath(['brokers', name, 'url']), adapters, problems);
    }
    if (isObject(broker.options) && broker.options.tls !== undefined) {
      tlsProblem(broker.options.tls, joinPath(['brokers', name, 'options', 'tls']), problems);
    }
  }

  const cp = isObject(config.checkpoints) ? config.checkpoints : {};
  const cpUrl = str(cp.url);
  if (cpUrl && !problems.some((p) => p.path === 'checkpoints.url')) {
    if (cp.store === 'redis') checkUrl(cpUrl, 'checkpoints.url', ['redis', 'rediss'], 'Redis', problems);
    if (cp.store === 'postgres') {
      checkUrl(cpUrl, 'checkpoints.url', ['postgres', 'postgresql'], 'PostgreSQL', problems);
    }
  }
  if ((cp.store === 'postgres' || cp.store === 'redis') && cp.tls !== undefined) {
    tlsProblem(cp.tls, 'checkpoints.tls', problems);
  }

  for (const [name, ds] of entries(config.datasources)) {
    const connector = str(ds.connector);
    if (!connector) continue;
    if (connectors.has(connector) || connectors.locate(connector, cwd)) continue;
    const at = joinPath(['datasources', name, 'connector']);
    problems.push({ path: at, message: connectors.notFound(connector, at).message.slice(at.length + 2) });
  }

  const datasourceNames = isObject(config.datasources) ? Object.keys(config.datasources) : [];
  const brokerNames = isObject(config.brokers) ? Object.keys(config.brokers) : [];
  for (const [name, model] of entries(config.models)) {
    const base = ['models', name];
    const dataSource = str(model.dataSource);
    if (dataSource && !datasourceNames.includes(dataSource)) {
      problems.push({
        path: joinPath([...base, 'dataSource']),
        message:
          `unknown datasource "${dataSource}"${didYouMean(dataSource, datasourceNames)}; ` +
          (datasourceNames.length
            ? `datasources are: ${datasourceNames.join(', ')}`
            : 'no datasources are defined'),
      });
    }
    checkBrokerRef(model.broker, joinPath([...base, 'broker']), brokerNames, adapters, problems);
    const topic = str(model.topic);
    if (topic) checkTopicTemplate(topic, joinPath([...base, 'topic']), problems);
  }

  const publisher = isObject(config.publisher) ? config.publisher : {};
  const deadLetter = isObject(publisher.deadLetter) ? publisher.deadLetter : undefined;
  for (const [at, topic] of [
    ['publisher.deadLetterTopic', str(publisher.deadLetterTopic)],
    ['publisher.deadLetter.topic', str(deadLetter?.topic)],
  ] as const) {
    if (!topic) continue;
    try {
      assertTopic(topic);
    } catch (err) {
      problems.push({ path: at, message: toError(err).message });
    }
  }
  if (str(publisher.deadLetterTopic) && str(deadLetter?.topic)) {
    problems.push({
      path: 'publisher.deadLetterTopic',
      message:
        'give the dead-letter topic once: publisher.deadLetter.topic (deadLetterTopic is its older name)',
    });
  }
  if (deadLetter && deadLetter.broker !== undefined) {
    checkBrokerRef(deadLetter.broker, 'publisher.deadLetter.broker', brokerNames, adapters, problems);
  }
}

/**
 * A broker reference (a model's `broker`, `publisher.deadLetter.broker`): a name in `brokers`
 * or a URL; absent means `default`, which must then exist.
 */
function checkBrokerRef(
  broker: unknown,
  at: string,
  brokerNames: string[],
  adapters: AdapterRegistry,
  problems: Problem[],
): void {
  if (broker === undefined) {
    if (!brokerNames.includes('default')) {
      problems.push({
        path: at,
        message:
          'missing, and there is no broker named "default"; set it to a broker name or URL, or define brokers.default',
      });
    }
  } else if (typeof broker === 'string' && broker.includes('://')) {
    checkBrokerUrl(broker, at, adapters, problems);
  } else if (typeof broker === 'string' && broker !== '' && !brokerNames.includes(broker)) {
    const schemes = adapters
      .schemes()
      .map((s) => `${s}://`)
      .join(', ');
    problems.push({
      path: at,
      message:
        `unknown broker "${broker}"${didYouMean(broker, brokerNames)}; ` +
        (brokerNames.length ? `brokers are: ${brokerNames.join(', ')}` : 'no brokers are defined') +
        `, or give a URL (${schemes})`,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Cloning, defaults, freezing

/** Copies plain objects and arrays; leaves any other value (a function, a class instance) as is. */
function clonePlain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(clonePlain);
  if (
    isObject(value) &&
    (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)
  ) {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) out[k] = clonePlain(v);
    return out;
  }
  return value;
}

/** Freezes plain objects and arrays, recursively. */
export function deepFreeze<T>(value: T): Readonly<T> {
  if (Array.isArray(value) || isObject(value)) {
    for (const v of Object.values(value as object) as unknown[]) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function applyDefaults(
  config: Json,
  env: Readonly<Record<string, string | undefined>>,
  problems: Problem[],
): void {
  config.brokers ??= {};
  if (config.http === undefined || isObject(config.http)) {
    config.http = httpDefaults(isObject(config.http) ? config.http : {}, env, problems);
  }
  config.publisher ??= {};
  config.checkpoints ??= { store: 'file', path: DEFAULT_CHECKPOINT_PATH };
  const cp = config.checkpoints;
  if (isObject(cp) && cp.store === 'file' && cp.path === undefined) cp.path = DEFAULT_CHECKPOINT_PATH;
}

/**
 * `cluster`: parsed by its own closed schema (replaced by the parsed form), and only with a
 * checkpoint store the instances share and that fences saves (docs/cluster.md).
 */
function clusterCheck(config: Json, problems: Problem[], storeObject: boolean): void {
  try {
    config.cluster = { ...parseClusterConfig(config.cluster) };
  } catch (err) {
    if (!isEvpubError(err)) throw err;
    const key = typeof err.context.key === 'string' ? err.context.key : 'cluster';
    const message = err.message.startsWith(`${key}: `) ? err.message.slice(key.length + 2) : err.message;
    problems.push({ path: key, message });
  }
  for (const [name, model] of entries(config.models)) {
    if (model.resetCheckpoint === true) {
      problems.push({
        path: joinPath(['models', name, 'resetCheckpoint']),
        message:
          'not with cluster: every instance taking the feed over would start it again; reset it once ' +
          'with one instance started without cluster, then start the cluster',
      });
    }
  }
  const store = isObject(config.checkpoints) ? config.checkpoints.store : undefined;
  if (!storeObject && (store === 'file' || store === 'memory')) {
    problems.push({
      path: 'checkpoints.store',
      message:
        `"${store}" cannot serve cluster: the instances need one checkpoint store they share and ` +
        "that refuses a stale owner's save; use store: postgres or store: redis",
    });
  }
}

/**
 * Validates a configuration object (see docs/configuration.md), before anything connects.
 * Returns a deep-frozen copy with the defaults applied, or throws one CONFIG_INVALID error
 * listing every problem with its path.
 */
export function validateConfig(input: unknown, options: ValidateOptions = {}): Readonly<EvpubConfig> {
  if (!isObject(input)) {
    throw problemsError(
      [
        {
          path: 'config',
          message:
            'must be an object with datasources and models (and optionally brokers, checkpoints, publisher, http)',
        },
      ],
      options,
    );
  }
  const config = clonePlain(input) as Json;
  const problems: Problem[] = [];
  applyDefaults(config, options.env ?? process.env, problems);
  const validate = schemaValidator();
  if (!validate(config)) {
    for (const err of validate.errors ?? []) problems.push(fromAjv(err, config));
    // A failed oneOf alongside a discriminator error says nothing more.
    if (problems.length > 1) {
      const filtered = problems.filter((p) => !/must match exactly one schema/.test(p.message));
      problems.splice(0, problems.length, ...filtered);
    }
  }
  semanticChecks(config, options, problems);
  if (config.cluster !== undefined) clusterCheck(config, problems, options.storeObject === true);
  if (isObject(config.http) && !problems.some((p) => p.path.startsWith('http'))) {
    problems.push(...httpProblems(config.http));
  }
  if (problems.length > 0) throw problemsError(problems, options);
  return deepFreeze(config as unknown as EvpubConfig);
}

// ---------------------------------------------------------------------------------------------
// The HTTP server's settings

/**
 * `http` with its defaults: host 127.0.0.1, port EVPUB_HTTP_PORT (else 7401), token
 * EVPUB_HTTP_TOKEN when none is configured, enabled. An EVPUB_HTTP_PORT that is not a port is
 * a problem (at `http.port`, naming the variable).
 */
export function httpDefaults(
  http: HttpConfig,
  env: Readonly<Record<string, string | undefined>> = process.env,
  problems: Problem[] = [],
): HttpConfig {
  const out: HttpConfig = { ...http };
  out.host ??= DEFAULT_HTTP_HOST;
  if (out.port === undefined) {
    const fromEnv = env.EVPUB_HTTP_PORT;
    out.port = DEFAULT_HTTP_PORT;
    if (fromEnv !== undefined && fromEnv !== '') {
      const port = /^\d{1,5}$/.test(fromEnv) ? Number(fromEnv) : NaN;
      if (port <= 65535) out.port = port;
      else {
        problems.push({
          path: 'http.port',
          message: 'EVPUB_HTTP_PORT must be a port number from 0 to 65535 (0 picks a free one)',
        });
      }
    }
  }
  if (out.token === undefined && env.EVPUB_HTTP_TOKEN) out.token = env.EVPUB_HTTP_TOKEN;
  out.enabled ??= true;
  return out;
}

export { isLoopback };

/** What the schema cannot say about `http`: no token is only allowed on loopback. */
export function httpProblems(http: HttpConfig): Problem[] {
  if (http.enabled === false || http.token !== undefined || isLoopback(http.host ?? DEFAULT_HTTP_HOST)) {
    return [];
  }
  return [
    {
      path: 'http.token',
      message:
        `is required to serve on ${JSON.stringify(http.host)}, which is not a loopback address: ` +
        'set http.token (or EVPUB_HTTP_TOKEN) to a long random string, or bind http.host to 127.0.0.1',
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Redacted copy for logs and status

/**
 * A copy of `value` safe for logs and the HTTP API: secret-named settings masked at any depth,
 * credentials in URLs removed (the rules: src/util/redact.ts).
 */
export function redactConfig<T>(value: T): T {
  return redactValue(value);
}

// ---------------------------------------------------------------------------------------------
// Environment substitution

const ENV_REF = /\$(\$)?\{([^}]*)\}/g;
const ENV_NAME = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;
const FILE_REF = /^file:(.+)$/s;

export interface SubstituteOptions {
  /** Where relative `${file:...}` paths are resolved (default: the working directory). */
  dir?: string;
}

/** The content of a `${file:...}` reference (trailing newlines trimmed), or a problem naming the file (never its content). */
function readReference(file: string, at: string, options: SubstituteOptions, problems: Problem[]): string {
  const resolved = path.resolve(options.dir ?? process.cwd(), file);
  try {
    return readFileSync(resolved, 'utf8').replace(/(\r?\n)+$/, '');
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'is a directory'
            : (code ?? 'cannot be read');
    problems.push({
      path: at,
      message: `cannot read the file of \${file:${file}} (${resolved}: ${why}); mount the secret there or fix the path`,
    });
    return '';
  }
}

/**
 * Replaces `${VAR}`, `${VAR:-default}` and `${file:/path}` in every string value (not in keys);
 * `$${` writes a literal `${`. `:-` uses the default when the variable is unset or empty. A
 * variable that is unset with no default is a problem naming the variable and the path.
 * `${file:path}` is the content of the file (Docker and Kubernetes secrets), trailing newlines
 * trimmed; a relative path is relative to `options.dir`; a file that cannot be read is a
 * problem naming the path in the config and the file, never what it holds.
 */
export function substituteEnv(
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  problems: Problem[],
  at: (string | number)[] = [],
  options: SubstituteOptions = {},
): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (whole, escaped: string | undefined, inner: string) => {
      if (escaped) return whole.slice(1);
      const file = FILE_REF.exec(inner);
      if (file) return readReference(file[1]!, joinPath(at), options, problems);
      const m = ENV_NAME.exec(inner);
      if (!m) {
        problems.push({
          path: joinPath(at),
          message: `malformed variable reference "\${${inner}}"; write \${NAME}, \${NAME:-default} or \${file:/path}`,
        });
        return whole;
      }
      const [, name, fallback] = m as unknown as [string, string, string | undefined];
      const v = env[name];
      if (v !== undefined && (v !== '' || fallback === undefined)) return v;
      if (fallback !== undefined) return fallback;
      problems.push({
        path: joinPath(at),
        message: `environment variable ${name} is not set (write \${${name}:-default} to give a default)`,
      });
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, problems, [...at, i], options));
  if (isObject(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, substituteEnv(v, env, problems, [...at, k], options)]),
    );
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Files

export const CONFIG_FILES = ['evpub.config.json', 'evpub.config.yaml', 'evpub.config.yml'] as const;

export interface LoadConfigOptions {
  /** A configuration file (`.json`, `.yaml`, `.yml`), or LoopBack's `model-config.json`. */
  file?: string;
  /** A directory to look in (default: process.cwd()); ignored when `file` is given. */
  dir?: string;
  /** Variables for `${VAR}` substitution (default: process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Where npm connectors are resolved (default: the configuration's directory). */
  cwd?: string;
  connectors?: ConnectorRegistry;
  adapters?: AdapterRegistry;
}

export interface LoadedConfig {
  config: Readonly<EvpubConfig>;
  /** The directory the configuration was read from (the application's directory). */
  dir: string;
  /** The files read. */
  files: string[];
  layout: 'file' | 'loopback';
}

interface RawSource {
  raw: Json;
  dir: string;
  files: string[];
  layout: 'file' | 'loopback';
  describePath?: (path: string) => string;
  problems: Problem[];
}

const exists = (file: string): boolean => {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
};

function fail(message: string, cause?: unknown): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, message, cause === undefined ? {} : { cause });
}

function readFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw fail(
      `cannot read configuration file ${file}: ${code === 'ENOENT' ? 'no such file' : toError(err).message}`,
      err,
    );
  }
}

function parseFile(file: string): unknown {
  const text = readFile(file);
  const ext = path.extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') {
    const doc = YAML.parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      const first = doc.errors[0]!;
      const line = first.linePos?.[0];
      throw fail(
        `${file}${line ? `:${line.line}:${line.col}` : ''}: not valid YAML: ${first.message.split('\n')[0]}`,
        first,
      );
    }
    try {
      // An alias before its anchor, or too many aliases (a "billion laughs" file), throws here.
      return doc.toJS() as unknown;
    } catch (err) {
      throw fail(`${file}: not valid YAML: ${toError(err).message}`, err);
    }
  }
  if (ext === '.json') {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw fail(`${file}: not valid JSON: ${toError(err).message}`, err);
    }
  }
  throw fail(`${file}: unknown configuration file type "${ext}"; use .json, .yaml or .yml`);
}

function readObject(file: string): Json {
  const value = parseFile(file);
  if (!isObject(value)) throw fail(`${file}: must hold an object`);
  return value;
}

/** The LoopBack 3 layout: datasources.json + model-config.json (+ evpub.json or config.json's `evpub`). */
function readLoopBack(dir: string): RawSource {
  const files: string[] = [];
  const problems: Problem[] = [];
  const dsFile = path.join(dir, 'datasources.json');
  const mcFile = path.join(dir, 'model-config.json');
  if (!exists(dsFile)) throw fail(`${mcFile} found but ${dsFile} is missing; LoopBack's layout needs both`);
  const datasources = readObject(dsFile);
  const modelConfig = readObject(mcFile);
  files.push(dsFile, mcFile);

  const models: Json = {};
  for (const [name, entry] of Object.entries(modelConfig)) {
    if (name === '_meta') continue;
    if (!isObject(entry)) {
      problems.push({ path: `models.${name}`, message: 'must be an object like { "dataSource": "db" }' });
      continue;
    }
    const allowed = ['dataSource', 'public', 'options'];
    for (const key of Object.keys(entry)) {
      if (!allowed.includes(key)) {
        problems.push({
          path: `models.${name}`,
          message: `unknown key "${key}"${didYouMean(key, allowed)}; allowed: ${allowed.join(', ')}`,
        });
      }
    }
    if (entry.dataSource === null || entry.dataSource === undefined) continue; // not attached
    const options = entry.options ?? {};
    if (!isObject(options)) {
      problems.push({ path: `models.${name}.options`, message: 'must be an object' });
      continue;
    }
    if ('dataSource' in options) {
      problems.push({
        path: `models.${name}.options.dataSource`,
        message: 'belongs next to "options", not in it',
      });
    }
    models[name] = { ...options, dataSource: entry.dataSource };
  }

  let extra: Json = {};
  let extraName = 'evpub.json';
  const evpubFile = path.join(dir, 'evpub.json');
  const lbConfigFile = path.join(dir, 'config.json');
  const lbConfig = exists(lbConfigFile) ? readObject(lbConfigFile) : undefined;
  if (exists(evpubFile)) {
    extra = readObject(evpubFile);
    files.push(evpubFile);
    if (lbConfig && 'evpub' in lbConfig) {
      throw fail(`both ${evpubFile} and the "evpub" key of ${lbConfigFile} are present; keep one`);
    }
  } else if (lbConfig && 'evpub' in lbConfig) {
    extraName = 'config.json: evpub';
    files.push(lbConfigFile);
    if (!isObject(lbConfig.evpub)) throw fail(`${lbConfigFile}: "evpub" must be an object`);
    extra = lbConfig.evpub;
  }
  const raw: Json = { datasources, models };
  for (const [key, value] of Object.entries(extra)) {
    if (key === 'datasources' || key === 'models') {
      problems.push({
        path: key,
        message: `belongs in ${key === 'models' ? 'model-config.json' : 'datasources.json'} in LoopBack's layout`,
      });
    } else {
      raw[key] = value; // unknown keys are reported by the schema, with this file's name
    }
  }

  const describePath = (p: string): string => {
    const m = /^(datasources|models)(?:\.([\w$-]+|\["[^"]*"\]))?(.*)$/.exec(p);
    if (m?.[1] === 'datasources') return `datasources.json${m[2] ? `: ${m[2]}${m[3]}` : ''}`;
    if (m?.[1] === 'models') {
      const [, , model, rest = ''] = m;
      if (!model) return 'model-config.json';
      if (rest === '' || rest === '.dataSource' || rest.startsWith('.options'))
        return `model-config.json: ${model}${rest}`;
      return `model-config.json: ${model}.options${rest}`;
    }
    return p === 'config' ? extraName : `${extraName}${extraName.includes(':') ? '.' : ': '}${p}`;
  };
  return { raw, dir, files, layout: 'loopback', describePath, problems };
}

function readSource(options: LoadConfigOptions): RawSource {
  if (options.file) {
    const file = path.resolve(options.file);
    const base = path.basename(file);
    if (base === 'model-config.json' || base === 'datasources.json') return readLoopBack(path.dirname(file));
    return { raw: readObject(file), dir: path.dirname(file), files: [file], layout: 'file', problems: [] };
  }
  const dir = path.resolve(options.dir ?? process.cwd());
  const found = CONFIG_FILES.map((f) => path.join(dir, f)).filter(exists);
  if (found.length > 1) throw fail(`found ${found.join(' and ')}; keep only one configuration file`);
  if (found[0]) return { raw: readObject(found[0]), dir, files: [found[0]], layout: 'file', problems: [] };
  for (const lbDir of [dir, path.join(dir, 'server')]) {
    if (exists(path.join(lbDir, 'model-config.json'))) return readLoopBack(lbDir);
  }
  throw fail(
    `no evpub configuration in ${dir}: looked for ${CONFIG_FILES.join(', ')} and LoopBack's ` +
      'model-config.json + datasources.json (also in server/); run `evpub init` to create one',
  );
}

/** Relative file-store paths are relative to the configuration's directory. */
function resolveCheckpointPath(raw: Json, dir: string): void {
  raw.checkpoints ??= { store: 'file', path: DEFAULT_CHECKPOINT_PATH };
  const cp = raw.checkpoints;
  if (isObject(cp) && cp.store === 'file') {
    const p = cp.path ?? DEFAULT_CHECKPOINT_PATH;
    if (typeof p === 'string' && p !== '') cp.path = path.resolve(dir, p);
  }
}

/** A file as shown in messages: relative to the working directory when it is below it. */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/** Reads, substitutes and validates the configuration; also says where it came from. */
export function loadConfigFrom(options: LoadConfigOptions = {}): LoadedConfig {
  const source = readSource(options);
  const validateOptions: ValidateOptions = {
    cwd: options.cwd ?? source.dir,
    connectors: options.connectors,
    adapters: options.adapters,
    source: source.files.map(displayPath).join(' + '),
    describePath: source.describePath,
  };
  if (source.problems.length > 0) throw problemsError(source.problems, validateOptions);
  const problems: Problem[] = [];
  const raw = substituteEnv(source.raw, options.env ?? process.env, problems, [], {
    dir: source.dir,
  }) as Json;
  if (problems.length > 0) throw problemsError(problems, validateOptions);
  resolveCheckpointPath(raw, source.dir);
  const config = validateConfig(raw, validateOptions);
  return { config, dir: source.dir, files: source.files, layout: source.layout };
}

/**
 * Loads the configuration: `file`, or the first of evpub.config.json|yaml|yml in `dir`, or
 * LoopBack's layout in `dir` (or `dir/server`). Throws CONFIG_INVALID before anything connects.
 */
export function loadConfig(options: LoadConfigOptions = {}): Readonly<EvpubConfig> {
  return loadConfigFrom(options).config;
}
