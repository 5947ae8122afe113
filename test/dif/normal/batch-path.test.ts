/**
 * batch-path.test.ts — the normal DIF's receive path in batches and its windows: the RMT takes
 * the PDUs of one N-1 read in one loop (Rmt.receiveBatch) and the EFCP answers a batch with one
 * control PDU (the reliable cube keeping its duplicate ACKs, up to dupAckThreshold); an SDU that
 * can go at once is lent to the user (no copy) when the user copies what it keeps; the N-1 port
 * keeps the rest of a batch the RMT stopped in (relay pause) and hands it over, in order, at
 * resume; the byte window keeps a large credit from overrunning the receiver's byte bound.
 */
import { EventEmitter } from 'node:events';
import t from 'tap';
import type { Flow, SduBatch } from '../../../src/dif/api.js';
import { batchOf } from '../../helpers/sdu-batch.js';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { EfcpConnection, QOS_CUBES, type EfcpOptions, type QosCube } from '../../../src/dif/normal/efcp/index.js';
import { N1Port } from '../../../src/dif/normal/n1-port.js';
import { decodePci, isCtrlType, newPci } from '../../../src/dif/normal/pci.js';
import { Rmt, type RmtPort } from '../../../src/dif/normal/rmt.js';

const A = 1;
const B = 2;

/** A's EFCP sends DT PDUs into `fromA` (copied); B's EFCP sits behind an RMT, its control PDUs into `fromB`. */
function rig(cube: QosCube, opts: Partial<EfcpOptions> = {}, deliver?: (sdu: Uint8Array, borrowed: boolean) => boolean | void) {
  const clock = new ManualClock();
  const fromA: Uint8Array[] = [];
  const fromB: Uint8Array[] = [];
  const got: { sdu: Uint8Array; borrowed: boolean }[] = [];
  const base = { cube, clock, sendPduCopies: true, ...opts };
  const a = new EfcpConnection({ ...base, localAddr: A, remoteAddr: B, localCep: 10, remoteCep: 20, sendPdu: (p) => (fromA.push(p.slice()), true), deliver: () => true });
  const rmt = new Rmt({ address: B, clock });
  const port: RmtPort = { send: (p) => (fromB.push(p.slice()), true) };
  rmt.addPort(1, port);
  rmt.setForwardingTable(new Map([[A, 1]]));
  const b = new EfcpConnection({
    ...base,
    localAddr: B,
    remoteAddr: A,
    localCep: 20,
    remoteCep: 10,
    sendPdu: (p) => rmt.send(p, true),
    deliver: deliver ?? ((sdu, borrowed) => void got.push({ sdu: borrowed ? sdu.slice() : sdu, borrowed })),
  });
  rmt.bindCep(20, { receivePdu: (pci, pdu, _h, borrowed) => b.receive(pdu, pci, borrowed), beginBatch: () => b.beginBatch(), endBatch: () => b.endBatch() });
  return { clock, a, b, rmt, fromA, fromB, got };
}

function ctrlAcks(pdus: Uint8Array[]): number[] {
  const pci = newPci();
  return pdus.map((p) => (decodePci(p, pci), pci)).filter((p) => isCtrlType(p.type)).map((p) => p.ackNackSeq);
}

t.test('one control PDU per batch, where per-PDU receive sends one per PDU (A-timer 0)', (t) => {
  for (const cube of [QOS_CUBES['flow-control'], QOS_CUBES.reliable]) {
    const per = rig(cube, { aTimerMs: 0 });
    const bat = rig(cube, { aTimerMs: 0 });
    for (let i = 0; i < 32; i++) {
      per.a.write(new Uint8Array(100).fill(i));
      bat.a.write(new Uint8Array(100).fill(i));
    }
    t.equal(per.fromA.length, 32);
    for (const p of per.fromA) per.rmt.receive(1, p.slice(), true);
    t.equal(bat.rmt.receiveBatch(1, batchOf(bat.fromA)), 32, 'the whole batch taken');
    t.equal(ctrlAcks(per.fromB).length, 32, `${cube.name}: one per PDU without a batch`);
    t.same(ctrlAcks(bat.fromB).length, 1, `${cube.name}: one for the batch`);
    t.equal(bat.got.length, 32, 'every SDU delivered');
    t.ok(bat.got.every((g, i) => g.sdu.length === 100 && g.sdu[0] === i), 'in order, intact');
    if (cube.retransmission) t.same(ctrlAcks(bat.fromB), [32], 'the ACK covers the batch');
    // The sender takes it like any control PDU.
    bat.a.receive(bat.fromB[0]!, (() => { const p = newPci(); decodePci(bat.fromB[0]!, p); return p; })());
    t.equal(bat.a.snapshot().sender.sndUna, 32);
  }
  t.end();
});

t.test('reliable cube: duplicate ACKs of a batch are kept, up to dupAckThreshold, and drive a fast retransmission', (t) => {
  const r = rig(QOS_CUBES.reliable, { aTimerMs: 0, dupAckThreshold: 3 });
  for (let i = 0; i < 8; i++) r.a.write(new Uint8Array(50).fill(i));
  const [lost, ...rest] = r.fromA;
  void lost;
  r.fromA.length = 0;
  r.rmt.receiveBatch(1, batchOf(rest));
  const acks = ctrlAcks(r.fromB);
  t.same(acks, [0, 0, 0], 'seven out-of-order PDUs: three duplicate ACKs for the hole, not seven');
  const pci = newPci();
  for (const p of r.fromB) {
    decodePci(p, pci);
    r.a.receive(p, pci);
  }
  t.equal(r.a.stats.fastRetransmits, 1, 'the sender retransmitted the hole');
  t.equal(r.fromA.length, 1, 'one PDU retransmitted');
  r.rmt.receiveBatch(1, batchOf(r.fromA));
  t.equal(r.got.length, 8, 'all delivered after the hole was filled');
  t.same(ctrlAcks(r.fromB).slice(3), [8], 'one cumulative ACK for the filling batch');
  t.end();
});

t.test('an SDU that can go at once is lent (no copy) when the user copies what it keeps', (t) => {
  const seen: { view: boolean; borrowed: boolean }[] = [];
  let batchBuf: ArrayBufferLike | undefined;
  const r = rig(QOS_CUBES['flow-control'], { deliverLends: true }, (sdu, borrowed) => void seen.push({ view: sdu.buffer === batchBuf, borrowed }));
  for (let i = 0; i < 4; i++) r.a.write(new Uint8Array(64).fill(i));
  const batch = batchOf(r.fromA);
  batchBuf = batch.buffer.buffer;
  r.rmt.receiveBatch(1, batch);
  t.same(seen, Array.from({ length: 4 }, () => ({ view: true, borrowed: true })), 'views of the N-1 buffer, marked borrowed');
  // Without deliverLends: copies the user may keep (as before).
  const seen2: boolean[] = [];
  const r2 = rig(QOS_CUBES['flow-control'], {}, (sdu, borrowed) => void seen2.push(sdu.buffer === batchBuf || borrowed));
  for (let i = 0; i < 4; i++) r2.a.write(new Uint8Array(64).fill(i));
  const batch2 = batchOf(r2.fromA);
  batchBuf = batch2.buffer.buffer;
  r2.rmt.receiveBatch(1, batch2);
  t.same(seen2, [false, false, false, false], 'private copies');
  t.end();
});

t.test('byte window: a large credit never overruns the receiver\'s byte bound', (t) => {
  // A reader that takes nothing: the receiver holds what arrives until its bounds.
  const r = rig(QOS_CUBES['flow-control'], { credit: 2048, peerCredit: 2048, rxMaxBytes: 64 * 1024, cwqMaxPdus: 4096, cwqMaxBytes: 32 << 20 }, () => false);
  const size = 4000;
  for (let i = 0; i < 200; i++) r.a.write(new Uint8Array(size));
  // 16 PDUs of 4000 B fit 64 KiB (64 000 B); the 17th would not.
  t.equal(r.fromA.length, 16, 'the sender stops at the byte bound, far inside the PDU window');
  t.ok(r.a.stats.windowStalls >= 1, 'counted as a window stall');
  r.rmt.receiveBatch(1, batchOf(r.fromA));
  t.equal(r.b.stats.rxByteDrops, 0, 'nothing dropped for bytes');
  t.equal(r.b.snapshot().receiver.bufferedBytes, 15 * size, 'the first was delivered (and paused delivery), 15 held');
  t.end();
});

t.test('byte window: the left edge the peer states reopens it', (t) => {
  const r = rig(QOS_CUBES['flow-control'], { credit: 2048, peerCredit: 2048, rxMaxBytes: 64 * 1024, cwqMaxPdus: 4096, cwqMaxBytes: 32 << 20, aTimerMs: 0 });
  for (let i = 0; i < 100; i++) r.a.write(new Uint8Array(4000).fill(i & 0xff));
  let sent = 0;
  const pci = newPci();
  for (let round = 0; round < 20 && r.got.length < 100; round++) {
    const pdus = r.fromA.splice(0);
    sent += pdus.length;
    if (pdus.length > 0) r.rmt.receiveBatch(1, batchOf(pdus));
    for (const p of r.fromB.splice(0)) {
      decodePci(p, pci);
      r.a.receive(p, pci);
    }
  }
  t.equal(sent, 100);
  t.equal(r.got.length, 100, 'everything arrived, window by window');
  t.equal(r.b.stats.rxByteDrops, 0);
  t.equal(r.b.stats.beyondWindow, 0);
  t.end();
});

/** A lower flow that only does 'sdus' (what the N-1 port reads). */
function fakeFlow(): Flow & EventEmitter {
  const f = new EventEmitter() as unknown as Flow & EventEmitter;
  Object.assign(f, { state: 'allocated', qos: { reliable: false, inOrder: false, maxSdu: 1000 }, write: () => true, deallocate: () => {} });
  return f;
}

t.test('N-1 port: the rest of a batch the RMT stopped in (paused) comes first, in order, at resume', async (t) => {
  const flow = fakeFlow();
  const got: number[] = [];
  let stopAt = 3;
  const port: N1Port = new N1Port(7, flow, {
    receiveBatch: (_id, batch: SduBatch, from) => {
      for (let i = from; i < batch.count; i++) {
        got.push(batch.sdu(i)[0]!);
        if (got.length === stopAt) {
          port.pause();
          return i + 1;
        }
      }
      return batch.count;
    },
    receive: (_id, pdu) => void got.push(pdu[0]!),
    drained: () => {},
    lost: () => {},
  });
  const mk = (from: number, n: number) => batchOf(Array.from({ length: n }, (_, i) => Uint8Array.of(from + i)));
  const b1 = mk(0, 6);
  flow.emit('sdus', b1);
  t.same(got, [0, 1, 2], 'stopped where the RMT paused');
  b1.buffer.fill(0xee); // the lower flow reuses its buffer: the port kept copies
  t.equal(flow.listenerCount('sdus'), 0, 'not reading while paused');
  stopAt = Infinity;
  port.resume();
  t.equal(flow.listenerCount('sdus'), 0, 'not before the held PDUs went');
  await new Promise<void>((r) => queueMicrotask(r));
  t.same(got, [0, 1, 2, 3, 4, 5], 'the held rest, in order');
  t.equal(flow.listenerCount('sdus'), 1, 'reading again');
  flow.emit('sdus', mk(6, 2));
  t.same(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.equal(port.stats.heldOverPause, 3);
});

t.test('reliable cube, default window: ACKs come before the retransmission queue fills (no A-timer needed)', (t) => {
  // The window (credit) is larger than the sender's retransmission queue: the receiver must ACK
  // at half of the smaller, or the sender waits for the A-timer every rtxMaxPdus PDUs.
  const r = rig(QOS_CUBES.reliable, { cwqMaxPdus: 4096 });
  const n = 3000;
  for (let i = 0; i < n; i++) r.a.write(new Uint8Array(8));
  const pci = newPci();
  for (let round = 0; round < 100 && r.got.length < n; round++) {
    const pdus = r.fromA.splice(0);
    if (pdus.length > 0) r.rmt.receiveBatch(1, batchOf(pdus));
    for (const p of r.fromB.splice(0)) {
      decodePci(p, pci);
      r.a.receive(p, pci);
    }
  }
  t.equal(r.got.length, n, 'all delivered while the clock stood still');
  t.end();
});

t.test('sender: PDUs that wait (N-1 flow full) are built in pooled buffers, not one allocation each', (t) => {
  const clock = new ManualClock();
  let full = false;
  const buffers = new Set<ArrayBufferLike>();
  let sent = 0;
  const got: number[] = [];
  const e: EfcpConnection = new EfcpConnection({
    cube: QOS_CUBES['flow-control'], clock, localAddr: A, remoteAddr: B, localCep: 1, remoteCep: 2, sendPduCopies: true, cwqMaxPdus: 64,
    sendPdu: (p) => {
      if (full) return false;
      buffers.add(p.buffer);
      sent++;
      got.push(p[p.length - 1]!);
      return true;
    },
    deliver: () => {},
  });
  let i = 0;
  let refused = 0;
  for (let round = 0; round < 40; round++) {
    full = true;
    for (let k = 0; k < 40; k++) if (!e.write(new Uint8Array(200).fill(i++ & 0xff))) refused++;
    full = false;
    e.lowerReady();
  }
  t.equal(refused, 0);
  t.equal(sent, 1600, 'every PDU went');
  t.same(got, Array.from({ length: 1600 }, (_, k) => k & 0xff), 'in order, each with its own bytes');
  t.ok(buffers.size <= 64 + 2, `${buffers.size} buffers for 1600 queued PDUs`);
  t.end();
});
