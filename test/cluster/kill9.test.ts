/**
 * Three `evpub start` processes on one configuration (harness.ts: PostgreSQL, MariaDB and
 * CouchDB sources; Mosquitto and JetStream sinks), leases in PostgreSQL, fenced checkpoints in
 * Redis. The units spread over the three; rows keep being written into every table while the
 * owner of a unit is killed with -9, five times in a row (each time a new process is started so
 * that three stay up). Asserted:
 * - the spread: every unit held by one instance, each instance holding floor or ceil of
 *   units / instances (4 units over 3: 2/1/1);
 * - after each kill another instance takes the dead one's units over (the time from the kill to
 *   the new owner's first event is printed; bounded only by a generous 3 × TTL + start);
 * - every change arrives on its sink; per-key order holds within each owner's run (one instance
 *   and epoch); duplicates only across runs (the takeover's replay from the last checkpoint),
 *   counted and printed; the JetStream stream holds none at all (`Nats-Msg-Id`).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait';
import { spread, until, ClusterHarness, type Instance } from './harness';

const TTL_MS = 3000;
const KILLS = 5;

const h = new ClusterHarness({
  leases: 'postgres',
  checkpoints: 'redis',
  leaseTtl: '3s',
  checkpointInterval: 500,
});
afterAll(() => h.close());

describe('cluster: kill -9 of unit owners, five times (3 processes)', () => {
  it('takes over within the TTL; nothing lost, order per run, duplicates only from replays, none on JetStream', async () => {
    await h.setup();
    const units = h.units;
    await Promise.all(['i1', 'i2', 'i3'].map((n) => h.start(n)));
    const owners = await h.balanced(30_000, true);
    console.log(`kill -9: ${units.length} units over 3 instances: ${spread(owners)}`);

    h.startWriters();
    await waitFor(
      () => h.models.every((m) => h.got.some((g) => g.model === m.model)),
      'events from every model',
    );

    const takeovers: string[] = [];
    let generation = 0;
    for (let k = 0; k < KILLS; k++) {
      // Let the current owners publish (and checkpoint) a while before the next kill.
      await new Promise((r) => setTimeout(r, 1500));
      const unit = units[k % units.length]!;
      const victim: Instance = await until(() => h.ownerOf(unit), `an owner of ${unit}`);
      const held = h.owners().get(victim.name)!;
      const killedAt = performance.now();
      h.signal(victim, 'SIGKILL');
      await victim.proc.exited;
      // A new process keeps three up (it joins with nothing to take: the others may rebalance).
      const started = h.start(`i${victim.name.slice(1, 2)}-${++generation}`);
      for (const u of held) {
        const first = await until(
          () => h.firstEventAfter(u, killedAt, victim.name),
          `unit ${u} taken over after the kill of ${victim.name}`,
          3 * TTL_MS + 15_000,
        ).catch((err: Error) => {
          throw new Error(`${err.message}\n${h.logs()}`);
        });
        const ms = first.at - killedAt;
        takeovers.push(`${u}: ${ms.toFixed(0)} ms (${victim.name} → ${first.instance})`);
        expect(ms).toBeLessThan(3 * TTL_MS + 15_000);
      }
      await started;
      await h.settled();
    }
    console.log(
      `kill -9 takeovers (kill → new owner's first event), TTL ${TTL_MS} ms:\n  ${takeovers.join('\n  ')}`,
    );

    await h.stopWriters();
    await h.allArrived();
    await new Promise((r) => setTimeout(r, 500)); // late replays, if any, are counted too

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
      `kill -9 ×${KILLS}: MQTT ${mqtt.received} received, ${mqtt.distinct} distinct, ${mqtt.duplicates} duplicates (replays); ` +
        `NATS on the wire ${wire.received} published, ${wire.duplicates} replayed; ` +
        `JetStream stream ${stream.received} stored, ${stream.duplicates} duplicates`,
    );
    for (const r of [mqtt, wire, stream]) {
      expect(r.missing, `${r.sink}: missing`).toEqual([]);
      expect(r.orderViolations, `${r.sink}: per-key order within a run`).toEqual([]);
      expect(r.sameRunDuplicates, `${r.sink}: duplicates within one owner's run`).toBe(0);
    }
    expect(stream.duplicates, 'JetStream: no duplicate at all').toBe(0);
    expect(stream.received).toBe(stream.distinct);
    // Every event carries the publishing instance and its epoch.
    expect(h.got.filter((g) => g.instance === '' || g.epoch === '').length).toBe(0);
  }, 150_000);
});
