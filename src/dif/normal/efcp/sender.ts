/**
 * sender.ts — the sending half of one EFCP connection: DTP (sequence numbers, DRF, DT PDUs) and
 * the sender side of DTCP (window flow control, retransmission).
 *
 * Owns: the closed-window queue (PDUs built by write() that wait for window, for room in the
 * retransmission queue or for the N-1 flow), the retransmission queue, the RTT estimator and the
 * retransmission and window-probe timers.
 *
 * - A PDU is sent only while its sequence number is at or before the right window edge the peer
 *   advertised (cubes with flow control); edges never move backward.
 * - Byte window (cubes with flow control): the payload bytes of the PDUs sent from the peer's left
 *   edge on (the last it stated: what its receiver may still hold) stay within `peerRxMaxBytes`,
 *   its byte bound, so a window of many PDUs (`credit`) never makes it drop for bytes whatever
 *   the SDU size; a PDU that would go past it waits as for a closed window (one alone always goes).
 * - Nothing is dropped at the sender: when the closed-window queue is full (PDUs or bytes) write()
 *   returns false and takes nothing, further writes are refused until the queue has drained to half,
 *   then `senderDrained` fires once.
 * - Retransmission (reliable cube): cumulative ACK; the oldest unacknowledged PDU is retransmitted
 *   on RTO expiry (with exponential backoff), after `dupAckThreshold` duplicate ACKs, and after each
 *   partial ACK while recovering (NewReno style: no SACK, so each ACK names the next hole). One PDU
 *   retransmitted more than `maxRetries` times fails the connection with ERR_EFCP_RTX_EXHAUSTED.
 * - Window closed with data waiting for `stallProbeMs`: `sendProbe` asks the peer for a fresh
 *   advertisement (its FC PDU may have been lost), again every `stallProbeMs` while it stays closed.
 *   Without retransmission, also once `stallProbeMs` after the queue ran empty: the probe's my_lwe
 *   lets the receiver give up (and count) PDUs lost at the end of a burst.
 *
 * Hot path: the header is copied from a template encoded once; timers are re-armed lazily (no
 * timer churn per ACK). Reliable cube: one allocation per SDU (the PDU, which the retransmission
 * queue keeps). Other cubes, when the connection's `transmit` copies what it is given (the
 * `lend` option): a PDU that can go at once (nothing queued, window open, N-1 not blocked) is
 * built in one reused buffer and handed over without any allocation (one the N-1 side refuses
 * waits in that buffer; later ones get their own until it has gone).
 */
import type { Clock, TimerHandle } from '../clock.js';
import { PCI_LEN, PciFlag, PduType, encodePci, wr32, type Pci } from '../pci.js';
import { EfcpError } from './errors.js';
import type { EfcpParams, QosCube } from './qos.js';
import { Fifo } from './ring.js';
import { RttEstimator, type RtxEntry } from './rtx.js';
import { seqAdd, seqGt, seqLe, seqLt } from './seq.js';
import type { EfcpStats } from './stats.js';

export interface SenderHooks {
  /** Hand a PDU to the N-1 flow; false: not taken (call Sender.lowerReady() when it has room). */
  transmit(pdu: Uint8Array): boolean;
  /** write() was refused earlier and may be retried now. */
  senderDrained(): void;
  /** The connection cannot go on (retransmissions exhausted). */
  senderFailed(err: EfcpError): void;
  /** The window stayed closed: send a control PDU so the peer re-advertises. */
  sendProbe(): void;
}

export interface SenderSnapshot {
  nextSeq: number;
  sndNxt: number;
  sndUna: number;
  rightWinEdge: number;
  cwqPdus: number;
  cwqBytes: number;
  rtxPdus: number;
  rtxBytes: number;
  srtt: number;
  rttvar: number;
  rto: number;
  stalled: boolean;
  inRecovery: boolean;
  refusing: boolean;
}

/**
 * Most PDU buffers a sender keeps for reuse (lend mode), whatever its closed-window queue's
 * bound: the pool holds as many as that queue (so a queue that fills and drains, a window stall,
 * allocates nothing the next time), up to this.
 */
const POOL_MAX = 1024;

export class Sender {
  /** Sequence number the next write() gets. */
  private nextSeq: number;
  /** Sequence number of the next PDU to transmit (the head of the closed-window queue). */
  private sndNxt: number;
  /** Right window edge (inclusive): the last sequence number we may send. */
  private rwe: number;
  private readonly cwq = new Fifo<Uint8Array>();
  private cwqBytes = 0;
  private readonly rtxq = new Fifo<RtxEntry>();
  /**
   * Byte window: payload sizes of the PDUs sent from `peerLwe` to sndNxt (a ring of peerCredit:
   * a peer that moves its right edge but never its left one is not followed further), and their sum.
   */
  private inflight: Uint32Array;
  private inflightHead = 0;
  private inflightLen = 0;
  private inflightBytes = 0;
  /** The peer's left window edge as it last stated it. */
  private peerLwe: number;
  private rtxBytes = 0;
  readonly rtt: RttEstimator;
  private readonly hdr = new Uint8Array(PCI_LEN);
  private drf = true;
  private refusing = false;
  private lowerBlocked = false;
  private pumping = false;
  private stalled = false;
  private rtxFull = false;
  private dupAcks = 0;
  /** Lowest RTT sample seen (a PDU sent once cannot be acknowledged sooner than one RTT). */
  private minRtt = Infinity;
  private inRecovery = false;
  private recover = 0;
  private dead = false;
  private rtxTimer: TimerHandle | undefined;
  private probeTimer: TimerHandle | undefined;
  /** flow-control cube: one probe after the sender went idle, so a lost tail is counted. */
  private idleTimer: TimerHandle | undefined;
  private idleProbedAt: number;
  private readonly fc: boolean;
  private readonly rtx: boolean;
  /** transmit() is done with a PDU when it returns: PDUs that go at once are built in `scratch`. */
  private readonly lend: boolean;
  private scratch: Uint8Array | undefined;
  /** `scratch.subarray(0, scratchView.length)`, kept while SDUs keep their size. */
  private scratchView: Uint8Array | undefined;
  /**
   * Lend mode: PDUs that went from the closed-window queue, kept for the next PDUs that must
   * wait (all of one size, at most `poolMax`: the closed-window queue's bound, so a queue that
   * filled in a window stall and drained leaves a buffer for each PDU of the next one): no
   * allocation per PDU while the window or the N-1 flow holds the sender back either.
   */
  private readonly pool: Uint8Array[] = [];
  private readonly poolMax: number;

  constructor(
    private readonly p: EfcpParams,
    cube: QosCube,
    template: Pci,
    private readonly clock: Clock,
    private readonly stats: EfcpStats,
    private readonly hooks: SenderHooks,
    lend = false,
  ) {
    this.fc = cube.flowControl;
    this.rtx = cube.retransmission;
    this.lend = lend && !this.rtx;
    this.poolMax = Math.min(p.cwqMaxPdus, POOL_MAX);
    this.nextSeq = this.sndNxt = this.idleProbedAt = this.peerLwe = p.initialSeq;
    // At most peerCredit PDUs from the peer's left edge (its right edge is left + credit − 1).
    this.inflight = new Uint32Array(this.fc ? p.peerCredit : 0);
    this.rwe = seqAdd(p.initialSeq, p.peerCredit - 1);
    this.rtt = new RttEstimator(p.initialRtoMs, p.minRtoMs, p.maxRtoMs, p.aTimerMs);
    encodePci({ ...template, type: PduType.DT, flags: 0, length: 0, seqNum: 0 }, this.hdr);
  }

  /** Oldest unacknowledged sequence number (reliable), else the next to transmit. */
  get sndUna(): number {
    const h = this.rtxq.peek();
    return h ? h.seq : this.sndNxt;
  }

  /** Our left window edge as control PDUs state it (my_lwe). */
  get leftEdge(): number {
    return this.rtx ? this.sndUna : this.sndNxt;
  }

  get rightEdge(): number {
    return this.rwe;
  }

  /** Queue one SDU (copied into a new PDU). false: refused, nothing taken — wait for senderDrained. */
  write(sdu: Uint8Array): boolean {
    const size = PCI_LEN + sdu.length;
    if (this.refusing || this.cwq.length >= this.p.cwqMaxPdus || this.cwqBytes + size > this.p.cwqMaxBytes) {
      this.refusing = true;
      this.stats.txRefused++;
      return false;
    }
    const direct = this.lend && this.cwq.length === 0 && !this.lowerBlocked && !this.pumping && !this.dead && (!this.fc || this.windowOpen(sdu.length));
    const pdu = direct ? this.scratchPdu(size) : this.queuedPdu(size);
    pdu.set(this.hdr);
    if (this.drf) {
      pdu[2] = PciFlag.DRF;
      this.drf = false;
    }
    wr32(pdu, 24, sdu.length);
    wr32(pdu, 28, this.nextSeq);
    pdu.set(sdu, PCI_LEN);
    this.nextSeq = seqAdd(this.nextSeq, 1);
    this.stats.txSdus++;
    this.stats.txBytes += sdu.length;
    if (direct) {
      this.sendDirect(pdu);
      return true;
    }
    this.cwq.push(pdu);
    this.cwqBytes += size;
    this.pump();
    return true;
  }

  /** A buffer for a PDU that waits in the queue: from the pool when one of that size is there. */
  private queuedPdu(size: number): Uint8Array {
    const pool = this.pool;
    if (pool.length > 0 && pool[pool.length - 1]!.length === size) return pool.pop()!;
    return new Uint8Array(size);
  }

  /** A queued PDU went and transmit() is done with it (lend mode): into the pool. */
  private recycle(pdu: Uint8Array): void {
    const pool = this.pool;
    if (pdu.buffer === this.scratch?.buffer) return; // the scratch buffer's view (sendDirect refused)
    if (pool.length > 0 && pool[0]!.length !== pdu.length) pool.length = 0; // SDUs changed size
    if (pool.length < this.poolMax) pool.push(pdu);
  }

  /** A view of `size` bytes of the reused buffer (grown to the largest PDU seen). */
  private scratchPdu(size: number): Uint8Array {
    const v = this.scratchView;
    if (v !== undefined && v.length === size) return v;
    if (this.scratch === undefined || this.scratch.length < size) this.scratch = new Uint8Array(Math.max(size, 2048));
    return (this.scratchView = this.scratch.subarray(0, size));
  }

  /**
   * The PDU just built in the scratch buffer, nothing queued before it and the window open: hand
   * it over now. Refused: it waits at the head of the closed-window queue as if it had been queued.
   */
  private sendDirect(pdu: Uint8Array): void {
    this.pumping = true;
    let sent: boolean;
    try {
      sent = this.hooks.transmit(pdu);
    } finally {
      this.pumping = false;
    }
    if (this.dead) return; // transmit() re-entered and closed us
    if (!sent) {
      this.lowerBlocked = true;
      this.stats.lowerRefused++;
      // First in the queue: a write() re-entered from transmit() may have queued the next PDUs.
      // No copy: the scratch buffer is used again only once the queue is empty, i.e. after this
      // PDU went (transmit() copies what it takes).
      this.cwq.unshift(pdu);
      this.cwqBytes += pdu.length;
      return;
    }
    this.stats.txPdus++;
    if (this.fc) this.sentBytes(pdu.length - PCI_LEN);
    this.sndNxt = seqAdd(this.sndNxt, 1);
    // What pump() does once its queue ran empty (nothing else can be queued: we were not pumping).
    this.pump();
  }

  /** The N-1 flow has room again after refusing a PDU. */
  lowerReady(): void {
    this.lowerBlocked = false;
    this.pump();
  }

  /** May the PDU at sndNxt, of `size` payload bytes, go now (sequence and byte window)? */
  private windowOpen(size: number): boolean {
    if (seqGt(this.sndNxt, this.rwe)) return false;
    return this.inflightLen === 0 || (this.inflightBytes + size <= this.p.peerRxMaxBytes && this.inflightLen < this.inflight.length);
  }

  /** The PDU at sndNxt went (windowOpen said so: there is room in the ring): its bytes count in the byte window. */
  private sentBytes(size: number): void {
    this.inflight[(this.inflightHead + this.inflightLen) % this.inflight.length] = size;
    this.inflightLen++;
    this.inflightBytes += size;
  }

  /** The peer holds nothing before `lwe` any more: those PDUs' bytes leave the byte window. */
  private peerLeftEdge(lwe: number): void {
    const edge = seqGt(lwe, this.sndNxt) ? this.sndNxt : lwe;
    while (seqLt(this.peerLwe, edge) && this.inflightLen > 0) {
      this.inflightBytes -= this.inflight[this.inflightHead]!;
      this.inflightHead = (this.inflightHead + 1) % this.inflight.length;
      this.inflightLen--;
      this.peerLwe = seqAdd(this.peerLwe, 1);
    }
    if (seqLt(this.peerLwe, edge)) this.peerLwe = edge; // nothing sent there (realigned peer)
  }

  /** A control PDU from the peer: its cumulative ACK and/or its new window edges. */
  onControl(hasAck: boolean, ack: number, hasFc: boolean, newRwe: number, newLwe: number): void {
    if (this.dead) return;
    let moved = false;
    if (hasFc && this.fc) {
      const before = this.inflightLen;
      this.peerLeftEdge(newLwe);
      if (this.inflightLen !== before) moved = true;
      // The peer's right edge can be at most its left edge (≤ what we sent) + its credit − 1. One
      // further out (a peer configured with more credit, or a broken one) is clamped to that: we
      // send less than allowed rather than trust it, and never stall on it.
      let edge = newRwe;
      const limit = seqAdd(this.sndNxt, this.p.peerCredit - 1);
      if (seqGt(edge, limit)) {
        this.stats.ctrlBogus++;
        edge = limit;
      }
      if (seqGt(edge, this.rwe)) {
        this.rwe = edge;
        moved = true;
      }
    }
    if (hasAck && this.rtx) this.onAck(ack, moved);
    this.pump();
  }

  private onAck(ack: number, windowMoved: boolean): void {
    if (seqGt(ack, this.sndNxt)) {
      this.stats.ctrlBogus++;
      return;
    }
    const una = this.sndUna;
    if (seqGt(ack, una)) {
      let last: RtxEntry | undefined;
      // Karn: which copy of a retransmitted PDU an ACK answers is ambiguous, so samples come only
      // from the newest PDU this ACK covers, and only if that one was never retransmitted: such a
      // sample cannot be too short (the PDU was sent once; its ACK cannot precede its arrival).
      // It can be too long when an older hole, retransmitted after it was sent, held the ACK
      // back. Those "held" samples are used only when within 2× the lowest RTT seen: feeding them
      // all inflates srtt without bound under loss, dropping them all starves the estimator
      // (under 10% loss nearly every advancing ACK fills such a hole).
      let lastRtxAt = -Infinity;
      while (this.rtxq.length > 0 && seqLt(this.rtxq.peek()!.seq, ack)) {
        last = this.rtxq.shift()!;
        this.rtxBytes -= last.pdu.length;
        if (last.retries > 0 && last.sentAt > lastRtxAt) lastRtxAt = last.sentAt;
      }
      this.dupAcks = 0;
      this.rtt.resetBackoff();
      if (last && last.retries === 0) {
        const r = this.clock.now() - last.sentAt;
        const heldBack = lastRtxAt > last.sentAt;
        if (!heldBack || r <= 2 * this.minRtt) {
          this.rtt.sample(r);
          this.stats.rttSamples++;
        }
        if (r < this.minRtt) this.minRtt = r;
      }
      if (this.inRecovery) {
        if (seqLe(ack, this.recover) && this.rtxq.length > 0) this.retransmitHead();
        else this.inRecovery = false;
      }
      if (this.rtxFull && this.rtxq.length < this.p.rtxMaxPdus) this.rtxFull = false;
    } else if (ack === una && this.rtxq.length > 0 && !windowMoved && !this.inRecovery) {
      if (++this.dupAcks === this.p.dupAckThreshold) {
        this.inRecovery = true;
        this.recover = seqAdd(this.sndNxt, -1);
        this.stats.fastRetransmits++;
        this.retransmitHead();
      }
    }
  }

  private retransmitHead(): void {
    const e = this.rtxq.peek();
    if (!e || this.dead) return;
    if (e.retries >= this.p.maxRetries) {
      this.fail(
        new EfcpError(
          'ERR_EFCP_RTX_EXHAUSTED',
          `EFCP: PDU ${e.seq} was not acknowledged after ${e.retries} retransmissions (RTO ${this.rtt.rto} ms): the peer or the path to it is gone; the flow is closed`,
        ),
      );
      return;
    }
    e.retries++;
    e.sentAt = this.clock.now();
    this.stats.retransmissions++;
    if (!this.hooks.transmit(e.pdu)) this.stats.lowerRefused++;
  }

  private pump(): void {
    if (this.pumping || this.dead) return;
    this.pumping = true;
    try {
      while (this.cwq.length > 0 && !this.lowerBlocked) {
        const pdu = this.cwq.peek()!;
        if (this.fc && !this.windowOpen(pdu.length - PCI_LEN)) {
          if (!this.stalled) {
            this.stalled = true;
            this.stats.windowStalls++;
            this.armProbe();
          }
          break;
        }
        if (this.rtx && (this.rtxq.length >= this.p.rtxMaxPdus || this.rtxBytes + pdu.length > this.p.rtxMaxBytes)) {
          if (!this.rtxFull) {
            this.rtxFull = true;
            this.stats.rtxQueueStalls++;
          }
          break;
        }
        if (!this.hooks.transmit(pdu)) {
          this.lowerBlocked = true;
          this.stats.lowerRefused++;
          break;
        }
        if (this.dead) return; // transmit() re-entered and closed us
        this.cwq.shift();
        this.cwqBytes -= pdu.length;
        this.stats.txPdus++;
        if (this.fc) this.sentBytes(pdu.length - PCI_LEN);
        if (this.lend) this.recycle(pdu);
        if (this.rtx) {
          this.rtxq.push({ seq: this.sndNxt, pdu, sentAt: this.clock.now(), retries: 0 });
          this.rtxBytes += pdu.length;
          if (!this.rtxTimer) this.rtxTimer = this.clock.setTimer(this.rtt.rto, this.onRtxTimer);
        }
        this.sndNxt = seqAdd(this.sndNxt, 1);
      }
      if (this.stalled && (this.cwq.length === 0 || !this.fc || this.windowOpen(this.cwq.peek()!.length - PCI_LEN))) {
        this.stalled = false;
        this.clock.clearTimer(this.probeTimer);
        this.probeTimer = undefined;
      }
      if (this.fc && !this.rtx && this.cwq.length === 0 && this.sndNxt !== this.idleProbedAt && !this.idleTimer) {
        this.idleTimer = this.clock.setTimer(this.p.stallProbeMs, this.onIdleTimer);
      }
    } finally {
      this.pumping = false;
    }
    if (this.refusing && !this.dead && this.cwq.length <= this.p.cwqMaxPdus >> 1 && this.cwqBytes <= this.p.cwqMaxBytes / 2) {
      this.refusing = false;
      this.hooks.senderDrained();
    }
  }

  private armProbe(): void {
    if (!this.probeTimer) this.probeTimer = this.clock.setTimer(this.p.stallProbeMs, this.onProbeTimer);
  }

  private readonly onProbeTimer = (): void => {
    this.probeTimer = undefined;
    if (this.dead || !this.stalled) return;
    this.stats.windowProbes++;
    this.hooks.sendProbe();
    this.armProbe();
  };

  /**
   * No retransmission, nothing queued: tell the peer once how far we have sent (my_lwe), so PDUs
   * lost at the end of a burst are given up and counted instead of left pending.
   */
  private readonly onIdleTimer = (): void => {
    this.idleTimer = undefined;
    if (this.dead || this.cwq.length > 0 || this.sndNxt === this.idleProbedAt) return;
    this.idleProbedAt = this.sndNxt;
    this.stats.tailProbes++;
    this.hooks.sendProbe();
  };

  private readonly onRtxTimer = (): void => {
    this.rtxTimer = undefined;
    const head = this.rtxq.peek();
    if (this.dead || !head) return;
    const now = this.clock.now();
    const due = head.sentAt + this.rtt.rto;
    if (due > now) {
      this.rtxTimer = this.clock.setTimer(due - now, this.onRtxTimer);
      return;
    }
    this.stats.rtxTimeouts++;
    this.rtt.backOff();
    this.dupAcks = 0;
    this.inRecovery = true;
    this.recover = seqAdd(this.sndNxt, -1);
    this.retransmitHead();
    if (!this.dead) this.rtxTimer = this.clock.setTimer(this.rtt.rto, this.onRtxTimer);
  };

  private fail(err: EfcpError): void {
    this.stop();
    this.hooks.senderFailed(err);
  }

  /** Stop for good: timers cleared, queues released. */
  stop(): void {
    this.dead = true;
    this.clock.clearTimer(this.rtxTimer);
    this.clock.clearTimer(this.probeTimer);
    this.clock.clearTimer(this.idleTimer);
    this.rtxTimer = this.probeTimer = this.idleTimer = undefined;
    this.cwq.clear();
    this.rtxq.clear();
    this.pool.length = 0;
    this.cwqBytes = this.rtxBytes = 0;
  }

  snapshot(): SenderSnapshot {
    return {
      nextSeq: this.nextSeq,
      sndNxt: this.sndNxt,
      sndUna: this.sndUna,
      rightWinEdge: this.rwe,
      cwqPdus: this.cwq.length,
      cwqBytes: this.cwqBytes,
      rtxPdus: this.rtxq.length,
      rtxBytes: this.rtxBytes,
      srtt: this.rtt.srtt,
      rttvar: this.rtt.rttvar,
      rto: this.rtt.rto,
      stalled: this.stalled,
      inRecovery: this.inRecovery,
      refusing: this.refusing,
    };
  }
}
