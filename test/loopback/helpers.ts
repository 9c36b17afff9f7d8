/** Helpers of the LoopBack repository tests: mosquitto_sub as a separate subscriber. */
import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from '../helpers/wait';

export interface Lines {
  proc: ChildProcess;
  lines: string[];
}

/**
 * `mosquitto_sub -d` on the shared broker: prints "Subscribed (mid: N)" once the SUBACK came
 * back (line-buffered by stdbuf). `verbose`: each line `topic payload` (`-v`). Kill `proc` at
 * the end.
 */
export async function mosquittoSub(topic: string, options: { verbose?: boolean } = {}): Promise<Lines> {
  const verbose = options.verbose ? ['-v'] : [];
  const args = [
    '-oL',
    'mosquitto_sub',
    '-h',
    '127.0.0.1',
    '-p',
    '1883',
    '-q',
    '1',
    ...verbose,
    '-t',
    topic,
    '-d',
  ];
  const proc = spawn('stdbuf', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let partial = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
  });
  await waitFor(() => lines.some((l) => l.startsWith('Subscribed')), `mosquitto_sub on ${topic}`);
  return { proc, lines };
}

/** The JSON objects among `lines` (mosquitto_sub's debug lines are not JSON). */
export function jsonLines(lines: string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a debug line that starts with "{": not an event
    }
  }
  return out;
}
