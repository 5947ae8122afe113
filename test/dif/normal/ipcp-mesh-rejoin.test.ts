/**
 * ipcp-mesh-rejoin.test.ts — a member that enrolls others leaves the DIF and a fresh instance of
 * it rejoins (mesh-harness.ts, real shim-hv pairs). A(enroller) — B, A — D; B enrolled C1 and C2;
 * C2 is also adjacent to D. While B is gone, C1 is cut off (its flows end with a cause) and C2
 * stays in the DIF through D (its flows reroute). The new B gets B's address and block back from
 * A; C1 joins again through it with its old address; C2 enrolls with it again keeping its own.
 */
import t from 'tap';
import type { NormalIpcpOptions } from '../../../src/dif/normal/ipcp.js';
import { until } from '../helpers.js';
import { acceptAll, knows, within } from './ipcp-harness.js';
import { Mesh, forwarding, neighbours, poolOf, portOf } from './mesh-harness.js';

t.test('a member that enrolls others leaves and rejoins: addresses, blocks and flows come back', async (t) => {
  const m = new Mesh(t);
  const ab = m.edge();
  const ad = m.edge();
  const bc1 = m.edge();
  const bc2 = m.edge();
  const c2d = m.edge();
  const a = m.ipcp({ name: 'A', role: 'enroller', lower: [ab.a, ad.a] });
  const bOpts: Omit<NormalIpcpOptions, 'difName'> = { name: 'B', role: 'member', enroll: { lower: ab.b, enrollerName: 'A' }, acceptEnrollment: true, lower: [bc1.a, bc2.a] };
  const b = m.ipcp(bOpts);
  const d = m.ipcp({ name: 'D', role: 'member', enroll: { lower: ad.b, enrollerName: 'A' }, lower: [c2d.a] });
  const c1 = m.ipcp({ name: 'C1', role: 'member', enroll: { lower: bc1.b, enrollerName: 'B' } });
  const c2 = m.ipcp({ name: 'C2', role: 'member', enroll: { lower: bc2.b, enrollerName: 'B' }, neighbours: [{ lower: c2d.b, name: 'D' }] });
  await until(() => c1.isEnrolled && neighbours(c2).length === 2, 'C1 enrolled, C2 adjacent to B and D', 5000);
  const addrB = b.address;
  const blockB = poolOf(b);
  const addrC1 = c1.address;
  const addrC2 = c2.address;
  t.ok(blockB, 'B holds a block');

  const on1 = acceptAll(c1, 'c1-app');
  const on2 = acceptAll(c2, 'c2-app');
  await until(() => knows(a, 'c1-app') && knows(a, 'c2-app'), 'A knows both apps', 3000);
  const f1 = await within(a.allocateFlow('a1', 'c1-app', { reliable: true }), 5000, 'A → C1');
  await on1.next();
  const f2 = await within(a.allocateFlow('a2', 'c2-app', { reliable: true }), 5000, 'A → C2');
  const p2 = await on2.next();
  const end1 = new Promise<{ reason: string; cause: string }>((resolve) => f1.once('deallocated', (reason: string, cause: string) => resolve({ reason, cause })));

  b.close('B shut down');
  const e = await within(end1, 5000, "the flow to C1 ends when B leaves");
  t.equal(e.cause, 'port_down', `the flow to the cut-off C1 ends with a cause: ${e.reason}`);
  await until(() => forwarding(a).get(c2.address) === portOf(a, d.address), 'A reaches C2 through D', 5000);
  await f2.send(new Uint8Array([2]));
  t.same(await within(p2.read(), 3000, 'A → C2 via D'), new Uint8Array([2]), 'the flow to C2 carries on through D');
  t.equal(f2.state, 'allocated');

  const b2 = m.ipcp(bOpts);
  await until(() => b2.isEnrolled, 'the new B enrolled', 5000);
  t.equal(b2.address, addrB, 'the new B has B\'s address back');
  t.same(poolOf(b2), blockB, 'and B\'s block');
  await until(() => c1.isEnrolled && neighbours(b2).includes(c1.address) && neighbours(b2).includes(c2.address), 'C1 and C2 enrolled with the new B', 5000);
  t.equal(c1.address, addrC1, 'C1 joined again with its old address');
  t.equal(c2.address, addrC2, 'C2 kept its address throughout');
  await until(() => forwarding(a).has(c1.address), 'A routes to C1 again', 5000);
  await until(() => knows(a, 'c1-app'), 'A knows c1-app again', 5000);
  const g = await within(a.allocateFlow('a3', 'c1-app', { reliable: true }), 5000, 'A → C1 again');
  const q = await on1.next();
  await g.send(new Uint8Array([3]));
  t.same(await within(q.read(), 3000, 'A → C1 through the new B'), new Uint8Array([3]));
  const er = (a.snapshot().enroller as { stats: { reenrollments: number } }).stats;
  t.ok(er.reenrollments >= 1, 'A counted B\'s re-enrollment');
});
