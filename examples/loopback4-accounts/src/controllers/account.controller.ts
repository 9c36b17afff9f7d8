/**
 * The REST API: POST/GET/PATCH/PUT/DELETE /accounts. Every write goes through the repository,
 * which publishes it (see the repository).
 */
import { inject } from '@loopback/core';
import { type Filter } from '@loopback/repository';
import { del, get, getModelSchemaRef, param, patch, post, put, requestBody } from '@loopback/rest';
import { Account } from '../models/account.model';
import { AccountRepository } from '../repositories/account.repository';

const ACCOUNT = { 'application/json': { schema: getModelSchemaRef(Account) } };

export class AccountController {
  constructor(@inject('repositories.AccountRepository') private readonly accounts: AccountRepository) {}

  @post('/accounts', { responses: { '200': { description: 'The account created', content: ACCOUNT } } })
  async create(
    @requestBody({
      content: {
        'application/json': { schema: getModelSchemaRef(Account, { title: 'NewAccount', exclude: ['id'] }) },
      },
    })
    account: Omit<Account, 'id'>,
  ): Promise<Account> {
    return this.accounts.create(account);
  }

  @get('/accounts', {
    responses: {
      '200': {
        description: 'Accounts',
        content: { 'application/json': { schema: { type: 'array', items: getModelSchemaRef(Account) } } },
      },
    },
  })
  async find(@param.filter(Account) filter?: Filter<Account>): Promise<Account[]> {
    return this.accounts.find(filter);
  }

  @get('/accounts/{id}', { responses: { '200': { description: 'The account', content: ACCOUNT } } })
  async findById(@param.path.number('id') id: number): Promise<Account> {
    return this.accounts.findById(id);
  }

  @patch('/accounts/{id}', { responses: { '204': { description: 'Updated' } } })
  async updateById(
    @param.path.number('id') id: number,
    @requestBody({
      content: {
        'application/json': { schema: getModelSchemaRef(Account, { partial: true, exclude: ['id'] }) },
      },
    })
    changes: Partial<Account>,
  ): Promise<void> {
    await this.accounts.updateById(id, changes);
  }

  @put('/accounts/{id}', { responses: { '204': { description: 'Replaced' } } })
  async replaceById(
    @param.path.number('id') id: number,
    @requestBody({
      content: { 'application/json': { schema: getModelSchemaRef(Account, { exclude: ['id'] }) } },
    })
    account: Omit<Account, 'id'>,
  ): Promise<void> {
    await this.accounts.replaceById(id, account);
  }

  @del('/accounts/{id}', { responses: { '204': { description: 'Deleted' } } })
  async deleteById(@param.path.number('id') id: number): Promise<void> {
    await this.accounts.deleteById(id);
  }
}
