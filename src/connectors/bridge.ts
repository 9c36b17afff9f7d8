/** The `bridge` connector (being written). */
import type { ConnectorModule } from './contract';

export const initialize: ConnectorModule['initialize'] = () =>
  Promise.reject(new Error('bridge: not yet available'));
