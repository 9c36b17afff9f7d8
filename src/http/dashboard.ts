/**
 * The dashboard: static files served by the management API plugin, no build step. The page at
 * `/` (`dashboard/index.html` of the package), its script and style at `/dashboard/*`, and the
 * browser libraries it imports (Preact + htm in one ES module, uPlot) at `/dashboard/vendor/*`,
 * read from the installed packages (`require.resolve` at runtime: they come with evpub, no CDN,
 * it works offline).
 *
 * Protocol:
 * - Only the files listed here are served (no path from the request reaches the file system).
 * - These routes are public: they hold no data. Every call the page makes for data (the feeds,
 *   pause/resume, the event stream) carries the token, like any other client.
 * - The page uses URLs relative to where it is served, so the plugin works under a prefix
 *   (`/evpub/` serves the page; `/evpub` redirects there).
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type {} from '@fastify/swagger'; // `schema.hide`

/** The `dashboard/` folder of the package (from src/http/ or dist/http/ alike). */
export const DASHBOARD_DIR = path.resolve(__dirname, '../../dashboard');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/**
 * Where a file of an installed package is: its folder is found from its main entry (htm's
 * `exports` list neither its standalone module nor its package.json).
 */
function packageFile(pkg: string, file: string): string {
  let dir = path.dirname(require.resolve(pkg));
  while (!(path.basename(dir) === pkg && path.basename(path.dirname(dir)) === 'node_modules')) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`dashboard: the folder of the package ${pkg} was not found`);
    dir = up;
  }
  return path.join(dir, file);
}

/** URL (under the plugin's prefix) → file on disk. */
function files(): Record<string, string> {
  const own = (name: string) => path.join(DASHBOARD_DIR, name);
  return {
    '/dashboard/app.js': own('app.js'),
    '/dashboard/style.css': own('style.css'),
    '/dashboard/vendor/htm/preact/standalone.module.js': packageFile('htm', 'preact/standalone.module.js'),
    '/dashboard/vendor/uplot/dist/uPlot.esm.js': packageFile('uplot', 'dist/uPlot.esm.js'),
    '/dashboard/vendor/uplot/dist/uPlot.min.css': packageFile('uplot', 'dist/uPlot.min.css'),
  };
}

export async function dashboardRoutes(fastify: FastifyInstance): Promise<void> {
  const route = { config: { public: true }, schema: { hide: true } };
  const send = (file: string) => async (_request: FastifyRequest, reply: FastifyReply) =>
    reply
      .type(TYPES[path.extname(file)] ?? 'application/octet-stream')
      .header('cache-control', 'no-cache')
      .send(createReadStream(file));

  const index = path.join(DASHBOARD_DIR, 'index.html');
  fastify.get('/', route, async (request, reply) => {
    const [pathname = '/', query] = request.url.split('?');
    // Under a prefix (`/evpub`), the page's relative URLs need the trailing slash.
    if (!pathname.endsWith('/')) return reply.redirect(`${pathname}/${query ? `?${query}` : ''}`);
    return send(index)(request, reply);
  });
  for (const [url, file] of Object.entries(files())) fastify.get(url, route, send(file));
}
