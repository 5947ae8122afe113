/**
 * routing.test.ts — the normal DIF's link-state routing (src/dif/normal/routing.ts) in simulated
 * DIFs (routing-sim.ts): line, star (the host relaying VMs), ring and seeded random graphs, as
 * members join and leave. After flooding settles every member's forwarding table must equal the
 * next hops a global shortest-path computation gives; a lost neighbour's routes are withdrawn
 * everywhere; silent members are found by missed keepalives; entries nobody refreshes age out.
 */
import t, { type Test } from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Routing } from '../../../src/dif/normal/routing.js';
import { SimNet, mulberry32, sorted } from './routing-sim.js';

function converged(t: Test, net: SimNet, what: string): void {
  t.same(sorted(net.tables()), sorted(net.expected()), `${what} (seed ${net.seed})`);
}

t.test('line: join end to end, a middle member leaves, another joins across the gap', async (t) => {
  const net = new SimNet(1);
  for (let a = 1; a <= 5; a++) net.addNode(a);
  for (let a = 1; a < 5; a++) net.link(a, a + 1);
  net.settle();
  converged(t, net, 'line of 5');
  t.same([...net.nodes.get(1)!.forwardingTable()].sort((x, y) => x[0] - y[0]), [[2, 1002], [3, 1002], [4, 1002], [5, 1002]], 'node 1 reaches everything via node 2');

  net.leave(3);
  net.settle();
  converged(t, net, 'after 3 left');
  t.same([...net.nodes.get(1)!.forwardingTable().keys()], [2], 'node 1 lost 3, 4 and 5');
  t.same(net.events.find((e) => e.node === 1 && e.kind === 'unreachable')?.addrs, [3, 4, 5], 'node 1 told 3, 4 and 5 became unreachable');
  t.same(net.events.filter((e) => e.kind === 'down' && e.node !== 3).map((e) => [e.node, e.addr, e.cause]).sort(), [[2, 3, 'flow-lost'], [4, 3, 'flow-lost']], 'the two neighbours of 3 saw it go, with the cause');

  net.addNode(6);
  net.link(2, 6);
  net.link(6, 4);
  net.settle();
  converged(t, net, 'after 6 bridged the gap');
  t.equal(net.nodes.get(1)!.forwardingTable().get(5), 1002);
  t.equal(net.nodes.get(6)!.forwardingTable().get(1), 1002);
});

t.test('star: the host relays between VMs; a VM leaving is withdrawn everywhere', async (t) => {
  const net = new SimNet(2);
  const host = 1;
  net.addNode(host);
  for (let vm = 2; vm <= 7; vm++) {
    net.addNode(vm);
    net.link(host, vm);
    net.settle();
    converged(t, net, `VM ${vm} joined`);
  }
  for (let vm = 2; vm <= 7; vm++) {
    const tab = net.nodes.get(vm)!.forwardingTable();
    t.equal(tab.size, 6, `VM ${vm} has routes to all others`);
    t.ok([...tab.values()].every((p) => p === 1000 + host), `VM ${vm} reaches all of them through the host`);
  }
  net.leave(4);
  net.settle();
  converged(t, net, 'VM 4 left');
  for (const [a, r] of net.nodes) {
    t.notOk(r.forwardingTable().has(4), `node ${a} has no route to 4`);
    // Both directions of the 1–4 adjacency are withdrawn in every database.
    const lf = r.snapshot().lfdb.filter((e) => (e.from === 4 && e.to === 1) || (e.from === 1 && e.to === 4));
    t.ok(lf.length === 2 && lf.every((e) => !e.up), `node ${a} holds both directions of 1–4 as withdrawn`);
  }
  t.ok(net.events.some((e) => e.node === 2 && e.kind === 'unreachable' && e.addrs?.includes(4)), 'VM 2 told that 4 is unreachable (its flows to 4 can end)');
});

t.test('ring: a broken link makes traffic go the other way round', async (t) => {
  const net = new SimNet(3);
  const n = 6;
  for (let a = 1; a <= n; a++) net.addNode(a);
  for (let a = 1; a <= n; a++) net.link(a, (a % n) + 1);
  net.settle();
  converged(t, net, 'ring of 6');
  t.equal(net.nodes.get(1)!.forwardingTable().get(4), 1002, 'tie 1→4 both ways round: the lower next hop (2) wins');
  net.unlink(1, 2);
  net.settle();
  converged(t, net, 'ring with 1–2 broken');
  t.equal(net.nodes.get(1)!.forwardingTable().get(2), 1006, '1 reaches 2 the long way, via 6');
  net.link(1, 2);
  net.settle();
  converged(t, net, 'ring healed');
});

t.test('random graphs (seeded): members join and leave, tables match the oracle each time', async (t) => {
  for (let seed = 100; seed < 130; seed++) {
    const rnd = mulberry32(seed);
    const net = new SimNet(seed);
    const n = 6 + Math.floor(rnd() * 10);
    const addr = (i: number) => 10 + i * 7; // not contiguous, not in insertion order of ports
    const cost = () => 1 + Math.floor(rnd() * 4);
    for (let i = 0; i < n; i++) {
      net.addNode(addr(i));
      if (i > 0) net.link(addr(i), addr(Math.floor(rnd() * i)), cost(), cost()); // a random tree…
      if (rnd() < 0.5) net.settle(); // sometimes joins overlap in flight
    }
    for (let k = 0; k < n; k++) {
      const a = addr(Math.floor(rnd() * n));
      const b = addr(Math.floor(rnd() * n));
      if (a !== b && !net.links.has(`${a}>${b}`)) net.link(a, b, cost(), cost()); // …plus cycles, asymmetric costs
    }
    net.settle();
    converged(t, net, `random graph of ${n}`);
    for (let round = 0; round < 3; round++) {
      const alive = [...net.nodes.keys()];
      net.leave(alive[Math.floor(rnd() * alive.length)]!);
      net.settle();
      converged(t, net, `round ${round}: a member left`);
      const fresh = 1000 + seed * 10 + round;
      net.addNode(fresh);
      const rest = [...net.nodes.keys()].filter((x) => x !== fresh);
      for (let j = 0; j < 2; j++) {
        const b = rest[Math.floor(rnd() * rest.length)]!;
        if (!net.links.has(`${fresh}>${b}`)) net.link(fresh, b, cost(), cost());
      }
      net.settle();
      converged(t, net, `round ${round}: a member joined`);
    }
  }
});

t.test('keepalive: a silent VM is found after the misses, its routes withdrawn, its flows told', async (t) => {
  const net = new SimNet(4, { keepaliveMs: 10_000, keepaliveMisses: 3 });
  for (let a = 1; a <= 4; a++) net.addNode(a);
  for (let vm = 2; vm <= 4; vm++) net.link(1, vm);
  net.settle();
  net.run(60_000);
  t.same(net.events, [], 'live neighbours that answer keepalives stay up');
  net.crash(3);
  net.run(30_000);
  t.ok(net.nodes.get(2)!.forwardingTable().has(3), '3 × 10 s silent: not yet declared down');
  net.run(10_000);
  t.same(net.events.filter((e) => e.kind === 'down').map((e) => [e.node, e.addr, e.cause]), [[1, 3, 'keepalive']], 'the host declared 3 down after the 3 misses');
  const silent = net.events.find((e) => e.kind === 'down')!.at - 60_000;
  t.ok(silent > 30_000 && silent <= 40_000, `declared within (misses + 1) × interval of the last message (${silent} ms)`);
  converged(t, net, 'after keepalive loss');
  t.notOk(net.nodes.get(2)!.forwardingTable().has(3), 'VM 2 no longer routes to 3');
  t.ok(net.events.some((e) => e.node === 4 && e.kind === 'unreachable' && e.addrs?.includes(3)), 'VM 4 told that 3 is unreachable');
});

t.test('ageing: periodic refresh keeps entries alive; a vanished member\'s entries age out', async (t) => {
  const net = new SimNet(5, { refreshMs: 1000, maxAgeMs: 5000, keepaliveMs: 60_000_000 });
  for (let a = 1; a <= 4; a++) net.addNode(a);
  net.link(1, 2);
  net.link(2, 3);
  net.link(3, 4);
  net.settle();
  net.run(20_000, 500);
  converged(t, net, 'refreshed entries outlive max age');
  t.equal(net.nodes.get(1)!.snapshot().lfdb.length, 6, 'all 6 entries still there');
  const seq = net.nodes.get(1)!.snapshot().lfdb.find((e) => e.from === 3 && e.to === 4)!.seqnum;
  t.ok(seq >= 15, `node 3's entry was re-advertised with rising seqnums (now ${seq})`);
  // 4 vanishes and so does its neighbour's knowledge of it, without any withdrawal (no keepalive in time):
  net.crash(4);
  net.run(3000, 500);
  const stale = net.nodes.get(1)!.snapshot().lfdb.filter((e) => e.from === 4);
  t.equal(stale.length, 1, 'node 4\'s entry still held before max age');
  net.run(5000, 500);
  t.same(net.nodes.get(1)!.snapshot().lfdb.filter((e) => e.from === 4), [], 'and gone after it');
  t.ok(net.nodes.get(1)!.stats.entriesExpired >= 1);
});

t.test('a member restarting with empty state re-originates above the DIF\'s old copies', async (t) => {
  const net = new SimNet(6);
  for (let a = 1; a <= 4; a++) net.addNode(a);
  net.link(1, 2);
  net.link(2, 3);
  net.link(3, 4);
  net.settle();
  net.run(120_000); // seqnums climb through a few refreshes
  net.leave(4);
  net.settle();
  net.addNode(4); // fresh instance: its seqnums restart at 1
  net.link(3, 4);
  net.settle();
  converged(t, net, 'after the restart');
  t.equal(net.nodes.get(1)!.forwardingTable().get(4), 1002, 'node 1 routes to the restarted 4');
  t.ok(net.nodes.get(4)!.stats.reoriginated >= 1, 'node 4 re-originated its entry above the withdrawn copy');
});

t.test('bad input is contained and counted', async (t) => {
  const net = new SimNet(7);
  const r = net.addNode(1);
  net.addNode(2);
  net.link(1, 2);
  net.settle();
  r.receiveBytes(1002, new Uint8Array([9, 9, 9]));
  r.receiveBytes(1002, new Uint8Array([1, 1, 0, 0]));
  t.equal(r.stats.msgsBad, 2, 'undecodable messages counted');
  r.receiveBytes(4242, new Uint8Array([1, 2, 0, 0, 0, 7]));
  t.equal(r.stats.msgsFromStranger, 1, 'a message from a port that is no neighbour is ignored');
  r.receive(1002, { kind: 'lfdb', entries: [{ from: 5, to: 5, cost: 1, seqnum: 1, up: true }] });
  t.equal(r.stats.msgsBad, 3, 'a bad typed entry is refused');
  t.throws(() => r.neighbourUp(1, 1009), { code: 'ERR_ROUTING_NEIGHBOUR' }, 'ourselves as neighbour');
  t.throws(() => r.neighbourUp(3, 1002), { code: 'ERR_ROUTING_NEIGHBOUR' }, 'a port already leading elsewhere');
  t.throws(() => r.neighbourUp(3, 1003, 0), { code: 'ERR_ROUTING_NEIGHBOUR' }, 'cost 0');
  converged(t, net, 'unaffected');
  for (const x of net.nodes.values()) x.stop();
  t.equal(net.clock.pending, 0, 'stop() clears every timer');
});

t.test('re-enrollment: neighbourUp again for a known neighbour (possibly on a new port) stays in sync', async (t) => {
  const net = new SimNet(8);
  for (let a = 1; a <= 3; a++) net.addNode(a);
  net.link(1, 2);
  net.link(2, 3);
  net.settle();
  // 2 re-enrolls with 1 without 1 having seen the flow go (the IRATI #462 situation), same port:
  net.nodes.get(1)!.neighbourUp(2, 1002);
  net.nodes.get(2)!.neighbourUp(1, 1001);
  net.settle();
  converged(t, net, 'after re-enrollment on the same port');
  t.same(net.nodes.get(1)!.neighbours(), [2]);
  t.same(net.events, [], 'no spurious neighbour-down');
});

t.test('snapshots are plain, deterministic data', async (t) => {
  const a = new SimNet(9);
  const b = new SimNet(10); // a different delivery order
  for (const net of [a, b]) {
    for (let x = 1; x <= 5; x++) net.addNode(x);
    for (let x = 1; x < 5; x++) net.link(x, x + 1);
    net.link(5, 1);
    net.settle();
  }
  for (let x = 1; x <= 5; x++) {
    const sa = a.nodes.get(x)!.snapshot();
    const sb = b.nodes.get(x)!.snapshot();
    t.same(JSON.parse(JSON.stringify(sa)), sa, `node ${x}: JSON round trip`);
    t.same(sa.lfdb, sb.lfdb, `node ${x}: same database whatever the delivery order`);
    t.same(sa.forwarding, sb.forwarding, `node ${x}: same forwarding table`);
  }
});

t.test('bad configuration is refused with ERR_ROUTING_CONFIG', async (t) => {
  const clock = new ManualClock();
  const base = { clock, address: 1, send: () => true };
  t.throws(() => new Routing({ ...base, address: 0 }), { code: 'ERR_ROUTING_CONFIG' }, 'address 0 (not enrolled)');
  t.throws(() => new Routing({ ...base, refreshMs: 1000, maxAgeMs: 1500 }), { code: 'ERR_ROUTING_CONFIG' }, 'max age too short for the refresh');
  t.throws(() => new Routing({ ...base, keepaliveMisses: 0 }), { code: 'ERR_ROUTING_CONFIG' }, 'zero keepalive misses');
  t.throws(() => new Routing({ ...base, keepaliveMs: -1 }), { code: 'ERR_ROUTING_CONFIG' }, 'negative keepalive interval');
});
