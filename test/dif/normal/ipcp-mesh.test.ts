/**
 * ipcp-mesh.test.ts — normal IPC processes in a mesh, not a star (mesh-harness.ts, real shim-hv
 * pairs): a triangle A(enroller) — B — C where C enrolls through A and then adds an adjacency
 * with B (`neighbours`), so B and C talk directly. When the B—C link is cut with SDUs in flight,
 * routing moves their flows onto B — A — C: the reliable flow delivers every SDU once and in
 * order, the flow-controlled one goes on carrying what is sent after the cut (what was in flight
 * may be lost: it has no retransmission). When the link comes back, C enrolls over it again
 * (keeping its address) and the traffic goes direct once more.
 */
import t from 'tap';
import type { Flow } from '../../../src/dif/api.js';
import { until } from '../helpers.js';
import { acceptAll, knows, within } from './ipcp-harness.js';
import { Mesh, forwarding, neighbours, portOf, relayed } from './mesh-harness.js';

function sdu(tag: number, i: number): Uint8Array {
  const b = new Uint8Array(200 + (i % 50));
  b.fill(i & 0xff);
  b[0] = tag;
  b[1] = i & 0xff;
  b[2] = i >> 8;
  return b;
}

/** Read `n` SDUs (bounded), returning their sequence numbers. */
async function readN(f: Flow, n: number, what: string): Promise<number[]> {
  const got: number[] = [];
  while (got.length < n) {
    const s = await within(f.read(), 5000, `${what}: SDU ${got.length + 1} of ${n}`);
    if (s === null) throw new Error(`${what}: the flow ended after ${got.length} SDUs`);
    got.push(s[1]! | (s[2]! << 8));
  }
  return got;
}

/** Read until the SDU numbered `last` (bounded), returning every sequence number seen. */
async function readUntil(f: Flow, last: number, what: string): Promise<number[]> {
  const got: number[] = [];
  while (got.at(-1) !== last) {
    const s = await within(f.read(), 5000, `${what}: SDU ${last}`);
    if (s === null) throw new Error(`${what}: the flow ended after ${got.length} SDUs`);
    got.push(s[1]! | (s[2]! << 8));
  }
  return got;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

t.test('a triangle: a cut link reroutes flows through the third member, and the link comes back', async (t) => {
  const m = new Mesh(t);
  const ab = m.edge();
  const ac = m.edge();
  const bc = m.edge();
  const a = m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a, ac.a] });
  const b = m.ipcp({ name: 'B', role: 'member', enroll: { lower: ab.b, enrollerName: 'A' }, lower: [bc.a] });
  const c = m.ipcp({ name: 'C', role: 'member', enroll: { lower: ac.b, enrollerName: 'A' }, neighbours: [{ lower: bc.b, name: 'B' }] });
  await until(() => neighbours(b).includes(c.address) && neighbours(c).includes(b.address), 'B and C adjacent over B—C', 5000);
  t.same(neighbours(a).sort(), [b.address, c.address].sort(), 'A is adjacent to both');
  t.equal(neighbours(c).length, 2, 'C has two neighbours: its enroller A and B');
  await until(() => forwarding(b).get(c.address) === portOf(b, c.address), 'B forwards to C directly', 3000);

  const onC = acceptAll(c, 'c-app');
  await until(() => knows(b, 'c-app'), 'B knows c-app', 3000);
  const rel = await within(b.allocateFlow('b-rel', 'c-app', { reliable: true }), 5000, 'reliable flow B → C');
  const relPeer = await onC.next();
  const fc = await within(b.allocateFlow('b-fc', 'c-app', { inOrder: true }), 5000, 'flow-controlled flow B → C');
  const fcPeer = await onC.next();
  t.equal(fc.qos.reliable, false, 'the second flow has no retransmission');

  const before = relayed(a);
  for (const i of range(0, 20)) {
    rel.write(sdu(1, i));
    fc.write(sdu(2, i));
  }
  t.same(await readN(relPeer, 20, 'reliable, direct'), range(0, 20));
  t.same(await readN(fcPeer, 20, 'flow-controlled, direct'), range(0, 20));
  t.equal(relayed(a), before, 'A relayed none of it: B and C talk over B—C');

  // Cut B—C with SDUs in flight.
  for (const i of range(20, 40)) {
    rel.write(sdu(1, i));
    fc.write(sdu(2, i));
  }
  bc.pair.down('cable cut');
  await until(() => forwarding(b).get(c.address) === portOf(b, a.address) && forwarding(c).get(b.address) === portOf(c, a.address), 'B and C route to each other through A', 5000);
  for (const i of range(40, 60)) {
    rel.write(sdu(1, i));
    fc.write(sdu(2, i));
  }
  t.same(await readN(relPeer, 40, 'reliable across the cut'), range(20, 60), 'the reliable flow delivered every SDU once and in order');
  const fcGot = await readUntil(fcPeer, 59, 'flow-controlled after the cut');
  t.same(fcGot.filter((i) => i >= 40), range(40, 60), 'the flow-controlled flow carries on through A: everything sent after the cut arrives');
  t.ok(fcGot.every((x, i) => i === 0 || x > fcGot[i - 1]!), `in order, no duplicates (${fcGot.filter((i) => i < 40).length} of the 20 in flight at the cut arrived)`);
  t.ok(relayed(a) >= before + 40, `A relays now (${relayed(a) - before} PDUs)`);
  t.equal(rel.state, 'allocated');
  t.equal(fc.state, 'allocated');

  // The link comes back: C's neighbour link enrolls again, keeping C's address.
  const addrC = c.address;
  bc.pair.up();
  await until(() => forwarding(b).get(c.address) === portOf(b, c.address) && portOf(b, c.address) !== portOf(b, a.address), 'B forwards to C directly again', 5000);
  t.equal(c.address, addrC, 'C kept its address');
  const mid = relayed(a);
  for (const i of range(60, 70)) rel.write(sdu(1, i));
  t.same(await readN(relPeer, 10, 'reliable, direct again'), range(60, 70));
  t.equal(relayed(a), mid, 'A relays nothing once B—C is back');
});

t.test('a square: flows go round the other way when a link dies, and end with a cause when the member is cut off', async (t) => {
  // A — B — C — D — A; C enrolls through B, D through A; C adds D as a neighbour.
  const m = new Mesh(t);
  const ab = m.edge();
  const bc = m.edge();
  const cd = m.edge();
  const ad = m.edge();
  const a = m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a, ad.a] });
  const b = m.ipcp({ name: 'B', role: 'member', enroll: { lower: ab.b, enrollerName: 'A' }, acceptEnrollment: true, lower: [bc.a] });
  const c = m.ipcp({ name: 'C', role: 'member', enroll: { lower: bc.b, enrollerName: 'B' }, neighbours: [{ lower: cd.b, name: 'D' }] });
  const d = m.ipcp({ name: 'D', role: 'member', enroll: { lower: ad.b, enrollerName: 'A' }, lower: [cd.a] });
  await until(() => neighbours(c).length === 2 && neighbours(d).length === 2, 'C and D adjacent', 5000);
  await until(() => forwarding(a).has(c.address), 'A routes to C', 3000);
  const onC = acceptAll(c, 'c-app');
  await until(() => knows(a, 'c-app'), 'A knows c-app', 3000);
  const rel = await within(a.allocateFlow('a-rel', 'c-app', { reliable: true }), 5000, 'A → C');
  const peer = await onC.next();
  // Whichever way A reaches C now (two hops either way), cut that first link.
  const viaB = forwarding(a).get(c.address) === portOf(a, b.address);
  const [cut, other] = viaB ? [ab, ad] : [ad, ab];
  for (const i of range(0, 10)) rel.write(sdu(1, i));
  cut.pair.down('link dies');
  const otherNeighbour = viaB ? d.address : b.address;
  await until(() => forwarding(a).get(c.address) === portOf(a, otherNeighbour), `A routes to C via ${viaB ? 'D' : 'B'} now`, 5000);
  for (const i of range(10, 20)) rel.write(sdu(1, i));
  t.same(await readN(peer, 20, 'round the other way'), range(0, 20), 'every SDU once, in order');

  // Now A's other link dies too: C is unreachable from A, and the flow ends with a cause.
  const ended = new Promise<{ reason: string; cause: string }>((resolve) => rel.once('deallocated', (reason: string, cause: string) => resolve({ reason, cause })));
  other.pair.down('link dies');
  const end = await within(ended, 5000, "the flow's end");
  t.equal(end.cause, 'port_down', `cause port_down: ${end.reason}`);
  t.match(end.reason, /unreachable/);
});
