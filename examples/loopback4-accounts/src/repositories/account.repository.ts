/**
 * The accounts repository: LoopBack's CRUD over PostgreSQL, each write publishing its change
 * event through the outbox (evpub's EventPublishingRepositoryMixin, `outbox` mode): the event
 * row is written in the write's own transaction, so a committed change is never left
 * unpublished (even if the process dies right after the commit) and a rolled-back one is never
 * published. The evpub model is the LoopBack model's name, `Account`.
 */
import { inject } from '@loopback/core';
import { DefaultTransactionalRepository } from '@loopback/repository';
import { EventPublishingRepositoryMixin } from 'evpub/loopback';
import { ACCOUNTS_DB, AccountsDbDataSource } from '../datasources/accounts-db.datasource';
import { Account } from '../models/account.model';

export class AccountRepository extends EventPublishingRepositoryMixin(DefaultTransactionalRepository, {
  mode: 'outbox',
})<Account, number, object> {
  constructor(@inject(ACCOUNTS_DB) dataSource: AccountsDbDataSource) {
    super(Account, dataSource);
  }
}
