/**
 * The accounts repository: LoopBack's CRUD over PostgreSQL.
 */
import { inject } from '@loopback/core';
import { DefaultTransactionalRepository } from '@loopback/repository';
import { ACCOUNTS_DB, AccountsDbDataSource } from '../datasources/accounts-db.datasource';
import { Account } from '../models/account.model';

export class AccountRepository extends DefaultTransactionalRepository<Account, typeof Account.prototype.id> {
  constructor(@inject(ACCOUNTS_DB) dataSource: AccountsDbDataSource) {
    super(Account, dataSource);
  }
}
