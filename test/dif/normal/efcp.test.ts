/**
 * efcp.test.ts — the normal DIF's EFCP (src/dif/normal/efcp/) end to end between two
 * connections over a seeded lossy, duplicating, reordering simulated N-1 channel on a
 * ManualClock: every cube at 0%, 1% and 10% loss, the sequence wrap at 2^32, backpressure,
 * deadlock freedom when control PDUs are lost, retransmission giving up, and the stats.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { EfcpConnection } from '../../../src/dif/normal/efcp/efcp.js';
import { EfcpError } from '../../../src/dif/normal/efcp/errors.js';
import { QOS_CUBES, cubeById, cubeForQos, efcpForQos } from '../../../src/dif/normal/efcp/qos.js';
import { PCI_LEN, PduType, decodePci, encodePci, newPci } from '../../../src/dif/normal/pci.js';
import { isCtrl, makePair, rng, run, sdu, sduIndex } from './efcp-sim.js';

const SEED = Number(process.env.EFCP_SEED ?? 0x5eed);
t.comment(`seed ${SEED} (set EFCP_SEED to replay)`);

function inOrderOnce(got: number[], n: number): string | null {
  if (got.length !== n) return `delivered ${got.length} of ${n}`;
  for (let i = 0; i < n; i++) if (got[i] !== i) return `position ${i} holds SDU ${got[i]}`;
  return null;
}

function strictlyIncreasing(got: number[]): string | null {
  for (let i = 1; i < got.length; i++) if (got[i]! <= got[i - 1]!) return `SDU ${got[i]} after ${got[i - 1]}`;
  return null;
}

t.test('QoS spec → cube', async (t) => {
  t.equal(cubeForQos({ reliable: true, inOrder: false }).name, 'reliable');
  t.equal(cubeForQos({ reliable: true, inOrder: true }).name, 'reliable');
  t.equal(cubeForQos({ reliable: false, inOrder: true }).name, 'flow-control');
  t.equal(cubeForQos({ reliable: false, inOrder: false }).name, 'unreliable');
  t.equal(cubeForQos({ reliable: false, inOrder: false }, { forceFlowControl: true }).name, 'flow-control');
  for (const c of Object.values(QOS_CUBES)) t.equal(cubeById(c.id), c);
  t.same(efcpForQos({ reliable: false, inOrder: true, maxSdu: 0 }, 1400), { cube: QOS_CUBES['flow-control'], maxSdu: 1400 });
  t.same(efcpForQos({ reliable: true, inOrder: true, maxSdu: 100 }, 1400), { cube: QOS_CUBES.reliable, maxSdu: 100 });
  t.throws(() => efcpForQos({ reliable: true, inOrder: true, maxSdu: 1401 }, 1400), { code: 'ERR_EFCP_CONFIG', message: /larger than the DIF's max SDU/ });
  t.equal(cubeById(0), undefined);
});

for (const loss of [0, 0.01, 0.1]) {
  t.test(`reliable at ${loss * 100}% loss (+1% duplicates, reordering): every SDU once, in order`, async (t) => {
    const seed = SEED + Math.round(loss * 1000);
    const n = 3000;
    const pair = makePair({ cube: QOS_CUBES.reliable, seed, channel: { loss, dup: 0.01, delayMs: 2, jitterMs: 4 }, opts: { credit: 64, peerCredit: 64, cwqMaxPdus: 32, aTimerMs: 5 } });
    const r = run(pair, n);
    t.equal(inOrderOnce(pair.gotB, n), null, `seed ${seed}`);
    t.same(pair.failures, []);
    const s = pair.a.stats;
    t.equal(s.txSdus, n);
    t.equal(s.txPdus, n, 'each PDU sent once the first time');
    t.ok(pair.b.stats.maxBuffered <= 64, 'receiver never held more than its credit');
    if (loss > 0) t.ok(s.retransmissions > 0, 'losses were repaired by retransmission');
    if (loss === 0) t.equal(s.rtxTimeouts, 0, 'no timeouts without loss');
    t.ok(pair.b.stats.duplicates > 0, 'duplicates (from the channel or from retransmission) were counted');
    t.ok(r.refused > 0 && pair.drains > 0, 'backpressure reached the writer and drain followed');
    t.equal(s.txRefused, r.refused);
    t.ok(s.rttSamples > 0 && s.rttSamples <= n);
    // The channel's RTT is 4..12 ms: the estimator must find it under loss too (a starved or
    // inflated estimator leaves the 1 s initial RTO or worse in force, and each lost
    // retransmission then costs seconds).
    const snap = pair.a.snapshot().sender;
    t.ok(snap.srtt > 0 && snap.srtt < 40, `srtt ${snap.srtt.toFixed(1)} ms tracks the channel`);
    t.ok(r.elapsedMs < 15_000, `done in ${r.elapsedMs} ms of simulated time`);
    t.comment(`loss ${loss}: ${r.elapsedMs} ms simulated, rtx ${s.retransmissions} (timeouts ${s.rtxTimeouts}, fast ${s.fastRetransmits}), stalls ${s.windowStalls}, ctrl ${pair.b.stats.ctrlSent}, srtt ${pair.a.snapshot().sender.srtt.toFixed(1)} rto ${pair.a.snapshot().sender.rto}`);
    // Quiescent afterwards: everything acknowledged, no timer left running on either side.
    pair.clock.advance(10_000);
    t.equal(pair.a.snapshot().sender.rtxPdus, 0, 'all acknowledged');
    pair.a.close();
    pair.b.close();
  });
}

for (const loss of [0, 0.01, 0.1]) {
  t.test(`flow-control at ${loss * 100}% loss with a slow reader: never overrun, in order, losses counted`, async (t) => {
    const seed = SEED + 7 + Math.round(loss * 1000);
    const n = 3000;
    const credit = 32;
    let paused = false;
    let sinceResume = 0;
    const pair = makePair({
      cube: QOS_CUBES['flow-control'],
      seed,
      channel: { loss, dup: 0.01, delayMs: 2, jitterMs: 3 },
      opts: { credit, peerCredit: credit, cwqMaxPdus: 16, aTimerMs: 5 },
      // The reader stops after every 50 SDUs and comes back 20 ms later.
      deliverB: () => {
        if (++sinceResume % 50 === 0) {
          paused = true;
          pair.clock.setTimer(20, () => {
            paused = false;
            pair.b.resumeDelivery();
          });
          return false;
        }
        return true;
      },
    });
    let maxHeld = 0;
    const r = run(pair, n, {
      done: () => pair.a.snapshot().sender.nextSeq === n && pair.a.snapshot().sender.cwqPdus === 0 && pair.b.snapshot().receiver.rcvNext === n && !paused,
      each: () => {
        maxHeld = Math.max(maxHeld, pair.b.snapshot().receiver.bufferedPdus);
      },
    });
    pair.clock.advance(1000);
    t.equal(r.written, n, `seed ${seed}: the writer got every SDU in`);
    t.equal(strictlyIncreasing(pair.gotB), null, 'delivered in order, no duplicates');
    t.ok(maxHeld <= credit && pair.b.stats.maxBuffered <= credit, `receiver held at most its credit (${pair.b.stats.maxBuffered} ≤ ${credit})`);
    t.equal(pair.b.stats.beyondWindow, 0, 'the sender never sent past the window');
    t.ok(r.refused > 0 && pair.drains > 0, 'backpressure reached the writer');
    t.ok(pair.a.stats.windowStalls > 0, 'the window closed while the reader was paused');
    const bs = pair.b.stats;
    t.equal(pair.gotB.length + bs.lostPdus, n, 'every SDU is delivered or counted lost');
    if (loss === 0) t.equal(bs.lostPdus, 0);
    else t.ok(bs.gaps > 0 && bs.lostPdus > 0, 'gaps counted');
    t.equal(pair.a.stats.retransmissions, 0, 'no retransmission in this cube');
    t.comment(`loss ${loss}: delivered ${pair.gotB.length}, lost ${bs.lostPdus} in ${bs.gaps} gaps, stalls ${pair.a.stats.windowStalls}, probes ${pair.a.stats.windowProbes}, ${r.elapsedMs} ms`);
  });
}

for (const loss of [0, 0.1]) {
  t.test(`unreliable at ${loss * 100}% loss: no control PDUs, no duplicates within the window`, async (t) => {
    const n = 2000;
    const pair = makePair({ cube: QOS_CUBES.unreliable, seed: SEED + 3, channel: { loss, dup: 0.05, delayMs: 1, jitterMs: 2 } });
    run(pair, n, { done: () => false, maxMs: 300, perStep: 10 });
    pair.clock.advance(100);
    t.equal(pair.a.stats.ctrlSent + pair.b.stats.ctrlSent, 0);
    t.equal(new Set(pair.gotB).size, pair.gotB.length, 'no SDU twice');
    t.ok(pair.b.stats.duplicates > 0, 'channel duplicates dropped and counted');
    if (loss === 0) t.equal(pair.gotB.length, n);
    else t.ok(pair.gotB.length < n && pair.gotB.length > n * 0.8);
  });
}

t.test('a flow started near 2^32 crosses the wrap under 10% loss', async (t) => {
  for (const cube of [QOS_CUBES.reliable, QOS_CUBES['flow-control']]) {
    const start = 0xffffffff - 300;
    const n = 1500;
    const pair = makePair({ cube, seed: SEED + 11, channel: { loss: 0.1, dup: 0.01, delayMs: 2, jitterMs: 4 }, opts: { credit: 64, peerCredit: 64, initialSeq: start, peerInitialSeq: start, aTimerMs: 2 } });
    const r = run(pair, n, { done: cube.retransmission ? undefined : () => pair.a.snapshot().sender.cwqPdus === 0 && r0() });
    function r0(): boolean {
      return pair.a.snapshot().sender.nextSeq === ((start + n) >>> 0);
    }
    pair.clock.advance(2000);
    const snap = pair.a.snapshot();
    t.equal(snap.sender.nextSeq, (start + n) >>> 0, `${cube.name}: sequence numbers wrapped`);
    if (cube.retransmission) t.ok(pair.b.snapshot().ctrlSeq < 0x10000, 'reliable: the ACK sequence space wrapped too');
    if (cube.retransmission) t.equal(inOrderOnce(pair.gotB, n), null, 'reliable: every SDU once, in order across the wrap');
    else {
      t.equal(strictlyIncreasing(pair.gotB), null, 'flow-control: in order across the wrap');
      t.equal(pair.gotB.length + pair.b.stats.lostPdus, n);
    }
    t.equal(pair.b.stats.beyondWindow, 0);
    t.comment(`${cube.name}: ${r.elapsedMs} ms`);
  }
});

t.test('lost FC PDUs do not deadlock a flow-controlled flow', async (t) => {
  // Lose every control PDU B sends for the first 2 s: A's window closes and stays closed until
  // its probes get an answer through.
  const n = 400;
  const credit = 16;
  const pair = makePair({
    cube: QOS_CUBES['flow-control'],
    seed: SEED + 13,
    channel: { delayMs: 2, drop: (_p, pci, now, dir) => dir === 'ba' && isCtrl(pci) && now < 2000 },
    opts: { credit, peerCredit: credit, aTimerMs: 5 },
  });
  const r = run(pair, n, { maxMs: 60_000 });
  t.equal(inOrderOnce(pair.gotB, n), null);
  t.ok(pair.a.stats.windowProbes > 0, `the sender probed (${pair.a.stats.windowProbes})`);
  t.ok(r.elapsedMs > 2000 && r.elapsedMs < 5000, `finished soon after the losses stopped (${r.elapsedMs} ms)`);
  t.ok(pair.a.stats.ctrlGaps > 0, 'the sender saw the gap in the control sequence space');
});

t.test('lost FC PDUs and a lost burst tail: the receiver gives the tail up and re-advertises', async (t) => {
  // Every DT PDU with seq 15 (the last of the first window) is lost, and B's first FC PDUs too:
  // B must learn from A's probe how far A has sent, give up 15, and open the window again.
  const credit = 16;
  const pair = makePair({
    cube: QOS_CUBES['flow-control'],
    seed: SEED + 17,
    channel: { delayMs: 1, drop: (_p, pci, now, dir) => (dir === 'ab' && pci.type === PduType.DT && pci.seqNum === 15) || (dir === 'ba' && isCtrl(pci) && now < 500) },
    opts: { credit, peerCredit: credit, aTimerMs: 5, gapWaitMs: 10 },
  });
  const n = 100;
  run(pair, n, { done: () => pair.gotB.length >= n - 1, maxMs: 30_000 });
  t.equal(pair.gotB.length, n - 1);
  t.notOk(pair.gotB.includes(15));
  t.equal(pair.b.stats.lostPdus, 1);
  t.equal(strictlyIncreasing(pair.gotB), null);
});

t.test('flow-control: a whole window lost is given up (the probe says how far the sender got)', async (t) => {
  // credit 4: PDUs 0..3 are all lost. The receiver saw nothing, so its window does not move and
  // its advertisement equals what the sender has; only the sender's probe (my_lwe = 4) tells it
  // that 0..3 were sent, so it can give them up and open the window instead of deadlocking.
  const credit = 4;
  const pair = makePair({
    cube: QOS_CUBES['flow-control'],
    seed: SEED + 18,
    channel: { delayMs: 1, drop: (_p, pci, _now, dir) => dir === 'ab' && pci.type === PduType.DT && pci.seqNum < 4 },
    opts: { credit, peerCredit: credit, aTimerMs: 5, gapWaitMs: 10 },
  });
  const n = 20;
  run(pair, n, { done: () => pair.gotB.length >= n - 4, maxMs: 30_000 });
  t.same(pair.gotB, Array.from({ length: n - 4 }, (_, i) => i + 4));
  t.equal(pair.b.stats.lostPdus, 4);
  t.equal(pair.b.stats.gaps, 1);
  t.ok(pair.a.stats.windowProbes >= 1);
  t.ok(pair.clock.now() < 1000, `recovered at ${pair.clock.now()} ms, soon after the first probe`);
});

t.test('flow-control: PDUs lost at the end of a burst are counted once the sender goes idle', async (t) => {
  const pair = makePair({
    cube: QOS_CUBES['flow-control'],
    seed: SEED + 31,
    channel: { delayMs: 1, drop: (_p, pci, _now, dir) => dir === 'ab' && pci.type === PduType.DT && pci.seqNum >= 8 },
    opts: { aTimerMs: 5, gapWaitMs: 10, stallProbeMs: 100 },
  });
  run(pair, 10, { done: () => pair.a.snapshot().sender.sndNxt === 10 });
  pair.clock.advance(1000);
  t.same(pair.gotB, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.equal(pair.a.stats.tailProbes, 1, 'one probe per idle period');
  t.equal(pair.b.stats.lostPdus, 2, 'the lost tail is counted');
  t.equal(pair.b.snapshot().receiver.rcvNext, 10);
});

t.test('reliable: a lost window update is repaired too (probe or retransmission)', async (t) => {
  const credit = 8;
  let pausedOnce = false;
  const pair = makePair({
    cube: QOS_CUBES.reliable,
    seed: SEED + 19,
    channel: { delayMs: 1, drop: (_p, pci, now, dir) => dir === 'ba' && isCtrl(pci) && now >= 100 && now < 1500 },
    opts: { credit, peerCredit: credit, aTimerMs: 0 },
    deliverB: () => {
      if (pausedOnce || pair.gotB.length !== 4) return true;
      pausedOnce = true;
      pair.clock.setTimer(200, () => pair.b.resumeDelivery());
      return false;
    },
  });
  const n = 200;
  run(pair, n, { maxMs: 60_000 });
  t.equal(inOrderOnce(pair.gotB, n), null);
  t.same(pair.failures, []);
});

t.test('retransmission gives up after maxRetries with the cause', async (t) => {
  let cut = false;
  const pair = makePair({
    cube: QOS_CUBES.reliable,
    seed: SEED + 23,
    channel: { delayMs: 1, drop: () => cut },
    opts: { maxRetries: 4, initialRtoMs: 100, minRtoMs: 20, maxRtoMs: 1000 },
  });
  run(pair, 50);
  t.equal(pair.gotB.length, 50);
  pair.clock.advance(200); // let the last ACK through
  t.equal(pair.a.snapshot().sender.rtxPdus, 0);
  cut = true;
  t.ok(pair.a.write(sdu(50, 10)));
  const t0 = pair.clock.now();
  for (let i = 0; i < 60_000 && pair.a.state === 'open'; i += 10) pair.clock.advance(10);
  t.equal(pair.a.state, 'failed');
  t.equal(pair.failures.length, 1);
  const err = pair.failures[0]!;
  t.type(err, EfcpError);
  t.equal(err.code, 'ERR_EFCP_RTX_EXHAUSTED');
  t.match(err.message, /PDU 50 was not acknowledged after 4 retransmissions/);
  t.equal(pair.a.stats.retransmissions, 4);
  t.equal(pair.a.stats.rtxTimeouts, 5, 'four timeouts retransmit, the fifth gives up');
  const took = pair.clock.now() - t0;
  t.ok(took > 100 && took < 20_000, `gave up after ${took} ms (exponential backoff)`);
  t.equal(pair.a.snapshot().failure?.code, 'ERR_EFCP_RTX_EXHAUSTED');
  t.throws(() => pair.a.write(sdu(51, 4)), { code: 'ERR_EFCP_FAILED' });
  pair.clock.advance(100_000);
  t.equal(pair.failures.length, 1, 'onFail fires once');
});

t.test("Karn's rule: no RTT sample from an ACK covering a retransmitted PDU", async (t) => {
  // One-way delay 5 ms (RTT 10). PDU 0's first copy is lost; its retransmission is acked after
  // ~RTO + 10 ms: that must not become an RTT sample.
  let dropped = false;
  const pair = makePair({
    cube: QOS_CUBES.reliable,
    seed: SEED,
    channel: {
      delayMs: 5,
      drop: (_p, pci, _now, dir) => {
        if (dir === 'ab' && pci.type === PduType.DT && pci.seqNum === 0 && !dropped) return (dropped = true);
        return false;
      },
    },
    opts: { aTimerMs: 0, initialRtoMs: 300 },
  });
  t.ok(pair.a.write(sdu(0, 8)));
  pair.clock.advance(1000);
  t.same(pair.gotB, [0]);
  t.equal(pair.a.stats.retransmissions, 1);
  t.equal(pair.a.stats.rttSamples, 0, 'no sample from the retransmitted PDU');
  t.ok(pair.a.write(sdu(1, 8)));
  pair.clock.advance(1000);
  t.equal(pair.a.stats.rttSamples, 1);
  t.equal(pair.a.snapshot().sender.srtt, 10, 'the clean sample is the real RTT');
});

t.test('duplicate ACKs trigger a fast retransmission before the RTO', async (t) => {
  let dropped = false;
  const pair = makePair({
    cube: QOS_CUBES.reliable,
    seed: SEED,
    channel: { delayMs: 2, drop: (_p, pci, _now, dir) => dir === 'ab' && pci.type === PduType.DT && pci.seqNum === 3 && !dropped && (dropped = true) },
    opts: { aTimerMs: 0, initialRtoMs: 5000 },
  });
  run(pair, 20, { maxMs: 1000 });
  t.equal(inOrderOnce(pair.gotB, 20), null);
  t.equal(pair.a.stats.fastRetransmits, 1);
  t.equal(pair.a.stats.rtxTimeouts, 0);
  t.ok(pair.clock.now() < 100, 'repaired in a few RTTs, not after the 5 s RTO');
});

t.test('the receiver drops PDUs beyond its window and those for other flows', async (t) => {
  const clock = new ManualClock();
  const got: Uint8Array[] = [];
  const b = new EfcpConnection({ cube: QOS_CUBES['flow-control'], clock, localAddr: 2, remoteAddr: 1, localCep: 20, remoteCep: 10, credit: 4, sendPdu: () => true, deliver: (s) => void got.push(s) });
  const mk = (over: Partial<ReturnType<typeof newPci>>) => {
    const p = { ...newPci(), type: PduType.DT, dstAddr: 2, srcAddr: 1, dstCep: 20, srcCep: 10, qosId: QOS_CUBES['flow-control'].id, length: 1, ...over };
    const buf = new Uint8Array(PCI_LEN + 1);
    encodePci(p, buf);
    const d = newPci();
    decodePci(buf, d);
    return [buf, d] as const;
  };
  b.receive(...mk({ seqNum: 4 }));
  t.equal(b.stats.beyondWindow, 1, 'seq 4 is past the right edge 3');
  b.receive(...mk({ seqNum: 0, srcCep: 11 }));
  b.receive(...mk({ seqNum: 0, qosId: 9 }));
  b.receive(...mk({ seqNum: 0, type: PduType.MGMT }));
  t.equal(b.stats.rxMisdirected, 3);
  b.receive(...mk({ seqNum: 0 }));
  b.receive(...mk({ seqNum: 0 }));
  t.equal(got.length, 1);
  t.equal(b.stats.duplicates, 1);
  b.close();
  b.receive(...mk({ seqNum: 1 }));
  t.equal(b.stats.rxAfterClose, 1);
  t.equal(clock.pending, 0, 'close() leaves no timer behind');
});

t.test('write errors, config errors, zero-length SDUs, close', async (t) => {
  const clock = new ManualClock();
  const base = { cube: QOS_CUBES.reliable, clock, localAddr: 1, remoteAddr: 2, localCep: 1, remoteCep: 2, sendPdu: () => true, deliver: () => {} };
  t.throws(() => new EfcpConnection({ ...base, credit: 0 }), { code: 'ERR_EFCP_CONFIG', message: /credit=0/ });
  t.throws(() => new EfcpConnection({ ...base, localCep: -1 }), { code: 'ERR_EFCP_CONFIG', message: /localCep/ });
  t.throws(() => new EfcpConnection({ ...base, maxSdu: 1 << 20, cwqMaxBytes: 1000 }), { code: 'ERR_EFCP_CONFIG', message: /cwqMaxBytes/ });
  t.throws(() => new EfcpConnection({ ...base, qosId: 70000 }), { code: 'ERR_EFCP_CONFIG' });
  const c = new EfcpConnection({ ...base, maxSdu: 100 });
  t.throws(() => c.write(new Uint8Array(101)), { code: 'ERR_EFCP_SDU_TOO_LARGE' });
  t.ok(c.write(new Uint8Array(0)), 'a zero-length SDU is fine');
  c.close();
  c.close();
  t.equal(c.state, 'closed');
  t.throws(() => c.write(new Uint8Array(1)), { code: 'ERR_EFCP_CLOSED' });
  t.equal(clock.pending, 0);
  const pair = makePair({ cube: QOS_CUBES.reliable, seed: SEED, opts: { aTimerMs: 0 } });
  run(pair, 3, { size: () => 0 });
  t.same(pair.gotB.length, 3, 'zero-length SDUs (4-byte index here) delivered');
});

t.test('the N-1 flow refusing PDUs holds them until lowerReady()', async (t) => {
  const clock = new ManualClock();
  const out: Uint8Array[] = [];
  let room = 2;
  let drained = 0;
  const a = new EfcpConnection({ cube: QOS_CUBES.unreliable, clock, localAddr: 1, remoteAddr: 2, localCep: 1, remoteCep: 2, cwqMaxPdus: 4, sendPdu: (p) => (room > 0 ? (room--, out.push(p), true) : false), deliver: () => {}, onDrain: () => drained++ });
  let ok = 0;
  for (let i = 0; i < 10; i++) if (a.write(sdu(i, 4))) ok++;
  t.equal(out.length, 2);
  t.equal(ok, 6, '2 sent, 4 queued, then refused');
  t.equal(a.stats.lowerRefused, 1);
  room = 100;
  a.lowerReady();
  t.equal(out.length, 6);
  t.equal(drained, 1);
  t.ok(a.write(sdu(6, 4)));
  t.equal(out.length, 7);
});

t.test('sendPduCopies: PDUs built in one reused buffer arrive intact and in order, also when the N-1 side refuses them and writes re-enter from sendPdu', async (t) => {
  for (const cube of [QOS_CUBES['flow-control'], QOS_CUBES.unreliable]) {
    const clock = new ManualClock();
    const r = rng(SEED);
    const wire: Uint8Array[] = [];
    const buffers = new Set<ArrayBufferLike>();
    let refuse = false;
    let reentered = 0;
    let next = 0;
    let a!: EfcpConnection;
    const got: number[] = [];
    // The index is taken before write(): a write re-entered from sendPdu takes the next one.
    const writeNext = () => {
      const i = next++;
      if (!a.write(sdu(i, 8 + (i % 50)))) next = i; // refused: nothing was sent, nothing re-entered
    };
    const back = newPci();
    const b = new EfcpConnection({
      cube, clock, localAddr: 2, remoteAddr: 1, localCep: 20, remoteCep: 10, credit: 64, peerCredit: 64, aTimerMs: 0,
      sendPdu: (p) => {
        const c = p.slice();
        decodePci(c, back);
        a.receive(c, back);
        return true;
      },
      deliver: (s) => void got.push(sduIndex(s)),
    });
    a = new EfcpConnection({
      cube, clock, localAddr: 1, remoteAddr: 2, localCep: 10, remoteCep: 20, credit: 64, peerCredit: 64, cwqMaxPdus: 8,
      sendPduCopies: true,
      sendPdu: (p) => {
        // Now and then a write from inside sendPdu (a deliver callback answering, say), also
        // when this PDU is then refused: it must still go before the re-entered one.
        if (r() < 0.1 && next < 300) {
          reentered++;
          writeNext();
        }
        if (refuse) return false;
        const pci = newPci();
        decodePci(p, pci);
        if (pci.type !== PduType.DT) return true;
        buffers.add(p.buffer);
        wire.push(p.slice()); // copies, as the contract says
        p.fill(0xee); // the connection must not rely on the bytes once we return
        return true;
      },
      deliver: () => {},
    });
    const pci = newPci();
    let fed = 0;
    const feed = () => {
      for (; fed < wire.length; fed++) {
        decodePci(wire[fed]!, pci);
        b.receive(wire[fed]!, pci);
      }
    };
    for (let step = 0; step < 10_000 && next < 300; step++) {
      refuse = r() < 0.2;
      writeNext();
      refuse = false;
      a.lowerReady();
      feed();
    }
    feed();
    t.ok(reentered > 0 && a.stats.lowerRefused > 0, `${cube.name}: refusals (${a.stats.lowerRefused}) and re-entered writes (${reentered}) happened`);
    t.same(got, [...Array(300).keys()], `${cube.name}: every SDU, intact, in order`);
    t.ok(buffers.size < 100, `${cube.name}: PDUs sent at once share a reused buffer (${buffers.size} buffers for ${wire.length} PDUs)`);
  }
});

t.test('snapshot is plain data', async (t) => {
  const pair = makePair({ cube: QOS_CUBES.reliable, seed: SEED, channel: { loss: 0.05 } });
  run(pair, 100);
  const s = pair.a.snapshot();
  t.same(JSON.parse(JSON.stringify(s)), s);
  t.equal(s.cube, 'reliable');
  t.equal(s.sender.nextSeq, 100);
  t.equal(pair.b.snapshot().receiver.leftWinEdge, 100);
});

t.test('DRF realigns a fresh receiver; bogus and stale control PDUs are ignored', async (t) => {
  const clock = new ManualClock();
  const got: number[] = [];
  const sent: Uint8Array[] = [];
  const cube = QOS_CUBES['flow-control'];
  const c = new EfcpConnection({ cube, clock, localAddr: 2, remoteAddr: 1, localCep: 20, remoteCep: 10, credit: 8, peerCredit: 8, aTimerMs: 0, sendPdu: (p) => (sent.push(p), true), deliver: (s) => void got.push(s[0]!) });
  const mk = (over: Partial<ReturnType<typeof newPci>>, payload = 0) => {
    const p = { ...newPci(), type: PduType.DT, dstAddr: 2, srcAddr: 1, dstCep: 20, srcCep: 10, qosId: cube.id, length: over.type === undefined || over.type === PduType.DT ? 1 : 0, ...over };
    const buf = new Uint8Array((p.type >= 0xc0 ? 56 : PCI_LEN) + p.length);
    encodePci(p, buf);
    if (p.length) buf[buf.length - 1] = payload;
    const d = newPci();
    decodePci(buf, d);
    return [buf, d] as const;
  };
  // The peer starts its run at 1000, not at the configured 0: its DRF PDU moves our window there.
  c.receive(...mk({ seqNum: 1000, flags: 0x80 }, 7));
  c.receive(...mk({ seqNum: 1001 }, 8));
  t.same(got, [7, 8]);
  t.equal(c.snapshot().receiver.leftWinEdge, 1002);
  c.receive(...mk({ seqNum: 5000, flags: 0x80 }, 9));
  t.equal(c.stats.beyondWindow, 1, 'a later DRF does not restart a run in progress');
  // Control PDUs: our sender's window starts at 7 (credit 8); we send 0 and 1. The peer's edge can
  // be at most (what we sent) + credit − 1 = 9: anything past that is bogus.
  t.ok(c.write(new Uint8Array(1)) && c.write(new Uint8Array(1)));
  const ctrl = (seq: number, rwe: number) => mk({ type: PduType.CTRL | 0x08, seqNum: seq, newRightWinEdge: rwe, myRightWinEdge: 1009, myLeftWinEdge: 1002 });
  c.receive(...ctrl(0, 1_000_000));
  t.equal(c.stats.ctrlBogus, 1);
  t.equal(c.snapshot().sender.rightWinEdge, 9, 'clamped to what the peer can have meant');
  c.receive(...ctrl(2, 7 + 2));
  t.equal(c.snapshot().sender.rightWinEdge, 9);
  t.equal(c.stats.ctrlGaps, 1, 'control seq 1 never came');
  c.receive(...ctrl(1, 7 + 3));
  t.equal(c.stats.ctrlStale, 1, 'an older control PDU is ignored');
  t.equal(c.snapshot().sender.rightWinEdge, 9);
  c.receive(...ctrl(3, 5));
  t.equal(c.snapshot().sender.rightWinEdge, 9, 'the right edge never moves backward');
  t.equal(c.snapshot().lastCtrlSeqRcvd, 3);
  c.close();
});

t.test('both directions at once under 10% loss: each delivers everything in order, control traffic stays bounded', async (t) => {
  for (const cube of [QOS_CUBES.reliable, QOS_CUBES['flow-control']]) {
    const gotA: number[] = [];
    let bBlocked = false;
    const pair = makePair({
      cube,
      seed: SEED + 29,
      channel: { loss: 0.1, dup: 0.01, delayMs: 2, jitterMs: 2 },
      opts: { credit: 32, peerCredit: 32, aTimerMs: 5 },
      optsA: { deliver: (s) => void gotA.push(new DataView(s.buffer, s.byteOffset).getUint32(0)) },
      optsB: { onDrain: () => void (bBlocked = false) },
    });
    const n = 1500;
    let nb = 0;
    const bWrite = () => {
      while (nb < n && pair.b.state === 'open' && !bBlocked) {
        if (!pair.b.write(sdu(nb, 8 + (nb % 50)))) bBlocked = true;
        else nb++;
      }
    };
    const r = run(pair, n, {
      maxMs: 60_000,
      each: bWrite,
      done: () => (cube.retransmission ? pair.gotB.length >= n && gotA.length >= n : nb >= n && pair.a.snapshot().sender.nextSeq === n && pair.clock.now() > 500),
    });
    pair.clock.advance(1000);
    if (cube.retransmission) {
      t.equal(inOrderOnce(pair.gotB, n), null, 'reliable A→B');
      t.equal(inOrderOnce(gotA, n), null, 'reliable B→A');
    } else {
      t.equal(strictlyIncreasing(pair.gotB), null, 'flow-control A→B in order');
      t.equal(strictlyIncreasing(gotA), null, 'flow-control B→A in order');
      t.ok(pair.gotB.length > n * 0.8 && gotA.length > n * 0.8);
    }
    const ctrl = pair.a.stats.ctrlSent + pair.b.stats.ctrlSent;
    const readv = pair.a.stats.readvertisements + pair.b.stats.readvertisements;
    t.ok(ctrl < 4 * n, `${cube.name}: ${ctrl} control PDUs for ${2 * n} SDUs, ${readv} re-advertisements, ${r.elapsedMs} ms`);
  }
});

t.test('a borrowed PDU (an N-1 flow\'s receive buffer) is copied when kept: out of order, or while delivery is paused', async (t) => {
  for (const cube of [QOS_CUBES['flow-control'], QOS_CUBES.reliable, QOS_CUBES.unreliable]) {
    const clock = new ManualClock();
    const got: number[][] = [];
    let take = false;
    const b = new EfcpConnection({
      cube, clock, localAddr: 2, remoteAddr: 1, localCep: 20, remoteCep: 10, credit: 8, peerCredit: 8, sendPdu: () => true,
      deliver: (s) => (got.push([...s]), take),
    });
    // One receive buffer, reused for every PDU (what a VMPI ring slot is).
    const ring = new Uint8Array(PCI_LEN + 3);
    const pci = newPci();
    const put = (seq: number) => {
      encodePci({ ...newPci(), type: PduType.DT, dstAddr: 2, srcAddr: 1, dstCep: 20, srcCep: 10, qosId: cube.id, length: 3, seqNum: seq }, ring);
      ring.set([seq, seq + 1, seq + 2], PCI_LEN);
      decodePci(ring, pci);
      b.receive(ring, pci, true);
      ring.fill(0xee); // the slot is reused once the call returns
    };
    put(0); // delivered; delivery pauses (deliver returned false)
    put(2); // out of order (and held while paused)
    put(1); // in order, held while paused
    take = true;
    b.resumeDelivery();
    const want = cube.flowControl ? [[0, 1, 2], [1, 2, 3], [2, 3, 4]] : [[0, 1, 2]];
    t.same(got, want, `${cube.name}: every SDU as it was sent, not what the reused buffer held later`);
    b.close();
  }
});

t.test('a control PDU the N-1 side refused is sent once it has room (lowerReady), not left to the peer\'s stall probe', async (t) => {
  const clock = new ManualClock();
  let full = false;
  const sent: Uint8Array[] = [];
  const b = new EfcpConnection({
    cube: QOS_CUBES['flow-control'], clock, localAddr: 2, remoteAddr: 1, localCep: 20, remoteCep: 10, credit: 8, peerCredit: 8, aTimerMs: 0,
    sendPdu: (p) => (full ? false : (sent.push(p.slice()), true)),
    deliver: () => true,
  });
  const pci = newPci();
  const buf = new Uint8Array(PCI_LEN + 1);
  full = true;
  encodePci({ ...newPci(), type: PduType.DT, dstAddr: 2, srcAddr: 1, dstCep: 20, srcCep: 10, qosId: QOS_CUBES['flow-control'].id, length: 1, seqNum: 0 }, buf);
  decodePci(buf, pci);
  b.receive(buf, pci, true); // delivered: the window moved, its advertisement (A = 0) is refused
  t.equal(b.stats.ctrlRefused, 1);
  t.equal(sent.length, 0);
  full = false;
  b.lowerReady();
  t.equal(sent.filter((p) => (p[1]! & 0xf0) === PduType.CTRL).length, 1, 'the owed advertisement went out on lowerReady');
  const c = newPci();
  decodePci(sent[0]!, c);
  t.equal(c.newRightWinEdge, 8, 'with the current right edge (lwe 1 + credit 8 - 1)');
  b.lowerReady();
  t.equal(sent.length, 1, 'owed once, sent once');
  b.close();
});
