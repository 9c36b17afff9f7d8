/**
 * The lease store conformance suite (src/cluster/lease.ts): every store runs it against its real
 * server. Each test has its own cluster name (so its own units and members); the fixture gives
 * every test file its own table / key prefix / bucket. TTLs are short (600–1500 ms); the tests
 * wait on conditions, and let time pass only where the behaviour is about time passing.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { LeaseKeeper } from '../../src/cluster/keeper';
import type { Lease, LeaseStore } from '../../src/cluster/lease';
import { ErrorCode, EvpubError } from '../../src/errors';
import type { PrivateBroker } from './pubsub.suite';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

export interface LeaseFixture {
  name: string;
  /** A store over the shared server for cluster `cluster` (a new instance each call). */
  open(cluster: string): Promise<LeaseStore>;
  /** A private server, and how to open a store on it with a short operation timeout. */
  privateServer(): Promise<{ server: PrivateBroker; open: (cluster: string) => LeaseStore }>;
  teardown?(): Promise<void>;
}

const TTL = 800;
/** For tests that renew: room for a slow event loop when the whole suite runs at once. */
const RENEW_TTL = 1500;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a promise rejected with (fails the test if it resolved). */
async function rejection(p: Promise<unknown>): Promise<EvpubError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EvpubError);
  return err as EvpubError;
}

export function leaseConformance(fixture: LeaseFixture): void {
  describe(`lease store conformance: ${fixture.name}`, () => {
    const stores: LeaseStore[] = [];
    const cleanups: (() => Promise<void>)[] = [];

    /** `n` stores of one fresh cluster (as `n` instances would have). */
    const cluster = async (n = 2): Promise<LeaseStore[]> => {
      const name = uniqueName('c');
      const opened = await Promise.all(Array.from({ length: n }, () => fixture.open(name)));
      stores.push(...opened);
      return opened;
    };

    afterAll(async () => {
      for (const c of cleanups) await c().catch(() => undefined);
      for (const s of stores) await s.close().catch(() => undefined);
      await fixture.teardown?.();
    });

    it('acquire gives a lease with an epoch, a store-time expiry and a local deadline', async () => {
      const [a] = await cluster(1);
      const before = Date.now();
      const lease = await a!.acquire('slot', 'a', TTL);
      expect(lease).toMatchObject({ unit: 'slot', holder: 'a', ttlMs: TTL });
      expect(lease!.epoch).toBeGreaterThanOrEqual(1);
      // Store time is another machine's clock in general; here it is this machine's.
      expect(lease!.expiresAt).toBeGreaterThan(before);
      expect(lease!.deadline - performance.now()).toBeLessThan(TTL);
      expect(await a!.read('slot')).toMatchObject({ holder: 'a', epoch: lease!.epoch, live: true });
      expect(await a!.read('never-held')).toBeUndefined();
    });

    it('a second holder cannot acquire a held unit; the holder acquiring again keeps its epoch', async () => {
      const [a, b] = await cluster(2);
      const lease = await a!.acquire('u', 'a', TTL);
      expect(lease).not.toBeNull();
      expect(await b!.acquire('u', 'b', TTL)).toBeNull();
      const again = await a!.acquire('u', 'a', TTL);
      expect(again?.epoch).toBe(lease!.epoch);
    });

    it('renew extends the lease past its first TTL; nobody else gets it meanwhile', async () => {
      const [a, b] = await cluster(2);
      let lease = (await a!.acquire('u', 'a', RENEW_TTL))!;
      const start = performance.now();
      while (performance.now() - start < 2.5 * RENEW_TTL) {
        await sleep(RENEW_TTL / 4);
        const next = await a!.renew(lease);
        expect(next.epoch).toBe(lease.epoch);
        expect(next.deadline).toBeGreaterThan(lease.deadline);
        lease = next;
        expect(await b!.acquire('u', 'b', RENEW_TTL)).toBeNull();
      }
      expect(await a!.read('u')).toMatchObject({ holder: 'a', live: true });
    });

    it('an expired lease goes to another holder with a greater epoch; the old renew is LEASE_LOST', async () => {
      const [a, b] = await cluster(2);
      const old = (await a!.acquire('u', 'a', TTL))!;
      const taken = (await waitFor(() => b!.acquire('u', 'b', TTL), 'the lease to expire', 10_000))!;
      expect(taken.epoch).toBeGreaterThan(old.epoch);
      const err = await rejection(a!.renew(old));
      expect(err.code).toBe(ErrorCode.LEASE_LOST);
      expect(err.retriable).toBe(false);
      expect(await a!.read('u')).toMatchObject({ holder: 'b', epoch: taken.epoch, live: true });
    });

    it('an expired lease nobody took is not revived by renew', async () => {
      const [a] = await cluster(1);
      const old = (await a!.acquire('u', 'a', TTL))!;
      await waitFor(async () => (await a!.read('u'))?.live === false, 'the lease to expire', 10_000);
      expect((await rejection(a!.renew(old))).code).toBe(ErrorCode.LEASE_LOST);
      const fresh = await a!.acquire('u', 'a', TTL);
      expect(fresh!.epoch).toBeGreaterThan(old.epoch);
    });

    it('release lets another holder acquire at once, with a greater epoch', async () => {
      const [a, b] = await cluster(2);
      const lease = (await a!.acquire('u', 'a', 60_000))!;
      expect(await a!.release(lease)).toBe(true);
      expect(await a!.read('u')).toMatchObject({ live: false });
      const next = await b!.acquire('u', 'b', 60_000);
      expect(next).not.toBeNull();
      expect(next!.epoch).toBeGreaterThan(lease.epoch);
    });

    it('release by a non-holder, or of a stale lease, does nothing', async () => {
      const [a, b] = await cluster(2);
      const lease = (await a!.acquire('u', 'a', 60_000))!;
      const forged: Lease = { ...lease, holder: 'b' };
      expect(await b!.release(forged)).toBe(false);
      expect(await b!.acquire('u', 'b', 60_000)).toBeNull();
      // a's lease, released and then taken by b: releasing a's old lease again leaves b's alone.
      expect(await a!.release(lease)).toBe(true);
      const bs = (await b!.acquire('u', 'b', 60_000))!;
      expect(await a!.release(lease)).toBe(false);
      expect(await a!.read('u')).toMatchObject({ holder: 'b', epoch: bs.epoch, live: true });
    });

    it('20 holders racing for one unit: exactly one wins', async () => {
      const racers = await cluster(5);
      for (let round = 0; round < 3; round++) {
        const unit = `race-${round}`;
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => racers[i % racers.length]!.acquire(unit, `h${i}`, 60_000)),
        );
        const winners = results.filter((r) => r !== null);
        expect(winners).toHaveLength(1);
        expect(await racers[0]!.read(unit)).toMatchObject({ holder: winners[0]!.holder, live: true });
      }
    });

    it('epochs strictly increase across 5 changes of owner (release and expiry)', async () => {
      const [a, b] = await cluster(2);
      const epochs: number[] = [];
      let holder: LeaseStore = a!;
      for (let i = 0; i < 5; i++) {
        const name = holder === a ? 'a' : 'b';
        const lease = (await waitFor(() => holder.acquire('u', name, TTL), `owner ${i}`, 10_000))!;
        epochs.push(lease.epoch);
        if (i % 2 === 0) await holder.release(lease); // every other change waits for the expiry
        holder = holder === a ? b! : a!;
      }
      for (let i = 1; i < epochs.length; i++) expect(epochs[i]).toBeGreaterThan(epochs[i - 1]!);
    });

    it('acquire with minEpoch: the new owner gets at least it, later owners go on from there', async () => {
      const [a, b] = await cluster(2);
      const first = (await a!.acquire('u', 'a', TTL))!;
      await a!.release(first);
      const raised = (await b!.acquire('u', 'b', TTL, first.epoch + 40))!;
      expect(raised.epoch).toBe(first.epoch + 40);
      await b!.release(raised);
      const next = (await a!.acquire('u', 'a', TTL))!;
      expect(next.epoch).toBeGreaterThan(raised.epoch);
      await a!.release(next);
      // A floor below the counter changes nothing: epochs still only grow.
      const low = (await b!.acquire('u', 'b', TTL, 1))!;
      expect(low.epoch).toBeGreaterThan(next.epoch);
    });

    it('members see each other, drop out after their TTL, and leave at once', async () => {
      const [a, b] = await cluster(2);
      await a!.join('a', { version: '1', units: ['x'] }, TTL);
      await b!.join('b', { version: '1' }, 60_000);
      const seen = await a!.members();
      expect(seen.map((m) => m.instance).sort()).toEqual(['a', 'b']);
      expect(seen.find((m) => m.instance === 'a')?.info).toEqual({ version: '1', units: ['x'] });
      expect((await b!.members()).map((m) => m.instance).sort()).toEqual(['a', 'b']);
      // a stops heartbeating: it drops out; b's heartbeat keeps it (with new info).
      await b!.heartbeat('b', { version: '2' }, 60_000);
      await waitFor(async () => (await b!.members()).length === 1, 'a to drop out', 10_000);
      expect(await b!.members()).toMatchObject([{ instance: 'b', info: { version: '2' } }]);
      await b!.leave('b');
      expect(await a!.members()).toEqual([]);
    });

    it('a keeper renews on its own, and stop() releases for the next holder at once', async () => {
      const [a, b] = await cluster(2);
      const keeper = (await LeaseKeeper.acquire(a!, 'u', 'a', RENEW_TTL))!;
      expect(keeper).not.toBeNull();
      const start = performance.now();
      await waitFor(() => performance.now() - start > 2.5 * RENEW_TTL, 'time to pass');
      expect(keeper.valid()).toBe(true);
      expect(keeper.signal.aborted).toBe(false);
      expect(await b!.acquire('u', 'b', RENEW_TTL)).toBeNull();
      await keeper.stop();
      const next = await b!.acquire('u', 'b', RENEW_TTL);
      expect(next!.epoch).toBeGreaterThan(keeper.lease.epoch);
    });

    it('a keeper whose lease was taken behind its back reports it lost (refused) at its next renew', async () => {
      const [a, b] = await cluster(2);
      const keeper = (await LeaseKeeper.acquire(a!, 'u', 'a', TTL))!;
      cleanups.push(() => keeper.stop({ release: false }));
      // An operator releases it and b takes it: the keeper's next renew is refused.
      // (retried: a renew landing in between makes the lease object read a moment ago stale)
      await waitFor(() => b!.release(keeper.lease), "the release of the keeper's lease");
      expect(await b!.acquire('u', 'b', 60_000)).not.toBeNull();
      await waitFor(() => keeper.signal.aborted, 'the keeper to report the loss', 10_000);
      expect(keeper.signal.reason).toMatchObject({ code: ErrorCode.LEASE_LOST, context: { why: 'refused' } });
      expect(keeper.valid()).toBe(false);
      await keeper.stop(); // a lost lease is not released: b keeps it
      expect(await b!.read('u')).toMatchObject({ holder: 'b', live: true });
    });

    it('a store outage: renew fails retriable (not LEASE_LOST) and the keeper reports its deadline passed', async () => {
      const { server, open: openPrivate } = await fixture.privateServer();
      cleanups.push(() => server.close());
      const store = openPrivate(uniqueName('c'));
      stores.push(store);
      const keeper = (await LeaseKeeper.acquire(store, 'u', 'a', 1500))!;
      cleanups.push(() => keeper.stop({ release: false }));
      const lease = keeper.lease;
      await server.stop();
      const err = await rejection(store.renew(lease));
      expect(err.code).toBe(ErrorCode.LEASE_FAILED);
      expect(err.retriable).toBe(true);
      await waitFor(() => keeper.signal.aborted, 'the keeper to give up at its deadline', 10_000);
      expect(keeper.signal.reason).toMatchObject({
        code: ErrorCode.LEASE_LOST,
        context: { why: 'deadline' },
      });
      expect(keeper.valid()).toBe(false);
      // The store back, the same store object works again: the unit (expired by now) can be taken.
      await server.start();
      const again = await waitFor(
        () => store.acquire('u', 'b', 1500).catch(() => null),
        'an acquire once the store is back',
        20_000,
      );
      expect(again!.epoch).toBeGreaterThan(lease.epoch);
    });
  });
}
