/**
 * flow-linger.test.ts — a reliable flow deallocated right after its last writes
 * (src/dif/normal/flow-linger.ts, src/dif/normal/ipcp-flows.ts): over the seeded lossy EFCP
 * channel (efcp-sim.ts) a lingering connection delivers every SDU written before the close,
 * where closing at once loses some; the bound ends a linger whose peer never answers; and in the
 * normal IPC process (VM1 — host — VM2) SDUs still in the window queue at deallocate() reach the
 * peer before it hears of the deallocation, while a flow-control-only flow ends at once.
 */
import t from 'tap';
import type { Flow } from '../../../src/dif/api.js';
import { QOS_CUBES } from '../../../src/dif/normal/efcp/qos.js';
import { Linger, efcpPending, lingerBoundMs, needsLinger, type LingerOutcome } from '../../../src/dif/normal/flow-linger.js';
import { until } from '../helpers.js';
import { makePair, sdu } from './efcp-sim.js';
import { acceptAll, knows, topology, within } from './ipcp-harness.js';

const SEED = Number(process.env.SEED ?? 9001);
const N = 300;

/** Write N SDUs at A (all fit window + queue), then "deallocate": linger or close at once. */
function writeThenClose(seed: number, linger: boolean, loss = 0.2): { got: number[]; outcome: LingerOutcome | 'closed'; ms: number } {
  const pair = makePair({ cube: QOS_CUBES.reliable, seed, channel: { loss, delayMs: 2, jitterMs: 3 }, opts: { credit: 64, peerCredit: 64, cwqMaxPdus: 512, aTimerMs: 5, initialRtoMs: 50, minRtoMs: 20 } });
  for (let i = 0; i < N; i++) if (!pair.a.write(sdu(i, 40))) throw new Error(`write ${i} refused`);
  let outcome: LingerOutcome | 'closed' = 'closed';
  const start = pair.clock.now();
  if (linger && needsLinger(pair.a)) {
    new Linger(pair.clock, pair.a, lingerBoundMs(pair.a), (o) => {
      outcome = o;
      pair.a.close();
    });
  } else pair.a.close();
  for (let k = 0; k < 60_000 && pair.a.state === 'open'; k++) pair.clock.advance(1);
  const ms = pair.clock.now() - start;
  pair.clock.advance(100); // what was in flight lands
  return { got: pair.gotB, outcome, ms };
}

t.test('over a lossy channel: the lingering sender delivers all N SDUs written before the close', async (t) => {
  for (let s = SEED; s < SEED + 5; s++) {
    const r = writeThenClose(s, true);
    t.equal(r.outcome, 'acked', `seed ${s}: every SDU acknowledged (after ${r.ms} ms)`);
    t.same(r.got, Array.from({ length: N }, (_, i) => i), `seed ${s}: the peer got all ${N}, in order, once (got ${r.got.length})`);
  }
  const control = writeThenClose(SEED, false);
  t.ok(control.got.length < N, `control: closing at once delivers only ${control.got.length} of ${N} (seed ${SEED})`);
});

t.test('a linger ends at its bound when the peer never answers; flow-control-only connections never linger', async (t) => {
  const pair = makePair({ cube: QOS_CUBES.reliable, seed: SEED, channel: { loss: 1 }, opts: { initialRtoMs: 100, maxRetries: 1000 } as never });
  for (let i = 0; i < 10; i++) pair.a.write(sdu(i, 10));
  t.ok(needsLinger(pair.a));
  t.equal(efcpPending(pair.a), 10);
  const bound = lingerBoundMs(pair.a, 1000, 5000);
  t.ok(bound >= 1000 && bound <= 5000, `bound ${bound} ms within [1000, 5000]`);
  let outcome: LingerOutcome | undefined;
  new Linger(pair.clock, pair.a, bound, (o) => (outcome = o));
  pair.clock.advance(bound - 20);
  t.equal(outcome, undefined, 'still lingering before the bound');
  pair.clock.advance(40);
  t.ok(outcome === 'expired' || outcome === 'failed', `ended by the bound or the EFCP giving up (${outcome})`);
  const fc = makePair({ cube: QOS_CUBES['flow-control'], seed: SEED, channel: { loss: 1 } });
  for (let i = 0; i < 10; i++) fc.a.write(sdu(i, 10));
  t.notOk(needsLinger(fc.a), 'nothing is retransmitted on the flow-control cube: it ends at once');
});

async function readN(f: Flow, n: number): Promise<number> {
  let got = 0;
  for (let i = 0; i < n; i++) {
    const b = await within(f.read(), 5000, `SDU ${i}`);
    if (b === null) break;
    got++;
  }
  return got;
}

t.test('normal IPC process: SDUs still queued at deallocate() reach the peer before its end is told', async (t) => {
  const { vm1, vm2 } = await topology(t);
  const on2 = acceptAll(vm2, 'sink');
  await until(() => knows(vm1, 'sink'), 'VM1 knows sink', 3000);
  const f = await within(vm1.allocateFlow('src', 'sink', { reliable: true }), 5000, 'reliable flow');
  const peer = await on2.next();
  // More than the window (credit 256): the rest waits in the closed-window queue when we close.
  const n = 380;
  let written = 0;
  for (; written < n; written++) if (!f.write(Uint8Array.of(written & 0xff, written >> 8))) break;
  t.ok(written > 256, `${written} SDUs taken before the close`);
  f.deallocate('done writing');
  t.equal(f.state, 'deallocated', 'the application\'s flow ends at once');
  const got = await readN(peer, written);
  t.equal(got, written, `the peer read all ${written} SDUs`);
  await until(() => peer.state === 'deallocated', 'then the peer hears of the deallocation', 5000);
  const stats = vm1.snapshot().flows as { lingered: number; lingerAcked: number };
  t.equal(stats.lingered, 1);
  t.equal(stats.lingerAcked, 1);
  // Flow-control-only: ends at once, no linger.
  const g = await within(vm1.allocateFlow('src2', 'sink', { inOrder: true }), 5000, 'flow-control flow');
  const peer2 = await on2.next();
  g.write(new Uint8Array(10));
  g.deallocate();
  await until(() => peer2.state === 'deallocated', 'its peer ends', 5000);
  t.equal((vm1.snapshot().flows as { lingered: number }).lingered, 1, 'no linger for the flow-control cube');
  // A linger in progress when the IPC process closes ends at once and tells the peer.
  const h = await within(vm1.allocateFlow('src3', 'sink', { reliable: true }), 5000, 'another reliable flow');
  const peer3 = await on2.next();
  for (let i = 0; i < 300; i++) if (!h.write(new Uint8Array(8))) break;
  h.deallocate();
  vm1.close('shutting down');
  const st = vm1.snapshot().flows as { lingered: number; lingerCancelled: number };
  t.equal(st.lingered, 2);
  t.equal(st.lingerCancelled, 1, 'the close ended the linger');
  await until(() => peer3.state === 'deallocated', 'the peer hears of it', 5000);
});

t.test('normal IPC process: the peer becoming unreachable ends a linger at once', async (t) => {
  const { vm1, vm2, pair2 } = await topology(t);
  const on2 = acceptAll(vm2, 'sink');
  await until(() => knows(vm1, 'sink'), 'VM1 knows sink', 3000);
  const f = await within(vm1.allocateFlow('src', 'sink', { reliable: true }), 5000, 'reliable flow');
  await on2.next(); // never read: the window closes, the linger cannot finish by itself
  for (let i = 0; i < 400; i++) if (!f.write(new Uint8Array(32))) break;
  f.deallocate();
  const st = () => vm1.snapshot().flows as { lingered: number; lingerCancelled: number; lingerAcked: number };
  t.equal(st().lingered, 1);
  pair2.down('VM2 gone');
  await until(() => st().lingerCancelled === 1, 'the linger ends when VM2 is unreachable', 5000);
  t.equal(st().lingerAcked, 0);
  t.equal((vm1.counters().lingeringFlows ?? -1), 0, 'nothing lingers any more');
});
