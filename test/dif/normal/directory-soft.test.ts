/**
 * directory-soft.test.ts — the directory's soft state (src/dif/normal/directory.ts): a lost flood
 * repaired by the owner's periodic refresh, a vanished member's names expiring, a member routing
 * finds unreachable forgotten locally and accepted again when it is back, the owner re-asserting
 * a name it holds over a tombstone or a stale claim (after a restart), and the per-member bound.
 * Members joined by links on one ManualClock; floods queued and delivered by `run`, `drop`
 * decides (seeded) which deliveries are lost.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Directory, DirectoryError, type DirectoryOptions } from '../../../src/dif/normal/directory.js';
import { decodeDirectoryUpdate, encodeDirectoryUpdate } from '../../../src/dif/normal/cdap-objects.js';
import { mulberry32 } from '../../helpers/rng.js';

const REFRESH = 1000;
const MAX_AGE = 5000;

function net(n: number, links: [number, number][], opts: Partial<DirectoryOptions> = {}) {
  const clock = new ManualClock();
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
    dirs.set(me, new Directory({
      clock, localAddress: me, refreshMs: REFRESH, maxAgeMs: MAX_AGE, ...opts,
      flood: (entries, from) => {
        for (const nb of nbrs.get(me)!) if (nb !== from) queue.push({ to: nb, from: me, bytes: encodeDirectoryUpdate(entries) });
      },
    }));
  }
  let lost = 0;
  const run = (drop: () => boolean = () => false): void => {
    for (let steps = 0; queue.length; steps++) {
      if (steps > 100_000) throw new Error('floods did not end');
      const m = queue.shift()!;
      if (!nbrs.get(m.from)!.includes(m.to) || drop()) {
        lost++;
        continue;
      }
      dirs.get(m.to)!.applyRemote(decodeDirectoryUpdate(m.bytes), m.from);
    }
  };
  /** Let time pass in 100 ms steps, delivering after each. */
  const pass = (ms: number, drop?: () => boolean): void => {
    for (let x = 0; x < ms; x += 100) {
      clock.advance(100);
      run(drop);
    }
  };
  const cut = (a: number): void => {
    for (const b of nbrs.get(a)!) nbrs.set(b, nbrs.get(b)!.filter((x) => x !== a));
    nbrs.set(a, []);
  };
  return { clock, dirs, run, pass, cut, nbrs, lost: () => lost };
}

const app = (p: string) => ({ processName: p });

t.test('a lost flood is repaired by the owner\'s next refresh', async (t) => {
  const { dirs, run, pass } = net(4, [[1, 2], [2, 3], [3, 4]]);
  dirs.get(1)!.register(app('srv'));
  run(() => true); // every PDU of the first flood is lost
  for (const n of [2, 3, 4]) t.equal(dirs.get(n)!.lookup('srv'), undefined, `not at ${n} yet`);
  pass(REFRESH);
  for (const n of [2, 3, 4]) t.equal(dirs.get(n)!.lookup('srv'), 1, `at ${n} after one refresh`);
  t.ok(dirs.get(1)!.stats.refreshed >= 1);
});

t.test('under 30 % seeded loss every member learns every name within a few refreshes, and keeps it', async (t) => {
  const seed = Number(process.env.SEED ?? 77);
  const rand = mulberry32(seed);
  const { dirs, pass, lost } = net(6, [[1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 1], [2, 5]]);
  for (const n of [1, 3, 6]) for (const x of ['a', 'b']) dirs.get(n)!.register(app(`${x}${n}`));
  pass(10 * REFRESH, () => rand() < 0.3);
  t.ok(lost() > 0, `${lost()} deliveries lost (seed ${seed})`);
  for (const [n, d] of dirs) for (const m of [1, 3, 6]) for (const x of ['a', 'b']) t.equal(d.lookup(`${x}${m}`), m, `${x}${m} at ${n} (seed ${seed})`);
  // Entries are held under loss for many max ages: the refresh keeps them alive.
  pass(4 * MAX_AGE, () => rand() < 0.3);
  for (const d of dirs.values()) t.equal(d.registrations().length, 6, `all six names still held (seed ${seed})`);
});

t.test('a member that vanishes silently: its names expire everywhere after max age; the others stay', async (t) => {
  const { dirs, pass, cut } = net(4, [[1, 2], [2, 3], [3, 4], [4, 1]]);
  dirs.get(3)!.register(app('gone'));
  dirs.get(1)!.register(app('stays'));
  pass(REFRESH);
  for (const d of dirs.values()) t.equal(d.lookup('gone'), 3);
  cut(3);
  dirs.get(3)!.stop();
  pass(MAX_AGE - 2 * REFRESH);
  t.equal(dirs.get(1)!.lookup('gone'), 3, 'held a while');
  pass(3 * REFRESH);
  for (const n of [1, 2, 4]) {
    t.equal(dirs.get(n)!.lookup('gone'), undefined, `gone at ${n}`);
    t.equal(dirs.get(n)!.lookup('stays'), 1, `stays at ${n}`);
    t.equal(dirs.get(n)!.entriesOf(3), 0);
    t.ok(dirs.get(n)!.stats.expired >= 1);
  }
});

t.test('unreachable member: forgotten locally at once, accepted again when it is back', async (t) => {
  const { dirs, run, pass, nbrs } = net(3, [[1, 2], [2, 3]]);
  dirs.get(3)!.register(app('x'));
  dirs.get(3)!.register(app('y'));
  run();
  const saved = { a: nbrs.get(2)!, b: nbrs.get(3)! };
  nbrs.set(2, [1]);
  nbrs.set(3, []);
  t.equal(dirs.get(2)!.memberUnreachable(3), 2);
  t.equal(dirs.get(1)!.memberUnreachable(3), 2);
  t.equal(dirs.get(2)!.memberUnreachable(2), 0, 'never our own');
  for (const n of [1, 2]) t.equal(dirs.get(n)!.lookup('x'), undefined);
  for (const n of [1, 2]) t.equal(dirs.get(n)!.lostAt('x'), 3, `${n} remembers where x was (for the error's words)`);
  t.equal(dirs.get(1)!.lostAt('never'), undefined, 'a name never seen is not lost');
  t.equal(dirs.get(1)!.stats.removedUnreachable, 2);
  t.equal(dirs.get(3)!.lookup('x'), 3, 'the owner keeps its names');
  // Back (re-enrolled): the owner's next refresh (or the enrollment sync) brings the names back.
  nbrs.set(2, saved.a);
  nbrs.set(3, saved.b);
  pass(REFRESH);
  for (const n of [1, 2]) t.equal(dirs.get(n)!.lookup('y'), 3, `y back at ${n}`);
  for (const n of [1, 2]) t.equal(dirs.get(n)!.lostAt('y'), undefined, `y no longer lost at ${n}`);
});

t.test('the owner re-asserts a name it holds over a tombstone, and over a stale claim after a restart', async (t) => {
  const { dirs, run } = net(3, [[1, 2], [2, 3]]);
  dirs.get(3)!.register(app('x'));
  run();
  // Another member wrongly withdraws 3's names (it thought 3 had left): 3 answers above it.
  t.equal(dirs.get(1)!.memberLeft(3), 1);
  run();
  for (const d of dirs.values()) t.equal(d.lookup('x'), 3, 'x at 3 again everywhere');
  t.equal(dirs.get(3)!.stats.reasserted, 1);

  // Member 3 restarts with empty state and a new address 9; the DIF still has x@3 at a higher seqnum.
  const clock = new ManualClock();
  const sent: { seqnum: number; address: number; removed: boolean }[] = [];
  const fresh = new Directory({ clock, refreshMs: REFRESH, maxAgeMs: MAX_AGE, reachable: (a) => a !== 3, flood: (es) => sent.push(...es) });
  fresh.applyRemote(dirs.get(2)!.entries(), 2); // enrollment: the DIF's directory first
  fresh.setLocalAddress(9);
  fresh.register(app('x'));
  t.equal(fresh.lookup('x'), 9, 'the re-registration goes above the old copy');
  const old = dirs.get(2)!.entries().find((e) => e.app.processName === 'x')!;
  t.ok(sent.at(-1)!.seqnum > old.seqnum);
  // And if the old claim won the race (applied after the registration), the refresh takes the name back from an unreachable claimant.
  const late = new Directory({ clock, localAddress: 9, refreshMs: REFRESH, maxAgeMs: MAX_AGE, reachable: (a) => a !== 3, flood: () => {} });
  late.register(app('x'));
  late.applyRemote([{ ...old, seqnum: old.seqnum + 5 }], 2);
  t.equal(late.lookup('x'), 3, 'overridden for now');
  clock.advance(REFRESH);
  t.equal(late.lookup('x'), 9, 'taken back at the refresh: 3 is unreachable');
});

t.test('a new address that a former member used: its stale claims are withdrawn', async (t) => {
  const sent: { removed: boolean }[] = [];
  const d = new Directory({ clock: new ManualClock(), flood: (es) => sent.push(...es) });
  d.applyRemote([{ app: app('ghost'), address: 7, seqnum: 3, removed: false }], 1);
  sent.length = 0;
  d.setLocalAddress(7);
  t.equal(d.lookup('ghost'), undefined);
  t.same(sent.map((e) => e.removed), [true]);
});

t.test('bounded per member: a peer cannot fill the directory alone; drops counted', async (t) => {
  const d = new Directory({ clock: new ManualClock(), localAddress: 1, flood: () => {}, maxEntriesPerMember: 3, maxEntries: 10 });
  const many = Array.from({ length: 8 }, (_, i) => ({ app: app(`n${i}`), address: 5, seqnum: 1, removed: false }));
  t.equal(d.applyRemote(many, 5), 3);
  t.equal(d.stats.droppedMemberFull, 5);
  t.equal(d.entriesOf(5), 3);
  t.equal(d.applyRemote([{ ...many[0]!, seqnum: 2 }], 5), 1, 'a newer version of a held name is no new entry');
  t.equal(d.applyRemote([{ app: app('other'), address: 6, seqnum: 1, removed: false }], 5), 1, 'another member still has room');
  t.equal(d.applyRemote([{ ...many[1]!, seqnum: 2, removed: true }], 5), 1);
  t.equal(d.entriesOf(5), 2, 'a withdrawal frees the member\'s room');
  t.equal(d.applyRemote([many[7]!], 5), 1);
  t.throws(() => new Directory({ clock: new ManualClock(), flood: () => {}, refreshMs: 1000, maxAgeMs: 1500 }), DirectoryError);
  t.throws(() => new Directory({ clock: new ManualClock(), flood: () => {}, refreshMs: 1000, maxAgeMs: 1500 }), { code: 'ERR_DIRECTORY_CONFIG' });
});

t.test('where a lost name was is remembered for max age only, and bounded', async (t) => {
  const { dirs, run, clock, nbrs } = net(2, [[1, 2]], { maxEntries: 3 });
  for (const x of ['a', 'b', 'c']) dirs.get(2)!.register(app(x));
  run();
  nbrs.set(1, []);
  t.equal(dirs.get(1)!.memberUnreachable(2), 3);
  t.equal(dirs.get(1)!.lostAt('a'), 2);
  clock.advance(MAX_AGE + 1);
  t.equal(dirs.get(1)!.lostAt('a'), undefined, 'forgotten after max age');
});
