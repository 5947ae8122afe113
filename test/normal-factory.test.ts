/**
 * The normal DIF as `vmpi serve` and `vmpi guest` build it (src/ops/normal.ts) from a config that
 * names only the DIF: the host's enroller over every device's shim IPC process, each guest's
 * member over its own, here over in-memory port pairs instead of VMs. The VMs enroll, are named
 * after their VMPI-ids, and their applications reach each other by name.
 */
import t from 'tap';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { logger } from '../src/sys/log.js';
import { parseConfig } from '../src/ops/config.js';
import { createNormalIpcp } from '../src/ops/normal.js';
import { createPortPair } from './dif/port-pair.js';
import { until } from './dif/helpers.js';
import { acceptAll, knows, within } from './dif/normal/ipcp-harness.js';

t.test('host and guests from `normal: { dif }`', async (t) => {
  const cfg = parseConfig('normal: { dif: n.DIF }\n', { format: 'yaml' }).normal!;
  const log = logger.child({});
  const pairs = [createPortPair({ vmpiId: 5 }), createPortPair({ vmpiId: 6 })];
  const hostShims = pairs.map((p) => new ShimHvIpcp({ port: p.host, role: 'host' }));
  const guestShims = pairs.map((p) => new ShimHvIpcp({ port: p.guest, role: 'guest' }));
  const host = createNormalIpcp(cfg, 'host', hostShims, { logger: log });
  const vms = guestShims.map((s) => createNormalIpcp(cfg, 'guest', [s], { logger: log, retryMs: 50 }));
  t.teardown(() => {
    for (const n of [...vms, host]) n.close();
    for (const s of [...hostShims, ...guestShims]) s.close();
  });
  t.equal(host.name.processName, 'n.DIF.host');
  t.same(vms.map((v) => v.name.processName), ['n.DIF.vm5', 'n.DIF.vm6'], 'guests named after their VMPI-ids');
  t.equal(host.role, 'enroller');
  await until(() => vms.every((v) => v.isEnrolled), 'both guests enrolled', 5000);
  const server = acceptAll(vms[1]!, 'srv');
  await until(() => knows(vms[0]!, 'srv'), 'guest 1 knows srv', 3000);
  const f = await within(vms[0]!.allocateFlow('cli', 'srv', { reliable: true }), 5000, 'guest → guest');
  const g = await within(server.next(), 2000, 'accepted');
  await f.send(Uint8Array.of(1, 2, 3));
  t.same(await within(g.read(), 2000, 'SDU'), Uint8Array.of(1, 2, 3));
});

t.test('a guest without a shim DIF is refused clearly', async (t) => {
  t.throws(() => createNormalIpcp({ dif: 'n.DIF' }, 'guest', [], { logger }), /normal DIF n\.DIF: no shim DIF to run over/);
});
