/**
 * The application's PostgreSQL datasource (loopback-connector-postgresql): where the accounts
 * are read and written, in transactions when the repository publishes through the outbox.
 */
import { inject, lifeCycleObserver, type LifeCycleObserver } from '@loopback/core';
import { juggler } from '@loopback/repository';

export const ACCOUNTS_DB = 'datasources.accountsDb';
export const ACCOUNTS_DB_CONFIG = 'datasources.config.accountsDb';

// Stopped with the application (LoopBack stops 'datasource' observers last), so the pool closes.
@lifeCycleObserver('datasource')
export class AccountsDbDataSource extends juggler.DataSource implements LifeCycleObserver {
  static dataSourceName = 'accountsDb';

  constructor(@inject(ACCOUNTS_DB_CONFIG) config: { url: string }) {
    super({ name: 'accountsDb', connector: 'postgresql', url: config.url, max: 5 });
  }
}
