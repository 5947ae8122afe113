/**
 * receiver.ts — the receiving half of one EFCP connection: in-order delivery, duplicate
 * detection, the receive window (credit) and when to tell the peer about it.
 *
 * Owns: the receive buffer (a ring of `credit` slots indexed from the left window edge: PDUs
 * received out of order, and in-order ones waiting while delivery is paused), the A-timer and,
 * for the flow-control cube, the gap timer.
 *
 * Edges: `lwe` is the next SDU to hand to the user; `rcvNext` the next one expected in sequence
 * (everything before it has arrived, or was given up); the right window edge is lwe + credit − 1.
 * The window moves only when the user takes SDUs, so a user that pauses delivery (deliver
 * returns false) stops the sender instead of being overrun: the buffer never holds more than
 * `credit` PDUs, nor more than `rxMaxBytes`.
 *
 * Control PDUs: at once when a quarter of the window (or of the byte bound) is unadvertised, when
 * half of what the sender may have outstanding is (reliable) unacknowledged, when
 * A = 0, for every out-of-order or duplicate PDU (reliable: the duplicate ACKs that drive fast
 * retransmission), else when the A-timer fires.
 *
 * Gaps (flow-control cube, no retransmission): a missing PDU is waited for `gapWaitMs` (0: not
 * at all), or until the reordering queue is full, then counted lost and skipped. The peer's
 * control PDUs tell us how far it has sent (my_lwe), so a loss at the tail of a burst is given up
 * too instead of holding the window shut.
 *
 * unreliable cube: no window, no control PDUs; SDUs are delivered as they come, duplicates
 * within the last 32 sequence numbers dropped.
 *
 * Lending (`lend`: the user copies what it keeps): an SDU that can be delivered the moment it
 * arrives (the next in order, nothing held, delivery not paused) is handed over as a view of the
 * PDU without being stored, so a borrowed PDU (an N-1 flow's receive buffer) is copied only where
 * the SDU ends up (the IPC bridge's outbox), not here as well.
 */
import type { Clock, TimerHandle } from '../clock.js';
import type { EfcpParams, QosCube } from './qos.js';
import { seqAdd, seqDiff, seqGt, seqLt } from './seq.js';
import type { EfcpStats } from './stats.js';

export interface ReceiverHooks {
  /**
   * Hand one SDU to the user; false: taken, but deliver no more until Receiver.resume().
   * `borrowed` (only when the receiver was made with `lend`): `sdu` is valid only during the call.
   */
  deliverSdu(sdu: Uint8Array, borrowed: boolean): boolean | void;
  /**
   * Send a control PDU now (the connection builds it from ackSeq/rightEdge and marks them sent).
   * `dup`: a duplicate ACK (reliable cube: out of order, duplicate, reordering queue full), which
   * the sender counts towards a fast retransmission.
   */
  sendCtrl(dup?: boolean): void;
}

export interface ReceiverSnapshot {
  leftWinEdge: number;
  rcvNext: number;
  rightWinEdge: number;
  advertisedRwe: number;
  ackedSeq: number;
  bufferedPdus: number;
  bufferedBytes: number;
  outOfOrder: number;
  paused: boolean;
  peerSentUpTo: number;
}

export class Receiver {
  private lwe: number;
  private rcvNext: number;
  private advertised: number;
  private acked: number;
  /** flow-control cube: the peer has sent everything before this (from its my_lwe). */
  private peerSentUpTo: number;
  private ring: (Uint8Array | undefined)[] | undefined;
  private head = 0;
  private ooo = 0;
  private buffered = 0;
  private bytes = 0;
  private anyReceived = false;
  private paused = false;
  private delivering = false;
  private dead = false;
  private aTimer: TimerHandle | undefined;
  private gapTimer: TimerHandle | undefined;
  /** rcvNext when the gap timer was armed: a gap that appeared later gets its own full wait. */
  private gapAt = 0;
  // unreliable cube: the highest sequence number seen and a bitmap of the 32 before it.
  private hi = 0;
  private seen = 0;
  private readonly credit: number;
  private readonly half: number;
  /**
   * Window advertisement mark: a quarter of the window. At half, a sender whose PDUs spend more
   * than half a window in the path (N-1 rings, the relay's queues, a descheduled VM) ran to the
   * window's edge and waited for every advertisement (fig4b: a window stall every ~800 PDUs);
   * at a quarter it has three quarters of a window of slack, for one control PDU per quarter.
   */
  private readonly quarter: number;
  private readonly fc: boolean;
  private readonly rtx: boolean;
  /** Payload bytes delivered since the last advertisement (the byte window's quarter mark). */
  private deliveredBytes = 0;
  private readonly quarterBytes: number;

  constructor(
    private readonly p: EfcpParams,
    cube: QosCube,
    private readonly clock: Clock,
    private readonly stats: EfcpStats,
    private readonly hooks: ReceiverHooks,
    private readonly lend = false,
  ) {
    this.fc = cube.flowControl;
    this.rtx = cube.retransmission;
    this.quarterBytes = Math.max(1, Math.floor((this.rtx ? Math.min(p.rxMaxBytes, p.rtxMaxBytes) : p.rxMaxBytes) / 4));
    this.credit = p.credit;
    // Half of what the sender can have outstanding: the window, or (reliable) its retransmission
    // queue if smaller (both ends alike): past that it waits for our ACK.
    const outstanding = this.rtx ? Math.min(p.credit, p.rtxMaxPdus) : p.credit;
    this.half = Math.max(1, Math.ceil(outstanding / 2));
    this.quarter = Math.max(1, Math.ceil(p.credit / 4));
    this.lwe = this.rcvNext = this.acked = this.peerSentUpTo = p.peerInitialSeq;
    // The initial window is known to the peer from the configuration: it counts as advertised.
    this.advertised = seqAdd(p.peerInitialSeq, p.credit - 1);
  }

  get rightEdge(): number {
    return seqAdd(this.lwe, this.credit - 1);
  }
  get leftEdge(): number {
    return this.lwe;
  }
  /** Cumulative ACK: the next sequence number expected. */
  get ackSeq(): number {
    return this.rcvNext;
  }
  get bufferedPdus(): number {
    return this.buffered;
  }

  /** The connection sent a control PDU carrying these values. */
  noteAdvertised(rwe: number, ack: number): void {
    this.advertised = rwe;
    this.acked = ack;
    this.deliveredBytes = 0;
    this.clock.clearTimer(this.aTimer);
    this.aTimer = undefined;
  }

  /** The peer's control PDU said it has sent everything before `lwe` (no-retransmission cubes). */
  onPeerLeftEdge(lwe: number): void {
    if (!this.fc || this.rtx || this.dead) return;
    if (seqGt(lwe, this.peerSentUpTo) && seqDiff(lwe, this.lwe) <= this.credit) this.peerSentUpTo = lwe;
    if (seqLt(this.rcvNext, this.peerSentUpTo)) this.armGap();
  }

  /** Whether a peer whose send window ends at `peerRwe` has not seen our latest window. */
  peerViewStale(peerRwe: number): boolean {
    return this.fc && seqLt(peerRwe, this.rightEdge);
  }

  /**
   * One DT PDU, its payload `pdu[at, end)`. `borrowed`: `pdu` is valid only during the call, so
   * the payload is copied when kept (and only then); else a view of it is kept until delivered.
   */
  onData(seq: number, drf: boolean, pdu: Uint8Array, at: number, borrowed = false): void {
    if (this.dead) return;
    this.stats.rxPdus++;
    if (!this.fc) return this.onUnreliable(seq, pdu, at, borrowed);
    const size = pdu.length - at;
    if (drf && !this.anyReceived && seq !== this.lwe) this.realign(seq);
    const off = seqDiff(seq, this.lwe);
    if (off < 0 || seqLt(seq, this.rcvNext)) return this.duplicate();
    if (off >= this.credit) {
      this.stats.beyondWindow++;
      return;
    }
    this.anyReceived = true;
    if (seqGt(seqAdd(seq, 1), this.peerSentUpTo)) this.peerSentUpTo = seqAdd(seq, 1);
    const ring = (this.ring ??= new Array<Uint8Array | undefined>(this.credit));
    const idx = (this.head + off) % this.credit;
    if (ring[idx] !== undefined) return this.duplicate();
    if (this.bytes + size > this.p.rxMaxBytes) {
      this.stats.rxByteDrops++;
      return;
    }
    if (this.lend && seq === this.rcvNext && this.buffered === 0 && this.lwe === this.rcvNext && !this.paused && !this.delivering) {
      // The next in order, nothing held, delivery open: to the user now, nothing stored or copied.
      this.rcvNext = this.lwe = seqAdd(seq, 1);
      this.head = (this.head + 1) % this.credit;
      if (this.stats.maxBuffered === 0) this.stats.maxBuffered = 1;
      this.stats.rxSdus++;
      this.stats.rxBytes += size;
      this.deliveredBytes += size;
      this.delivering = true;
      try {
        // A new view per SDU: a cache of views keyed by the PDU view cost more than subarray()
        // (V8 makes a short-lived view in ~30 ns; measured, #12).
        if (this.hooks.deliverSdu(pdu.subarray(at), borrowed) === false) this.paused = true;
      } finally {
        this.delivering = false;
      }
      // What the user's call may have let in meanwhile (none, mostly: no call then).
      if (!this.paused && this.rcvNext !== this.lwe) this.deliverReady();
      this.maybeAdvertise();
      return;
    }
    if (seq !== this.rcvNext && this.ooo >= this.p.reorderMaxPdus) {
      if (this.rtx) {
        this.stats.reorderDrops++;
        this.hooks.sendCtrl(true);
        return;
      }
      this.skipGap(seq); // flow control without retransmission: the oldest gap is given up
    }
    ring[idx] = borrowed ? pdu.slice(at) : pdu.subarray(at);
    this.buffered++;
    this.bytes += size;
    if (this.buffered > this.stats.maxBuffered) this.stats.maxBuffered = this.buffered;
    if (seq === this.rcvNext) {
      this.advanceInOrder();
      this.deliverReady();
      if (this.rtx && this.ooo > 0) this.hooks.sendCtrl();
      else this.maybeAdvertise();
    } else {
      this.ooo++;
      if (this.rtx) this.hooks.sendCtrl(true);
      else this.armGap();
    }
  }

  /** The user takes SDUs again after deliverSdu returned false. */
  resume(): void {
    if (this.dead || !this.paused) return;
    this.paused = false;
    this.deliverReady();
    this.maybeAdvertise();
  }

  private duplicate(): void {
    this.stats.duplicates++;
    if (this.rtx) this.hooks.sendCtrl(true); // our ACK may have been lost
  }

  /** The run starts elsewhere than configured (DRF on the first PDU seen): move the window there. */
  private realign(seq: number): void {
    this.lwe = this.rcvNext = this.acked = this.peerSentUpTo = seq;
    this.advertised = seqAdd(seq, this.credit - 1);
  }

  private slot(seq: number): number {
    return (this.head + seqDiff(seq, this.lwe)) % this.credit;
  }

  /** rcvNext moves over every PDU already here. */
  private advanceInOrder(): void {
    const ring = this.ring!;
    this.rcvNext = seqAdd(this.rcvNext, 1);
    while (this.ooo > 0 && seqDiff(this.rcvNext, this.lwe) < this.credit && ring[this.slot(this.rcvNext)] !== undefined) {
      this.ooo--;
      this.rcvNext = seqAdd(this.rcvNext, 1);
    }
  }

  /**
   * Give up the gap at rcvNext: up to the next PDU held, or to what the peer says it sent, but not
   * past `stopAt` (a PDU about to be stored there).
   */
  private skipGap(stopAt?: number): void {
    const ring = (this.ring ??= new Array<Uint8Array | undefined>(this.credit));
    let s = this.rcvNext;
    let n = 0;
    while (s !== stopAt && seqDiff(s, this.lwe) < this.credit && ring[this.slot(s)] === undefined && (this.ooo > 0 || seqLt(s, this.peerSentUpTo))) {
      s = seqAdd(s, 1);
      n++;
    }
    if (n === 0) return;
    this.stats.gaps++;
    this.stats.lostPdus += n;
    this.rcvNext = s;
    if (seqDiff(s, this.lwe) < this.credit && ring[this.slot(s)] !== undefined) {
      this.ooo--;
      this.advanceInOrder();
    }
  }

  private armGap(): void {
    if (this.gapTimer || this.dead) return;
    this.gapAt = this.rcvNext;
    if (this.p.gapWaitMs === 0) return this.onGapTimer();
    this.gapTimer = this.clock.setTimer(this.p.gapWaitMs, this.onGapTimer);
  }

  private readonly onGapTimer = (): void => {
    this.gapTimer = undefined;
    if (this.dead) return;
    const gapNow = this.ooo > 0 || seqLt(this.rcvNext, this.peerSentUpTo);
    if (!gapNow) return;
    // The gap the timer was armed for was filled; a gap there now gets a full wait of its own.
    if (this.rcvNext !== this.gapAt && this.p.gapWaitMs > 0) return this.armGap();
    this.skipGap();
    this.deliverReady();
    this.maybeAdvertise();
    if (this.ooo > 0 || seqLt(this.rcvNext, this.peerSentUpTo)) this.armGap();
  };

  private deliverReady(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      const ring = this.ring!;
      while (!this.paused && !this.dead && seqLt(this.lwe, this.rcvNext)) {
        const sdu = ring[this.head];
        ring[this.head] = undefined;
        this.head = (this.head + 1) % this.credit;
        this.lwe = seqAdd(this.lwe, 1);
        if (sdu === undefined) continue; // given up (flow-control cube)
        this.buffered--;
        this.bytes -= sdu.length;
        this.stats.rxSdus++;
        this.stats.rxBytes += sdu.length;
        this.deliveredBytes += sdu.length;
        if (this.hooks.deliverSdu(sdu, false) === false) this.paused = true;
      }
    } finally {
      this.delivering = false;
    }
  }

  private maybeAdvertise(): void {
    if (this.dead) return;
    const unadv = seqDiff(this.rightEdge, this.advertised);
    const unacked = this.rtx ? seqDiff(this.rcvNext, this.acked) : 0;
    if (unadv <= 0 && unacked <= 0) return;
    // A quarter of the window in PDUs or of the byte bound delivered (a sender held by the byte window,
    // sender.ts, waits for our left edge to move): tell the peer at once.
    if (this.p.aTimerMs === 0 || unadv >= this.quarter || unacked >= this.half || this.deliveredBytes >= this.quarterBytes) return this.hooks.sendCtrl();
    if (!this.aTimer) this.aTimer = this.clock.setTimer(this.p.aTimerMs, this.onATimer);
  }

  private readonly onATimer = (): void => {
    this.aTimer = undefined;
    if (!this.dead) this.hooks.sendCtrl();
  };

  private onUnreliable(seq: number, pdu: Uint8Array, at: number, borrowed: boolean): void {
    if (!this.anyReceived) {
      this.anyReceived = true;
      this.hi = seq;
      this.seen = 1;
    } else {
      const d = seqDiff(seq, this.hi);
      if (d > 0) {
        this.seen = d >= 32 ? 1 : ((this.seen << d) | 1) >>> 0;
        this.hi = seq;
      } else if (d > -32) {
        const bit = 1 << -d;
        if ((this.seen & bit) !== 0) {
          this.stats.duplicates++;
          return;
        }
        this.seen = (this.seen | bit) >>> 0;
        this.stats.reordered++;
      } else this.stats.reordered++;
    }
    if (this.paused) {
      this.stats.rxPausedDrops++;
      return;
    }
    const lent = borrowed && this.lend;
    const payload = borrowed && !lent ? pdu.slice(at) : pdu.subarray(at);
    this.stats.rxSdus++;
    this.stats.rxBytes += payload.length;
    if (this.hooks.deliverSdu(payload, lent) === false) this.paused = true;
  }

  stop(): void {
    this.dead = true;
    this.clock.clearTimer(this.aTimer);
    this.clock.clearTimer(this.gapTimer);
    this.aTimer = this.gapTimer = undefined;
    this.ring = undefined;
    this.buffered = this.bytes = this.ooo = 0;
  }

  snapshot(): ReceiverSnapshot {
    return {
      leftWinEdge: this.lwe,
      rcvNext: this.rcvNext,
      rightWinEdge: this.rightEdge,
      advertisedRwe: this.advertised,
      ackedSeq: this.acked,
      bufferedPdus: this.buffered,
      bufferedBytes: this.bytes,
      outOfOrder: this.ooo,
      paused: this.paused,
      peerSentUpTo: this.peerSentUpTo,
    };
  }
}
