/**
 * routing-rejoin.test.ts — link-state routing (src/dif/normal/routing.ts) beyond a star: chains
 * and meshes of ≥ 3 members where a member leaves and rejoins under the SAME address with fresh
 * state (its seqnums restart at 1), sometimes before the DIF has heard of its departure, sometimes
 * through other neighbours, with time passing (refresh, ageing). After flooding settles every
 * table must equal the global shortest paths (routing-sim.ts oracle), and no entry of the old
 * incarnation may survive max age.
 */
import t, { type Test } from 'tap';
import { SimNet, mulberry32, sorted } from './routing-sim.js';

function converged(t: Test, net: SimNet, what: string): void {
  t.same(sorted(net.tables()), sorted(net.expected()), `${what} (seed ${net.seed})`);
}

t.test('chain 1-2-3-4-5: the middle member leaves and rejoins with fresh state, repeatedly', async (t) => {
  const net = new SimNet(11, { refreshMs: 1000, maxAgeMs: 5000 });
  for (let a = 1; a <= 5; a++) net.addNode(a);
  for (let a = 1; a < 5; a++) net.link(a, a + 1);
  net.settle();
  net.run(10_000, 500); // seqnums climb
  converged(t, net, 'chain');
  for (let round = 0; round < 3; round++) {
    net.leave(3);
    net.settle();
    converged(t, net, `round ${round}: 3 left, the chain is cut`);
    t.notOk(net.nodes.get(1)!.forwardingTable().has(5), '1 no longer reaches 5');
    net.addNode(3);
    net.link(2, 3);
    net.link(3, 4);
    net.settle();
    converged(t, net, `round ${round}: 3 is back`);
    t.equal(net.nodes.get(1)!.forwardingTable().get(5), 1002, '1 reaches 5 through 2 again');
    net.run(3000, 500);
    converged(t, net, `round ${round}: after refreshes`);
  }
});

t.test('mesh: a member rejoins before its departure reached everyone, through other neighbours', async (t) => {
  for (let seed = 200; seed < 230; seed++) {
    const rnd = mulberry32(seed);
    const net = new SimNet(seed, { refreshMs: 1000, maxAgeMs: 5000, keepaliveMs: 60_000_000 });
    const n = 4 + Math.floor(rnd() * 6);
    for (let a = 1; a <= n; a++) net.addNode(a);
    for (let a = 2; a <= n; a++) net.link(a, 1 + Math.floor(rnd() * (a - 1)));
    for (let k = 0; k < n; k++) {
      const a = 1 + Math.floor(rnd() * n);
      const b = 1 + Math.floor(rnd() * n);
      if (a !== b && !net.links.has(`${a}>${b}`)) net.link(a, b);
    }
    net.settle();
    net.run(4000, 500);
    converged(t, net, `mesh of ${n}`);
    for (let round = 0; round < 3; round++) {
      const who = 1 + Math.floor(rnd() * n);
      net.leave(who);
      if (rnd() < 0.5) net.settle(); // else the rejoin races the withdrawals
      net.addNode(who);
      const others = [...net.nodes.keys()].filter((x) => x !== who);
      const k = 1 + Math.floor(rnd() * 2);
      for (let j = 0; j < k; j++) {
        const b = others[Math.floor(rnd() * others.length)]!;
        if (!net.links.has(`${who}>${b}`)) net.link(who, b);
      }
      net.settle();
      converged(t, net, `round ${round}: ${who} rejoined`);
      net.run(6000, 500); // past max age: only live state is left
      converged(t, net, `round ${round}: after max age`);
      for (const [a, r] of net.nodes) {
        const lfdb = r.snapshot().lfdb;
        for (const e of lfdb.filter((x) => x.up)) t.ok(net.links.has(`${e.from}>${e.to}`), `seed ${seed}: ${a} holds no up entry ${e.from}→${e.to} for a link that is gone`);
      }
    }
  }
});
