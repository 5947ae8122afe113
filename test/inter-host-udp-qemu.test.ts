/**
 * The paper's third scenario over shim-udp (test/inter-host-qemu.test.ts has the shim-eth run and
 * the link cut), under real QEMU 10 (TCG) on the topology of test/helpers/two-hosts.ts:
 *   VM-A ↔ host-A (shim-hv) ↔ host-B (shim-udp on the veth's addresses) ↔ VM-B (shim-hv),
 * one normal DIF. VM-A's application allocates two flows at once (reliable, flow-control) to
 * VM-B's echo and checks SDUs of 0..4000 B back intact on both. Its own file: each file boots two
 * TCG guests, and tap's per-file limit must hold both runs on a loaded machine.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST_DIR, guestUnavailable } from './helpers/guest.js';
import { canNetns } from './helpers/netns.js';
import { exchange, SIZES } from './helpers/inter-host-apps.js';
import { TwoHosts } from './helpers/two-hosts.js';

const unavailable =
  canNetns() || guestUnavailable() || (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`inter-host guest test cannot run in CI: ${unavailable}`);

const skip = unavailable || false;

t.test('VM-A ↔ VM-B over shim-hv + shim-udp + shim-hv, one normal DIF', { skip, timeout: 580_000 }, async (t) => {
  const started = Date.now();
  const th = await TwoHosts.start({ shim: 'udp', name: 'vmpi-ih-udp', vmIds: [73, 74], guestTimeoutMs: 560_000, say: (s) => t.comment(s) }, (close) => t.teardown(close));
  await exchange(t, th, SIZES, 'shim-udp');
  for (const h of [th.a, th.b]) t.equal(h.serve.exitCode, null, `serve in ${h.ns} still runs`);
  t.comment(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await th.close();
});
