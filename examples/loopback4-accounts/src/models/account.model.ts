/**
 * An account: the one model of the example, stored by LoopBack in PostgreSQL and published by
 * evpub. `settings.evpub` makes it an evpub model: its events come from the outbox of the
 * `events` datasource. The application sets the table and the topic from its configuration
 * (`configureAccount`), so a test can give each run its own.
 */
import { Entity, model, property } from '@loopback/repository';

@model({
  name: 'Account',
  settings: {
    strict: true,
    evpub: { dataSource: 'events', topic: 'bank/accounts/{op}/{key}', settings: { outbox: true } },
  },
})
export class Account extends Entity {
  // Explicit `type` everywhere: LoopBack reads them, not TypeScript's emitted metadata.
  @property({ type: 'number', id: true, generated: true })
  id?: number;

  @property({ type: 'string', required: true, jsonSchema: { minLength: 1 } })
  owner!: string;

  @property({ type: 'string', required: true, jsonSchema: { format: 'email' } })
  email!: string;

  /** In cents, an integer (the same JSON number through the REST path and the SQL path). */
  @property({
    type: 'number',
    required: true,
    postgresql: { dataType: 'integer' },
    jsonSchema: { type: 'integer' },
  })
  balance!: number;

  constructor(data?: Partial<Account>) {
    super(data);
  }
}

/** Where the accounts are stored, and the topic template of their events. */
export function configureAccount(table: string, topic: string): void {
  const settings = Account.definition.settings;
  settings.postgresql = { schema: 'public', table };
  settings.evpub = { ...(settings.evpub as object), topic };
}
