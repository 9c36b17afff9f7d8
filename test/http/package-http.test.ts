/**
 * The built package: `require('evpub')` loads no web server, `app.listen()` loads it on first
 * use (a dynamic import from CommonJS), and `evpub/http` exports the fastify plugin. Runs
 * against dist/ (`npm test` builds before vitest).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

function node(script: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

describe('the management API in the built package', () => {
  beforeAll(() => {
    if (!existsSync(path.join(ROOT, 'dist/http/index.js'))) {
      throw new Error('dist/ is missing or old: run `npm run build` first (`npm test` does)');
    }
  });

  it('is not loaded by require("evpub"); app.listen() serves it; evpub/http exports the plugin', () => {
    const r = node(`
      const { evpub } = require('evpub');
      const loaded = () => Object.keys(require.cache).some((f) => f.includes('/node_modules/fastify/'));
      const before = loaded();
      const app = evpub({ brokers: { default: 'memory://pkg' }, checkpoints: { store: 'memory' } });
      app.dataSource('d', { connector: 'memory' });
      app.model('m', { dataSource: 'd' });
      (async () => {
        await app.start();
        const { url } = await app.listen({ port: 0 });
        const feed = await (await fetch(url + '/api/feeds/d/m')).json();
        await app.stop();
        console.log([before, loaded(), feed.state, typeof require('evpub/http').evpubApi].join(' '));
      })();
    `);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('false true streaming function');
  });
});
