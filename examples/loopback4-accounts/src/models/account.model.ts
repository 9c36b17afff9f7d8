/**
 * An account: the one model of the example. Its evpub settings (topic, envelope) are set by the
 * application from its configuration (`configureAccount`), so tests can give each run its own
 * table and topic.
 */
import { Entity, model, property } from '@loopback/repository';

@model({ name: 'Account', settings: { strict: true } })
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
