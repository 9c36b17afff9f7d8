/**
 * Prometheus metrics of one app (`GET /metrics`). A stand-in until the metrics work lands: a
 * prom-client Registry per app (no global registry) with prom-client's default process metrics.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { App } from '../app/app';

export interface Metrics {
  /** The Content-Type of `text()` (Prometheus text format). */
  contentType: string;
  /** Every metric, in Prometheus text format. */
  text(): Promise<string>;
  /** Stops collecting; the registry is emptied. */
  close(): void;
}

export function createMetrics(_app: App): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    contentType: registry.contentType,
    text: () => registry.metrics(),
    close: () => registry.clear(),
  };
}
