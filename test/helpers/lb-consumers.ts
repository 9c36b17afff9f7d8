/** Shared bits of the consumer tests: a LoopBack app with the consumers observer, a log sink. */
import { Application } from '@loopback/core';
import pino from 'pino';
import { CONSUMERS_OBSERVER, EvpubConsumersObserver } from '../../src/loopback';
import type { Logger } from '../../src/logger';

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger whose lines land in `lines` (parsed). */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: 'debug' },
    { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) },
  );
  return { logger, lines };
}

/** An application with the observer added the way a user does it, configured with `options`. */
export function consumerApp(options: { logger: Logger; stopTimeoutMs?: number }): {
  app: Application;
  observer: () => Promise<EvpubConsumersObserver>;
} {
  const app = new Application({ shutdown: { signals: [] } });
  app.lifeCycleObserver(EvpubConsumersObserver);
  app.configure(CONSUMERS_OBSERVER).to(options);
  return { app, observer: () => app.get<EvpubConsumersObserver>(CONSUMERS_OBSERVER) };
}
