/**
 * client-flow.ts — a flow on the client side of the IPC API (client.ts): a `Flow` (api.ts) whose
 * SDUs go straight through the per-flow fd the daemon passed, read and written through the
 * FlowFileIo of the data path the daemon announced (flow-file-io.ts): the daemon's
 * SOCK_SEQPACKET end (host), or in a guest the VMPI driver's file of the flow's channel.
 *
 * Both directions go in batches: write() copies the SDU into the flow's outbox (record.ts Outbox
 * on the socket, vmpi/guest-flow-file.ts GuestFlowOutbox on a VMPI file) and the writes of one
 * tick leave together (one sendmmsg per up to 256 records, or one write(2) of many records in the
 * driver's batch-write mode; on a microtask, or at once when the outbox is full); write() says
 * false, and 'drain' follows, only when the fd took nothing more (the outbox's rest waits, in
 * order, for writable). Reads take many records per recvmmsg (or a VMPI file's batch read), up to
 * a bounded read-ahead; with an 'sdus' listener and nothing queued, all SDUs of one read go to it
 * as one batch of views into the read buffer (no copy, promise or event per SDU). writev()
 * writes many SDUs in one call.
 *
 * On the 'ring' data path (ring.ts) write() copies into the shared ring and the tick's writes are
 * published at once (a doorbell only when the daemon sleeps); reads take every published record;
 * the fd then carries doorbells and the end of file, and "full" means the ring (a doorbell says
 * when the daemon made room).
 */
import { EventEmitter } from 'node:events';
import { DifError, type DeallocationCause, type Flow, type FlowEvents, type FlowState, type FlowStats, type QosSpec } from '../api.js';
import { parseAppName, type AppName } from '../naming.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import { RxQueue } from '../rx-queue.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import { safeClose } from '../../sys/fd.js';
import { FLOW_READ_EMPTY, FLOW_READ_ENDED, flowFileIo, flowReadBatch, type FlowFileIo, type FlowOutbox, type SduSink } from './flow-file-io.js';
import { Outbox, PACK_SDUS_MAX, type OfferResult } from './record.js';
import type { RingEnd } from './ring.js';
import { RingEvents, type RingEventHandlers } from './ring-events.js';
import type { FlowDatapath, FlowInfo } from './protocol.js';

/** What a flow needs of its client (IpcClient): the flow depends on no module above it. */
export interface FlowOwner {
  request(msg: Record<string, unknown>): Promise<unknown>;
  flowClosed(flow: ClientFlow): void;
}

/** SDUs a ClientFlow reads ahead while nobody consumes them; then the fd is left to fill up. */
export const CLIENT_RX_QUEUE_LIMIT = 256;
/** Bytes a ClientFlow reads ahead while nobody consumes them (the first SDU always fits). */
export const CLIENT_RX_QUEUE_BYTES = 4 * 1024 * 1024;
/** How long deallocate() waits for a full socket to take the outbox's rest (as the daemon's linger). */
const DEALLOCATE_FLUSH_MS = 5000;
/** Records a ClientFlow reads per wakeup of its fd before yielding to the event loop. */
const READS_PER_TURN = 256;

/** A flow of this client: its SDUs cross the fd the daemon passed (see the file comment). */
export class ClientFlow extends EventEmitter<FlowEvents> implements Flow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  readonly handle: number;
  readonly portId: number;
  readonly difName: string;
  readonly localApp: AppName;
  readonly remoteApp: AppName;
  readonly qos: QosSpec;
  /** 'vmpi_file': the fd is the guest driver's file of the flow's channel (no daemon in between). */
  readonly datapath: FlowDatapath;
  /** Records from the daemon that were malformed: dropped. */
  badRecords = 0;
  /**
   * SDUs write() accepted that never left for the daemon: its end closed first, the flow ended
   * (the daemon drops what comes after), or the socket stayed full for DEALLOCATE_FLUSH_MS after deallocate().
   */
  txLost = 0;
  private _state: FlowState = 'allocated';
  private _reason: string | null = null;
  private readonly interest: FdInterest;
  private readonly io: FlowFileIo;
  private fdOpen = true;
  /** End of file seen (or we stopped reading): nothing more will come. */
  private eof = false;
  private blocked = false;
  /** The batch of accepted writes (a record.ts Outbox on the socket data path). */
  private readonly outbox: FlowOutbox;
  /** The socket data path (else a VMPI file). */
  private readonly socket: boolean;
  private flushDue = false;
  /** The daemon's end is gone (a send saw EPIPE): writes fail as after deallocation. */
  private peerClosed = false;
  /** deallocate() waits for the outbox to empty before it asks the daemon (bounded by DEALLOCATE_FLUSH_MS). */
  private deallocWait: { reason: string; timer: NodeJS.Timeout } | null = null;
  private readonly rx = new RxQueue(this, () => this.resumeReading());
  /** The 'ring' data path's shared rings (else null). */
  private readonly ring: RingEnd | null;
  /** The 'ring' data path's socket events and deferred reads (ring-events.ts). */
  private readonly ringEvents: RingEvents | null;

  constructor(
    private readonly client: FlowOwner,
    info: FlowInfo,
    private readonly fd: number,
    ring?: RingEnd,
  ) {
    super();
    this.handle = info.flow;
    this.portId = info.portId;
    this.difName = info.dif;
    this.localApp = parseAppName(info.localApp);
    this.remoteApp = parseAppName(info.remoteApp);
    this.qos = Object.freeze({ ...info.qos });
    this.datapath = info.datapath ?? 'socket';
    this.io = flowFileIo(this.datapath, fd, ring);
    this.ring = this.io.ring ?? null;
    this.ringEvents = this.ring === null ? null : new RingEvents(this.ring, this.ringHandlers);
    this.socket = this.datapath !== 'vmpi_file';
    this.outbox = this.io.outbox(fd, { onSent: () => {}, onTooLarge: () => this.txLost++ });
    // Tell the daemon this end reads packed records (a daemon that does not know them drops it).
    if (this.outbox instanceof Outbox && this.outbox.hello()) this.scheduleFlush();
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => {
      try {
        this.onEvents(ev);
      } catch (e) {
        // A fault on this flow's fd ends this flow, not the application's other flows.
        this.daemonGone(`internal error on the flow's fd: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    checkSdu(this, sdu);
    if (this.peerClosed || this.ring?.ended === true) throw new DifError('flow_deallocated', `flow ${this.portId}: the IPC daemon closed it`);
    if (this.blocked) {
      this.stats.txRefused++;
      return false;
    }
    const r: OfferResult = this.outbox.offer(sdu);
    if (r === 'queued') this.scheduleFlush();
    if (r === 'sent' || r === 'queued') {
      this.stats.txSdus++;
      this.stats.txBytes += sdu.byteLength;
      return true;
    }
    if (r === 'closed') {
      this.sawPeerClosed();
      throw new DifError('flow_deallocated', `flow ${this.portId}: the IPC daemon closed it`);
    }
    if (r === 'too_large') {
      throw new DifError('sdu_too_large', `flow ${this.portId}: an SDU of ${sdu.byteLength} bytes does not fit the flow socket's buffer (the host's net.core.wmem_max is below the flow's max SDU of ${this.qos.maxSdu}): send smaller SDUs or raise it`);
    }
    this.stats.txRefused++;
    this.block();
    return false;
  }

  /**
   * Write SDUs in order until one is refused: returns how many were taken (all of them, or
   * fewer when the fd is full: 'drain' follows, write the rest then). Throws as write() does,
   * for the first SDU that cannot be written at all (those before it were taken).
   */
  writev(sdus: readonly Uint8Array[]): number {
    for (let i = 0; i < sdus.length; i++) if (!this.write(sdus[i]!)) return i;
    return sdus.length;
  }

  send(sdu: Uint8Array): Promise<void> {
    return sendSdu(this, sdu);
  }

  read(): Promise<Uint8Array | null> {
    return this.rx.read();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return untilNull(() => this.read());
  }

  /**
   * End the flow at both ends (idempotent). SDUs already written are passed on first: what the
   * outbox still holds goes before the daemon is asked (waiting for room, at most DEALLOCATE_FLUSH_MS).
   */
  deallocate(reason = 'deallocated by the application'): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.eof = true;
    this.blocked = false;
    if (this.flushOutbox() === 'full') {
      this.interest.set(native.UV_WRITABLE);
      const timer = setTimeout(() => {
        this.txLost += this.outbox.discard();
        this.requestDeallocate();
      }, DEALLOCATE_FLUSH_MS);
      timer.unref();
      this.deallocWait = { reason, timer };
    } else {
      this.stopFd(false);
      this.requestDeallocateNow(reason);
    }
    this.emit('deallocated', reason, 'local');
    this.checkEnd();
  }

  /** The outbox emptied (or gave up) after deallocate(): now ask the daemon. */
  private requestDeallocate(): void {
    const w = this.deallocWait;
    if (w === null) return;
    this.deallocWait = null;
    clearTimeout(w.timer);
    this.stopFd(false);
    this.requestDeallocateNow(w.reason);
  }

  private requestDeallocateNow(reason: string): void {
    // Close our end only once the daemon has taken what we wrote (it answers after that).
    this.client.request({ op: 'deallocate', flow: this.handle, reason }).then(
      () => this.closeFd(),
      () => this.closeFd(),
    );
  }

  /** Send what the outbox holds now ('done' without one; 'closed' counts its rest as lost). */
  private flushOutbox(): 'done' | 'full' | 'closed' {
    if (this.outbox.length === 0 || !this.fdOpen) return 'done';
    const r = this.outbox.flush();
    if (r === 'closed') this.sawPeerClosed();
    return r;
  }

  private scheduleFlush(): void {
    if (this.flushDue) return;
    this.flushDue = true;
    queueMicrotask(this.flushSoon);
  }

  /** The writes of this tick, sent together (queued once per batch, not per SDU). */
  private readonly flushSoon = (): void => {
    this.flushDue = false;
    try {
      if (this.flushOutbox() === 'full' && this._state === 'allocated') this.block();
    } catch (e) {
      this.daemonGone(`internal error on the flow's fd: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  /** The socket is full: refuse writes until it is writable and the outbox went ('drain'). */
  private block(): void {
    this.blocked = true;
    if (this.ring === null) return this.interest.want(native.UV_WRITABLE, true);
    // A doorbell comes once the daemon consumed (or there is room already: 'drain' on a microtask).
    this.interest.want(native.UV_READABLE, true);
    if (this.ring.waitRoom()) queueMicrotask(() => this.ringRoom());
  }

  /** A doorbell (or room found at once) while writes are refused: 'drain' when a max-SDU record fits. */
  private ringRoom(): void {
    if (!this.blocked || this.ring === null || !this.ring.waitRoom()) return;
    this.blocked = false;
    if (this._state === 'allocated') this.emit('drain');
  }

  private sawPeerClosed(): void {
    this.peerClosed = true;
    this.txLost += this.outbox.discard();
  }

  // --- called by the client --------------------------------------------------------------------

  /** @internal The daemon says the flow ended; what is still in the fd can be read. */
  daemonDeallocated(reason: string, cause: DeallocationCause): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    this.interest.want(native.UV_WRITABLE, false);
    // The daemon drops what the application writes after the flow's end.
    this.txLost += this.outbox.discard();
    if (this.eof) this.closeFd();
    this.emit('deallocated', reason, cause);
    this.checkEnd();
  }

  /** @internal The daemon connection is gone. */
  daemonGone(reason: string): void {
    this.eof = true;
    this.stopFd(true);
    if (this._state === 'allocated') {
      this._state = 'deallocated';
      this._reason = reason;
      this.emit('deallocated', reason, 'closed');
    }
    this.checkEnd();
  }

  // ---------------------------------------------------------------------------------------------

  private onEvents(ev: number): void {
    if (!this.fdOpen) return;
    if (ev < 0) {
      this.eof = true;
      this.stopFd(true);
      this.checkEnd();
      return;
    }
    if (this.ringEvents !== null) return this.ringEvents.onEvents(ev);
    if (ev & native.UV_WRITABLE) {
      if (this.flushOutbox() !== 'full') {
        this.interest.want(native.UV_WRITABLE, false);
        if (this.deallocWait !== null) this.requestDeallocate();
        if (this.blocked) {
          this.blocked = false;
          if (this._state === 'allocated') this.emit('drain');
        }
      }
    }
    if (ev & native.UV_READABLE && this.fdOpen) this.readSome();
  }

  /** A 'ring' flow's fd: doorbells (records to read, or room for the blocked writer) and its end of file (ring-events.ts). */
  private readonly ringHandlers: RingEventHandlers = {
    fds: () => {
      this.badRecords++;
      return true;
    },
    room: () => {
      if (this.blocked) this.ringRoom();
    },
    read: () => {
      if (!this.fdOpen) return;
      this.readSome();
      // Still not reading (the read-ahead is full) at the end of file: stop polling it (it stays readable).
      if (this.fdOpen && this.ring!.ended && !this.eof) this.interest.want(native.UV_READABLE, false);
    },
    readLater: () => {
      try {
        if (this.fdOpen && !this.eof) this.readSome();
      } catch (e) {
        this.daemonGone(`internal error on the flow's fd: ${e instanceof Error ? e.message : String(e)}`);
      }
    },
  };

  private readSome(): void {
    // A ring's reads count SDUs; a socket's records carry up to PACK_SDUS_MAX each: the same turn.
    let budget = this.ring === null ? READS_PER_TURN : READS_PER_TURN * PACK_SDUS_MAX;
    const maxSdu = this.qos.maxSdu;
    while (budget > 0 && this.fdOpen && !this.eof) {
      let max = budget;
      if (!this.rx.hasConsumer()) {
        if (this.rx.length >= CLIENT_RX_QUEUE_LIMIT || this.rx.bytes >= CLIENT_RX_QUEUE_BYTES) {
          // Leave the rest in the socket: the daemon sees it full and stops taking from the flow.
          // (A ring's fd stays watched for doorbells: the writer may wait for room.)
          if (this.ring === null) this.interest.want(native.UV_READABLE, false);
          break;
        }
        // Read no further ahead than the bounds (a max-SDU record each; the first always fits).
        max = Math.min(max, CLIENT_RX_QUEUE_LIMIT - this.rx.length, Math.max(1, Math.floor((CLIENT_RX_QUEUE_BYTES - this.rx.bytes) / Math.max(1, maxSdu))));
      }
      const sink = this.socket ? this.socketSink : this.sink;
      let n: number;
      if (this.rx.takesBatch()) {
        // An 'sdus' listener and nothing queued: every SDU of this read in one call, no copies.
        const batch = flowReadBatch();
        n = this.io.readBatch(this.fd, maxSdu, batch, sink, max);
        try {
          if (n > 0 && batch.count > 0) {
            this.stats.rxSdus += batch.count;
            this.stats.rxBytes += batch.bytes;
            this.rx.pushBatch(batch);
          }
        } finally {
          // A ring's batch is views of the ring: its room goes back once the listeners are done.
          this.io.batchDone?.();
        }
      } else {
        n = this.io.read(this.fd, maxSdu, sink, max);
      }
      if (n === FLOW_READ_EMPTY) {
        // A ring: tell the daemon to ring; read on if something came meanwhile.
        if (this.io.sleep?.() === false) continue;
        break;
      }
      if (n === FLOW_READ_ENDED) {
        const broken = this.ring?.broken ?? null;
        if (broken !== null) {
          this.badRecords++;
          this.eof = true;
          this.deallocate(`the IPC daemon's ring for this flow is broken: ${broken}`);
          return;
        }
        this.eof = true;
        this.stopFd(this._state === 'deallocated');
        break;
      }
      budget -= n;
      // The read took all there was: wait for the next readable event, not an empty read.
      if (this.io.drained?.(maxSdu) === true) break;
    }
    if (budget <= 0 && this.fdOpen && !this.eof) this.ringEvents?.readSoon();
    this.checkEnd();
  }

  /** Where socket reads put SDUs: each one a copy of its own already (readRecords slices it out). */
  private readonly socketSink: SduSink = {
    copies: true,
    sdu: (sdu) => {
      this.stats.rxSdus++;
      this.stats.rxBytes += sdu.byteLength;
      this.rx.push(sdu);
    },
    packs: () => {
      if (this.outbox instanceof Outbox) this.outbox.pack();
    },
    bad: () => {
      this.badRecords++;
    },
    fds: () => {
      this.badRecords++;
    },
  };

  /** Where reads of a VMPI file put SDUs (made once: no closure per read). */
  private readonly sink: SduSink = {
    sdu: (sdu) => {
      this.stats.rxSdus++;
      this.stats.rxBytes += sdu.byteLength;
      this.rx.push(sdu.slice());
    },
    bad: () => {
      this.badRecords++;
    },
    fds: () => {
      this.badRecords++;
    },
  };

  private resumeReading(): void {
    if (!this.eof && this.fdOpen && this.rx.length < CLIENT_RX_QUEUE_LIMIT && this.rx.bytes < CLIENT_RX_QUEUE_BYTES) {
      this.interest.want(native.UV_READABLE, true);
      // The ring's records wait without a doorbell (we did not sleep): read them.
      this.ringEvents?.readSoon();
    }
  }

  /**
   * Reads end once nothing more can come and the reason is known (the daemon says why before it
   * closes its end, so this waits for that message at most).
   */
  private checkEnd(): void {
    if (this.eof && this._state === 'deallocated') this.rx.end();
  }

  /** Stop watching the fd; close it too when `close`. */
  private stopFd(close: boolean): void {
    if (this.fdOpen) {
      this.interest.set(0);
    }
    if (close) this.closeFd();
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    this.txLost += this.outbox.discard();
    if (this.deallocWait !== null) {
      clearTimeout(this.deallocWait.timer);
      this.deallocWait = null;
    }
    this.interest.close();
    safeClose(this.fd);
    this.ring?.map.unmap();
    this.client.flowClosed(this);
  }
}
