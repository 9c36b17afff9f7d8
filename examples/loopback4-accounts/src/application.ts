/**
 * The accounts application: LoopBack 4 REST CRUD over PostgreSQL, with evpub publishing every
 * change of an account to MQTT (README.md).
 *
 * - REST: AccountController over AccountRepository over the `accountsDb` datasource
 *   (loopback-connector-postgresql).
 * - evpub: EvpubComponent, configured below (broker, checkpoints, the management API);
 *   the `events` datasource (evpub's postgres CDC connector reading the outbox) and the
 *   Account model's `settings.evpub` declare the feed. The repository writes each change's
 *   event into the outbox in the change's transaction; the migration's trigger does the same
 *   for changes made directly in SQL.
 * - A consumer (`@subscribe`) logs every account event it receives from MQTT.
 */
import { type ApplicationConfig } from '@loopback/core';
import { RepositoryMixin } from '@loopback/repository';
import { RestApplication } from '@loopback/rest';
import {
  EvpubBindings,
  EvpubComponent,
  EvpubConsumersObserver,
  type EvpubComponentConfig,
} from 'evpub/loopback';
import type { AccountsConfig } from './config';
import { accountEventsConsumer, accountEventsPattern } from './consumers/account-events.consumer';
import { AccountController } from './controllers/account.controller';
import { ACCOUNTS_DB_CONFIG, AccountsDbDataSource } from './datasources/accounts-db.datasource';
import { EVENTS_CONFIG, EventsDataSource, eventsDataSourceConfig } from './datasources/events.datasource';
import { Account, configureAccount } from './models/account.model';
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
    configureAccount(settings.table, settings.topic);

    // evpub: the broker, the checkpoints (in the same database), the management API.
    this.component(EvpubComponent);
    const evpubConfig: EvpubComponentConfig = {
      brokers: { default: { url: settings.mqttUrl } },
      checkpoints: { store: 'postgres', url: settings.databaseUrl, table: `${settings.table}_checkpoints` },
      http: { host: settings.host, port: settings.managementPort },
      listen: true,
    };
    this.configure(EvpubBindings.COMPONENT).to(evpubConfig);
    this.bind(EVENTS_CONFIG).to(
      eventsDataSourceConfig({ url: settings.databaseUrl, slot: settings.slot, outbox: settings.outbox }),
    );
    this.dataSource(EventsDataSource);
    this.model(Account);

    // The CRUD side.
    this.bind(ACCOUNTS_DB_CONFIG).to({ url: settings.databaseUrl });
    this.dataSource(AccountsDbDataSource);
    this.repository(AccountRepository);
    this.controller(AccountController);

    // The consumer side.
    this.lifeCycleObserver(EvpubConsumersObserver);
    this.service(accountEventsConsumer(accountEventsPattern(settings.topic)));
  }
}
