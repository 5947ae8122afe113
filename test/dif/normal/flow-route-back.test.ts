/**
 * flow-route-back.test.ts — the responder checks its own route back to the requester (issue #12).
 * Routes need not be the same both ways (unequal link costs; views of the DIF not yet equal; an
 * older requester that checks no route), so a request whose max SDU the route back cannot carry
 * is refused with a reason saying what to ask for. On main the responder checked only its own
 * largest N-1 flow: it accepted, and every SDU of the agreed size it sent back was dropped at its
 * first hop (RMT too_big), with no error anywhere.
 *
 * An allocation without a max SDU (the application left it open) is not refused but lowered to
 * what the route back carries: the flow gets min(forward, back) at both ends. Before, the
 * requester offered its forward route's limit as if the application had asked for it, and over an
 * asymmetric path a plain allocateFlow() failed with the route-back refusal.
 */
import { DifError, type Flow, type FlowRequest as ApiFlowRequest } from '../../../src/dif/api.js';
import t, { type Test } from 'tap';
import { decodeFlowRequest, encodeFlowRequest, type FlowRequest as FaRequest } from '../../../src/dif/normal/cdap-objects.js';
import { agreedMaxSdu, type FlowDecision } from '../../../src/dif/normal/flow-alloc.js';
import { FlowResponder, REASON_ROUTE_BACK, type ResponderFlows } from '../../../src/dif/normal/ipcp-flow-responder.js';
import { PCI_LEN } from '../../../src/dif/normal/pci.js';
import type { QosRequest } from '../../../src/dif/api.js';
import { until } from '../helpers.js';
import { acceptAll, knows, routes, within } from './ipcp-harness.js';
import { Mesh } from './mesh-harness.js';
import { createPortPair } from '../port-pair.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { SimNet } from './routing-sim.js';

const SMALL = 1472;
const BIG = 65536;

t.test('routing: with unequal costs the limit differs each way', async (t) => {
  // 1→2→4 is the cheap way from 1 (2–4 a small link), 4→3→1 the cheap way back (all big).
  const net = new SimNet(31);
  for (let a = 1; a <= 4; a++) net.addNode(a);
  net.link(1, 2, 1, 10, { maxPdu: 9000 });
  net.link(2, 4, 1, 10, { maxPdu: 1500 });
  net.link(4, 3, 1, 10, { maxPdu: 9000 });
  net.link(3, 1, 1, 10, { maxPdu: 9000 });
  net.settle();
  t.equal(net.nodes.get(1)!.pathMaxPdu(4), 1500, 'from 1 to 4: over the small link');
  t.equal(net.nodes.get(4)!.pathMaxPdu(1), 9000, 'from 4 back to 1: not');
});

function request(maxSdu: number, srcAddr = 5, maxSduOpen = false): FaRequest {
  return { srcApp: { processName: 'client' }, dstApp: { processName: 'sink' }, srcPort: 1, dstPort: 0, srcAddr, dstAddr: 9, srcCep: 1, dstCep: 0, qosCube: 1, result: 0, reason: '', srcInitSeq: 0, maxSdu, ...(maxSduOpen ? { maxSduOpen } : {}) };
}

/** A FlowResponder whose member (9) has a 9000-byte max SDU and a 1000-byte route back to member 5; `seen`: what its application was handed. */
function responder(): { r: FlowResponder; seen: ApiFlowRequest[]; flows: ResponderFlows } {
  const seen: ApiFlowRequest[] = [];
  const back = new Map<number, number>([[5, 1000]]);
  const flows = {
    h: {
      difName: 'n.DIF',
      maxSdu: 9000,
      closed: false,
      registration: () => ({ appName: { processName: 'sink' }, key: 'sink', handler: (r: ApiFlowRequest) => void seen.push(r) }),
      emit: () => {},
      pathMaxSdu: (a: number) => back.get(a),
    },
    stats: { incomingRequests: 0, incomingAccepted: 0, incomingRejected: 0, flowsAllocated: 0 },
    newFlow: () => {
      throw new Error('not in this test');
    },
    dropFlow: () => {},
  } as unknown as ResponderFlows;
  return { r: new FlowResponder(flows), seen, flows };
}

t.test('the responder refuses a max SDU its route back cannot carry, and names the limit', async (t) => {
  const { r, seen, flows } = responder();
  const d = r.onFlowRequest(request(1400));
  t.same(d, { accept: false, reason: `${REASON_ROUTE_BACK}: max SDU 1400 exceeds the 1000 bytes the route from member 9 back to member 5 carries (its smallest N-1 link's max PDU, less the PCI); ask for at most 1000` }, 'refused, with the limit');
  t.equal(seen.length, 0, 'the application never saw it');
  t.equal(flows.stats.incomingRejected, 1, 'counted as rejected');
  void r.onFlowRequest(request(1000));
  t.equal(seen.length, 1, 'at the limit: handed to the application');
  t.equal(seen[0]!.qos.maxSdu, 1000, 'with that max SDU');
  void r.onFlowRequest(request(1400, 6));
  t.equal(seen.length, 2, 'no route back known yet: not checked');
  r.cancelRequests(null, 'end of test');
});

t.test('an open request (no max SDU asked for) is lowered to the route back, not refused', async (t) => {
  const { r, seen, flows } = responder();
  let decision: FlowDecision | undefined;
  void Promise.resolve(r.onFlowRequest(request(1400, 5, true))).then((d) => (decision = d));
  t.equal(seen.length, 1, 'handed to the application');
  t.equal(seen[0]!.qos.maxSdu, 1000, "with the route back's limit");
  t.equal(flows.stats.incomingRejected, 0, 'not refused');
  seen[0]!.reject('only the max SDU is looked at here');
  await until(() => decision !== undefined, 'the decision', 1000);
  void r.onFlowRequest(request(0, 5, true));
  t.equal(seen[1]!.qos.maxSdu, 1000, "open and 0 (the DIF's maximum): the route back's limit too");
  void r.onFlowRequest(request(20000, 6, true));
  t.equal(seen[2]!.qos.maxSdu, 9000, "open, no route back known: this member's max SDU");
  void r.onFlowRequest(request(800, 5, true));
  t.equal(seen[3]!.qos.maxSdu, 800, 'open and already below the limit: unchanged');
  r.cancelRequests(null, 'end of test');
});

t.test('the requester takes a smaller answer only to an open request', async (t) => {
  t.equal(agreedMaxSdu(1400, true, 1000), 1000, 'open: the smaller answer');
  t.equal(agreedMaxSdu(0, true, 1000), 1000, "open, asked the DIF's maximum: the answer");
  t.equal(agreedMaxSdu(1400, true, 2000), 1400, 'open: never a larger one');
  t.equal(agreedMaxSdu(1400, true, undefined), 1400, 'an older responder says nothing: as asked');
  t.equal(agreedMaxSdu(1400, true, 0), 1400, 'nor 0');
  t.equal(agreedMaxSdu(1400, false, 1000), 1400, 'explicit: as asked, whatever the answer says');
  const fr = decodeFlowRequest(encodeFlowRequest(request(1400, 5, true)));
  t.equal(fr.maxSduOpen, true, 'the flag crosses the wire');
  t.equal(decodeFlowRequest(encodeFlowRequest(request(1400))).maxSduOpen, undefined, 'absent when not set');
});

/** VM1 —big— host —small— VM2 —big— VM3 (all enrolled, routes up), `sink` accepting at VM2. */
async function asymmetric(t: Test) {
  const m = new Mesh(t);
  const pair = (id: number, maxSdu: number) => {
    const p = createPortPair({ vmpiId: id, maxSdu });
    const a = new ShimHvIpcp({ port: p.host, role: 'host' });
    const b = new ShimHvIpcp({ port: p.guest, role: 'guest' });
    t.teardown(() => {
      a.close();
      b.close();
    });
    return { a, b };
  };
  const l1 = pair(41, BIG);
  const l2 = pair(42, SMALL);
  const l3 = pair(43, BIG);
  const host = m.ipcp({ name: 'host.n', role: 'enroller', lower: [l1.a, l2.a] });
  const vm1 = m.ipcp({ name: 'vm1.n', role: 'member', enroll: { lower: l1.b, enrollerName: 'host.n' } });
  const vm2 = m.ipcp({ name: 'vm2.n', role: 'member', enroll: { lower: l2.b, enrollerName: 'host.n' }, acceptEnrollment: true, lower: [l3.a] });
  const vm3 = m.ipcp({ name: 'vm3.n', role: 'member', enroll: { lower: l3.b, enrollerName: 'vm2.n' } });
  await until(() => vm1.isEnrolled && vm2.isEnrolled && vm3.isEnrolled, 'all enrolled', 8000);
  await until(() => routes(vm1).includes(vm2.address) && routes(vm2).includes(vm1.address), 'routes', 5000);
  await until(() => vm2.pathMaxSdu(vm1.address) === SMALL - PCI_LEN, "VM2 knows its route back's limit", 5000);
  const sink = acceptAll(vm2, 'sink');
  await until(() => knows(vm1, 'sink'), 'VM1 knows sink', 5000);
  return { host, vm1, vm2, vm3, sink };
}

t.test('a real DIF, VM1 sees a big route to VM2 and VM2 a small one back: a plain allocateFlow gets the smaller', async (t) => {
  const { vm1, vm2, sink } = await asymmetric(t);
  // VM1's view of its route to VM2: big (as while the small link's entries have not reached it).
  const view = vm1 as unknown as { pathMaxSdu(addr: number): number | undefined };
  view.pathMaxSdu = (addr) => (addr === vm2.address ? BIG - PCI_LEN : undefined);

  const f = await within(vm1.allocateFlow('client', 'sink', { inOrder: true }), 5000, 'the plain allocation');
  const g = await sink.next();
  t.equal(f.qos.maxSdu, SMALL - PCI_LEN, "VM1's flow: the route back's limit");
  t.equal(g.qos.maxSdu, SMALL - PCI_LEN, "VM2's flow: the same");
  t.ok(Object.isFrozen(f.qos), "the requester's QoS is frozen once allocated");
  const sdu = new Uint8Array(SMALL - PCI_LEN).fill(5);
  await g.send(sdu);
  t.same(await within(f.read(), 5000, 'VM2 → VM1 at the limit'), sdu, 'an SDU of the agreed size crosses the route back');
  await f.send(sdu);
  t.same(await within(g.read(), 5000, 'VM1 → VM2 at the limit'), sdu, 'and the way there');
  t.throws(() => f.write(new Uint8Array(SMALL - PCI_LEN + 1)), { code: 'sdu_too_large' }, 'a larger SDU is refused at the writer');

  // An explicit max SDU above the route back is still refused, with the reason.
  const err = await vm1.allocateFlow('client', 'sink', { inOrder: true, maxSdu: BIG - PCI_LEN }).then(
    (x) => x,
    (e: unknown) => e,
  );
  t.ok(err instanceof DifError && err.code === 'rejected', `explicit: refused (got ${err instanceof DifError ? err.code : 'a flow'})`);
  t.match((err as DifError).peerReason ?? '', new RegExp(`^${REASON_ROUTE_BACK}: .*ask for at most ${SMALL - PCI_LEN}$`), 'the reason says what to ask for');
  t.equal(sink.flows.length, 1, 'no second flow at VM2');
});

t.test('a real DIF: VM1 —big— host —small— VM2 —big— VM3, a request from VM1 above the route back is refused', async (t) => {
  const { host, vm1, vm2, sink } = await asymmetric(t);
  t.equal(vm2.maxSdu, BIG - PCI_LEN, "VM2's own largest link is a big one (its local check lets a big flow through)");

  // VM1 asks past its own path check, as an older member or one with another view of the DIF would.
  const flows = (vm1 as unknown as { appFlows: { allocate(l: string, r: string, q: QosRequest): Promise<Flow> } }).appFlows;
  const err = await flows.allocate('client', 'sink', { inOrder: true, maxSdu: BIG - PCI_LEN }).then(
    (f) => f,
    (e: unknown) => e,
  );
  t.ok(err instanceof DifError && err.code === 'rejected', `refused (got ${err instanceof DifError ? err.code : 'a flow'})`);
  t.match((err as DifError).peerReason ?? '', new RegExp(`^${REASON_ROUTE_BACK}: .*ask for at most ${SMALL - PCI_LEN}$`), 'the reason says what to ask for');
  t.equal(sink.flows.length, 0, 'no flow at VM2');

  // Asking for what it says works, both ways, at the limit.
  const f = await within(flows.allocate('client', 'sink', { inOrder: true, maxSdu: SMALL - PCI_LEN }), 5000, 'the flow at the limit');
  const g = await sink.next();
  t.equal(g.qos.maxSdu, SMALL - PCI_LEN, 'agreed max SDU at VM2');
  const sdu = new Uint8Array(SMALL - PCI_LEN).fill(3);
  await g.send(sdu);
  t.same(await within(f.read(), 5000, 'VM2 → VM1 at the limit'), sdu, 'an SDU of the agreed size crosses the route back');
  t.ok(host.isEnrolled, 'the host stayed a member throughout');
});
