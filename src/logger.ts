/**
 * The injected logger. Library code never writes to the console: it receives a `Logger`
 * (pino's interface) and makes a child per component, e.g.
 * `logger.child({ component: 'pubsub', adapter: 'mqtt' })`.
 *
 * The default logger is pino on stderr at the level in `EVPUB_LOG_LEVEL` (default `warn`);
 * the CLI's `start` logs to stdout (`destination: 1`).
 *
 * Redaction (src/util/redact.ts) at any depth, at every level: `redactingLogOptions()` gives
 * pino a `logMethod` hook that passes each call's object (log fields, Errors with their cause
 * chains, as `err`) and message through `redactValue` / `redactText`; `redactChildBindings()`
 * makes `child()` redact its bindings (pino applies a `bindings` formatter to the root's only).
 * The hook runs only for enabled levels: a `debug` call at `info` costs nothing more than
 * before. A pino of the application's own can take the same two.
 */
import pino from 'pino';
import pretty from 'pino-pretty';
import { redactError, redactText, redactValue } from './util/redact';

export type Logger = pino.Logger;

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** File descriptor: 2 (stderr, default) or 1 (stdout). */
  destination?: 1 | 2;
  /**
   * Readable lines (`12:00:01.123 INFO: evpub started {feeds: [...]}`, colours when `colorize`)
   * instead of JSON: for a person at a terminal (`evpub start` on a TTY, or `--pretty`). The
   * same redaction applies.
   */
  pretty?: boolean;
  colorize?: boolean;
  /** Secret values to mask wherever they appear (`collectSecrets(config)`), beside the rules. */
  secrets?: readonly string[];
}

/**
 * The pino options that redact every log line (spread them into `pino({...})`): a `logMethod`
 * hook for the call's arguments, a `bindings` formatter for `child()` bindings, and an `err`
 * serializer that keeps the redacted error as it is.
 */
export function redactingLogOptions(
  secrets?: readonly string[],
): Pick<pino.LoggerOptions, 'hooks' | 'formatters' | 'serializers'> {
  const options = secrets && secrets.length > 0 ? { known: secrets } : {};
  const text = (s: string): string => redactText(s, options.known);
  return {
    hooks: {
      logMethod(args, method) {
        const [first, ...rest] = args as unknown[];
        const out: unknown[] = [];
        if (first instanceof Error) {
          // pino's own shape for `log.error(err)`: the error under `err`, its message as msg.
          const err = redactError(first, options);
          out.push({ err }, typeof rest[0] === 'string' ? text(rest.shift() as string) : err.message);
        } else if (typeof first === 'object' && first !== null) out.push(redactValue(first, options));
        else out.push(typeof first === 'string' ? text(first) : first);
        for (const a of rest) out.push(typeof a === 'string' ? text(a) : redactValue(a, options));
        return method.apply(this, out as Parameters<typeof method>);
      },
    },
    serializers: {
      err: (err: unknown): unknown => (err instanceof Error ? redactError(err, options) : err),
    },
  };
}

/**
 * Makes `logger.child(bindings)` (and its children's) redact `bindings` like log fields; returns
 * `logger`. Children are made from their parent's prototype, so one override covers them all.
 */
export function redactChildBindings<L extends pino.Logger>(logger: L, secrets?: readonly string[]): L {
  const options = secrets && secrets.length > 0 ? { known: secrets } : {};
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with the child's `this` below
  const original = logger.child as unknown as (
    this: unknown,
    bindings: unknown,
    childOptions?: unknown,
  ) => unknown;
  Object.defineProperty(logger, 'child', {
    configurable: true,
    writable: true,
    value: function redactingChild(this: unknown, bindings: unknown, childOptions?: unknown): unknown {
      return original.call(this, redactValue(bindings, options), childOptions);
    },
  });
  return logger;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const fd = options.destination ?? 2;
  const logger = pino(
    {
      name: options.name ?? 'evpub',
      level: options.level ?? process.env.EVPUB_LOG_LEVEL ?? 'warn',
      ...redactingLogOptions(options.secrets),
    },
    options.pretty
      ? pretty({
          destination: fd,
          sync: true,
          colorize: options.colorize ?? false,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname,name',
          singleLine: true,
        })
      : pino.destination(fd),
  );
  return redactChildBindings(logger, options.secrets);
}

let fallback: Logger | undefined;

/** The process-wide default logger, made on first use. */
export function defaultLogger(): Logger {
  fallback ??= createLogger();
  return fallback;
}
