/**
 * What a configuration still needs before capture can work (`evpub check`): each datasource's
 * connector asked through its `check()` (contract point 8: wal_level, grants, tables, ...),
 * and each broker connected to once. Nothing is created or started; every finding comes at once,
 * with the command that fixes it.
 */
import type { SourceCheck } from '../connectors/contract';
import { initializeConnector, type ConnectorRegistry } from '../connectors/registry';
import { redact, toError } from '../errors';
import type { Logger } from '../logger';
import { createClient, type AdapterRegistry } from '../pubsub/registry';
import type { EvpubConfig } from './config-types';

export interface CheckReport {
  /** No finding of level `error`. */
  ok: boolean;
  /** Per datasource, its connector's findings. */
  datasources: Record<string, SourceCheck[]>;
  /** Per broker (name, or redacted URL), whether it accepted a connection. */
  brokers: Record<string, SourceCheck>;
}

export interface CheckDeps {
  registry: ConnectorRegistry;
  adapters: AdapterRegistry;
  cwd: string;
  logger: Logger;
  /** Milliseconds a broker may take to accept the connection (default 5000). */
  connectTimeout?: number;
}

export async function checkConfig(config: Readonly<EvpubConfig>, deps: CheckDeps): Promise<CheckReport> {
  const report: CheckReport = { ok: true, datasources: {}, brokers: {} };
  const byDataSource = new Map<string, string[]>();
  for (const [name, model] of Object.entries(config.models)) {
    byDataSource.set(model.dataSource, [...(byDataSource.get(model.dataSource) ?? []), name]);
  }
  const sources = [...byDataSource].map(async ([ds, modelNames]) => {
    report.datasources[ds] = await checkDataSource(config, deps, ds, modelNames);
  });
  await Promise.all([...sources, checkBrokers(config, deps, report)]);
  report.ok =
    Object.values(report.datasources).every((list) => list.every((c) => c.level !== 'error')) &&
    Object.values(report.brokers).every((c) => c.level !== 'error');
  return report;
}

async function checkDataSource(
  config: Readonly<EvpubConfig>,
  deps: CheckDeps,
  ds: string,
  modelNames: string[],
): Promise<SourceCheck[]> {
  const settings = config.datasources[ds]!;
  try {
    const module = await deps.registry.resolve(settings.connector, `datasources.${ds}.connector`, deps.cwd);
    const logger = deps.logger.child({ component: 'check', datasource: ds });
    const connector = await initializeConnector(module, { name: ds, settings, logger }, modelNames);
    if (!connector.check) {
      return [
        {
          what: `connector ${connector.name}`,
          level: 'ok',
          detail: 'has no checks of its own: its settings are valid; the source is first reached at start',
        },
      ];
    }
    return await connector.check(
      modelNames.map((name) => ({ name, settings: config.models[name]!.settings ?? {} })),
    );
  } catch (err) {
    return [{ what: `datasource ${ds}`, level: 'error', detail: toError(err).message }];
  }
}

async function checkBrokers(
  config: Readonly<EvpubConfig>,
  deps: CheckDeps,
  report: CheckReport,
): Promise<void> {
  const refs = new Map<string, { url: string; options: Record<string, unknown> }>();
  for (const model of Object.values(config.models)) {
    const ref = model.broker ?? 'default';
    const named = config.brokers[ref];
    refs.set(
      named ? ref : redact(ref),
      named ? { url: named.url, options: named.options ?? {} } : { url: ref, options: {} },
    );
  }
  await Promise.all(
    [...refs].map(async ([name, { url, options }]) => {
      const what = `broker ${name} (${redact(url)})`;
      const client = createClient(
        url,
        { ...options, logger: deps.logger, connectTimeout: deps.connectTimeout ?? 5000 },
        deps.adapters,
      );
      try {
        await client.connect();
        report.brokers[name] = { what, level: 'ok', detail: 'accepted a connection' };
      } catch (err) {
        report.brokers[name] = {
          what,
          level: 'error',
          detail: toError(err).message,
          fix: `check brokers.${name}.url and that the broker listens there`,
        };
      } finally {
        await client.end().catch(() => undefined);
      }
    }),
  );
}
