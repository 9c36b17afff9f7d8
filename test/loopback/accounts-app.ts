/**
 * A small LoopBack 4 REST application for the repository mixin's tests: an Account model over
 * loopback-connector-postgresql (table given per test), its repository with
 * EventPublishingRepositoryMixin, and a CRUD controller on /accounts.
 *
 * vitest does not emit decorator metadata: every property has its type and every injected
 * parameter its key.
 */
import { inject } from '@loopback/core';
import { RepositoryMixin } from '@loopback/repository';
import { DefaultTransactionalRepository, Entity, juggler, model } from '@loopback/repository';
import { del, param, patch, post, put, requestBody, RestApplication } from '@loopback/rest';
import type { App } from '../../src/app/app';
import { EventPublishingRepositoryMixin, type EventPublishingOptions } from '../../src/loopback/index';
import { EvpubBindings } from '../../src/loopback/keys';

export interface AccountsAppOptions {
  /** The PostgreSQL table (in `public`). */
  table: string;
  url: string;
  publishing: EventPublishingOptions;
  /** The evpub app bound to EvpubBindings.APP (until the component binds it). */
  evpubApp?: App;
  /** The LoopBack datasource's connector (default `postgresql`). */
  connector?: string;
}

const BODY = { content: { 'application/json': { schema: { type: 'object' as const } } } };

/** The application (not started); its repository is bound as `repositories.AccountRepository`. */
export function accountsApp(options: AccountsAppOptions): RestApplication {
  // Properties in the definition, `declare`d in the class: ES2022 class fields (the tsconfig's
  // target) would be defined after Entity's constructor assigned them, as undefined.
  @model({
    name: 'Account',
    properties: {
      id: { type: 'number', id: true, generated: true },
      name: { type: 'string', required: true },
      balance: { type: 'number' },
    },
    settings: { postgresql: { schema: 'public', table: options.table } },
  })
  class Account extends Entity {
    declare id?: number;
    declare name: string;
    declare balance?: number;
  }

  class AccountRepository extends EventPublishingRepositoryMixin(
    DefaultTransactionalRepository,
    options.publishing,
  )<Account, number, object> {
    constructor(@inject('datasources.db') dataSource: juggler.DataSource) {
      super(Account, dataSource);
    }
  }

  class AccountController {
    constructor(@inject('repositories.AccountRepository') private readonly repo: AccountRepository) {}

    @post('/accounts')
    create(@requestBody(BODY) body: Partial<Account>): Promise<Account> {
      return this.repo.create(body);
    }

    @patch('/accounts/{id}')
    async update(
      @param.path.number('id') id: number,
      @requestBody(BODY) body: Partial<Account>,
    ): Promise<void> {
      await this.repo.updateById(id, body);
    }

    @put('/accounts/{id}')
    async replace(
      @param.path.number('id') id: number,
      @requestBody(BODY) body: Partial<Account>,
    ): Promise<void> {
      await this.repo.replaceById(id, body);
    }

    @del('/accounts/{id}')
    async remove(@param.path.number('id') id: number): Promise<void> {
      await this.repo.deleteById(id);
    }
  }

  class AccountsApplication extends RepositoryMixin(RestApplication) {
    constructor() {
      super({ rest: { port: 0, host: '127.0.0.1' } });
      const connector = options.connector ?? 'postgresql';
      const settings =
        connector === 'memory' ? { name: 'db', connector } : { name: 'db', connector, url: options.url };
      this.dataSource(new juggler.DataSource(settings), 'db');
      this.repository(AccountRepository, 'AccountRepository');
      this.controller(AccountController);
      if (options.evpubApp) this.bind(EvpubBindings.APP).to(options.evpubApp);
    }
  }

  return new AccountsApplication();
}
