/**
 * The LoopBack `initialize(dataSource, callback?)` entry point shared by the built-in event
 * connectors. `make(dataSource)` builds the connector (validating its settings); the result is
 * set as `dataSource.connector`. A construction error is reported, never thrown: through the
 * callback on the next tick when one is given, otherwise as the returned promise's rejection.
 *
 * Called by loopback-datasource-juggler (LoopBack 3's `loopback`, LoopBack 4's
 * `@loopback/repository`) with a juggler DataSource, recognised by its shape, it sets a
 * JugglerConnector instead: the seed's `Model.start(emitter, cb)` / `Model.stop(cb)` over
 * connectors made by `make` (juggler-dao.ts).
 */
import type { ConnectorModule, DataSourceLike, EventConnector } from '../contract';
import { initializeForJuggler, isJugglerDataSource } from './juggler-dao';

export function connectorInitializer(
  make: (dataSource: DataSourceLike) => EventConnector,
): ConnectorModule['initialize'] {
  // Two declared parameters: the registry reads `initialize.length` to tell callback style.
  return (dataSource, callback) => {
    if (isJugglerDataSource(dataSource)) return initializeForJuggler(dataSource, make, callback);
    let error: Error | null = null;
    try {
      dataSource.connector = make(dataSource);
    } catch (err) {
      error = err as Error;
    }
    if (callback) {
      process.nextTick(() => callback(error));
      return;
    }
    return error ? Promise.reject(error) : Promise.resolve();
  };
}
