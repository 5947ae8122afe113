/**
 * routing-props.test.ts — fast-check properties of the routing pieces: Dijkstra (spf.ts) against a
 * brute-force all-pairs oracle with the same lowest-next-hop tie-break, independent of the order
 * edges were learnt in; the LFDB merge (lfdb.ts) giving one final state whatever order updates
 * arrive in (and idempotent); the routing message codec round-tripping and refusing garbage with
 * its typed error only. Seeded (FC_SEED overrides; fast-check prints the seed on failure).
 */
import fc from 'fast-check';
import t from 'tap';
import { Lfdb, type LowerFlow } from '../../../src/dif/normal/lfdb.js';
import { MAX_ENTRIES_PER_MSG, RoutingMsgError, decodeRoutingMessage, encodeRoutingMessage, type RoutingMessage } from '../../../src/dif/normal/routing-msg.js';
import { shortestPaths } from '../../../src/dif/normal/spf.js';
import { globalNextHops } from './routing-sim.js';

const seed = Number(process.env.FC_SEED ?? 20261201);
const params = { seed, numRuns: 300 };

/** A graph on nodes 1..n: undirected adjacencies, a cost per direction (small, so ties abound). */
const graphArb = fc.integer({ min: 1, max: 12 }).chain((n) =>
  fc.record({
    n: fc.constant(n),
    edges: fc.uniqueArray(fc.tuple(fc.integer({ min: 1, max: n }), fc.integer({ min: 1, max: n }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })), {
      maxLength: n * 3,
      selector: ([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`,
    }),
    order: fc.integer({ min: 0, max: 1 << 30 }),
  }),
);

t.test('Dijkstra: distances and lowest-next-hop tie-break equal the all-pairs oracle, in any learning order', async (t) => {
  fc.assert(
    fc.property(graphArb, ({ n, edges, order }) => {
      const links = new Map<string, number>();
      const directed: [number, number, number][] = [];
      for (const [a, b, cab, cba] of edges) {
        if (a === b) continue;
        links.set(`${a}>${b}`, cab);
        links.set(`${b}>${a}`, cba);
        directed.push([a, b, cab], [b, a, cba]);
      }
      // Build the graph from the edges in a pseudo-random order: the result must not depend on it.
      let x = order || 1;
      const shuffled = directed.map((e) => [((x = (x * 1103515245 + 12345) & 0x7fffffff)), e] as const).sort((p, q) => p[0] - q[0]).map((p) => p[1]);
      const g = new Map<number, Map<number, number>>();
      for (const [a, b, c] of shuffled) {
        if (!g.has(a)) g.set(a, new Map());
        g.get(a)!.set(b, c);
      }
      const nodes = Array.from({ length: n }, (_, i) => i + 1);
      const oracle = globalNextHops(nodes, links);
      for (const s of nodes) {
        const got = shortestPaths(g, s).nextHop;
        const want = oracle.get(s)!;
        if (got.size !== want.size) return false;
        for (const [d, h] of want) if (got.get(d) !== h) return false;
      }
      return true;
    }),
    params,
  );
  t.pass(`Dijkstra matches the oracle (seed ${seed})`);
});

t.test('Dijkstra: a tie is broken towards the lower neighbour address', async (t) => {
  // 1 reaches 4 via 2 or via 3 at equal cost; the neighbours are learnt in either order.
  for (const first of [2, 3]) {
    const other = first === 2 ? 3 : 2;
    const g = new Map([
      [1, new Map([[first, 1], [other, 1]])],
      [first, new Map([[4, 1], [1, 1]])],
      [other, new Map([[4, 1], [1, 1]])],
      [4, new Map([[2, 1], [3, 1]])],
    ]);
    t.equal(shortestPaths(g, 1).nextHop.get(4), 2, `via 2 whichever was learnt first (${first})`);
  }
  const g = new Map([
    [1, new Map([[2, 5], [3, 1]])],
    [3, new Map([[2, 1], [1, 1]])],
    [2, new Map([[1, 1], [3, 1]])],
  ]);
  t.equal(shortestPaths(g, 1).nextHop.get(2), 3, 'a cheaper path beats a direct but costly link');
  t.equal(shortestPaths(g, 1).dist.get(2), 2);
});

const entryArb = fc.record({
  from: fc.integer({ min: 1, max: 4 }),
  to: fc.integer({ min: 5, max: 7 }),
  cost: fc.integer({ min: 1, max: 3 }),
  seqnum: fc.integer({ min: 0, max: 4 }), // small: many equal seqnums with different contents
  up: fc.boolean(),
});

function mergeAll(updates: LowerFlow[]): ReturnType<Lfdb['snapshot']> {
  const db = new Lfdb();
  for (const u of updates) db.merge(u, 0);
  return db.snapshot(0);
}

t.test('LFDB merge: the final state does not depend on the order updates arrive in, and is idempotent', async (t) => {
  fc.assert(
    fc.property(
      fc.array(entryArb, { maxLength: 40 }).chain((u) => fc.tuple(fc.constant(u), fc.shuffledSubarray(u, { minLength: u.length, maxLength: u.length }))),
      ([updates, permuted]) => {
        const a = mergeAll(updates);
        const b = mergeAll(permuted);
        const c = mergeAll([...updates, ...permuted]);
        return JSON.stringify(a) === JSON.stringify(b) && JSON.stringify(a) === JSON.stringify(c);
      },
    ),
    params,
  );
  t.pass(`LFDB merge is order independent (seed ${seed})`);
});

t.test('LFDB: higher seqnum wins; at equal seqnum a withdrawal wins; the bound refuses new keys', async (t) => {
  const db = new Lfdb(2);
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: true }, 0), 'new');
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 4, up: false }, 1), 'stale');
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: true }, 2), 'refreshed');
  t.equal(db.get(1, 2)!.updatedAt, 2, 'a refresh renews the age');
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: false }, 3), 'updated');
  t.equal(db.get(1, 2)!.up, false);
  t.equal(db.merge({ from: 2, to: 1, cost: 1, seqnum: 1, up: true }, 0), 'new');
  t.equal(db.merge({ from: 3, to: 1, cost: 1, seqnum: 1, up: true }, 0), 'full', 'a third key is refused at maxEntries 2');
  t.equal(db.size, 2);
  t.same(db.graph(), new Map(), 'a withdrawn direction takes the adjacency out of the graph');
  t.same(db.expire(1000, 500, () => false).length, 2, 'ageing deletes what nobody refreshed');
  const two = new Lfdb();
  two.merge({ from: 1, to: 2, cost: 3, seqnum: 1, up: true }, 0);
  t.same(two.graph(), new Map(), 'one direction up is not an adjacency (two-way check)');
  two.merge({ from: 2, to: 1, cost: 1, seqnum: 1, up: true }, 0);
  t.same(two.graph(), new Map([[1, new Map([[2, 3]])], [2, new Map([[1, 1]])]]), 'both up: each direction with its own cost');
});

const lowerFlowArb = fc.record({
  from: fc.integer({ min: 1, max: 0xffffffff }),
  to: fc.integer({ min: 1, max: 0xffffffff }),
  cost: fc.integer({ min: 1, max: 0xffff }),
  seqnum: fc.integer({ min: 0, max: 0xffffffff }),
  up: fc.boolean(),
}).filter((e) => e.from !== e.to);

const msgArb: fc.Arbitrary<RoutingMessage> = fc.oneof(
  fc.record({ kind: fc.constant('lfdb' as const), entries: fc.array(lowerFlowArb, { minLength: 1, maxLength: MAX_ENTRIES_PER_MSG }) }),
  fc.record({ kind: fc.constant('keepalive' as const), address: fc.integer({ min: 0, max: 0xffffffff }) }),
);

t.test('routing messages: round trip, and anything else is refused with ERR_ROUTING_MSG only', async (t) => {
  fc.assert(
    fc.property(msgArb, (m) => {
      const back = decodeRoutingMessage(encodeRoutingMessage(m));
      return JSON.stringify(back) === JSON.stringify(m);
    }),
    { ...params, numRuns: 100 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
      try {
        decodeRoutingMessage(b);
        return true;
      } catch (e) {
        return e instanceof RoutingMsgError && e.code === 'ERR_ROUTING_MSG';
      }
    }),
    { ...params, numRuns: 2000 },
  );
  const ok = encodeRoutingMessage({ kind: 'lfdb', entries: [{ from: 1, to: 2, cost: 1, seqnum: 1, up: true }] });
  t.same([...ok], [1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 1, 0, 0, 0, 1], 'the documented layout, big-endian');
  t.throws(() => decodeRoutingMessage(ok.subarray(0, ok.length - 1)), { code: 'ERR_ROUTING_MSG' }, 'short');
  t.throws(() => decodeRoutingMessage(new Uint8Array([...ok, 0])), { code: 'ERR_ROUTING_MSG' }, 'trailing byte');
  const zeroCost = ok.slice();
  zeroCost[12] = 0;
  zeroCost[13] = 0;
  t.throws(() => decodeRoutingMessage(zeroCost), { code: 'ERR_ROUTING_MSG', message: /cost 0/ }, 'cost 0');
  t.throws(() => encodeRoutingMessage({ kind: 'lfdb', entries: [] }), { code: 'ERR_ROUTING_MSG' }, 'empty update');
});
