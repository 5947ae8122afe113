/**
 * relay-overload.test.ts — a relaying IPC process under overload (issue #12's relay-drop gap):
 * VM1 → host → VM2 with two flow-controlled flows (no retransmission) whose windows (2 × 256 PDUs)
 * sum past the host's RMT output queue (256 PDUs), while the host's N-1 flow to VM2 is held (its
 * link delivers nothing for a while, then slowly). Every SDU written must arrive, in order, and the
 * relay must drop nothing for queue overflow: hop-by-hop backpressure holds the excess upstream.
 * And the bound: a sender that ignores windows (an unreliable flow, no window at all) flooding
 * through the held relay leaves the relay's queue at its bound plus the overdraft, its excess in
 * the N-1 flow's own receive budget (dropped and counted there past it); a stuck output lets VM1's
 * port go after stallMs, so VM1's other traffic (management, other flows) moves again.
 */
import t from 'tap';
import type { Flow } from '../../../src/dif/api.js';
import { HostMetrics } from '../../../src/ops/metrics.js';
import { VmpiHost } from '../../../src/vmpi/host.js';
import { sample } from '../../helpers/exposition.js';
import { sleep, until } from '../helpers.js';
import { acceptAll, knows, topology, within } from './ipcp-harness.js';

interface RmtStatsView {
  dropQueueFull: number;
  relayed: number;
  relayPauses?: number;
  stuckEpisodes?: number;
}

function hostRmt(n: { snapshot(): Record<string, unknown> }): { stats: RmtStatsView; ports: { queuedPdus: number }[] } {
  return n.snapshot().rmt as { stats: RmtStatsView; ports: { queuedPdus: number }[] };
}

/** Read `flow` until `n` SDUs arrived (or `ms` passed); the SDUs' first 4 bytes are their index. */
async function drain(flow: Flow, n: number, ms: number): Promise<number[]> {
  const got: number[] = [];
  const deadline = Date.now() + ms;
  while (got.length < n && Date.now() < deadline) {
    // The timer is cleared once the read wins: one left pending per SDU kept the process alive until the deadline.
    let timer: NodeJS.Timeout | undefined;
    const sdu = await Promise.race([flow.read(), new Promise<undefined>((r) => (timer = setTimeout(r, Math.max(1, deadline - Date.now()), undefined)))]).finally(() => clearTimeout(timer));
    if (sdu === undefined || sdu === null) break;
    got.push(new DataView(sdu.buffer, sdu.byteOffset, sdu.byteLength).getUint32(0));
  }
  return got;
}

t.test('a relay drops nothing of flow-controlled flows whose windows sum past its queue', async (t) => {
  const { pair2, host, vm1, vm2 } = await topology(t, { capacity: 8 });
  const onVm2 = acceptAll(vm2, 'vm2-app');
  await until(() => knows(vm1, 'vm2-app'), 'VM1 knows vm2-app', 3000);
  const a = await within(vm1.allocateFlow('a', 'vm2-app', { inOrder: true }), 5000, 'flow a');
  const b = await within(vm1.allocateFlow('b', 'vm2-app', { inOrder: true }), 5000, 'flow b');
  const aEnd = await onVm2.next();
  const bEnd = await onVm2.next();

  // Hold what the host sends to VM2: the relay's output queue to VM2 fills.
  pair2.host.pause();
  const N = 400;
  const sdu = (i: number): Uint8Array => {
    const s = new Uint8Array(200);
    new DataView(s.buffer).setUint32(0, i);
    return s;
  };
  const sending = Promise.all(
    [a, b].map(async (f) => {
      for (let i = 0; i < N; i++) await f.send(sdu(i));
    }),
  );
  // Both windows fill (256 PDUs each), past the host's 256-PDU queue.
  await sleep(500);
  const queued = Math.max(...hostRmt(host).ports.map((p) => p.queuedPdus));
  t.ok(queued >= 256, `the relay's queue to VM2 reached its 256-PDU bound (${queued})`);
  t.ok((hostRmt(host).stats.relayPauses ?? 0) > 0, 'and held VM1 back by pausing its N-1 port (hop-by-hop backpressure)');
  const metrics = new HostMetrics(new VmpiHost(), { processMetrics: false });
  metrics.addIpcp(host);
  const pauses = sample(await metrics.metrics(), 'vmpi_dif_rmt_backpressure_total', { dif: host.difName, event: 'pause' });
  t.equal(pauses, hostRmt(host).stats.relayPauses, `the pauses are exported (vmpi_dif_rmt_backpressure_total{event="pause"} ${pauses})`);
  pair2.host.resume();

  const [gotA, gotB] = await Promise.all([drain(aEnd, N, 15_000), drain(bEnd, N, 15_000)]);
  await within(sending, 15_000, 'every write accepted');
  const stats = hostRmt(host).stats;
  t.equal(stats.dropQueueFull, 0, `the relay dropped nothing for a full queue (dropped ${stats.dropQueueFull})`);
  t.equal(gotA.length, N, `flow a: all ${N} SDUs arrived (${gotA.length})`);
  t.equal(gotB.length, N, `flow b: all ${N} SDUs arrived (${gotB.length})`);
  t.same(gotA, Array.from({ length: N }, (_, i) => i), 'flow a: in order, none missing');
  t.same(gotB, Array.from({ length: N }, (_, i) => i), 'flow b: in order, none missing');
});

t.test('a sender that ignores windows: memory stays bounded, the held port is let go when the output is stuck', async (t) => {
  const { pair2, host, vm1, vm2, shims } = await topology(t, { capacity: 8 });
  const onVm2 = acceptAll(vm2, 'vm2-app');
  await until(() => knows(vm1, 'vm2-app'), 'VM1 knows vm2-app', 3000);
  const flood = await within(vm1.allocateFlow('u', 'vm2-app', {}), 5000, 'an unreliable flow (no window)');
  await onVm2.next(); // the flood's end at VM2 (never read: VM2's EFCP bounds what it keeps)
  const fc = await within(vm1.allocateFlow('a', 'vm2-app', { inOrder: true }), 5000, 'a flow-controlled flow');
  const fcEnd = await onVm2.next();

  pair2.host.pause();
  const N = 6000;
  const payload = new Uint8Array(100);
  let maxQueued = 0;
  // What VM1's N-1 flow holds is sampled during the flood, not looked at once after it: the excess
  // waits there only while the relay holds VM1's port, and the watchdog lets the port go stallMs
  // (2 s) after the relay's queue filled — a flood that takes longer than that (under load, each
  // send is slower) has its N-1 flow read again and emptied before it ends (0 B queued, no budget
  // drops, the rest dropped at the relay instead, counted as dropQueueFull).
  let maxN1Queued = 0;
  const look = (): void => {
    maxQueued = Math.max(maxQueued, ...hostRmt(host).ports.map((p) => p.queuedPdus));
    maxN1Queued = Math.max(maxN1Queued, shims[0]!.counters().rxQueuedBytes ?? 0);
  };
  for (let i = 0; i < N; i++) {
    await within(flood.send(payload), 5000, `flood SDU ${i} accepted`);
    if (i % 20 === 0) look();
  }
  look();
  t.ok(maxQueued <= 256 + 64, `the relay's queue never went past its bound + overdraft (${maxQueued} ≤ 320)`);
  const h1 = shims[0]!.counters();
  const shimDrops = Object.values(h1.rxBudgetDrops ?? {}).reduce((a, b) => a + b, 0);
  t.ok(
    maxN1Queued > 0 || shimDrops > 0,
    `the excess waits in (or is dropped by) the N-1 flow's own budget: up to ${maxN1Queued} B queued, drops ${JSON.stringify(h1.rxBudgetDrops)} (port let go during the flood: ${hostRmt(host).stats.stuckEpisodes! > 0})`,
  );
  t.ok(maxN1Queued <= 8 * 1024 * 1024, `which is bounded (the shim flow's 8 MiB; up to ${maxN1Queued} B)`);

  // VM2's link stays held: after stallMs (2 s) the relay lets VM1's port go.
  await until(() => hostRmt(host).stats.stuckEpisodes! > 0, 'the watchdog finds the output to VM2 stuck', 5000);
  await until(() => (shims[0]!.counters().rxQueuedBytes ?? 0) === 0, 'VM1\'s N-1 flow is read again', 5000);
  t.ok(hostRmt(host).stats.dropQueueFull > 0, 'PDUs for the stuck output are dropped and counted');

  // VM2's link comes back: a flow-controlled flow carries everything again.
  pair2.host.resume();
  const M = 300;
  const sending = (async () => {
    for (let i = 0; i < M; i++) {
      const s = new Uint8Array(200);
      new DataView(s.buffer).setUint32(0, i);
      await fc.send(s);
    }
  })();
  const got = await drain(fcEnd, M, 15_000);
  await within(sending, 15_000, 'every write accepted');
  t.same(got, Array.from({ length: M }, (_, i) => i), `afterwards the flow-controlled flow delivers all ${M} SDUs in order`);
});
