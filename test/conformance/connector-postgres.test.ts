/**
 * The event connector conformance suite for PostgreSQL (the shared server, own tables and slots).
 *
 * A slot serves one reader at a time and the server has few, so each model gets its table, its
 * publication and two slots made before any change (the suite runs up to two connectors on one
 * model); a connector takes the model's first free slot when it starts. The previous model's
 * slots are dropped when the next model is made.
 */
import type { ConnectorHealth, EventConnector, StartRequest } from '../../src/connectors/contract';
import type { Position } from '../../src/events/change-event';
import { PgFixture, sql } from '../helpers/postgres';
import { requireService } from '../helpers/services';
import { connectorConformance } from './connector.suite';

const models = new Map<string, { fixture: PgFixture; slots: string[] }>();
let previous: PgFixture | undefined;

/** Starts a real connector on the first slot of the model that no other connector holds. */
class SlotPicker implements EventConnector {
  readonly name = 'postgres';
  readonly resumable = true;
  private real: EventConnector | undefined;
  private state: ConnectorHealth['state'] = 'idle';

  async start(request: StartRequest): Promise<void> {
    const model = models.get(request.models[0]!.name)!;
    const slots = await sql<{ slot_name: string }>(
      'SELECT slot_name FROM pg_replication_slots WHERE NOT active AND slot_name = ANY($1) ORDER BY slot_name',
      [model.slots],
    );
    this.real = await model.fixture.connector({ slot: slots[0]!.slot_name });
    await this.real.start(request);
  }

  async stop(): Promise<void> {
    await this.real?.stop();
    this.state = 'stopped';
  }

  commit(model: string, position: Position): Promise<void> {
    return this.real?.commit?.(model, position) ?? Promise.resolve();
  }

  health(): ConnectorHealth {
    return this.real?.health() ?? { state: this.state };
  }
}

connectorConformance({
  name: 'postgres',
  setup: async () => {
    await requireService('postgres');
  },
  teardown: async () => {
    await previous?.drop();
  },
  connector: () => Promise.resolve(new SlotPicker()),
  model: async () => {
    await previous?.drop();
    const fixture = new PgFixture();
    previous = fixture;
    const table = await fixture.table('id text PRIMARY KEY, value int');
    await sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`);
    models.set(table, { fixture, slots: await fixture.slots(2) });
    return {
      name: table,
      settings: {},
      create: async (key, value) => void (await sql(`INSERT INTO ${table} VALUES ($1, $2)`, [key, value])),
      update: async (key, value) =>
        void (await sql(`UPDATE ${table} SET value = $2 WHERE id = $1`, [key, value])),
      remove: async (key) => void (await sql(`DELETE FROM ${table} WHERE id = $1`, [key])),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: true, before: true, coalesces: false },
});
