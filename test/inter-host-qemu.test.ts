/**
 * The paper's third scenario end to end under real QEMU 10 (TCG), on the topology of
 * test/helpers/two-hosts.ts: two "hosts" (network namespaces joined by a veth), each its own
 * `vmpi serve` and one Node guest, one normal DIF
 *   VM-A ↔ host-A (shim-hv) ↔ host-B (shim-eth on VLAN 100, or shim-udp) ↔ VM-B (shim-hv).
 * host-A enrolls host-B and VM-A; host-B (a member with acceptEnrollment) enrolls VM-B.
 *
 * shim-eth: VM-B's application registers "echo" and echoes; VM-A's allocates two flows at once
 * (reliable, flow-control), sends SDUs of 0..4000 B and a burst past the EFCP credit on both and
 * checks every echo (so bytes travel intact both ways). Then host-A's veth end goes down: the
 * shim-eth flow between the hosts ends (port_down at A at once, keepalive timeout at B), the
 * normal DIF's routing loses the adjacency, and both VMs' flows end with cause port_down (no QoS
 * cube survives the loss of the only path: EFCP does not outlive its flow). After `up`, host-B
 * enrolls again (its retry) and a new flow VM-A → VM-B works.
 * shim-udp: test/inter-host-udp-qemu.test.ts (its own file: each boots two TCG guests).
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST_DIR, guestUnavailable } from './helpers/guest.js';
import { canNetns } from './helpers/netns.js';
import { BURST, exchange, lines, SIZES, type Ended } from './helpers/inter-host-apps.js';
import { TwoHosts } from './helpers/two-hosts.js';

const unavailable =
  canNetns() || guestUnavailable() || (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`inter-host guest test cannot run in CI: ${unavailable}`);

const skip = unavailable || false;

t.test('VM-A ↔ VM-B over shim-hv + shim-eth (VLAN 100) + shim-hv, one normal DIF; link cut and restored', { skip, timeout: 580_000 }, async (t) => {
  const started = Date.now();
  const th = await TwoHosts.start({ shim: 'eth', name: 'vmpi-ih-eth', vmIds: [71, 72], guestTimeoutMs: 560_000, say: (s) => t.comment(s) }, (close) => t.teardown(close));
  t.comment(`topology up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await exchange(t, th, [...SIZES, ...Array<number>(BURST.n).fill(BURST.size)], 'shim-eth');
  const [vmA, vmB] = [th.a.guest, th.b.guest];
  await lines(vmB, 'ECHO-FLOW', 2, 10_000, 0);

  // The link between the hosts goes down at host-A.
  const [fromA, fromB] = [vmA.mark, vmB.mark];
  const t0 = Date.now();
  th.link('a', 'down');
  const endedA = await lines<Ended>(vmA, 'ENDED', 2, 60_000, fromA).catch((e: Error) => Promise.reject(new Error(`${e.message}\n${th.logs()}`)));
  const msA = Date.now() - t0;
  const endedB = await lines<Ended>(vmB, 'ECHO-END', 2, 30_000, fromB).catch((e: Error) => Promise.reject(new Error(`${e.message}\n${th.logs()}`)));
  const msB = Date.now() - t0;
  for (const e of [...endedA, ...endedB]) t.equal(e.cause, 'port_down', `${e.flow !== undefined ? `VM-A flow ${e.flow}` : `VM-B flow ${e.id}`} ended with cause port_down: ${e.reason}`);
  t.comment(`link down: VM-A's flows ended within ${msA} ms, VM-B's within ${msB} ms`);
  t.ok(msA < 30_000 && msB < 30_000, 'both ends learn of the loss within 30 s (shim-eth keepalive 1 s, then routing)');
  await new Promise((r) => setTimeout(r, 2000));

  // Restored: host-B enrolls again on its own; a new flow works.
  const t1 = Date.now();
  const from = vmA.mark;
  th.link('a', 'up');
  const w = await vmA.exec('touch /tmp/ih-new', 30_000);
  t.equal(w.rc, 0, 'asked VM-A for a new flow');
  const [nf] = await lines<{ ok: boolean; attempts: number; ms?: number; lastErr: string; good?: number; bad?: unknown[] }>(vmA, 'NEW', 1, 150_000, from).catch((e: Error) =>
    Promise.reject(new Error(`${e.message}\n${th.logs()}`)),
  );
  t.ok(nf!.ok, `a new flow VM-A → VM-B once the link is up (${nf!.attempts} attempts, ${Date.now() - t1} ms after up; last error: ${nf!.lastErr || 'none'})`);
  t.same(nf!.bad, [], 'no bad or missing echo on it');
  t.equal(nf!.good, SIZES.length, `${SIZES.length} SDUs of 0..4000 B echoed intact on it`);
  t.match(th.b.log(), /normal DIF: enrolled[\s\S]*normal DIF: enrolled/, 'host-B enrolled again after the link came back');
  for (const h of [th.a, th.b]) t.equal(h.serve.exitCode, null, `serve in ${h.ns} still runs`);
  t.comment(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await th.close();
});
