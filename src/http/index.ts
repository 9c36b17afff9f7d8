/**
 * `evpub/http`: the management API for an application with its own fastify server (see
 * routes.ts), and the views it serves. `app.listen()` loads this on first use, so `require('evpub')`
 * loads no web server.
 */
export { evpubApi, type EvpubApiOptions } from './routes';
export { serve, type Server } from './server';
export type { BrokerView, FeedsView, FeedView, ReadyView } from './views';
