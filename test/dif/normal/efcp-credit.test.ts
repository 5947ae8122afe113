/**
 * efcp-credit.test.ts — when the EFCP receiver gives credit, and what the sender allocates while it
 * waits for it (issue #12):
 *  - a path that holds more than half a window (N-1 rings, a relay's queues, a descheduled VM)
 *    does not stall the sender: the receiver advertises at a quarter of the window;
 *  - with the byte bound binding and a reader that pauses, the receiver still never holds more
 *    than its byte bound, drops nothing for bytes, and everything arrives in order;
 *  - a closed-window queue that filled in a stall and drained leaves a buffer for every PDU of the
 *    next stall (no allocation per PDU).
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { EfcpConnection, QOS_CUBES, type EfcpOptions } from '../../../src/dif/normal/efcp/index.js';
import { decodePci, newPci, PCI_LEN } from '../../../src/dif/normal/pci.js';

const A = 1;
const B = 2;

/**
 * A sends to B over a path that holds `depth` PDUs: a PDU reaches B only once `depth` more were
 * sent after it, or when A sends nothing (the path drains while the sender waits). B's control
 * PDUs reach A at once. `deliver` is B's user.
 */
function path(opts: Partial<EfcpOptions>, depth: number, deliver: (sdu: Uint8Array) => boolean = () => true) {
  const clock = new ManualClock();
  const pipe: Uint8Array[] = [];
  const pci = newPci();
  const base = { cube: QOS_CUBES['flow-control'], clock, sendPduCopies: true, ...opts };
  let b: EfcpConnection | undefined;
  const a = new EfcpConnection({ ...base, localAddr: A, remoteAddr: B, localCep: 10, remoteCep: 20, sendPdu: (p) => (pipe.push(p.slice()), true), deliver: () => true });
  const got: number[] = [];
  b = new EfcpConnection({
    ...base,
    localAddr: B,
    remoteAddr: A,
    localCep: 20,
    remoteCep: 10,
    sendPdu: (p) => {
      decodePci(p, pci);
      a.receive(p.slice(), pci);
      return true;
    },
    deliver: (sdu) => {
      got.push(sdu[0]! | (sdu[1]! << 8) | (sdu[2]! << 16));
      return deliver(sdu);
    },
  });
  const rx = b;
  /** Up to `n` PDUs from the pipe to B, as one batch. */
  const release = (n: number) => {
    rx.beginBatch();
    for (let i = 0; i < n && pipe.length > 0; i++) {
      const p = pipe.shift()!;
      decodePci(p, pci);
      rx.receive(p, pci);
    }
    rx.endBatch();
  };
  return { clock, a, b: rx, pipe, got, release };
}

function sduOf(i: number, size: number): Uint8Array {
  const s = new Uint8Array(size);
  s[0] = i & 0xff;
  s[1] = (i >> 8) & 0xff;
  s[2] = (i >> 16) & 0xff;
  return s;
}

t.test('a path holding more than half a window does not stall the sender (credit at a quarter)', (t) => {
  const credit = 64;
  const depth = 36; // more than half the window, less than three quarters
  const p = path({ credit, peerCredit: credit, aTimerMs: 20 }, depth);
  let next = 0;
  for (let round = 0; round < 400; round++) {
    let wrote = 0;
    while (wrote < 8 && p.a.snapshot().sender.cwqPdus === 0 && p.a.write(sduOf(next, 100))) {
      next++;
      wrote++;
    }
    const over = p.pipe.length - depth;
    p.release(over > 0 ? Math.min(8, over) : wrote === 0 ? 8 : 0);
  }
  t.ok(next > 2000, `the sender kept writing (${next} SDUs)`);
  t.equal(p.a.stats.windowStalls, 0, `no window stall (stalls: ${p.a.stats.windowStalls}; control PDUs ${p.b.stats.ctrlSent})`);
  t.ok(p.got.every((v, i) => v === (i & 0xffffff)), 'in order');
  t.end();
});

t.test('byte bound binding, a reader that pauses: never more than the byte bound held, nothing dropped for bytes', (t) => {
  const size = 1000;
  const rxMaxBytes = 20 * size; // the byte bound binds long before the 64-PDU window
  let paused = false;
  let held = 0;
  const p = path({ credit: 64, peerCredit: 64, rxMaxBytes, maxSdu: size, cwqMaxPdus: 4096, cwqMaxBytes: 32 << 20, aTimerMs: 20 }, 0, () => {
    // Pause after every 7th SDU; resumed by the loop below.
    if (++held % 7 === 0) paused = true;
    return !paused;
  });
  let next = 0;
  let maxBytes = 0;
  for (let round = 0; round < 2000 && p.got.length < 3000; round++) {
    while (next < 3000 && p.a.snapshot().sender.cwqPdus < 4 && p.a.write(sduOf(next, size))) next++;
    p.release(5);
    maxBytes = Math.max(maxBytes, p.b.snapshot().receiver.bufferedBytes);
    if (paused && round % 3 === 0) {
      paused = false;
      p.b.resumeDelivery();
    }
    if (round % 10 === 0) p.clock.advance(20);
  }
  t.equal(p.got.length, 3000, 'everything delivered');
  t.ok(p.got.every((v, i) => v === i), 'in order');
  t.ok(maxBytes <= rxMaxBytes, `held at most the byte bound (${maxBytes} of ${rxMaxBytes})`);
  t.equal(p.b.stats.rxByteDrops, 0, 'nothing dropped for bytes');
  t.equal(p.b.stats.beyondWindow, 0, 'nothing beyond the window');
  t.end();
});

t.test('a window stall allocates no PDU once a stall before it filled and drained the closed-window queue', (t) => {
  const cwqMaxPdus = 128;
  const clock = new ManualClock();
  const seen = new Set<ArrayBufferLike>();
  let fresh = 0;
  let record = false;
  const out: Uint8Array[] = [];
  const a = new EfcpConnection({
    cube: QOS_CUBES['flow-control'], clock, sendPduCopies: true, credit: 16, peerCredit: 16, cwqMaxPdus, localAddr: A, remoteAddr: B, localCep: 10, remoteCep: 20,
    sendPdu: (p) => {
      if (record && !seen.has(p.buffer)) fresh++;
      seen.add(p.buffer);
      out.push(p.slice());
      return true;
    },
    deliver: () => true,
  });
  // The peer's window: opened by hand with a control PDU that moves both edges.
  let ctrlSeq = 0;
  const open = (lwe: number) => {
    const pci = newPci();
    Object.assign(pci, { type: 0xc8, srcAddr: B, dstAddr: A, srcCep: 20, dstCep: 10, qosId: QOS_CUBES['flow-control'].id, seqNum: ctrlSeq++, newLeftWinEdge: lwe, newRightWinEdge: lwe + 15, myLeftWinEdge: 0, myRightWinEdge: 0 });
    a.receive(new Uint8Array(PCI_LEN + 24), pci);
  };
  let sent = 0;
  for (let stall = 0; stall < 4; stall++) {
    record = stall >= 2; // the first two stalls fill the pool
    let n = 0;
    while (a.write(sduOf(sent + n, 200))) n++;
    t.equal(a.snapshot().sender.cwqPdus, cwqMaxPdus, `stall ${stall}: the closed-window queue is full`);
    sent += n;
    // Open the window PDU by PDU until the queue has drained.
    for (let k = 0; k < 200 && a.snapshot().sender.cwqPdus > 0; k++) open(a.snapshot().sender.sndNxt);
  }
  t.ok(out.length > 3 * cwqMaxPdus, `${out.length} PDUs sent`);
  t.equal(fresh, 0, 'the PDUs queued in the later stalls were all buffers of earlier ones');
  t.end();
});
