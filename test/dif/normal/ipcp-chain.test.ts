/**
 * ipcp-chain.test.ts — members that enroll others (acceptEnrollment), over real shim-hv pairs
 * (mesh-harness.ts): a chain A(enroller) ← B ← C where C enrolls through B and gets an address
 * from the block A delegated to B; two such members enrolling at the same time never hand out
 * the same address; a member that was given no block refuses a new member with a reason, and
 * flows cross the chain.
 */
import t from 'tap';
import type { NormalIpcp } from '../../../src/dif/normal/ipcp.js';
import { until } from '../helpers.js';
import { acceptAll, knows, within } from './ipcp-harness.js';
import { Mesh, poolOf, routesTo } from './mesh-harness.js';

function inside(addr: number, pool: { first: number; last: number } | undefined): boolean {
  return pool !== undefined && addr >= pool.first && addr <= pool.last;
}

t.test('A ← B ← C: C enrolls through B, with an address from B\'s block; flows cross B', async (t) => {
  const m = new Mesh(t);
  const ab = m.edge();
  const bc = m.edge();
  const a = m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a] });
  const b = m.ipcp({ name: 'B', role: 'member', enroll: { lower: ab.b, enrollerName: 'A' }, acceptEnrollment: true, lower: [bc.a] });
  const c = m.ipcp({ name: 'C', role: 'member', enroll: { lower: bc.b, enrollerName: 'B' } });
  await until(() => c.isEnrolled, 'C enrolled through B', 5000);
  t.equal(new Set([a.address, b.address, c.address]).size, 3, `three distinct addresses (${a.address}, ${b.address}, ${c.address})`);
  const block = poolOf(b);
  t.ok(block, 'A delegated a block of addresses to B');
  t.ok(inside(c.address, block), `C's address ${c.address} is from B's block ${block?.first}..${block?.last}`);
  t.notOk(inside(b.address, block), "B's own address is not in its block");
  t.ok(inside(block!.first, poolOf(a)) && inside(block!.last, poolOf(a)), "B's block lies in A's pool");
  await until(() => routesTo(a, c.address) && routesTo(c, a.address), 'A and C route to each other', 5000);

  const onC = acceptAll(c, 'c-app');
  await until(() => knows(a, 'c-app'), 'A knows c-app', 3000);
  const f = await within(a.allocateFlow('a-app', 'c-app', { reliable: true }), 5000, 'A → C across B');
  const peer = await onC.next();
  await f.send(new Uint8Array([7, 8, 9]));
  t.same(await within(peer.read(), 3000, 'an SDU across B'), new Uint8Array([7, 8, 9]));
});

t.test('two members enroll others at once: every address in the DIF is distinct', async (t) => {
  const m = new Mesh(t);
  const ab = m.edge();
  const ad = m.edge();
  const a = m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a, ad.a] });
  const subs: { enroller: NormalIpcp; members: NormalIpcp[] }[] = [];
  for (const [name, up] of [['B', ab], ['D', ad]] as const) {
    const edges = [m.edge(), m.edge(), m.edge()];
    const e = m.ipcp({ name, role: 'member', enroll: { lower: up.b, enrollerName: 'A' }, acceptEnrollment: true, lower: edges.map((x) => x.a) });
    const members = edges.map((x, i) => m.ipcp({ name: `${name}${i}`, role: 'member', enroll: { lower: x.b, enrollerName: name } }));
    subs.push({ enroller: e, members });
  }
  const all = [a, ...subs.flatMap((s) => [s.enroller, ...s.members])];
  await until(() => all.every((n) => n.isEnrolled), 'all nine enrolled', 8000);
  const addrs = all.map((n) => n.address);
  t.equal(new Set(addrs).size, all.length, `all addresses distinct: ${addrs.join(', ')}`);
  const [pb, pd] = subs.map((s) => poolOf(s.enroller)!);
  t.ok(pb && pd && (pb.last < pd.first || pd.last < pb.first), `B's and D's blocks are disjoint (${pb?.first}..${pb?.last}, ${pd?.first}..${pd?.last})`);
  for (const s of subs) for (const n of s.members) t.ok(inside(n.address, poolOf(s.enroller)), `${n.name.processName}'s address ${n.address} is from its enroller's block`);
  const last = subs[1]!.members[2]!;
  await until(() => routesTo(subs[0]!.members[0]!, last.address), 'B0 routes to D2 (across B, A, D)', 5000);
});

t.test('a member that enrolls no one refuses a new member with a reason', async (t) => {
  const m = new Mesh(t);
  const ab = m.edge();
  const bc = m.edge();
  m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a] });
  // B listens on bc (it takes adjacencies there) but was not configured to enroll others.
  const b = m.ipcp({ name: 'B', role: 'member', enroll: { lower: ab.b, enrollerName: 'A' }, lower: [bc.a] });
  await until(() => b.isEnrolled, 'B enrolled', 5000);
  t.equal(poolOf(b), undefined, 'B holds no addresses to assign');
  const c = m.ipcp({ name: 'C', role: 'member', enroll: { lower: bc.b, enrollerName: 'B' } });
  const err = await within(new Promise<Error>((resolve) => c.once('enrollFailed', resolve)), 3000, "C's enrollment refused");
  t.match(err.message, /B has no addresses to assign in n\.DIF.*acceptEnrollment/, err.message);
  t.equal(c.isEnrolled, false);
});
