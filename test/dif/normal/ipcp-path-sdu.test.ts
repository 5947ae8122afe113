/**
 * The normal DIF's max SDU follows the path (issue #12): VM1 —big N-1 link— host —small N-1
 * link— VM2, the small link standing for shim-udp's 1472-byte datagrams. Routing floods each
 * link's max PDU, so VM1's flow to VM2 is offered the small link's limit less the PCI, a write
 * above it is refused at the writer with a clear error (on main it was accepted and the relay
 * dropped the PDU silently), and a QoS maxSdu above it is refused naming the route. The host's
 * flows keep each link's own limit.
 */
import t, { type Test } from 'tap';
import { DifError, type Flow } from '../../../src/dif/api.js';
import { NormalIpcp } from '../../../src/dif/normal/ipcp.js';
import { PCI_LEN } from '../../../src/dif/normal/pci.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { createPortPair } from '../port-pair.js';
import { until } from '../helpers.js';
import { acceptAll, knows, routes, within } from './ipcp-harness.js';

const DIF = 'n.DIF';
const SMALL = 1472;
const BIG = 65536;

async function chain(t: Test) {
  const pair1 = createPortPair({ vmpiId: 1, maxSdu: BIG });
  const pair2 = createPortPair({ vmpiId: 2, maxSdu: SMALL });
  const h1 = new ShimHvIpcp({ port: pair1.host, role: 'host' });
  const h2 = new ShimHvIpcp({ port: pair2.host, role: 'host' });
  const g1 = new ShimHvIpcp({ port: pair1.guest, role: 'guest' });
  const g2 = new ShimHvIpcp({ port: pair2.guest, role: 'guest' });
  const host = new NormalIpcp({ difName: DIF, name: 'host.n', role: 'enroller', lower: [h1, h2] });
  const vm1 = new NormalIpcp({ difName: DIF, name: 'vm1.n', role: 'member', enroll: { lower: g1, enrollerName: 'host.n' }, retryMs: 50 });
  const vm2 = new NormalIpcp({ difName: DIF, name: 'vm2.n', role: 'member', enroll: { lower: g2, enrollerName: 'host.n' }, retryMs: 50 });
  t.teardown(() => {
    for (const n of [vm1, vm2, host]) n.close();
    for (const s of [h1, h2, g1, g2]) s.close();
  });
  await until(() => vm1.isEnrolled && vm2.isEnrolled, 'both VMs enrolled', 5000);
  await until(() => routes(vm1).includes(vm2.address) && routes(vm2).includes(vm1.address), 'routes between the VMs', 5000);
  return { host, vm1, vm2 };
}

t.test("a flow's max SDU is the smallest link on its route, less the PCI; bigger writes are refused", async (t) => {
  const { host, vm1, vm2 } = await chain(t);
  t.equal(vm1.maxSdu, BIG - PCI_LEN, "VM1's own link is the big one");
  const sink = acceptAll(vm2, 'sink');
  await until(() => knows(vm1, 'sink'), 'VM1 knows sink', 5000);
  // The host's entry for its link to VM2 (with its limit) reaches VM1 with the lower-flow database.
  await until(() => vm1.pathMaxSdu(vm2.address) === SMALL - PCI_LEN, "VM1 learns the route to VM2's limit", 5000);
  t.equal(vm1.pathMaxSdu(host.address), BIG - PCI_LEN, 'the route to the host is the big link only');

  const f: Flow = await within(vm1.allocateFlow('client', 'sink', { inOrder: true }), 5000, 'flow to sink');
  t.equal(f.qos.maxSdu, SMALL - PCI_LEN, "the flow is offered the route's max SDU");
  const g = await sink.next();
  t.equal(g.qos.maxSdu, SMALL - PCI_LEN, 'the far end agrees');

  // A write above it is refused at the writer, with the limit named.
  const err = (() => {
    try {
      f.write(new Uint8Array(3000));
      return undefined;
    } catch (e) {
      return e;
    }
  })();
  t.ok(err instanceof DifError, 'a 3000-byte write is refused with a DifError');
  t.match((err as Error).message, new RegExp(String(SMALL - PCI_LEN)), 'the error names the max SDU');

  // One at the limit crosses the relay intact.
  const big = new Uint8Array(SMALL - PCI_LEN).map((_, i) => i & 0xff);
  await f.send(big);
  const got = await within(g.read(), 5000, 'the SDU at the limit');
  t.same(got, big, 'an SDU of exactly the max SDU arrives intact');

  // Asking for more than the route carries is refused, naming the route.
  const e2 = await vm1.allocateFlow('client', 'sink', { maxSdu: 4000 }).catch((e: unknown) => e);
  t.ok(e2 instanceof DifError && e2.code === 'invalid_qos', 'QoS maxSdu above the route is invalid_qos');
  t.match((e2 as Error).message, /route to member \d+/, 'the refusal names the route');
  const f3 = await within(vm1.allocateFlow('client', 'sink', { maxSdu: 1000 }), 5000, 'a smaller flow');
  t.equal(f3.qos.maxSdu, 1000, 'a QoS maxSdu under the route limit is granted as asked');

  // The host reaches VM1 over the big link only: its flows keep that limit.
  const near = acceptAll(vm1, 'near');
  await until(() => knows(host, 'near'), 'host knows near', 5000);
  const h = await within(host.allocateFlow('hostapp', 'near'), 5000, 'host flow to VM1');
  t.equal(h.qos.maxSdu, BIG - PCI_LEN, 'a flow over the big link only is not limited by the small one');
  await near.next();
});
