/**
 * A member of a normal DIF that enrolls others (`acceptEnrollment` on a member, src/dif/normal/ipcp.ts):
 * two hosts, each with one VM, all in one process over real shim-hv IPC process pairs (Fig. 4c's shape):
 *   VM-A —shim— host-A (enroller) —shim "wire"— host-B (member, acceptEnrollment) —shim— VM-B
 * VM-B enrolls with host-B once host-B is itself enrolled, gets an address from the block host-A
 * delegated to host-B, and a VM-A application reaches a VM-B one over two hops of relays, SDUs
 * 0..4000 B both ways. Without acceptEnrollment host-B refuses VM-B's enrollment.
 */
import t, { type Test } from 'tap';
import { NormalIpcp } from '../../../src/dif/normal/ipcp.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { patternSdu } from '../../helpers/pattern.js';
import { createPortPair } from '../port-pair.js';
import { settle, until } from '../helpers.js';
import { acceptAll, DIF, knows, routes, within } from './ipcp-harness.js';

function twoHosts(t: Test, acceptEnrollment: boolean) {
  const [vmA, wire, vmB] = [createPortPair({ vmpiId: 1 }), createPortPair({ vmpiId: 2 }), createPortPair({ vmpiId: 3 })];
  const shims = {
    aVm: new ShimHvIpcp({ port: vmA.host, role: 'host' }),
    vmA: new ShimHvIpcp({ port: vmA.guest, role: 'guest' }),
    aWire: new ShimHvIpcp({ port: wire.host, role: 'host' }),
    bWire: new ShimHvIpcp({ port: wire.guest, role: 'guest' }),
    bVm: new ShimHvIpcp({ port: vmB.host, role: 'host' }),
    vmB: new ShimHvIpcp({ port: vmB.guest, role: 'guest' }),
  };
  const hostA = new NormalIpcp({ difName: DIF, name: 'a.n', role: 'enroller', lower: [shims.aVm, shims.aWire] });
  const hostB = new NormalIpcp({ difName: DIF, name: 'b.n', role: 'member', enroll: { lower: shims.bWire, enrollerName: 'a.n' }, lower: [shims.bWire, shims.bVm], retryMs: 50, acceptEnrollment });
  const a = new NormalIpcp({ difName: DIF, name: 'vma.n', role: 'member', enroll: { lower: shims.vmA, enrollerName: 'a.n' }, retryMs: 50 });
  const b = new NormalIpcp({ difName: DIF, name: 'vmb.n', role: 'member', enroll: { lower: shims.vmB, enrollerName: 'b.n' }, retryMs: 50 });
  t.teardown(() => {
    for (const n of [a, b, hostB, hostA]) n.close();
    for (const s of Object.values(shims)) s.close();
  });
  return { hostA, hostB, a, b };
}

t.test('a member with acceptEnrollment enrolls the VM behind it; VM-A ↔ VM-B over two relays', async (t) => {
  const { hostA, hostB, a, b } = twoHosts(t, true);
  await until(() => a.isEnrolled && hostB.isEnrolled && b.isEnrolled, 'everyone enrolled', 5000);
  t.equal(new Set([hostA.address, hostB.address, a.address, b.address]).size, 4, `four distinct addresses (${[hostA.address, hostB.address, a.address, b.address].join(', ')})`);
  await until(() => routes(a).includes(b.address) && routes(b).includes(a.address) && routes(hostA).includes(b.address), 'routes VM-A ↔ VM-B', 5000);
  const enrolled = hostB.counters() as unknown as { enrollment: { neighbour: string; state: string }[] };
  t.same(
    enrolled.enrollment.map((e) => [e.neighbour, e.state]).sort(),
    [['a.n', 'enrolled'], ['vmb.n', 'enrolled']],
    'host-B shows its own enrollment and its member',
  );

  const server = acceptAll(b, 'server');
  await until(() => knows(a, 'server'), 'VM-A knows server', 5000);
  const [rel, fc] = await within(Promise.all([a.allocateFlow('client/1', 'server', { reliable: true }), a.allocateFlow('client/2', 'server', { inOrder: true })]), 5000, 'two flows');
  const peers = [await server.next(), await server.next()];
  for (const [i, f] of [rel, fc].entries()) {
    const back = peers.find((p) => p.remoteApp.processName === 'client' && p.remoteApp.processInstance === String(i + 1))!;
    for (let n = 0, size = 0; size <= 4000; size += 250, n++) {
      await f.send(patternSdu(i, n, size));
      await back.send(patternSdu(10 + i, n, size));
    }
    let bad = 0;
    for (let n = 0, size = 0; size <= 4000; size += 250, n++) {
      const there = await within(back.read(), 5000, `SDU ${n} at VM-B`);
      const here = await within(f.read(), 5000, `SDU ${n} at VM-A`);
      if (!there || Buffer.compare(Buffer.from(there), Buffer.from(patternSdu(i, n, size))) !== 0) bad++;
      if (!here || Buffer.compare(Buffer.from(here), Buffer.from(patternSdu(10 + i, n, size))) !== 0) bad++;
    }
    t.equal(bad, 0, `flow ${i + 1} (${f.qos.reliable ? 'reliable' : 'flow control'}): 0..4000 B intact both ways`);
  }
});

t.test('without acceptEnrollment, a member does not enroll the VM behind it', async (t) => {
  const { hostB, b } = twoHosts(t, false);
  await until(() => hostB.isEnrolled, 'host-B enrolled', 5000);
  await settle(50);
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(b.isEnrolled, 'VM-B is not enrolled');
  t.ok(b.stats.enrollFailures > 0, `VM-B's attempts fail (${b.stats.enrollFailures})`);
});
