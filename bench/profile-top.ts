/**
 * Prints the functions with the most self time in a V8 CPU profile (`node --cpu-prof`), and the
 * share of each source file (idle time left out), so a bench run's profile can be read without a browser.
 *
 *   tsx bench/profile-top.ts bench/results/profiles/CPU.*.cpuprofile [top=25]
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg] = process.argv.slice(2);
const profile = JSON.parse(readFileSync(file!, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
let total = 0;
let idle = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  if (byId.get(id)!.callFrame.functionName === '(idle)') {
    idle += dt;
    return;
  }
  self.set(id, (self.get(id) ?? 0) + dt);
  total += dt;
});
const fns = new Map<string, number>();
const files = new Map<string, number>();
for (const [id, us] of self) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  const short = url
    .replace(/^file:\/\//, '')
    .replace(/.*node_modules\//, 'node_modules/')
    .replace(/.*\/(dist|src)\//, '$1/');
  const name = `${functionName || '(anonymous)'} ${short}:${lineNumber + 1}`;
  fns.set(name, (fns.get(name) ?? 0) + us);
  const group =
    short === ''
      ? functionName
      : short.startsWith('node_modules/')
        ? short
            .split('/')
            .slice(0, short.split('/')[1]!.startsWith('@') ? 3 : 2)
            .join('/')
        : short;
  files.set(group, (files.get(group) ?? 0) + us);
}
const top = Number(topArg ?? 25);
const pct = (us: number): string => ((us / total) * 100).toFixed(1).padStart(5) + '%';
console.log(`${(total / 1000).toFixed(0)} ms busy (${(idle / 1000).toFixed(0)} ms idle, not counted)`);
console.log('\nby function (self time):');
for (const [name, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`${pct(us)}  ${name}`);
console.log('\nby file or package (self time):');
for (const [name, us] of [...files].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`${pct(us)}  ${name}`);
