/**
 * The injected logger. Library code never writes to the console: it receives a `Logger`
 * (pino's interface) and makes a child per component, e.g.
 * `logger.child({ component: 'pubsub', adapter: 'mqtt' })`.
 *
 * The default logger is pino on stderr at the level in `EVPUB_LOG_LEVEL` (default `warn`);
 * the CLI's `start` logs to stdout (`destination: 1`).
 */
import pino from 'pino';
import pretty from 'pino-pretty';

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
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const fd = options.destination ?? 2;
  return pino(
    {
      name: options.name ?? 'evpub',
      level: options.level ?? process.env.EVPUB_LOG_LEVEL ?? 'warn',
      redact: { paths: ['password', '*.password', 'url', '*.url', 'secret', '*.secret'], censor: '***' },
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
}

let fallback: Logger | undefined;

/** The process-wide default logger, made on first use. */
export function defaultLogger(): Logger {
  fallback ??= createLogger();
  return fallback;
}
