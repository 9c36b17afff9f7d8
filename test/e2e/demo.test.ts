/**
 * `evpub demo`: the embedded store, the in-process broker (or `--broker`), the publisher and
 * the tail, as a user runs it. With `--once` every step of the scenario is tailed and the
 * process exits 0; without it, it keeps going until SIGINT and then stops cleanly.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { requireService, uniqueName } from '../helpers/services';
import { DEFAULT_HTTP_PORT } from '../../src/app/schema';
import { BUILT_CLI, ROOT, spawnCli } from './cli';

const run = promisify(execFile);

function tailLines(stdout: string, prefix = 'demo'): string[] {
  return stdout.split('\n').filter((l) => l.startsWith(`  ${prefix}/accounts/`));
}

describe('evpub demo', () => {
  it('tails the create, update and delete events of the scenario (CloudEvents) and exits 0', async () => {
    const demo = spawnCli(['demo', '--once']);
    expect(await demo.exited).toBe(0);
    expect(demo.stderr()).toBe('');
    const lines = tailLines(demo.stdout());
    expect(lines[0]).toMatch(
      /^ {2}demo\/accounts\/create\/james-bond {2}create james-bond 1-\w+ \{"name":"James Bond","type":"Demo","region":"Bangalore"\}$/,
    );
    expect(lines).toContainEqual(expect.stringMatching(/update james-bond 2-\w+ .*"region":"Istanbul"/));
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}demo\/accounts\/delete\/q {2}delete q 2-\w+/));
    expect(lines.map((l) => l.trim().split(/\s+/)[1])).toEqual([
      'create',
      'create',
      'update',
      'create',
      'update',
      'delete',
    ]);
    const first = demo
      .stdout()
      .split('\n')
      .find((l) => l.includes('"specversion"'))!;
    expect(JSON.parse(first)).toMatchObject({ type: 'evpub.accounts.create', subject: 'james-bond' });
    expect(demo.stdout().trimEnd().endsWith('done')).toBe(true);
  });

  it('--envelope legacy publishes the seed\'s {"model","message"}', async () => {
    const demo = spawnCli(['demo', '--once', '--envelope', 'legacy']);
    expect(await demo.exited).toBe(0);
    const first = demo
      .stdout()
      .split('\n')
      .find((l) => l.includes('"model"'))!;
    expect(JSON.parse(first)).toEqual({
      model: 'accounts',
      message: expect.objectContaining({ _id: 'james-bond', name: 'James Bond', region: 'Bangalore' }),
    });
    expect(tailLines(demo.stdout())).toHaveLength(6);
  });

  it('runs from the build, as `npm start` does (node dist/cli/index.js demo)', async () => {
    if (!existsSync(BUILT_CLI)) throw new Error(`${BUILT_CLI} is missing: run \`npm run build\` first`);
    const demo = spawnCli(['demo', '--once'], { built: true });
    expect(await demo.exited).toBe(0);
    expect(demo.stderr()).toBe('');
    expect(tailLines(demo.stdout())).toHaveLength(6);
  });

  it('--broker publishes to a real broker (the shared Mosquitto, a topic prefix of its own)', async () => {
    const mqtt = await requireService('mosquitto');
    const prefix = uniqueName('demo');
    const demo = spawnCli(['demo', '--once', '--broker', mqtt, '--prefix', prefix]);
    expect(await demo.exited).toBe(0);
    expect(demo.stderr()).toBe('');
    expect(demo.stdout()).toContain(`broker:    ${mqtt}`);
    const lines = tailLines(demo.stdout(), prefix);
    expect(lines).toHaveLength(6);
    expect(lines[5]).toContain(`${prefix}/accounts/delete/q  delete q`);
  });

  it('without --once keeps changing and tailing until SIGINT, then stops cleanly (exit 0)', async () => {
    const demo = spawnCli(['demo', '--interval', '50']);
    // The tailed event, not the "> create agent-..." line that announces the change before it.
    await demo.waitForOutput('demo/accounts/create/agent-');
    demo.child.kill('SIGINT');
    expect(await demo.exited).toBe(0);
    expect(demo.stderr()).toBe('');
    expect(tailLines(demo.stdout()).length).toBeGreaterThan(6);
    expect(demo.stdout().trimEnd().endsWith('done')).toBe(true);
  });

  it('serves the dashboard and prints its address; the API shows the feed streaming', async () => {
    const demo = spawnCli(['demo', '--interval', '200']);
    await demo.waitForOutput('dashboard: ');
    const url = /dashboard: (http:\/\/\S+\/)$/m.exec(demo.stdout())![1]!;
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('dashboard/app.js');
    const feeds = (await (await fetch(`${url}api/feeds`)).json()) as {
      feeds: { id: string; state: string }[];
    };
    expect(feeds.feeds).toEqual([expect.objectContaining({ id: 'couch/accounts', state: 'streaming' })]);
    demo.child.kill('SIGINT');
    expect(await demo.exited).toBe(0);
    expect(demo.stderr()).toBe('');
  });

  it('uses a free port when 7401 is taken and no port was asked for, and says so', async () => {
    // 7401 held here (or by someone else already: either way it is taken).
    const holder = createServer();
    await new Promise<void>((resolve) => {
      holder.once('error', () => resolve());
      holder.listen(DEFAULT_HTTP_PORT, '127.0.0.1', () => resolve());
    });
    try {
      const env: Record<string, string | undefined> = { ...process.env };
      delete env.EVPUB_HTTP_PORT; // spawnCli would set it to 0
      const tsx = pathToFileURL(createRequire(path.join(ROOT, 'package.json')).resolve('tsx')).href;
      const cli = path.join(ROOT, 'src/cli/index.ts');
      const { stdout, stderr } = await run(process.execPath, ['--import', tsx, cli, 'demo', '--once'], {
        cwd: ROOT,
        env,
      });
      expect(stderr).toBe('');
      const line = stdout.split('\n').find((l) => l.includes('dashboard: '));
      expect(line).toMatch(
        new RegExp(`dashboard: http://127\\.0\\.0\\.1:\\d+/ {2}\\(port ${DEFAULT_HTTP_PORT} is in use\\)$`),
      );
      expect(line).not.toContain(`:${DEFAULT_HTTP_PORT}/`);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('an unknown envelope exits 1 with the flag named', async () => {
    const demo = spawnCli(['demo', '--once', '--envelope', 'xml']);
    expect(await demo.exited).toBe(1);
    expect(demo.stderr()).toContain('--envelope: must be one of cloudevents, cloudevents-binary, legacy');
  });
});
