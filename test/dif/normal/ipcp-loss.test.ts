/**
 * The normal IPC process when a member goes away: VM2's VMPI link disappears mid-flow (its port
 * pair goes down), so the host loses its N-1 flow to VM2 and routing withdraws VM2. Flows to VM2
 * end with cause 'port_down' and a reason naming the member; VM1's flows to the host carry on; a
 * new flow afterwards works; when VM2's link returns it re-enrolls and is reachable again.
 */
import t, { type Test } from 'tap';
import type { DeallocationCause, Flow } from '../../../src/dif/api.js';
import { DifError } from '../../../src/dif/api.js';
import { until } from '../helpers.js';
import { acceptAll, knows, routes, topology, within } from './ipcp-harness.js';

function ended(f: Flow): Promise<[string, DeallocationCause]> {
  return new Promise((resolve) => f.once('deallocated', (reason, cause) => resolve([reason, cause])));
}

async function echoOnce(t: Test, f: Flow, peer: Flow, n: number): Promise<void> {
  const sdu = Uint8Array.from({ length: 100 + n }, (_, i) => (i * 7 + n) & 0xff);
  await f.send(sdu);
  const got = await within(peer.read(), 3000, 'one SDU across');
  t.same(got, sdu, `SDU ${n} arrived intact`);
}

t.test('a VM goes away mid-flow: its flows end with a cause, the others carry on', async (t) => {
  const { pair2, host, vm1, vm2 } = await topology(t);
  const onVm2 = acceptAll(vm2, 'vm2-app');
  const onHost = acceptAll(host, 'host-app');
  await until(() => knows(vm1, 'vm2-app') && knows(vm1, 'host-app'), 'VM1 knows both applications', 3000);
  const toVm2 = await within(vm1.allocateFlow('a', 'vm2-app', { reliable: true }), 5000, 'VM1 → VM2');
  const toVm2b = await within(vm1.allocateFlow('b', 'vm2-app', { inOrder: true }), 5000, 'VM1 → VM2 (flow-control)');
  const toHost = await within(vm1.allocateFlow('c', 'host-app', { reliable: true }), 5000, 'VM1 → host');
  const vm2End = await onVm2.next();
  await onVm2.next(); // toVm2b's end
  const hostEnd = await onHost.next();
  await echoOnce(t, toVm2, vm2End, 1);
  await echoOnce(t, toHost, hostEnd, 2);

  // Mid-flow: SDUs written, then the link goes.
  for (let i = 0; i < 10; i++) toVm2.write(new Uint8Array(500));
  const e1 = ended(toVm2);
  const e2 = ended(toVm2b);
  const vmSide = ended(vm2End);
  pair2.down('VM2 gone');
  const [reason, cause] = await within(e1, 5000, 'VM1 learns its flow to VM2 ended');
  t.equal(cause, 'port_down', 'cause: the path is gone');
  t.match(reason, new RegExp(`member ${vm2.address} of n\\.DIF is unreachable`), 'the reason names the member');
  t.equal((await within(e2, 5000, 'second flow to VM2 ends'))[1], 'port_down');
  t.equal((await within(vmSide, 5000, 'VM2 sees its flow end'))[1], 'port_down', 'VM2 ends its side too (its N-1 flow is gone)');
  t.throws(() => toVm2.write(new Uint8Array(1)), { code: 'flow_deallocated' });

  // The other VM's flow carries on, and a new flow works.
  t.equal(toHost.state, 'allocated');
  await echoOnce(t, toHost, hostEnd, 3);
  await echoOnce(t, hostEnd, toHost, 4);
  const again = await within(vm1.allocateFlow('d', 'host-app', { inOrder: true }), 5000, 'a new flow after the loss');
  await echoOnce(t, again, await onHost.next(), 5);
  const err = await vm1.allocateFlow('e', 'vm2-app').catch((e: unknown) => e);
  t.ok(err instanceof DifError && (err.code === 'port_down' || err.code === 'rejected'), `allocation to the gone VM fails at once (${(err as DifError).code}: ${(err as Error).message})`);

  // VM2 comes back: it re-enrolls (same address) and is reachable again.
  const addr = vm2.address;
  pair2.up();
  await until(() => routes(vm1).includes(addr) && (vm2.snapshot().stats as { enrollAttempts: number }).enrollAttempts > 1, 'VM2 re-enrolled and routed', 5000);
  t.equal(vm2.address, addr, 'VM2 got its address back');
  const back = await within(vm1.allocateFlow('f', 'vm2-app', { reliable: true }), 5000, 'VM1 → VM2 after the return');
  await echoOnce(t, back, await onVm2.next(), 6);
});

t.test('a member keeps trying to enroll until the enroller is there', async (t) => {
  const { pair1, vm1 } = await topology(t);
  pair1.down('host restarting');
  await until(() => (vm1.snapshot().stats as { n1Lost: number }).n1Lost > 0, 'VM1 lost its N-1 flow', 3000);
  const before = (vm1.snapshot().stats as { enrollAttempts: number }).enrollAttempts;
  await new Promise((r) => setTimeout(r, 200));
  t.ok((vm1.snapshot().stats as { enrollAttempts: number }).enrollAttempts > before, 'retrying while the link is down');
  pair1.up();
  const enrolled = new Promise<number>((resolve) => vm1.once('enrolled', resolve));
  t.ok((await within(enrolled, 5000, 're-enrollment')) > 0);
});

t.test('a silent neighbour (keepalives missed) is taken down like a lost N-1 flow', async (t) => {
  // 100 ms × 3: short enough for the test, long enough that a loaded machine's event-loop stalls
  // (tens of ms under CI with guests running) do not take the link down on their own.
  const { pair1, host, vm1 } = await topology(t, { member: { keepaliveMs: 100, keepaliveMisses: 3 }, host: { keepaliveMs: 100, keepaliveMisses: 3 } });
  const onHost = acceptAll(host, 'host-app');
  await until(() => knows(vm1, 'host-app'), 'VM1 knows host-app', 3000);
  const f = await within(vm1.allocateFlow('a', 'host-app', { reliable: true }), 5000, 'VM1 → host');
  await onHost.next();
  const e = ended(f);
  // The host's SDUs to VM1 stop arriving (held in flight), the link itself stays up.
  pair1.host.pause();
  const [reason, cause] = await within(e, 3000, 'the flow ends when keepalives stop');
  t.equal(cause, 'port_down');
  t.match(reason, /unreachable/);
  pair1.host.resume();
  await until(() => vm1.isEnrolled && routes(vm1).includes(host.address), 'VM1 back in the DIF', 5000);
  // Routing may still be settling right after re-enrolment: a refused attempt is retried (bounded).
  const end = Date.now() + 10_000;
  let g: Awaited<ReturnType<typeof vm1.allocateFlow>> | undefined;
  for (let i = 0; g === undefined; i++) {
    try {
      g = await within(vm1.allocateFlow(`b${i}`, 'host-app', { reliable: true }), 5000, 'a new flow after the silence');
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  t.equal(g.state, 'allocated');
});

t.test("the enroller's flows to a lost member say why the member was lost (the N-1 flow's end)", async (t) => {
  const { pair2, host, vm2 } = await topology(t);
  const onVm2 = acceptAll(vm2, 'vm2-app');
  await until(() => knows(host, 'vm2-app'), 'the host knows vm2-app', 3000);
  const f = await within(host.allocateFlow('h', 'vm2-app', { reliable: true }), 5000, 'host → VM2');
  await echoOnce(t, f, await onVm2.next(), 1);
  const e = ended(f);
  pair2.down('VM2 powered off');
  const [reason, cause] = await within(e, 5000, "the host's flow to VM2 ends");
  t.equal(cause, 'port_down');
  t.match(reason, new RegExp(`^member ${vm2.address} of n\\.DIF is unreachable \\(.*VM2 powered off.*\\)$`), `the reason names the member and the N-1 flow's end: ${reason}`);
});
