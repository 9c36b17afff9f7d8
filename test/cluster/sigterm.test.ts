/**
 * A rolling restart of three `evpub start` processes (harness.ts: every source, both sinks;
 * leases and fenced checkpoints in Redis): each original process in turn gets SIGTERM while rows
 * keep being written, exits 0, and a new process takes its place. A stopping process leaves the
 * membership, drains each unit, saves its final checkpoint and only then releases the lease, so
 * the next owner resumes exactly after the last event published.
 *
 * Asserted: every change arrives on its sink, none twice (MQTT, NATS on the wire and the
 * JetStream stream: a graceful handover replays nothing), in order per key within each owner's
 * run. (A unit lost meanwhile, by a process stalled past its deadline on a loaded machine, is
 * replayed as after a kill -9: its feeds are left out of the no-duplicate count, and printed.) The handover time of each unit (SIGTERM → the new owner's first event) is printed, not
 * asserted (only a generous bound: well inside one TTL would be expected, the bound is 3 × TTL).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait';
import { until, ClusterHarness, type Got } from './harness';

// Longer than the other files': a graceful handover does not wait for it, and a stalled process
// (a loaded machine) loses its lease less often.
const TTL_MS = 6000;

const h = new ClusterHarness({ leases: 'redis', checkpoints: 'redis', leaseTtl: '6s' });
afterAll(() => h.close());

describe('cluster: SIGTERM of unit owners (a rolling restart of 3 processes)', () => {
  it('hands each unit over after its final checkpoint: nothing lost, nothing duplicated', async () => {
    await h.setup();
    await Promise.all(['i1', 'i2', 'i3'].map((n) => h.start(n)));
    await h.settled();
    h.startWriters();
    await waitFor(
      () => h.models.every((m) => h.got.some((g) => g.model === m.model)),
      'events from every model',
    );

    const handovers: string[] = [];
    for (const name of ['i1', 'i2', 'i3']) {
      await new Promise((r) => setTimeout(r, 1000));
      await h.settled();
      const inst = h.instances.find((i) => i.name === name)!;
      const held = h.owners().get(name) ?? [];
      const termAt = performance.now();
      h.signal(inst, 'SIGTERM');
      for (const u of held) {
        const first = await until(
          () => h.firstEventAfter(u, termAt, name),
          `unit ${u} handed over by ${name}`,
          3 * TTL_MS,
        ).catch((err: Error) => {
          throw new Error(`${err.message}\n${h.logs()}`);
        });
        handovers.push(`${u}: ${(first.at - termAt).toFixed(0)} ms (${name} → ${first.instance})`);
      }
      expect(await inst.proc.exited, `${name} exits 0 after SIGTERM`).toBe(0);
      await h.start(`${name}-2`);
    }
    console.log(`SIGTERM handovers (signal → new owner's first event):\n  ${handovers.join('\n  ')}`);

    await h.stopWriters();
    await h.allArrived();
    await new Promise((r) => setTimeout(r, 500));
    const mqtt = h.report(
      'mqtt',
      h.got.filter((g) => g.sink === 'mqtt'),
    );
    const wire = h.report(
      'jetstream',
      h.got.filter((g) => g.sink === 'jetstream'),
    );
    const stream = h.report('jetstream', await h.readStream());
    console.log(
      `SIGTERM rolling restart: MQTT ${mqtt.received} received, ${mqtt.duplicates} duplicates; ` +
        `NATS on the wire ${wire.received}, ${wire.duplicates} duplicates; JetStream ${stream.received} stored, ${stream.duplicates} duplicates`,
    );
    for (const r of [mqtt, wire, stream]) {
      expect(r.missing, `${r.sink}: missing`).toEqual([]);
      expect(r.orderViolations, `${r.sink}: per-key order within a run`).toEqual([]);
      expect(r.sameRunDuplicates, `${r.sink}: duplicates within one owner's run`).toBe(0);
    }
    // Graceful handovers replay nothing. A unit LOST meanwhile (a process stalled past its lease
    // deadline on a loaded machine: not this scenario) is replayed from its checkpoint like after
    // a kill -9: its feeds are left out of the no-duplicate count, and said so.
    const lost = h.lostUnits();
    if (lost.size > 0)
      console.log(`SIGTERM: units lost (not handed over) during the run: ${[...lost].join(', ')}`);
    const graceful = (g: Got): boolean => !lost.has(h.models.find((m) => m.model === g.model)!.unit);
    for (const [sink, events] of [
      ['mqtt', h.got.filter((g) => g.sink === 'mqtt')],
      ['jetstream', h.got.filter((g) => g.sink === 'jetstream')],
    ] as const) {
      const r = h.report(sink, events.filter(graceful));
      expect(r.duplicates, `${sink}: duplicates of units handed over gracefully`).toBe(0);
    }
  }, 90_000);
});
