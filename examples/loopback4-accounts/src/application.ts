/**
 * The accounts application: LoopBack 4 REST CRUD over PostgreSQL, with evpub publishing every
 * change of an account to MQTT.
 */
import { type ApplicationConfig } from '@loopback/core';
import { RepositoryMixin } from '@loopback/repository';
import { RestApplication } from '@loopback/rest';
import type { AccountsConfig } from './config';
import { AccountController } from './controllers/account.controller';
import { ACCOUNTS_DB_CONFIG, AccountsDbDataSource } from './datasources/accounts-db.datasource';
import { Account } from './models/account.model';
import { AccountRepository } from './repositories/account.repository';

export class AccountsApplication extends RepositoryMixin(RestApplication) {
  constructor(
    readonly settings: AccountsConfig,
    options: ApplicationConfig = {},
  ) {
    super({
      ...options,
      rest: { host: settings.host, port: settings.port },
      // main() handles SIGTERM/SIGINT itself: LoopBack's default re-raises the signal after
      // stopping, so the process would not exit 0.
      shutdown: { signals: [] },
    });
    Account.definition.settings.postgresql = { schema: 'public', table: settings.table };

    this.bind(ACCOUNTS_DB_CONFIG).to({ url: settings.databaseUrl });
    this.dataSource(AccountsDbDataSource);
    this.repository(AccountRepository);
    this.controller(AccountController);
  }
}
