/**
 * efcp.ts — one EFCP connection (DTP + DTCP) per flow endpoint of the normal DIF: the sender and
 * receiver halves (sender.ts, receiver.ts) composed, the control PDUs between them, the
 * connection's lifecycle (open → closed | failed), stats and snapshot.
 *
 * Transport-agnostic: PDUs leave through `sendPdu` (the RMT's, later) and arrive through
 * `receive(pdu, pci)` with the PCI already decoded by the caller (pci.ts `decodePci`). The
 * connection takes ownership of a received `pdu` (it may keep a view of the payload until it is
 * delivered), and `sendPdu` must not modify a PDU it is given (the retransmission queue sends the
 * same bytes again). With `sendPduCopies` (the RMT's contract for locally originated PDUs),
 * sendPdu must not keep it either: PDUs sent at once are then built in reused buffers.
 *
 * Control PDUs (DTCP, type CTRL with FC and, on the reliable cube, ACK) have their own sequence
 * space starting at `initialSeq`; each carries the whole state (ACK = next expected, the right and
 * left edges of our receive window, our sender's edges as my_lwe/my_rwe), so a lost one is
 * superseded by the next and stale or duplicated ones are ignored. A lost FC PDU cannot deadlock
 * a flow: a sender whose window stays closed sends a probe every `stallProbeMs`, and an end that
 * sees in the peer's my_rwe that the peer missed its latest window re-advertises at once (at most
 * once per stallProbeMs/2).
 *
 * Batches: between beginBatch() and endBatch() (the RMT around the PDUs of one N-1 read) control
 * PDUs asked for are held and sent once at the end, with the state then: one ACK/credit PDU per
 * batch, not per PDU; on the reliable cube as many (up to dupAckThreshold) as duplicate ACKs for
 * the final ACK were asked for, so fast retransmission still sees them.
 */
import type { Clock } from '../clock.js';
import { CTRL_ACK, CTRL_FC, CTRL_LEN, DEFAULT_TTL, PCI_LEN, PciFlag, PduType, encodePci, isCtrlType, newPci, type Pci } from '../pci.js';
import { EfcpError } from './errors.js';
import { resolveParams, type EfcpParams, type QosCube } from './qos.js';
import { Receiver, type ReceiverHooks, type ReceiverSnapshot } from './receiver.js';
import { Sender, type SenderHooks, type SenderSnapshot } from './sender.js';
import { seqAdd, seqDiff } from './seq.js';
import { newStats, type EfcpStats } from './stats.js';

export type EfcpState = 'open' | 'closed' | 'failed';

export interface EfcpOptions extends Partial<EfcpParams> {
  cube: QosCube;
  clock: Clock;
  localAddr: number;
  remoteAddr: number;
  localCep: number;
  remoteCep: number;
  /** qos_id written in our PDUs and required in the peer's (default: the cube's id). */
  qosId?: number;
  ttl?: number;
  /** To the N-1 side (the RMT). false: not taken; call lowerReady() when there is room again. */
  sendPdu: (pdu: Uint8Array) => boolean;
  /**
   * sendPdu copies the PDU (or is done with it) before it returns, whatever it returns: the
   * connection may then build PDUs in buffers it reuses (no allocation per PDU on the cubes
   * without retransmission, nor per control PDU). Default false: sendPdu may keep the PDU.
   */
  sendPduCopies?: boolean;
  /**
   * One SDU in order (a view into the received PDU). Return false to pause delivery until
   * resumeDelivery(). `borrowed` (only with `deliverLends`): the view is valid only during the
   * call; copy what you keep.
   */
  deliver: (sdu: Uint8Array, borrowed: boolean) => boolean | void;
  /**
   * deliver copies what it keeps of an SDU handed over as borrowed: the connection then hands
   * SDUs of borrowed PDUs (receive(…, borrowed)) that can go at once as views of the PDU, without
   * a copy of its own. Default false: every SDU delivered is the user's to keep.
   */
  deliverLends?: boolean;
  /** The connection failed (e.g. ERR_EFCP_RTX_EXHAUSTED); it is closed already. */
  onFail?: (err: EfcpError) => void;
  /** A write() returned false earlier; writing may resume. */
  onDrain?: () => void;
}

export interface EfcpSnapshot {
  state: EfcpState;
  cube: string;
  qosId: number;
  localAddr: number;
  remoteAddr: number;
  localCep: number;
  remoteCep: number;
  ctrlSeq: number;
  lastCtrlSeqRcvd: number;
  failure: { code: string; message: string } | null;
  sender: SenderSnapshot;
  receiver: ReceiverSnapshot;
  stats: EfcpStats;
}

export class EfcpConnection {
  readonly cube: QosCube;
  readonly params: Readonly<EfcpParams>;
  readonly stats: EfcpStats = newStats();
  private _state: EfcpState = 'open';
  private failure: EfcpError | undefined;
  private readonly sender: Sender;
  private readonly receiver: Receiver;
  private readonly clock: Clock;
  private readonly ctrlPci: Pci;
  private readonly qosId: number;
  private ctrlSeq: number;
  private lastCtrlSeqRcvd: number;
  private lastReadvertAt = -Infinity;
  /** A control PDU was refused by the N-1 side: send one (with the then current state) on lowerReady. */
  private ctrlOwed = false;
  private readonly o: EfcpOptions;
  /** Reused for every control PDU when sendPdu copies (sendPduCopies). */
  private ctrlBuf: Uint8Array | undefined;
  /** Inside beginBatch()…endBatch() (nesting depth): control PDUs are held. */
  private batchDepth = 0;
  /** While held: a control PDU was asked for; duplicate ACKs asked for, and the ACK they carried. */
  private ctrlHeld = false;
  private dupHeld = 0;
  private dupHeldAck = 0;

  constructor(opts: EfcpOptions) {
    this.o = opts;
    this.cube = opts.cube;
    this.clock = opts.clock;
    this.params = resolveParams(opts);
    for (const k of ['localAddr', 'remoteAddr', 'localCep', 'remoteCep'] as const) {
      const v = opts[k];
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new EfcpError('ERR_EFCP_CONFIG', `EFCP option ${k}=${v} must be a u32`);
    }
    this.qosId = opts.qosId ?? opts.cube.id;
    const tmpl = newPci();
    Object.assign(tmpl, { ttl: opts.ttl ?? DEFAULT_TTL, dstAddr: opts.remoteAddr, srcAddr: opts.localAddr, dstCep: opts.remoteCep, srcCep: opts.localCep, qosId: this.qosId });
    try {
      encodePci(tmpl, new Uint8Array(PCI_LEN)); // validates ttl and qosId once
    } catch (err) {
      throw new EfcpError('ERR_EFCP_CONFIG', `EFCP options do not make a valid PCI: ${(err as Error).message}`, { cause: err });
    }
    this.ctrlPci = { ...tmpl, type: PduType.CTRL | CTRL_FC | (opts.cube.retransmission ? CTRL_ACK : 0) };
    this.ctrlSeq = this.params.initialSeq;
    this.lastCtrlSeqRcvd = seqAdd(this.params.peerInitialSeq, -1);
    // The halves' callbacks: made once per connection (none per PDU), not part of the public API.
    const hooks: SenderHooks & ReceiverHooks = {
      transmit: (pdu) => opts.sendPdu(pdu),
      deliverSdu: (sdu, borrowed) => opts.deliver(sdu, borrowed),
      senderDrained: () => opts.onDrain?.(),
      senderFailed: (err) => this.onSenderFailed(err),
      // A probe is an ordinary control PDU: it carries our state, the peer answers if its view is newer.
      sendProbe: () => this.sendCtrl(),
      sendCtrl: (dup) => this.askCtrl(dup === true),
    };
    this.sender = new Sender(this.params, opts.cube, tmpl, this.clock, this.stats, hooks, opts.sendPduCopies === true);
    if (opts.sendPduCopies === true) this.ctrlBuf = new Uint8Array(PCI_LEN + CTRL_LEN);
    this.receiver = new Receiver(this.params, opts.cube, this.clock, this.stats, hooks, opts.deliverLends === true);
  }

  get state(): EfcpState {
    return this._state;
  }

  /**
   * Send one SDU. true: taken (it will be sent as the window allows). false: the closed-window
   * queue is full and this SDU was NOT taken: keep it and write again after onDrain (writes are
   * refused until then). Throws EfcpError ERR_EFCP_SDU_TOO_LARGE, ERR_EFCP_CLOSED, ERR_EFCP_FAILED.
   */
  write(sdu: Uint8Array): boolean {
    if (this._state !== 'open') {
      if (this.failure) throw new EfcpError('ERR_EFCP_FAILED', `EFCP connection failed earlier (${this.failure.code}): ${this.failure.message}`, { cause: this.failure });
      throw new EfcpError('ERR_EFCP_CLOSED', 'EFCP connection is closed: allocate a new flow');
    }
    if (sdu.length > this.params.maxSdu) throw new EfcpError('ERR_EFCP_SDU_TOO_LARGE', `SDU of ${sdu.length} bytes is larger than the flow's max SDU of ${this.params.maxSdu} bytes: split it`);
    return this.sender.write(sdu);
  }

  /**
   * One PDU from the N-1 side, its PCI decoded by the caller. Never throws for what a peer sent.
   * `borrowed`: `pdu` is valid only during the call (the payload of a DT PDU is copied when it is
   * kept); else the connection owns it and keeps a view of its payload.
   */
  receive(pdu: Uint8Array, pci: Pci, borrowed = false): void {
    if (this._state !== 'open') {
      this.stats.rxAfterClose++;
      return;
    }
    if (pci.srcAddr !== this.o.remoteAddr || pci.dstAddr !== this.o.localAddr || pci.srcCep !== this.o.remoteCep || pci.dstCep !== this.o.localCep || pci.qosId !== this.qosId) {
      this.stats.rxMisdirected++;
      return;
    }
    if (pci.type === PduType.DT) {
      this.receiver.onData(pci.seqNum, (pci.flags & PciFlag.DRF) !== 0, pdu, pdu.length - pci.length, borrowed);
    } else if (isCtrlType(pci.type) && this.cube.flowControl) {
      this.onCtrl(pci);
    } else {
      this.stats.rxMisdirected++;
    }
  }

  /** PDUs of one batch follow: hold control PDUs until endBatch() (calls nest). */
  beginBatch(): void {
    this.batchDepth++;
  }

  /** The batch is over: one control PDU for what it asked (reliable: duplicate ACKs kept, up to dupAckThreshold). */
  endBatch(): void {
    if (this.batchDepth === 0 || --this.batchDepth > 0) return;
    if (!this.ctrlHeld) return;
    const dups = this.dupHeldAck === this.receiver.ackSeq ? this.dupHeld : 0;
    this.ctrlHeld = false;
    this.dupHeld = 0;
    const n = this.cube.retransmission ? Math.max(1, Math.min(dups, this.params.dupAckThreshold)) : 1;
    for (let i = 0; i < n && this._state === 'open'; i++) this.sendCtrl();
  }

  /** The receiver asks for a control PDU (`dup`: a duplicate ACK): now, or at the batch's end. */
  private askCtrl(dup: boolean): void {
    if (this.batchDepth === 0) return this.sendCtrl();
    this.ctrlHeld = true;
    if (!dup) return;
    const ack = this.receiver.ackSeq;
    if (this.dupHeld === 0 || this.dupHeldAck !== ack) {
      this.dupHeldAck = ack;
      this.dupHeld = 0;
    }
    this.dupHeld++;
  }

  /** The N-1 side has room again after sendPdu returned false. */
  lowerReady(): void {
    if (this._state !== 'open') return;
    // An advertisement the RMT refused is owed first: without it the peer's window may stay shut
    // until its stall probe (stallProbeMs) asks again.
    if (this.ctrlOwed) this.sendCtrl();
    if (this._state === 'open') this.sender.lowerReady();
  }

  /** The user takes SDUs again after deliver returned false. */
  resumeDelivery(): void {
    if (this._state === 'open') this.receiver.resume();
  }

  /** End the connection here (idempotent): timers stopped, queued PDUs released, nothing more sent or delivered. */
  close(): void {
    if (this._state !== 'open') return;
    this._state = 'closed';
    this.sender.stop();
    this.receiver.stop();
  }

  snapshot(): EfcpSnapshot {
    return {
      state: this._state,
      cube: this.cube.name,
      qosId: this.qosId,
      localAddr: this.o.localAddr,
      remoteAddr: this.o.remoteAddr,
      localCep: this.o.localCep,
      remoteCep: this.o.remoteCep,
      ctrlSeq: this.ctrlSeq,
      lastCtrlSeqRcvd: this.lastCtrlSeqRcvd,
      failure: this.failure ? { code: this.failure.code, message: this.failure.message } : null,
      sender: this.sender.snapshot(),
      receiver: this.receiver.snapshot(),
      stats: { ...this.stats },
    };
  }

  private onCtrl(pci: Pci): void {
    this.stats.ctrlRcvd++;
    const d = seqDiff(pci.seqNum, this.lastCtrlSeqRcvd);
    if (d <= 0) {
      this.stats.ctrlStale++;
      return;
    }
    if (d > 1) this.stats.ctrlGaps += d - 1;
    this.lastCtrlSeqRcvd = pci.seqNum;
    const hasAck = (pci.type & CTRL_ACK) !== 0;
    const hasFc = (pci.type & CTRL_FC) !== 0;
    this.sender.onControl(hasAck, pci.ackNackSeq, hasFc, pci.newRightWinEdge, pci.newLeftWinEdge);
    if (this._state !== 'open') return;
    this.receiver.onPeerLeftEdge(pci.myLeftWinEdge);
    if (this._state === 'open' && this.receiver.peerViewStale(pci.myRightWinEdge)) {
      const now = this.clock.now();
      if (now - this.lastReadvertAt >= this.params.stallProbeMs / 2) {
        this.lastReadvertAt = now;
        this.stats.readvertisements++;
        this.askCtrl(false);
      }
    }
  }

  private onSenderFailed(err: EfcpError): void {
    if (this._state !== 'open') return;
    this._state = 'failed';
    this.failure = err;
    this.receiver.stop();
    this.o.onFail?.(err);
  }

  /** One control PDU with our whole state (FC; ACK on the reliable cube). */
  private sendCtrl(): void {
    if (this._state !== 'open' || !this.cube.flowControl) return;
    const p = this.ctrlPci;
    const rwe = this.receiver.rightEdge;
    const ack = this.receiver.ackSeq;
    p.seqNum = this.ctrlSeq;
    p.lastCtrlSeqRcvd = this.lastCtrlSeqRcvd;
    p.ackNackSeq = this.cube.retransmission ? ack : 0; // FC-only cubes: no ACK semantics
    p.newRightWinEdge = rwe;
    p.newLeftWinEdge = this.receiver.leftEdge;
    p.myLeftWinEdge = this.sender.leftEdge;
    p.myRightWinEdge = this.sender.rightEdge;
    p.length = 0;
    const pdu = this.ctrlBuf ?? new Uint8Array(PCI_LEN + CTRL_LEN);
    encodePci(p, pdu);
    this.ctrlSeq = seqAdd(this.ctrlSeq, 1);
    if (!this.o.sendPdu(pdu)) {
      this.stats.ctrlRefused++;
      this.ctrlOwed = true;
      return;
    }
    this.ctrlOwed = false;
    this.stats.ctrlSent++;
    this.receiver.noteAdvertised(rwe, ack);
  }
}
