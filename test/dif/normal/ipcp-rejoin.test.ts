/**
 * ipcp-rejoin.test.ts — the normal IPC process when a member leaves and a fresh instance of it
 * rejoins (VM1 — host — VM2, a chain of three IPCPs over real shim-hv pairs, ipcp-harness.ts):
 * the departed member's registrations leave every directory (not only its routes), and the new
 * instance's registrations, routes and flows work across the host again.
 */
import t from 'tap';
import { NormalIpcp } from '../../../src/dif/normal/ipcp.js';
import { until } from '../helpers.js';
import { DIF, acceptAll, knows, routes, topology, within } from './ipcp-harness.js';

t.test('a member leaves: its names go from every directory; a fresh instance rejoins and serves them', async (t) => {
  const { host, vm1, vm2, shims } = await topology(t);
  acceptAll(vm1, 'vm1-app');
  await until(() => knows(vm2, 'vm1-app') && knows(host, 'vm1-app'), 'VM2 and the host know vm1-app', 3000);
  const old = vm1.address;
  vm1.close('VM1 shut down');
  await until(() => !routes(vm2).includes(old), 'VM2 no longer routes to VM1', 5000);
  await until(() => !knows(vm2, 'vm1-app') && !knows(host, 'vm1-app'), 'vm1-app gone from the host and VM2', 3000);
  const err = await vm2.allocateFlow('x', 'vm1-app').catch((e: unknown) => e as { code: string });
  // Answered at once (no wait for a timeout), naming where the name was: the directory remembers
  // which unreachable member it forgot the name with (Directory.lostAt).
  t.match(err, { code: 'port_down', message: new RegExp(`member ${old} of .*vm1-app.* is unreachable`) }, 'a miss that says why');

  const again = new NormalIpcp({ difName: DIF, name: 'vm1.n', role: 'member', enroll: { lower: shims[2]!, enrollerName: 'host.n' }, retryMs: 50 });
  t.teardown(() => again.close());
  const onAgain = acceptAll(again, 'vm1-app');
  await until(() => again.isEnrolled && routes(vm2).includes(again.address) && knows(vm2, 'vm1-app'), 'the new VM1 enrolled, routed and known at VM2', 5000);
  const f = await within(vm2.allocateFlow('y', 'vm1-app', { reliable: true }), 5000, 'VM2 → new VM1');
  const peer = await onAgain.next();
  await f.send(new Uint8Array([1, 2, 3]));
  t.same(await within(peer.read(), 3000, 'an SDU across the host'), new Uint8Array([1, 2, 3]));
  const d = vm2.snapshot().directory as { stats: { removedUnreachable: number } };
  t.ok(d.stats.removedUnreachable >= 1, 'VM2 forgot the departed instance\'s names itself');
});
