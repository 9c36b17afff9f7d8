/**
 * `${file:/run/secrets/...}` in configuration values (Docker and Kubernetes secrets): the
 * file's content, trailing newlines trimmed, in any string value of every layout; a file that
 * cannot be read is CONFIG_INVALID naming the key and the file, never what it holds.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/app/config';
import { ErrorCode, EvpubError } from '../../src/errors';

const dir = mkdtempSync(path.join(tmpdir(), 'evpub-file-refs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function load(config: unknown, env: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  const sub = mkdtempSync(path.join(dir, 'app-'));
  writeFileSync(path.join(sub, 'evpub.config.json'), JSON.stringify(config));
  return loadConfig({ dir: sub, env });
}

function configError(fn: () => unknown): EvpubError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
    return err as EvpubError;
  }
  throw new Error('expected a CONFIG_INVALID error');
}

describe('${file:...} references', () => {
  it('put the content of the file (trailing newline trimmed) in any string value, beside ${ENV}', () => {
    const pw = write('pg_password', 's3cr3t-from-file\n');
    const token = write('nats_token', 'tok-from-file\r\n\n');
    const hook = write('hook_secret', '  spaces kept  \n');
    const config = load(
      {
        brokers: { default: { url: `nats://\${file:${token}}@127.0.0.1:4222` } },
        datasources: {
          pg: { connector: 'postgres', url: `postgres://evpub:\${file:${pw}}@\${PGHOST}:5432/app` },
          hooks: {
            connector: 'webhook',
            port: 0,
            signature: { header: 'X-Sig', secret: `\${file:${hook}}` },
          },
        },
        models: { rows: { dataSource: 'pg', settings: { table: 'rows' } }, orders: { dataSource: 'hooks' } },
      },
      { PGHOST: 'db' },
    );
    expect(config.brokers.default!.url).toBe('nats://tok-from-file@127.0.0.1:4222');
    expect(config.datasources.pg!.url).toBe('postgres://evpub:s3cr3t-from-file@db:5432/app');
    expect((config.datasources.hooks as unknown as { signature: { secret: string } }).signature.secret).toBe(
      '  spaces kept  ',
    );
  });

  it('resolves a relative path from the configuration file', () => {
    write('relative_secret', 'rel-secret');
    const sub = mkdtempSync(path.join(dir, 'rel-'));
    writeFileSync(path.join(sub, 'pw'), 'rel-secret\n');
    writeFileSync(
      path.join(sub, 'evpub.config.json'),
      JSON.stringify({
        brokers: { default: { url: 'amqp://guest:${file:pw}@localhost' } },
        datasources: { db: { connector: 'memory' } },
        models: { a: { dataSource: 'db' } },
      }),
    );
    expect(loadConfig({ dir: sub, env: {} }).brokers.default!.url).toBe('amqp://guest:rel-secret@localhost');
  });

  it('a missing or unreadable file is CONFIG_INVALID naming the key and the file, never the content', () => {
    const missing = path.join(dir, 'no_such_secret');
    const err = configError(() =>
      load({
        brokers: { default: { url: `redis://:\${file:${missing}}@localhost` } },
        datasources: { db: { connector: 'memory' } },
        models: { a: { dataSource: 'db' } },
      }),
    );
    expect(err.message).toContain('brokers.default.url');
    expect(err.message).toContain(missing);
    expect(err.message).toContain('no such file');

    const isDir = configError(() =>
      load({
        brokers: { default: { url: 'memory://x' } },
        datasources: { db: { connector: 'memory', password: `\${file:${dir}}` } },
        models: { a: { dataSource: 'db' } },
      }),
    );
    expect(isDir.message).toContain('datasources.db.password');
    expect(isDir.message).toContain('is a directory');

    if (process.getuid?.() !== 0) {
      const locked = write('locked', 'locked-content');
      chmodSync(locked, 0o000);
      const denied = configError(() =>
        load({
          brokers: { default: { url: `memory://\${file:${locked}}` } },
          datasources: { db: { connector: 'memory' } },
          models: { a: { dataSource: 'db' } },
        }),
      );
      expect(denied.message).toContain('permission denied');
      expect(denied.message).not.toContain('locked-content');
    }
  });

  it('$${file:...} is a literal', () => {
    const config = load({
      brokers: { default: { url: 'memory://x' } },
      datasources: { db: { connector: 'memory', note: '$${file:/etc/passwd}' } },
      models: { a: { dataSource: 'db' } },
    });
    expect((config.datasources.db as { note?: string }).note).toBe('${file:/etc/passwd}');
  });
});
