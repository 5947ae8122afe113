/**
 * efcp-props.test.ts — fast-check properties of the normal DIF's EFCP: the serial-number laws
 * of src/dif/normal/efcp/seq.ts, and for random loss/duplication/reordering schedules, credits,
 * timers and start points (anywhere, including just before 2^32) the reliable cube delivers every
 * SDU exactly once and in order, and the flow-control cube never overruns its receiver.
 * fast-check prints the seed and the shrunk counterexample of a failure.
 */
import fc from 'fast-check';
import t from 'tap';
import { QOS_CUBES } from '../../../src/dif/normal/efcp/qos.js';
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax, seqMin } from '../../../src/dif/normal/efcp/seq.js';
import { makePair, run } from './efcp-sim.js';

// Seeded (replay another run with FC_SEED=<seed printed by a failure>).
const FC_SEED = Number(process.env.FC_SEED ?? 20261201);
t.comment(`fast-check seed ${FC_SEED}`);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const dist = fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 });

t.test('serial-number arithmetic laws', async (t) => {
  fc.assert(
    fc.property(u32, dist, (a, d) => {
      const b = seqAdd(a, d);
      if (b < 0 || b > 0xffffffff || !Number.isInteger(b)) return false;
      if (seqDiff(b, a) !== d) return false;
      if (seqLt(a, b) !== d > 0 || seqGt(a, b) !== d < 0) return false;
      if (seqLe(a, b) !== d >= 0 || seqGe(a, b) !== d <= 0) return false;
      if (seqLt(a, b) && seqLt(b, a)) return false; // antisymmetric
      if (seqMax(a, b) !== (d >= 0 ? b : a) || seqMin(a, b) !== (d >= 0 ? a : b)) return false;
      return seqAdd(b, -d) === a;
    }),
    { numRuns: 5000, seed: FC_SEED },
  );
  // Transitive inside any window shorter than 2^31, wherever it sits (across the wrap too).
  fc.assert(
    fc.property(u32, fc.integer({ min: 0, max: 2 ** 30 }), fc.integer({ min: 0, max: 2 ** 30 }), (a, x, y) => {
      const b = seqAdd(a, x);
      const c = seqAdd(b, y);
      return seqLe(a, b) && seqLe(b, c) && seqLe(a, c) && (x + y === 0 || seqLt(a, c));
    }),
    { numRuns: 5000, seed: FC_SEED },
  );
  t.ok(seqLt(0xffffffff, 0) && seqGt(0, 0xffffffff) && seqAdd(0xffffffff, 1) === 0, 'the wrap itself');
  t.equal(seqDiff(5, 0xfffffffb), 10);
});

const schedule = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  loss: fc.double({ min: 0, max: 0.25, noNaN: true }),
  dup: fc.double({ min: 0, max: 0.1, noNaN: true }),
  delayMs: fc.integer({ min: 0, max: 5 }),
  jitterMs: fc.integer({ min: 0, max: 8 }),
  credit: fc.integer({ min: 1, max: 48 }),
  cwq: fc.integer({ min: 1, max: 32 }),
  aTimerMs: fc.integer({ min: 0, max: 30 }),
  start: fc.oneof(u32, fc.integer({ min: 0xffffffff - 200, max: 0xffffffff })),
  n: fc.integer({ min: 1, max: 250 }),
});

t.test('reliable: for random schedules every SDU arrives exactly once, in order', async (t) => {
  fc.assert(
    fc.property(schedule, (s) => {
      const pair = makePair({
        cube: QOS_CUBES.reliable,
        seed: s.seed,
        channel: { loss: s.loss, dup: s.dup, delayMs: s.delayMs, jitterMs: s.jitterMs },
        opts: { credit: s.credit, peerCredit: s.credit, cwqMaxPdus: s.cwq, aTimerMs: s.aTimerMs, initialSeq: s.start, peerInitialSeq: s.start, maxRetries: 30 },
      });
      let overrun = false;
      run(pair, s.n, { maxMs: 300_000, each: () => void (pair.b.snapshot().receiver.bufferedPdus > s.credit && (overrun = true)) });
      if (pair.failures.length > 0 || overrun || pair.b.stats.beyondWindow > 0) return false;
      if (pair.gotB.length !== s.n) return false;
      return pair.gotB.every((v, i) => v === i);
    }),
    { numRuns: 60, seed: FC_SEED },
  );
  t.pass('held');
});

// sendPduCopies: the sim's channel copies every PDU it is given, as the contract asks, so the
// sender may build PDUs in its reused buffer; the same properties must hold.
for (const sendPduCopies of [false, true])
t.test(`flow-control${sendPduCopies ? ' (PDUs built in a reused buffer)' : ''}: for random schedules and a pausing reader the receiver is never overrun and delivery stays in order`, async (t) => {
  fc.assert(
    fc.property(schedule, fc.integer({ min: 1, max: 40 }), (s, pauseEvery) => {
      let count = 0;
      const pair = makePair({
        cube: QOS_CUBES['flow-control'],
        seed: s.seed,
        channel: { loss: s.loss, dup: s.dup, delayMs: s.delayMs, jitterMs: s.jitterMs },
        opts: { credit: s.credit, peerCredit: s.credit, cwqMaxPdus: s.cwq, aTimerMs: s.aTimerMs, initialSeq: s.start, peerInitialSeq: s.start, sendPduCopies },
        deliverB: () => {
          if (++count % pauseEvery !== 0) return true;
          pair.clock.setTimer(7, () => pair.b.resumeDelivery());
          return false;
        },
      });
      let overrun = false;
      const r = run(pair, s.n, {
        maxMs: 120_000,
        done: () => pair.a.snapshot().sender.cwqPdus === 0 && pair.a.snapshot().sender.nextSeq === seqAdd(s.start, s.n),
        each: () => void (pair.b.snapshot().receiver.bufferedPdus > s.credit && (overrun = true)),
      });
      pair.clock.advance(2000);
      if (overrun || pair.b.stats.maxBuffered > s.credit || pair.b.stats.beyondWindow > 0) return false;
      if (r.written !== s.n) return false; // no deadlock: the writer got everything in
      for (let i = 1; i < pair.gotB.length; i++) if (pair.gotB[i]! <= pair.gotB[i - 1]!) return false;
      // A lost tail (nothing sent after it, no stall to probe from) is not known to the receiver.
      return pair.gotB.length + pair.b.stats.lostPdus <= s.n && pair.gotB.every((v) => v < s.n);
    }),
    { numRuns: 60, seed: FC_SEED },
  );
  t.pass('held');
});
