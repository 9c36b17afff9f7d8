/** Helpers for publisher tests: a quiet logger, a temp checkpoint dir, a collecting subscriber. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/logger';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import type { PublisherStatus } from '../../src/pipeline/status';

export const quietLogger = () => createLogger({ level: process.env.EVPUB_TEST_LOG_LEVEL ?? 'silent' });

export async function tempDir(prefix = 'evpub-test-'): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface Received {
  topic: string;
  text: string;
  json: Record<string, unknown>;
  headers?: Record<string, string>;
  key?: string;
}

/** A subscriber on `url` collecting everything under `pattern`. */
export async function subscriber(
  url: string,
  pattern: string | string[] = '#',
  options: Record<string, unknown> = {},
): Promise<{ client: Client; got: Received[] }> {
  const client = createClient(url, { logger: quietLogger(), ...options });
  const got: Received[] = [];
  client.on('message', (topic, payload, meta) => {
    const text = payload.toString('utf8');
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // not JSON: kept as text
    }
    got.push({ topic, text, json, ...(meta.headers ? { headers: meta.headers } : {}) });
  });
  await client.subscribe(pattern);
  return { client, got };
}

export function statusLog(): { events: PublisherStatus[]; listener: (s: PublisherStatus) => void } {
  const events: PublisherStatus[] = [];
  return { events, listener: (s) => events.push(s) };
}
