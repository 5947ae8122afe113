/**
 * metrics-normal.test.ts — the normal DIF's state metrics (src/ops/metrics.ts over
 * NormalIpcp.counters()): enrollment state per neighbour (one series per state, 0/1) at the
 * enroller and at a member, as a member is lost and comes back; directory size and drops; EFCP
 * queue lengths summed over flows; lingering flows. Over the in-process topology VM1 — host — VM2
 * (test/dif/normal/ipcp-harness.ts); `promtool check metrics` when installed.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { HostMetrics } from '../src/ops/metrics.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { until } from './dif/helpers.js';
import { acceptAll, knows, topology, within } from './dif/normal/ipcp-harness.js';
import { sample } from './helpers/exposition.js';

const promtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

t.test('normal DIF: enrollment state per neighbour, directory, EFCP queues, lingering flows', async (t) => {
  const topo = await topology(t);
  const hostM = new HostMetrics(new VmpiHost(), { processMetrics: false });
  const vm1M = new HostMetrics(new VmpiHost(), { processMetrics: false });
  hostM.addIpcp(topo.host);
  vm1M.addIpcp(topo.vm1);
  const dif = { dif: topo.host.difName };
  const sink = acceptAll(topo.vm2, 'sink');
  await until(() => knows(topo.vm1, 'sink'), 'sink known at VM1', 3000);

  let m = await hostM.metrics();
  const members = (topo.host.snapshot().enroller as { members: { name: string }[] }).members.map((x) => x.name);
  t.equal(members.length, 2);
  for (const neighbour of members) {
    t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour, state: 'enrolled' }), 1, `${neighbour} enrolled`);
    t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour, state: 'enrolling' }), 0);
    t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour, state: 'lost' }), 0);
  }
  t.equal(sample(m, 'vmpi_dif_directory_entries', dif), 1, 'one name in the directory');
  t.equal(sample(m, 'vmpi_dif_directory_drops_total', { ...dif, reason: 'full' }), 0);
  t.equal(sample(m, 'vmpi_dif_directory_drops_total', { ...dif, reason: 'member_full' }), 0);
  m = await vm1M.metrics();
  t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour: 'host.n', state: 'enrolled' }), 1, 'the member is enrolled with its enroller');

  // Queues and a linger: more SDUs than the window, then deallocate at once.
  const f = await within(topo.vm1.allocateFlow('src', 'sink', { reliable: true }), 5000, 'reliable flow');
  const peer = await sink.next();
  let written = 0;
  while (written < 400 && f.write(new Uint8Array(16))) written++;
  m = await vm1M.metrics();
  const queued = (sample(m, 'vmpi_dif_efcp_queued_pdus', { ...dif, queue: 'rtx' }) ?? 0) + (sample(m, 'vmpi_dif_efcp_queued_pdus', { ...dif, queue: 'closed_window' }) ?? 0);
  t.ok(queued > 0, `PDUs queued in the EFCP right after the writes (${queued})`);
  t.equal(sample(m, 'vmpi_dif_efcp_queued_pdus', { ...dif, queue: 'reassembly' }), 0);
  f.deallocate();
  m = await vm1M.metrics();
  t.equal(sample(m, 'vmpi_dif_flows_lingering', dif), 1, 'the deallocated flow lingers');
  for (let i = 0; i < written; i++) await within(peer.read(), 5000, `SDU ${i}`);
  await until(() => peer.state === 'deallocated', 'the peer hears of the end', 5000);
  m = await vm1M.metrics();
  t.equal(sample(m, 'vmpi_dif_flows_lingering', dif), 0, 'no longer');
  t.equal(sample(m, 'vmpi_dif_efcp_queued_pdus', { ...dif, queue: 'rtx' }), 0, 'queues empty');

  // VM2's link goes: the enroller shows it lost (one series per state, the lost one at 1).
  const vm2Name = members.find((n) => n.includes('vm2'))!;
  topo.pair2.down('VM2 gone');
  await until(() => (topo.host.snapshot().enroller as { members: { name: string; state: string }[] }).members.some((x) => x.name === vm2Name && x.state === 'lost'), 'the enroller marks VM2 lost', 5000);
  m = await hostM.metrics();
  t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour: vm2Name, state: 'lost' }), 1, 'VM2 lost');
  t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour: vm2Name, state: 'enrolled' }), 0);
  t.equal(sample(m, 'vmpi_dif_directory_entries', dif), 0, 'its name forgotten');
  topo.pair2.up();
  await until(() => (topo.host.snapshot().enroller as { members: { name: string; state: string }[] }).members.some((x) => x.name === vm2Name && x.state === 'enrolled'), 'VM2 back', 5000);
  m = await hostM.metrics();
  t.equal(sample(m, 'vmpi_dif_enrollment_state', { ...dif, neighbour: vm2Name, state: 'enrolled' }), 1, 'VM2 enrolled again');
  if (promtool) {
    const p = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
    t.equal(p.stdout + p.stderr, '', 'promtool: no lint findings');
  }
});
