/**
 * The management HTTP server of one process (`evpub start`, `app.listen()`): a fastify instance
 * serving the `evpubApi` plugin, logging through the app's logger (component `http`, requests at
 * debug, never a header), closed by `app.stop()`.
 */
import Fastify, { LogController } from 'fastify';
import type { App, Listening } from '../app/app';
import type { HttpConfig } from '../app/config-types';
import { DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT } from '../app/schema';
import { ErrorCode, EvpubError } from '../errors';
import { evpubApi } from './routes';

export interface Server {
  address: Listening;
  close(): Promise<void>;
}

export async function serve(app: App, http: HttpConfig): Promise<Server> {
  const logger = app.logger.child({ component: 'http' });
  const fastify = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
  });
  fastify.addHook('onResponse', async (request, reply) => {
    request.log.debug(
      { method: request.method, route: request.routeOptions.url, status: reply.statusCode },
      'management API request',
    );
  });
  await fastify.register(evpubApi, {
    app,
    ...(http.token ? { token: http.token } : {}),
    ...(http.events ? { events: { ringSize: http.events.ring, clientQueue: http.events.clientQueue } } : {}),
  });
  const host = http.host ?? DEFAULT_HTTP_HOST;
  const wanted = http.port ?? DEFAULT_HTTP_PORT;
  try {
    await fastify.listen({
      host,
      port: wanted,
      listenTextResolver: (at) => `management API listening at ${at}`,
    });
  } catch (err) {
    await fastify.close().catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL' || code === 'EACCES') {
      const why =
        code === 'EADDRINUSE'
          ? 'is in use'
          : code === 'EACCES'
            ? 'is not allowed'
            : 'is not an address of this machine';
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `http: ${host}:${wanted} ${why} (${code}); set http.host / http.port or EVPUB_HTTP_PORT ` +
          '(0 picks a free port), or http.enabled: false to serve no API',
        { cause: err, context: { path: 'http.port' } },
      );
    }
    throw err;
  }
  const bound = fastify.server.address();
  const port = typeof bound === 'object' && bound ? bound.port : (http.port ?? DEFAULT_HTTP_PORT);
  const shown = host.includes(':') ? `[${host}]` : host;
  const address = { url: `http://${shown}:${port}`, host, port };
  return { address, close: () => fastify.close() };
}
