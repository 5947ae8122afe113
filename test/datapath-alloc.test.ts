/**
 * datapath-alloc.test.ts — the host data path allocates nothing per SDU (issue #15, docs/SCALE.md):
 * the per-SDU garbage of a busy `vmpi serve` grew V8's young generation by ~30 MB steps and put
 * its RSS over 150 MB with 16 devices. Measured with V8's `total_allocated_bytes` (every byte the
 * heap handed out) around the hot calls only; the test's own driver work (offering buffers,
 * checking the used ring) stays outside the measured spans.
 *
 *   - copyBytes and DescChain.read/write (the ring copies): no view per copy
 *   - SduViews: the same view for the same range, bounded, right bytes
 *   - a real VmpiDevice and EchoResponder over split rings in (array-backed) guest memory, both
 *     rx framings: a tx kick that takes 64 frames, echoes each and writes it into an rx buffer
 */
import t from 'tap';
import { getHeapStatistics, type HeapInfo } from 'node:v8';
import { memoryWith } from './helpers/array-mapper.js';
import { DriverRing } from './helpers/split-ring.js';
import { DescChain, SplitVirtqueue, copyBytes, type RingLayout } from '../src/vhost-user/virtqueue.js';
import { VRING_DESC_F_WRITE, bit } from '../src/vhost-user/protocol.js';
import type { ReadyQueue } from '../src/vhost-user/device.js';
import { SendResult, VMPI_F_RX_PACKED, VmpiDevice } from '../src/vmpi/device.js';
import { EchoResponder } from '../src/vmpi/echo.js';
import { SduViews } from '../src/vmpi/sdu-views.js';

/** V8's count of every byte its heap handed out (Node ≥ 24; not in @types/node yet). */
function allocated(): number {
  const n = (getHeapStatistics() as HeapInfo & { total_allocated_bytes?: number }).total_allocated_bytes;
  if (typeof n !== 'number') throw new Error('v8.getHeapStatistics() has no total_allocated_bytes: run with the project\'s Node (. scripts/node-env.sh)');
  return n;
}

/**
 * Bytes the heap handed out per run of `fn`: the difference between n and 2n runs (after warm-up
 * runs, so the JIT has settled), which cancels what the measurement itself costs (reading the
 * statistics, compiling the loop: some 100 KB whatever n). What is left is a few bytes per run of
 * noise; a view (subarray) per run is ~100, so the bounds below are 16.
 */
function allocatedPer(n: number, fn: (i: number) => void): number {
  const span = (runs: number): number => {
    const a0 = allocated();
    for (let i = 0; i < runs; i++) fn(i);
    return allocated() - a0;
  };
  span(n);
  // The least of three tries: a JIT tier-up or an IC going megamorphic in the middle of one span
  // allocates a few KB once, which a loaded machine makes likelier; a view per run is in all three.
  let least = Infinity;
  for (let k = 0; k < 3; k++) {
    const one = span(n);
    const two = span(2 * n);
    least = Math.min(least, Math.max(0, two - one) / n);
  }
  return least;
}

t.test('copyBytes and DescChain copies allocate nothing', async (t) => {
  const src = new Uint8Array(70_000).map((_, i) => i * 7);
  const dst = new Uint8Array(70_000);
  for (const n of [64, 4000]) {
    const per = allocatedPer(100_000, (i) => copyBytes(src, i & 7, dst, (i >> 3) & 7, n));
    t.ok(per < 16, `copyBytes of ${n} B: ${per.toFixed(2)} bytes allocated per copy (a view per copy is ~100)`);
  }
  // A chain of three segments over one buffer, as a pop leaves it: 2 readable, 1 writable.
  const mem = new Uint8Array(3 * 8192);
  const c = new DescChain();
  c.bufs[0] = mem;
  c.offs[0] = 0;
  c.lens[0] = 100;
  c.bufs[1] = mem;
  c.offs[1] = 8192;
  c.lens[1] = 3900;
  c.bufs[2] = mem;
  c.offs[2] = 16_384;
  c.lens[2] = 8192;
  c.count = 3;
  c.readableCount = 2;
  c.readableBytes = 4000;
  c.writableBytes = 8192;
  const out = new Uint8Array(4000);
  t.ok(allocatedPer(100_000, () => c.read(out, 0, 0, 4000)) < 16, 'DescChain.read across segments allocates nothing');
  t.ok(allocatedPer(100_000, () => c.write(out, 0, 4000, 8)) < 16, 'DescChain.write allocates nothing');
});

t.test('SduViews hands the same view for the same range, and the right bytes for any', async (t) => {
  const buf = new Uint8Array(1024).map((_, i) => i & 0xff);
  const v = new SduViews(buf.subarray(16));
  const a = v.view(4, 68);
  t.equal(v.view(4, 68), a, 'same range: same view object');
  t.same([a.byteLength, a[0], a[63]], [64, 20, 83], 'the bytes of buffer[4..68)');
  for (let len = 0; len < 300; len++) {
    const x = v.view(4, 4 + len);
    if (x.byteLength !== len || (len > 0 && x[len - 1] !== ((16 + 4 + len - 1) & 0xff))) t.fail(`view(4, ${4 + len}) has the wrong bytes`);
  }
  t.same([v.view(0, 0).byteLength, v.view(1000, 1008).byteLength, v.view(1000, 1008)[0]], [0, 8, (1016 & 0xff)], 'empty and end ranges');
  const per = allocatedPer(200_000, (i) => v.view(4, i & 1 ? 68 : 1004));
  t.ok(per < 16, `two alternating sizes: ${per.toFixed(3)} bytes allocated per view`);
  // A packed chain of 16 records of 4000 bytes (8-byte headers, records at multiples of 8): each
  // record's view is kept (the slots must not depend on the low bits that alignment zeroes).
  const chain = new SduViews(new Uint8Array(65536));
  const at = (k: number): number => 8 + k * 4008;
  const perRecord = allocatedPer(200_000, (i) => chain.view(at(i & 15), at(i & 15) + 4000));
  t.ok(perRecord < 16, `16 aligned records of 4000 B in turn: ${perRecord.toFixed(3)} bytes allocated per view`);
});

// ---------------------------------------------------------------------------------------------
// VmpiDevice + EchoResponder over split rings

const Q = 64;
const BUF = 8192;
const ECHO = 1024;
const RX: RingLayout = { size: Q, descGpa: 0x0, availGpa: 0x1000, usedGpa: 0x2000 };
const TX: RingLayout = { size: Q, descGpa: 0x4000, availGpa: 0x5000, usedGpa: 0x6000 };
const RX_BUFS = 0x10_0000;
const TX_BUFS = 0x20_0000;

function echoRig(packed: boolean, size: number) {
  const { mem } = memoryWith([{ guestPhysAddr: 0, size: 0x40_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0 }]);
  const rxDrv = new DriverRing(mem, RX);
  const txDrv = new DriverRing(mem, TX);
  const frame = new Uint8Array(4 + size);
  new DataView(frame.buffer).setUint32(0, ECHO, true);
  for (let k = 4; k < frame.length; k++) frame[k] = (k * 13) & 0xff;
  for (let i = 0; i < Q; i++) {
    rxDrv.setDesc(i, { addr: RX_BUFS + i * BUF, len: BUF, flags: VRING_DESC_F_WRITE });
    txDrv.setDesc(i, { addr: TX_BUFS + i * BUF, len: frame.length });
    txDrv.g.write(TX_BUFS + i * BUF, frame);
  }
  const device = new VmpiDevice({ vmpiId: 7, maxSduLog2: 16 });
  device.featuresAcked(packed ? bit(VMPI_F_RX_PACKED) : 0n);
  let deferred: (() => void) | null = null;
  const failures: Error[] = [];
  const ready = (index: number, layout: RingLayout): ReadyQueue => ({
    index,
    vq: new SplitVirtqueue(mem, { index, layout, lastAvailIdx: 0, eventIdx: true, indirect: false }),
    notify: () => false,
    fail: (e) => void failures.push(e),
    defer: (fn) => {
      deferred = fn;
    },
  });
  device.queueReady(ready(0, RX));
  device.queueReady(ready(1, TX));
  const echo = new EchoResponder(device, [ECHO]);
  // The driver's part of a round, allocation-free like the device's (so a whole round can be
  // measured): offer again the rx buffers that came back and every tx frame.
  const dv = mem.find(0, 0x40_0000)!.view;
  let rxAvail = 0;
  let rxSeen = 0;
  let txAvail = 0;
  const place = (l: RingLayout, at: number, head: number): void => dv.setUint16(l.availGpa + 4 + 2 * (at & (Q - 1)), head, true);
  for (let i = 0; i < Q; i++) place(RX, rxAvail++, i);
  dv.setUint16(RX.availGpa + 2, rxAvail & 0xffff, true);
  const offer = (): void => {
    const used = dv.getUint16(RX.usedGpa + 2, true);
    for (; (rxSeen & 0xffff) !== used; rxSeen++) place(RX, rxAvail++, dv.getUint32(RX.usedGpa + 4 + 8 * (rxSeen & (Q - 1)), true));
    dv.setUint16(RX.availGpa + 2, rxAvail & 0xffff, true);
    for (let i = 0; i < Q; i++) place(TX, txAvail++, i);
    dv.setUint16(TX.availGpa + 2, txAvail & 0xffff, true);
  };
  /** The device's part: the tx kick, and the deferred flush of the turn. */
  const kick = (): void => {
    device.kicked(1);
    const d = deferred;
    deferred = null;
    d?.();
  };
  /** The rx kick (the driver posted buffers): the device writes its backlog into them. */
  const kickRx = (): void => {
    device.kicked(0);
    const d = deferred;
    deferred = null;
    d?.();
  };
  return { device, echo, rxDrv, frame, failures, offer, kick, kickRx };
}

for (const packed of [false, true]) {
  t.test(`a tx kick echoing 64 SDUs into rx buffers allocates nothing per SDU (${packed ? 'packed' : 'one frame per'} rx chain)`, async (t) => {
    for (const size of [64, 4000]) {
      const r = echoRig(packed, size);
      const rounds = 400;
      const per = allocatedPer(rounds, () => {
        r.offer();
        r.kick();
      }) / Q;
      const total = 10 * rounds * Q; // allocatedPer's runs: n, then three times n and 2n
      t.equal(r.device.stats.fromGuest.sdus, total, `${size} B: every frame taken`);
      t.equal(r.echo.stats.echoed, total, `${size} B: every SDU echoed`);
      t.same([r.device.stats.drops, r.failures], [{ malformed: 0, oversize: 0, unbound_channel: 0, backlog_full: 0, device_reset: 0 }, []], 'no drops, no queue failures');
      // The last used rx entry holds the echoed frame (packed: a record with its length).
      const last = r.rxDrv.usedElem((r.rxDrv.usedIdx - 1) & (Q - 1));
      const body = r.rxDrv.g.read(RX_BUFS + last.id * BUF, packed ? 8 + size : 4 + size);
      const dv = new DataView(body.buffer);
      t.equal(dv.getUint32(0, true), ECHO, 'on the echo channel');
      if (packed) t.equal(dv.getUint32(4, true), size, 'record length');
      t.same(body.subarray(packed ? 8 : 4), r.frame.subarray(4), 'the bytes sent');
      // Per kick (not per SDU) the turn's deferred call and its closure remain, shared by 64 SDUs;
      // one view per SDU alone was 87–111 bytes, a view per copy and per handler call ~300.
      t.ok(per < 32, `${size} B: ${per.toFixed(2)} bytes allocated per SDU round trip (before: a view per copy and per handler call, ~300)`);
      r.echo.close();
    }
  });
}

t.test('SDUs backlogged while the guest rx ring is full allocate nothing per SDU', async (t) => {
  // Host → guest faster than the guest reads (bench:host-stack h2g): the rx ring is full when the
  // application's SDUs come, so they wait in the device's backlog and go when the guest posts
  // buffers. A copy per SDU (slice) there was an ArrayBuffer per SDU, ~260 bytes of heap each
  // plus its 4000-byte store outside the heap.
  for (const packed of [false, true]) {
    const r = echoRig(packed, 4000);
    const sdu = r.frame.subarray(4);
    const CH = 5;
    const perRound = packed ? 2 * Q : Q; // 8192-byte buffers: one frame each, or two packed records
    // Fill the ring (these go straight in), then a round's worth waits in the backlog.
    for (let i = 0; i < 2 * perRound; i++) t.not(r.device.send(CH, sdu), SendResult.Full);
    const rounds = 200;
    const per =
      allocatedPer(rounds, () => {
        for (let i = 0; i < perRound; i++) r.device.send(CH, sdu);
        r.offer();
        r.kickRx();
      }) / perRound;
    t.ok(r.device.stats.backlogSdus > 0, `${packed ? 'packed' : 'one frame per chain'}: SDUs were waiting in the backlog (${r.device.stats.backlogSdus})`);
    t.same([r.device.stats.drops, r.failures], [{ malformed: 0, oversize: 0, unbound_channel: 0, backlog_full: 0, device_reset: 0 }, []], 'no drops, no queue failures');
    const last = r.rxDrv.usedElem((r.rxDrv.usedIdx - 1) & (Q - 1));
    const body = r.rxDrv.g.read(RX_BUFS + last.id * BUF, packed ? 8 + 4000 : 4 + 4000);
    t.same(body.subarray(packed ? 8 : 4), sdu, 'the bytes sent');
    t.ok(per < 16, `${packed ? 'packed' : 'one frame per chain'}: ${per.toFixed(2)} bytes allocated per backlogged SDU (a copy per SDU: 256–274 on the heap, and its 4000 bytes outside it)`);
    r.echo.close();
  }
});
