/**
 * directory.test.ts — the normal DIF's replicated directory (src/dif/normal/directory.ts):
 * dissemination over a chain of members (through the CDAP value codec), withdrawal, removal of a
 * departed member's entries, ordering under reordered floods, bounds, tombstone expiry, and
 * (fast-check, seeded) convergence of all replicas under random operations and delivery orders.
 */
import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Directory, DirectoryError, directoryUpdateValues } from '../../../src/dif/normal/directory.js';
import { decodeDirectoryUpdate, encodeDirectoryUpdate, type DirectoryEntry } from '../../../src/dif/normal/cdap-objects.js';

const SEED = Number(process.env.FC_SEED ?? 4242);

/** Members 1..n with neighbour links; floods are queued and delivered by `run` (pick = order). */
function net(n: number, links: [number, number][], clock = new ClockLike()) {
  const queue: { to: number; from: number; bytes: Uint8Array }[] = [];
  const nbrs = new Map<number, number[]>();
  for (let i = 1; i <= n; i++) nbrs.set(i, []);
  for (const [x, y] of links) {
    nbrs.get(x)!.push(y);
    nbrs.get(y)!.push(x);
  }
  const dirs = new Map<number, Directory>();
  for (let i = 1; i <= n; i++) {
    const me = i;
    dirs.set(
      i,
      new Directory({
        clock,
        localAddress: me,
        flood: (entries, from) => {
          for (const nb of nbrs.get(me)!) if (nb !== from) queue.push({ to: nb, from: me, bytes: encodeDirectoryUpdate(entries) });
        },
      }),
    );
  }
  const run = (pick: (len: number) => number = () => 0, limit = 100000) => {
    let steps = 0;
    while (queue.length && steps++ < limit) {
      const [m] = queue.splice(pick(queue.length) % queue.length, 1);
      dirs.get(m!.to)!.applyRemote(decodeDirectoryUpdate(m!.bytes), m!.from);
    }
    return queue.length === 0;
  };
  return { dirs, run, queue, nbrs };
}
class ClockLike extends ManualClock {}

const app = (p: string) => ({ processName: p });

t.test('registrations reach every member; withdrawals too', async (t) => {
  const { dirs, run } = net(4, [[1, 2], [2, 3], [3, 4]]);
  dirs.get(1)!.register(app('srv'));
  dirs.get(4)!.register({ processName: 'db', processInstance: '2' });
  t.ok(run());
  for (const d of dirs.values()) {
    t.equal(d.lookup('srv'), 1);
    t.equal(d.lookup('db/2'), 4);
    t.equal(d.lookup('nope'), undefined);
  }
  t.ok(dirs.get(1)!.unregister(app('srv')));
  t.notOk(dirs.get(2)!.unregister(app('srv')), 'only the registering member withdraws');
  t.ok(run());
  for (const d of dirs.values()) t.equal(d.lookup('srv'), undefined);
  t.equal(dirs.get(3)!.registrations().length, 1);
});

t.test('a member that leaves takes its entries with it', async (t) => {
  const { dirs, run, nbrs } = net(4, [[1, 2], [2, 3], [3, 4], [4, 1]]);
  dirs.get(3)!.register(app('a'));
  dirs.get(3)!.register(app('b'));
  dirs.get(1)!.register(app('c'));
  t.ok(run());
  // 3 goes away (its links with it): its neighbours 2 and 4 notice (routing/enrollment tells them), others learn by flood.
  nbrs.set(3, []);
  for (const n of [2, 4]) nbrs.set(n, nbrs.get(n)!.filter((x) => x !== 3));
  for (const n of [1, 2, 4]) dirs.get(n)!.applyRemote([], undefined);
  t.equal(dirs.get(2)!.memberLeft(3), 2);
  t.equal(dirs.get(4)!.memberLeft(3), 2);
  t.ok(run());
  for (const n of [1, 2, 4]) {
    t.equal(dirs.get(n)!.lookup('a'), undefined, `a gone at ${n}`);
    t.equal(dirs.get(n)!.lookup('b'), undefined);
    t.equal(dirs.get(n)!.lookup('c'), 1, 'others stay');
  }
});

t.test('higher seqnum wins; a late registration does not resurrect a withdrawn name', async (t) => {
  const d = new Directory({ clock: new ManualClock(), localAddress: 9, flood: () => {} });
  const e = (seqnum: number, address: number, removed = false): DirectoryEntry => ({ app: app('x'), address, seqnum, removed });
  t.equal(d.applyRemote([e(2, 5, true)], 1), 1, 'tombstone first');
  t.equal(d.applyRemote([e(1, 5)], 1), 0, 'older registration ignored');
  t.equal(d.lookup('x'), undefined);
  t.equal(d.applyRemote([e(3, 6)], 1), 1);
  t.equal(d.lookup('x'), 6);
  t.equal(d.applyRemote([e(3, 6, true)], 1), 0, 'at equal seqnum the registration wins');
  t.equal(d.applyRemote([e(3, 7)], 1), 1, 'then the higher address');
  t.equal(d.lookup('x'), 7);
  t.equal(d.stats.stale, 2);
  // A stale claim that this member (9) hosts a name it never registered is withdrawn by it.
  const flooded: DirectoryEntry[][] = [];
  const d2 = new Directory({ clock: new ManualClock(), localAddress: 9, flood: (x) => flooded.push(x) });
  d2.applyRemote([{ app: app('ghost'), address: 9, seqnum: 4, removed: false }], 1);
  t.equal(d2.lookup('ghost'), undefined);
  t.same(flooded, [[{ app: app('ghost'), address: 9, seqnum: 5, removed: true }]]);
  t.throws(() => new Directory({ clock: new ManualClock(), flood: () => {} }).register(app('a')), { code: 'ERR_DIRECTORY_NO_ADDRESS' });
});

t.test('bounded: remote entries beyond the limit are dropped and counted; tombstones expire', async (t) => {
  const clock = new ManualClock();
  const d = new Directory({ clock, localAddress: 1, flood: () => {}, maxEntries: 3, tombstoneMs: 1000 });
  d.register(app('a'));
  d.applyRemote([{ app: app('b'), address: 2, seqnum: 1, removed: false }, { app: app('c'), address: 2, seqnum: 1, removed: false }, { app: app('d'), address: 2, seqnum: 1, removed: false }], 2);
  t.equal(d.size, 3);
  t.equal(d.stats.droppedFull, 1);
  t.throws(() => d.register(app('e')), DirectoryError);
  d.unregister(app('a'));
  t.equal(d.size, 3, 'tombstone kept');
  d.register(app('e'));
  t.equal(d.size, 3, 'the oldest tombstone gives way when full');
  t.equal(d.lookup('e'), 1);
  d.unregister(app('e'));
  clock.advance(999);
  t.equal(d.entries().length, 3);
  clock.advance(1);
  t.equal(d.entries().length, 2, 'tombstone forgotten after tombstoneMs');
  t.equal(d.snapshot().entries.length, 2);
});

t.test('all replicas converge under random operations and delivery orders (fast-check)', async (t) => {
  const op = fc.record({ member: fc.integer({ min: 1, max: 5 }), name: fc.constantFrom('a', 'b', 'c'), kind: fc.constantFrom('reg', 'unreg', 'leave'), deliver: fc.nat(5) });
  const prop = fc.property(fc.array(op, { maxLength: 25 }), fc.array(fc.nat(1000), { minLength: 1, maxLength: 50 }), (ops, picks) => {
    const { dirs, run } = net(5, [[1, 2], [2, 3], [3, 4], [4, 5], [5, 1], [2, 4]]);
    let i = 0;
    const pick = (len: number) => picks[i++ % picks.length]! % len;
    for (const o of ops) {
      const d = dirs.get(o.member)!;
      if (o.kind === 'reg') d.register(app(o.name));
      else if (o.kind === 'unreg') d.unregister(app(o.name));
      else for (const x of dirs.values()) if (x !== d) x.memberLeft(o.member);
      // deliver some of the queue before the next operation (interleaving)
      run(pick, o.deliver);
    }
    if (!run(pick)) throw new Error('floods did not end');
    const views = [...dirs.values()].map((d) => JSON.stringify(d.entries().sort((x, y) => x.app.processName.localeCompare(y.app.processName))));
    if (new Set(views).size !== 1) throw new Error(`replicas differ:\n${views.join('\n')}`);
  });
  const r = fc.check(prop, { seed: SEED, numRuns: 300 });
  t.notOk(r.failed, `seed ${SEED}: ${r.counterexample ? JSON.stringify(r.counterexample) : ''} ${String(r.errorInstance ?? '')}`);
});

t.test('a large flood is cut into CDAP-sized updates', async (t) => {
  const entries = Array.from({ length: 2000 }, (_, i) => ({ app: { processName: `app-${i}`, entityName: 'e'.repeat(50) }, address: 3, seqnum: i, removed: true }));
  const values = directoryUpdateValues(entries, 8192);
  t.ok(values.length > 10 && values.every((v) => v.length <= 8192), `${values.length} updates`);
  t.same(values.flatMap((v) => decodeDirectoryUpdate(v)), entries);
  t.same(directoryUpdateValues([]), []);
});
