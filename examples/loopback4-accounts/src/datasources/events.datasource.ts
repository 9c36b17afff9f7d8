/**
 * The event datasource: evpub's PostgreSQL CDC connector on the same database, publishing the
 * outbox table (the `outbox` setting). Its settings are bound at `datasources.config.events`
 * by the application; evpub's component reads them at `app.start()` (the class is never
 * instantiated as a juggler datasource: nothing reads or writes through it).
 */
import { inject } from '@loopback/core';
import { juggler } from '@loopback/repository';

export const EVENTS_CONFIG = 'datasources.config.events';

export interface EventsSettings {
  url: string;
  /** The replication slot and the publication. */
  slot: string;
  /** The outbox table the repository and the trigger write to. */
  outbox: string;
}

/** The datasource settings evpub's postgres connector runs with. */
export function eventsDataSourceConfig(s: EventsSettings): Record<string, unknown> {
  return {
    name: 'events',
    connector: 'evpub/connectors/postgres',
    url: s.url,
    slot: s.slot,
    publication: s.slot,
    // The migration creates the table (its trigger needs it before the first start).
    outbox: { table: s.outbox, create: false },
  };
}

export class EventsDataSource extends juggler.DataSource {
  static dataSourceName = 'events';

  constructor(@inject(EVENTS_CONFIG) config: object) {
    super(config);
  }
}
