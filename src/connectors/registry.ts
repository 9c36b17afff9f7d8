/**
 * Connector registry: which module serves a datasource's `connector` setting.
 * PLACEHOLDER: the signatures are fixed; the implementation is being written.
 */
import { ErrorCode, EvpubError } from '../errors';
import type { ConnectorModule, DataSourceLike, EventConnector } from './contract';

export type ConnectorLoader = ConnectorModule | (() => Promise<ConnectorModule>);

export class ConnectorRegistry {
  private readonly byName = new Map<string, ConnectorLoader>();

  /** Registers a built-in connector; a second registration of one name is an error. */
  register(name: string, loader: ConnectorLoader): this {
    if (this.byName.has(name)) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `connector "${name}" is already registered`);
    }
    this.byName.set(name, loader);
    return this;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /**
   * The module for `name`: a registered built-in, else an npm module resolved from the
   * application's directory (`cwd`). `settingPath` (e.g. `datasources.db.connector`) is named
   * in the CONNECTOR_NOT_FOUND error, with the package to install.
   */
  async resolve(name: string, _settingPath: string, _cwd = process.cwd()): Promise<ConnectorModule> {
    const loader = this.byName.get(name);
    if (!loader) throw new EvpubError(ErrorCode.CONNECTOR_NOT_FOUND, `unknown connector "${name}"`);
    return typeof loader === 'function' ? loader() : loader;
  }
}

/**
 * Runs the module's `initialize(dataSource, cb)` and returns the datasource's connector as an
 * EventConnector, wrapping a seed-style `DataAccessObject` connector when that is what it set.
 */
export async function initializeConnector(
  _module: ConnectorModule,
  _dataSource: DataSourceLike,
  _modelNames: string[],
): Promise<EventConnector> {
  return Promise.reject(new EvpubError(ErrorCode.CONNECTOR_NOT_FOUND, 'not implemented yet'));
}
