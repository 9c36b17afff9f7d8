/**
 * `evpub start` serves the management API (port 0 from EVPUB_HTTP_PORT, its address in the
 * log), `evpub status` reads it (table, --json, exit 0 when ready and 1 otherwise) and
 * `evpub feeds pause|resume` drives it; a non-loopback host without a token is refused.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { MemoryConnector } from '../../src/connectors/memory';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function configFile(http: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-http-cli-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'evpub.config.json');
  writeFileSync(
    file,
    JSON.stringify({
      brokers: { default: { url: `memory://${uniqueName('b')}` } },
      checkpoints: { store: 'memory' },
      datasources: { local: { connector: 'memory' } },
      models: { accounts: { dataSource: 'local' }, orders: { dataSource: 'local' } },
      ...(Object.keys(http).length > 0 ? { http } : {}),
    }),
  );
  return file;
}

/** Runs a CLI command to its end: exit code and output. */
async function run(args: string[], env: Record<string, string> = {}) {
  const proc = spawnCli(args, { env });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

async function startCli(
  file: string,
  env: Record<string, string> = {},
): Promise<{ proc: CliProcess; url: string }> {
  const proc = spawnCli(['start', '--config', file], { env: { EVPUB_LOG_LEVEL: 'info', ...env } });
  cleanups.push(() => killCli(proc));
  await proc.waitForOutput('evpub started', 60_000);
  const m = /management API listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(proc.stdout());
  expect(m, proc.stdout()).not.toBeNull();
  return { proc, url: m![1]! };
}

describe('evpub start, status and feeds', () => {
  it('serves the API on a free port; status and feeds pause/resume drive it', async () => {
    const token = uniqueName('token');
    const { proc, url } = await startCli(configFile(), { EVPUB_HTTP_TOKEN: token });
    expect(proc.stdout()).not.toContain(token);
    expect(proc.stderr()).toBe(''); // no deprecation or other warning

    const status = await run(['status', '--url', url, '--token', token]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^FEED\s+STATE\s+EVENTS\/S/m);
    expect(status.stdout).toMatch(/^local\/accounts\s+streaming\s/m);
    expect(status.stdout).not.toContain('\u001b['); // piped: no colours
    expect(status.stdout).toMatch(/^ready$/m);

    const noToken = await run(['status', '--url', url], { EVPUB_HTTP_TOKEN: '' });
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toContain('wants a token');

    const pause = await run(['feeds', 'pause', 'local/accounts', '--url', url, '--token', token]);
    expect(pause.code, pause.stderr).toBe(0);
    expect(pause.stdout).toContain('local/accounts: paused');
    const again = await run(['feeds', 'pause', 'local/accounts', '--url', url], { EVPUB_HTTP_TOKEN: token });
    expect(again.stdout).toContain('already paused');

    const json = await run(['status', '--url', url, '--token', token, '--json']);
    expect(json.code).toBe(0); // paused on purpose is ready
    const parsed = JSON.parse(json.stdout) as { ready: boolean; feeds: { id: string; state: string }[] };
    expect(parsed.ready).toBe(true);
    expect(parsed.feeds.map((f) => [f.id, f.state])).toEqual([
      ['local/accounts', 'paused'],
      ['local/orders', 'waiting'],
    ]);

    const resume = await run(['feeds', 'resume', 'local/accounts', '--url', url, '--token', token]);
    expect(resume.stdout).toContain('local/accounts: resumed');
    const unknown = await run(['feeds', 'resume', 'local/nope', '--url', url, '--token', token]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no feed "local/nope"');
  });

  it('status exits 1 when not ready (a failed feed) and when nothing answers', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
      publisher: { maxEventBytes: 300, deadLetterLimit: 1 },
    });
    cleanups.push(() => app.stop());
    const ds = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: ds });
    await app.start();
    const { url } = await app.listen({ port: 0 });
    ds.connector!.create('accounts', 'a', { text: 'x'.repeat(1000) });
    ds.connector!.create('accounts', 'b', { text: 'x'.repeat(1000) });
    await waitFor(() => app.status().feeds['local/accounts']!.state === 'failed', 'the feed failed');

    const table = await run(['status', '--url', url]);
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/^local\/accounts\s+failed/m);
    expect(table.stdout).toContain('EVPUB_PAYLOAD_TOO_LARGE');
    expect(table.stdout).toMatch(/not ready: feed local\/accounts is failed/);
    const json = await run(['status', '--url', url, '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ready: false, feeds: [{ state: 'failed' }] });

    await app.stop();
    const gone = await run(['status', '--url', url]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('cannot reach the evpub management API');
  });

  it('serves nothing with http.enabled false', async () => {
    const proc = spawnCli(['start', '--config', configFile({ enabled: false })], {
      env: { EVPUB_LOG_LEVEL: 'info' },
    });
    cleanups.push(() => killCli(proc));
    await proc.waitForOutput('evpub started', 60_000);
    expect(proc.stdout()).not.toContain('management API listening');
  });

  it('refuses to serve a non-loopback host without a token, naming http.token', async () => {
    const res = await run(['start', '--config', configFile({ host: '0.0.0.0' })], { EVPUB_HTTP_TOKEN: '' });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/http\.token: is required to serve on "0\.0\.0\.0"/);
  });
});
