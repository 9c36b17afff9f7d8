/**
 * The injected logger. Library code never writes to the console: it receives a `Logger`
 * (pino's interface) and makes a child per component, e.g.
 * `logger.child({ component: 'pubsub', adapter: 'mqtt' })`.
 *
 * The default logger is pino on stderr at the level in `EVPUB_LOG_LEVEL` (default `warn`);
 * the CLI's `start` logs to stdout (`destination: 1`).
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(options: { level?: string; name?: string; destination?: 1 | 2 } = {}): Logger {
  return pino(
    {
      name: options.name ?? 'evpub',
      level: options.level ?? process.env.EVPUB_LOG_LEVEL ?? 'warn',
      redact: { paths: ['password', '*.password', 'url', '*.url', 'secret', '*.secret'], censor: '***' },
    },
    pino.destination(options.destination ?? 2),
  );
}

let fallback: Logger | undefined;

/** The process-wide default logger, made on first use. */
export function defaultLogger(): Logger {
  fallback ??= createLogger();
  return fallback;
}
