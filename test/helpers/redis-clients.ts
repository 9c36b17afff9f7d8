/**
 * Telling when Redis has done with a killed process's commands. After `kill -9` the kernel
 * still hands Redis what the process had written to its sockets, and Redis reads a client's
 * pipeline a slice per event-loop turn: entries the process sent keep landing in a stream for a
 * moment after it died. A fault test that splits a stream into "before the kill" and "after the
 * restart" must wait until Redis has closed the dead process's connections (it closes one only
 * after reading all it received on it).
 *
 *   const ports = redisClientPorts(child.pid);   // while it lives
 *   child.kill('SIGKILL'); await exited;
 *   await redisClientsGone(redis, ports);
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type Redis from 'ioredis';
import { waitFor } from './wait';

/** Local ports of a live process's TCP connections to `redisPort` (from /proc). */
export function redisClientPorts(pid: number, redisPort = 6379): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || !inodes.has(cols[9]!)) continue;
      const localPort = parseInt(cols[1]!.split(':')[1]!, 16);
      const remotePort = parseInt(cols[2]!.split(':')[1]!, 16);
      if (remotePort === redisPort) ports.push(localPort);
    }
  }
  return ports;
}

/** Waits until Redis lists no client connected from one of `ports`. */
export async function redisClientsGone(redis: Redis, ports: number[]): Promise<void> {
  await waitFor(
    async () => {
      const list = String(await redis.call('CLIENT', 'LIST'));
      return ports.every((port) => !new RegExp(` addr=[^ ]*:${port} `).test(list));
    },
    `Redis to close the killed process's connections (ports ${ports.join(', ')})`,
  );
}
