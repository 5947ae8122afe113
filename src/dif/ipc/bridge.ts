/**
 * bridge.ts — what the IPC daemon holds for one flow of an application (a FlowLink): a
 * DirectFlowLink when the application holds the data path itself (the guest's /dev/vmpiN file),
 * or a FlowBridge joining the daemon's end of the flow's socketpair to the IPC process's Flow
 * (backpressure both ways, linger after the end, containment of faults: see datapath.ts).
 * Both directions go in batches: the application's records are read many per recvmmsg, the
 * Flow's SDUs are copied into an Outbox (record.ts) and sent many per sendmmsg on a microtask.
 * On a 'ring' flow (ring.ts) the same bridge reads and writes the flow's shared-memory rings
 * instead (the socket then carries doorbells and the end of file): the SDUs of a read are all
 * that was published, the writes of a tick are published at once.
 */
import { DifError, type DeallocationCause, type Flow } from '../api.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import type { Logger } from '../../sys/log.js';
import { errText, safeClose } from '../../sys/fd.js';
import { Outbox, PACK_SDUS_MAX, readRecords, RECORDS_EMPTY, RECORDS_ENDED, type RecordSink } from './record.js';
import { canBorrow, type BorrowingFlow } from '../core/budgeted-flow.js';
import { RING_BROKEN, RING_EMPTY, type RingEnd, type RingHold } from './ring.js';
import type { FlowOutbox } from './flow-file-io.js';
import { RingEvents, type RingEventHandlers } from './ring-events.js';

/** How long a bridge keeps delivering to an application after its flow ended. */
export const LINGER_MS = 5000;
/** Records read from the application per wakeup before yielding to the event loop. */
const READS_PER_TURN = 256;
/** Records per recvmmsg from the application (the receive buffer bounds it further for a large max SDU). */
const READ_BATCH = 64;

/** What the daemon holds for one flow of an application, whatever its data path. */
export interface FlowLink {
  readonly flow: Flow;
  /** The application asked to end the flow. */
  appDeallocate(reason: string): void;
  /** Tear down now (daemon shutdown, application gone): deallocates the flow too. */
  destroy(reason: string): void;
  /** Let go without a word, closing nothing (a successor process carries on; see snapshot.ts). */
  abandon(): void;
  /** The daemon's fd a successor process can resume this flow on (snapshot.ts), or null. */
  readonly resumableFd: number | null;
  /** With a ring: its memfd, which a successor resumes the flow's ring from; else null. */
  readonly resumableRingFd?: number | null;
}

/**
 * A flow whose data path the application holds itself (a data file, Flow.takeDataFd): the daemon
 * only passes the flow's end on and ends the flow when asked.
 */
export class DirectFlowLink implements FlowLink {
  private done = false;
  private readonly onDeallocated = (reason: string, cause: DeallocationCause): void => {
    if (this.done) return;
    this.done = true;
    try {
      this.hooks.onFlowEnd(reason, cause);
    } finally {
      this.hooks.onClosed();
    }
  };

  constructor(
    readonly flow: Flow,
    private readonly hooks: BridgeHooks,
  ) {
    flow.on('deallocated', this.onDeallocated);
    if (flow.state === 'deallocated') this.onDeallocated(flow.deallocationReason ?? 'deallocated', 'closed');
  }

  appDeallocate(reason: string): void {
    this.flow.deallocate(reason);
  }

  destroy(reason: string): void {
    this.flow.deallocate(reason);
  }

  readonly resumableFd = null;

  abandon(): void {
    this.done = true;
    this.flow.off('deallocated', this.onDeallocated);
  }
}

export interface BridgeStats {
  /** SDUs from the flow written to the application. */
  toApp: number;
  /** SDUs the application wrote, passed to the flow. */
  fromApp: number;
  /** Records from the application that were too large or malformed: dropped. */
  badRecords: number;
  /** Records the application wrote after the flow ended: dropped. */
  afterEnd: number;
  /** SDUs for the application lost because it closed its end or stopped reading (linger). */
  lost: number;
  /** SDUs for the application dropped: larger than its socket's buffer could ever carry. */
  tooLarge: number;
}

/** Why a bridge ended its flow itself: the application broke the data path, or a fault. */
export type BridgeAbort = 'fds_on_flow_socket' | 'internal_error' | 'ring_broken';

export interface BridgeHooks {
  /** The flow ended (before the bridge finishes delivering to the application). */
  onFlowEnd(reason: string, cause: DeallocationCause): void;
  /** The bridge closed its end; nothing more happens. */
  onClosed(): void;
  /** Optional: counts for the daemon's metrics (one SDU dropped as too large, an abort). */
  onTooLarge?(): void;
  onAbort?(why: BridgeAbort): void;
  /** Tests only: called at the start of every entry point ('flow socket', 'data', 'linger timer', 'drain loop', …); may throw. */
  inject?(where: string): void;
}

/**
 * The daemon's end of one flow's socketpair, joined to the IPC process's Flow. Assumes what the
 * shim DIF's flows do: Flow.write() copies the SDU before returning (the bridge reuses its
 * receive buffer), and SDUs arriving while no 'data' listener is attached wait in the Flow.
 *
 * Containment: every entry point (fd events, the Flow's events, the linger timer, the drain
 * loop's promise) runs under `guard`: an exception ends this flow (logged, the application told
 * with a reason) and nothing else. An application that sends fds over its flow socket ends its
 * flow the same way ('fds_on_flow_socket'); the kernel closed the fds.
 */
export class FlowBridge implements FlowLink {
  readonly stats: BridgeStats = { toApp: 0, fromApp: 0, badRecords: 0, afterEnd: 0, lost: 0, tooLarge: 0 };
  private readonly interest: FdInterest;
  /** SDUs from the flow accepted for the application, sent in batches (bounded: see toApp). */
  private readonly outbox: FlowOutbox;
  /** The socket data path's outbox (null on a ring flow). */
  private readonly socketOutbox: Outbox | null;
  /** A 'ring' flow's ring end (then `outbox` is its writer). */
  private readonly ring: RingEnd | null;
  /** A 'ring' flow's socket events and deferred reads (ring-events.ts). */
  private readonly ringEvents: RingEvents | null;
  /** SDUs from the flow that found the outbox full (at most a few: the bridge stops listening). */
  private pending: Uint8Array[] = [];
  /** Waiting for room in the application's socket: not listening to the flow meanwhile. */
  private outBlocked = false;
  private flushDue = false;
  /** Close once the outbox has gone (the flow ended and its rest was delivered). */
  private finishing = false;
  /**
   * SDUs from the application that flow.write() refused (copies, in order: the refused one and
   * the rest of its read batch), resent on 'drain'; reading stops meanwhile.
   */
  private held: Uint8Array[] = [];
  /** The last read batch had a record with fds: the flow is aborted after it. */
  private sawFds = false;
  private listening = false;
  private flowEnded = false;
  private closed = false;
  private lingerTimer: NodeJS.Timeout | null = null;
  /** Why the application ended the flow (its `deallocate` request), or why the bridge did. */
  private appReason: string | null = null;
  private readonly maxSdu: number;
  private warnedTooLarge = false;

  private readonly onData = (sdu: Uint8Array): void => this.guard('data', () => this.toApp(sdu));
  /**
   * The flow offers borrowed reads (core/budgeted-flow.ts: the shim DIFs' flows): its SDUs come
   * as views valid during the call, with no copy, queue or event per SDU in the flow (the outbox
   * copies each once). Else 'data' events, with a copy of the flow's own per SDU.
   */
  private readonly borrowing: BorrowingFlow | null;
  private readonly onBorrowed = (sdu: Uint8Array): void => this.guard('data', () => this.toApp(sdu, true));
  private readonly onDrain = (): void => this.guard('drain', () => this.retryHeld());
  private readonly flushSoon = (): void => {
    this.flushDue = false;
    this.guard('flush', () => this.flushOut());
  };
  private readonly rxSink: RecordSink = {
    // A ring's records come as views of the shared memory (no copy out first): fromApp() only
    // passes each to flow.write(), which copies it, or keeps a copy of its own (held).
    shared: true,
    // A refused SDU is held: the ring keeps the rest (one copy, not one per record read).
    sdu: (sdu) => this.fromApp(sdu),
    bad: (why) => {
      this.stats.badRecords++;
      this.log.debug({ portId: this.flow.portId, why }, 'ipc: bad record from an application dropped');
    },
    fds: () => {
      this.sawFds = true;
    },
    packs: () => {
      // The application reads packed records: send them, and say that we read them too.
      const o = this.socketOutbox;
      if (o === null || o.packs) return;
      o.pack();
      if (o.hello()) this.scheduleFlush();
    },
  };
  private readonly onDeallocated = (reason: string, cause: DeallocationCause): void => this.guard('deallocated', () => this.flowEnd(reason, cause));

  constructor(
    readonly flow: Flow,
    readonly fd: number,
    private readonly hooks: BridgeHooks,
    private readonly log: Logger,
    private readonly ringHold: RingHold | null = null,
  ) {
    this.maxSdu = flow.qos.maxSdu;
    this.borrowing = canBorrow(flow) ? flow : null;
    this.ring = ringHold?.end ?? null;
    this.ringEvents = this.ring === null ? null : new RingEvents(this.ring, this.ringHandlers);
    if (this.ring !== null) {
      this.socketOutbox = null;
      this.outbox = this.ring;
      this.ring.onSent = (n) => {
        this.stats.toApp += n;
      };
    } else {
      this.outbox = this.socketOutbox = new Outbox(fd, {
        onSent: (n) => {
          this.stats.toApp += n;
        },
        onTooLarge: (bytes) => this.tooLarge(bytes),
      });
    }
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => this.guard('flow socket', () => this.onEvents(ev)));
    flow.on('deallocated', this.onDeallocated);
    flow.on('drain', this.onDrain);
    this.listen(true);
    if (flow.state === 'deallocated') this.flowEnd(flow.deallocationReason ?? 'deallocated', 'closed');
    // A resumed ring may hold records the application published while no daemon ran.
    this.ringEvents?.readSoon();
  }

  /**
   * The application asked to end the flow: pass on what it already wrote (what is in the socket
   * now), then deallocate with its reason.
   */
  appDeallocate(reason: string): void {
    if (this.flowEnded || this.closed) return;
    this.appReason = reason;
    this.guard('deallocate', () => {
      this.readFromApp(Number.POSITIVE_INFINITY);
      if (!this.flowEnded) this.flow.deallocate(reason);
    });
  }

  /** Tear down now (daemon shutdown, application gone): deallocates the flow too. */
  destroy(reason: string): void {
    try {
      if (!this.closed) this.outbox.flush(); // what is already accepted, if the socket takes it now
    } catch {
      // lost with the socket (counted by finish)
    }
    try {
      if (!this.flowEnded) this.flow.deallocate(reason);
    } catch (e) {
      this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: deallocating a flow failed');
    }
    this.finish();
  }

  /** The flow runs and the bridge joins it to the application (not ended, not lingering). */
  get live(): boolean {
    return !this.flowEnded && !this.closed;
  }

  get resumableFd(): number | null {
    return this.live ? this.fd : null;
  }

  get resumableRingFd(): number | null {
    return this.live && this.ringHold !== null ? this.ringHold.memfd : null;
  }

  /**
   * Let go without a word, closing nothing (a successor process resumes the flow on the same
   * fd, snapshot.ts): what the outbox holds is sent if the socket takes it now; the rest, and
   * `pending` and `held`, are lost with this process.
   */
  abandon(): void {
    if (this.closed) return;
    try {
      this.outbox.flush();
    } catch {
      // lost with this process, as the rest
    }
    this.closed = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.interest.close();
    this.listen(false);
    this.flow.off('drain', this.onDrain);
    this.flow.off('deallocated', this.onDeallocated);
    // The memfd stays open for the successor; this process's mapping and accounting go.
    this.ringHold?.dispose(true);
  }

  // ---------------------------------------------------------------------------------------------

  /** Run one entry point; an exception ends this flow only. */
  private guard(where: string, fn: () => void): void {
    try {
      this.hooks.inject?.(where);
      fn();
    } catch (e) {
      this.log.error({ portId: this.flow.portId, where, err: errText(e), stack: (e as Error)?.stack }, 'ipc: internal error in a flow bridge: flow closed');
      this.abort('internal_error', `IPC daemon: internal error in the flow's data path (${where}): ${errText(e)}`);
    }
  }

  /** End the flow from here: the application is told `reason`, the socket closed at once. */
  private abort(why: BridgeAbort, reason: string): void {
    if (this.closed) return;
    this.hooks.onAbort?.(why);
    if (!this.flowEnded) {
      this.appReason = reason;
      try {
        this.flow.deallocate(reason);
      } catch (e) {
        this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: deallocating a flow failed');
      }
    }
    if (!this.flowEnded) {
      // The flow did not report its end (it threw, or was already gone): tell the application.
      this.flowEnded = true;
      try {
        this.hooks.onFlowEnd(reason, 'local');
      } catch (e) {
        this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: telling the application failed');
      }
    }
    this.finish();
  }

  private listen(on: boolean): void {
    if (on === this.listening) return;
    this.listening = on;
    if (this.borrowing !== null) this.borrowing.borrowReads(on ? this.onBorrowed : null);
    else if (on) this.flow.on('data', this.onData);
    else this.flow.off('data', this.onData);
  }

  private onEvents(ev: number): void {
    if (this.closed) return;
    if (ev < 0) {
      this.log.debug({ portId: this.flow.portId }, 'ipc: poll error on a flow socket');
      return this.appGone();
    }
    if (this.ringEvents !== null) return this.ringEvents.onEvents(ev);
    if (ev & native.UV_WRITABLE) this.flushPending();
    if (!this.closed && ev & native.UV_READABLE) this.readFromApp(READS_PER_TURN);
  }

  /** A 'ring' flow's socket: doorbells (room for us, or records to read) and the end of file (ring-events.ts). */
  private readonly ringHandlers: RingEventHandlers = {
    fds: () => {
      this.log.warn({ portId: this.flow.portId }, 'ipc: an application sent file descriptors over its flow socket: flow closed');
      this.abort('fds_on_flow_socket', 'the application sent file descriptors over its flow socket (SDUs only; the fds were closed): flow closed');
      return false;
    },
    room: () => {
      const ring = this.ring!;
      if (ring.broken !== null) return this.ringBroken();
      if (this.outBlocked && ring.hasRoom()) this.flushPending();
    },
    read: () => {
      const ring = this.ring!;
      if (this.closed) return;
      if (ring.broken !== null) return this.ringBroken();
      if (this.held.length === 0) this.readFromApp(READS_PER_TURN);
      // The end of file stays readable: stop polling until the held SDUs went and the ring is read.
      else if (ring.ended) this.interest.want(native.UV_READABLE, false);
    },
    readLater: () =>
      this.guard('ring read', () => {
        if (!this.closed && this.held.length === 0) this.readFromApp(READS_PER_TURN);
      }),
  };

  /** The outbox found the application's end closed: a broken ring says why, else the application went. */
  private outboxClosed(): void {
    return this.ring?.broken != null ? this.ringBroken() : this.appGone();
  }

  /** The application broke its ring (an index or length out of range): end the flow, saying why. */
  private ringBroken(): void {
    const why = this.ring!.broken!;
    this.log.warn({ portId: this.flow.portId, why }, "ipc: an application broke its flow's ring: flow closed");
    this.abort('ring_broken', `the flow's shared-memory ring is broken: ${why}`);
  }

  /**
   * Flow → application: into the outbox (sent on a microtask with the rest of this tick's, or at
   * once when it is full). When the socket takes nothing more the SDU waits in `pending`, the
   * bridge stops listening (the flow holds the next ones) and waits for writable. `borrowed`: the
   * bytes are valid only during the call (kept as a copy).
   */
  private toApp(sdu: Uint8Array, borrowed = false): void {
    if (this.closed) return;
    if (this.pending.length === 0) {
      const r = this.outbox.offer(sdu);
      if (r === 'queued') return this.scheduleFlush();
      if (r === 'sent') return; // counted by onSent
      if (r === 'closed') return this.outboxClosed();
      if (r === 'too_large') return this.tooLarge(sdu.byteLength);
    }
    this.pending.push(borrowed ? sdu.slice() : sdu);
    this.blockOut();
  }

  private scheduleFlush(): void {
    if (this.flushDue) return;
    this.flushDue = true;
    queueMicrotask(this.flushSoon);
  }

  /** The application's socket is full: stop taking SDUs from the flow until it is writable. */
  private blockOut(): void {
    this.outBlocked = true;
    this.listen(false);
    if (this.ring === null) return this.interest.want(native.UV_WRITABLE, true);
    // A doorbell follows the application's next consumption (or there is room already).
    if (this.ring.waitRoom()) queueMicrotask(() => this.guard('ring room', () => {
      if (!this.closed && this.outBlocked) this.flushPending();
    }));
  }

  /** The microtask's flush of what toApp() queued this tick. */
  private flushOut(): void {
    if (this.closed) return;
    const r = this.outbox.flush();
    if (r === 'closed') return this.outboxClosed();
    if (r === 'full') return this.blockOut();
    if (this.finishing && this.pending.length === 0) this.finish();
  }

  /** An SDU the socket can never carry (its buffer is below the flow's max SDU): drop, count, say so once. */
  private tooLarge(bytes: number): void {
    this.stats.tooLarge++;
    this.hooks.onTooLarge?.();
    if (this.warnedTooLarge) return;
    this.warnedTooLarge = true;
    this.log.warn(
      { portId: this.flow.portId, bytes, maxSdu: this.maxSdu },
      "ipc: an SDU larger than the flow socket's buffer was dropped (raise net.core.wmem_max, run with CAP_NET_ADMIN, or use a smaller max SDU); counted in vmpi_ipc_sdus_dropped_total",
    );
  }

  /** The application's socket is writable again: send the outbox's rest, then `pending`. */
  private flushPending(): void {
    let r = this.outbox.flush();
    while (r === 'done' && this.pending.length > 0) {
      const o = this.outbox.offer(this.pending[0]!);
      if (o === 'full' || o === 'closed') {
        r = o;
        break;
      }
      const sdu = this.pending.shift()!;
      if (o === 'too_large') this.tooLarge(sdu.byteLength);
    }
    if (r === 'done') r = this.outbox.flush();
    if (r === 'closed') return this.outboxClosed();
    if (r === 'full') return;
    this.outBlocked = false;
    if (this.ring === null) this.interest.want(native.UV_WRITABLE, false);
    if (this.finishing) this.finish();
    else if (this.flowEnded) this.startDrainRest();
    else this.listen(true);
  }

  private startDrainRest(): void {
    this.drainRest().catch((e: unknown) =>
      this.guard('drain loop failure', () => {
        throw e;
      }),
    );
  }

  /** After the flow ended: deliver what it still holds, then close. */
  private async drainRest(): Promise<void> {
    this.hooks.inject?.('drain loop');
    while (!this.closed && !this.outBlocked) {
      const sdu = await this.flow.read();
      if (this.closed) return;
      if (sdu === null) return this.finishFlushed();
      this.toApp(sdu);
    }
    // Otherwise flushPending() calls us again once the socket has room.
  }

  /** Close once what the outbox holds has gone (waiting for writable if need be, within the linger). */
  private finishFlushed(): void {
    const r = this.outbox.flush();
    if (r !== 'full') return this.finish();
    this.finishing = true;
    this.blockOut();
  }

  /** Application → flow: up to `max` records, many per recvmmsg, until one is refused. */
  private readFromApp(max: number): void {
    if (this.ring !== null) return this.readRing(max);
    let got = 0;
    while (got < max && !this.closed && this.held.length === 0) {
      const n = readRecords(this.fd, this.maxSdu, Math.min(max - got, READ_BATCH), this.rxSink);
      if (this.sawFds) {
        this.log.warn({ portId: this.flow.portId }, 'ipc: an application sent file descriptors over its flow socket: flow closed');
        return this.abort('fds_on_flow_socket', 'the application sent file descriptors over its flow socket (SDUs only; the fds were closed): flow closed');
      }
      if (n === RECORDS_EMPTY) return;
      if (n === RECORDS_ENDED) return this.appGone();
      got += n;
    }
  }

  /**
   * Application → flow on a 'ring' flow: up to `max` records, every published one per read,
   * until one is refused; then tell the application to ring (sleep), or read on next turn.
   */
  private readRing(max: number): void {
    const ring = this.ring!;
    // Budgets in SDUs as the socket path's come out: a record there carries up to PACK_SDUS_MAX.
    const budget = max * PACK_SDUS_MAX;
    let got = 0;
    while (!this.closed && this.held.length === 0) {
      if (got >= budget) return this.ringEvents!.readSoon();
      const n = ring.read(this.rxSink, Math.min(budget - got, READ_BATCH * PACK_SDUS_MAX));
      if (n === RING_BROKEN) return this.ringBroken();
      if (n === RING_EMPTY) {
        if (ring.ended) return this.appGone();
        if (ring.sleep()) return;
        continue;
      }
      got += n;
    }
  }

  /**
   * One SDU the application wrote (a view, valid during the call): to the flow, or held. false:
   * held (the flow refused it or an earlier one): a ring read stops here (RecordSink.sdu).
   */
  private fromApp(sdu: Uint8Array): boolean {
    if (this.closed || this.sawFds) return false;
    if (this.flowEnded) {
      this.stats.afterEnd++;
      return true;
    }
    if (this.held.length > 0) {
      // An earlier SDU of this batch was refused: the rest waits behind it, in order.
      this.held.push(sdu.slice());
      return false;
    }
    let ok: boolean;
    try {
      ok = this.flow.write(sdu);
    } catch (e) {
      if (e instanceof DifError && (e.code === 'flow_deallocated' || e.code === 'port_down')) {
        this.stats.afterEnd++;
        return true;
      }
      if (e instanceof DifError && e.code === 'sdu_too_large') {
        this.stats.badRecords++;
        return true;
      }
      throw e;
    }
    if (ok) {
      this.stats.fromApp++;
      return true;
    }
    // Not sent: keep a copy, stop reading so the application's socket (or ring) fills up.
    this.held.push(sdu.slice());
    if (this.ring === null) this.interest.want(native.UV_READABLE, false);
    return false;
  }

  private retryHeld(): void {
    if (this.held.length === 0 || this.closed) return;
    if (this.flowEnded) {
      this.stats.afterEnd += this.held.length;
      this.held = [];
      return;
    }
    while (this.held.length > 0) {
      let ok: boolean;
      try {
        ok = this.flow.write(this.held[0]!);
      } catch {
        this.stats.afterEnd += this.held.length;
        this.held = [];
        return;
      }
      if (!ok) return; // still full: wait for the next 'drain'
      this.stats.fromApp++;
      this.held.shift();
    }
    this.interest.want(native.UV_READABLE, true);
    // The ring's records wait without a doorbell (the reader did not sleep): read them now.
    if (this.ring !== null) this.readRing(READS_PER_TURN);
  }

  private flowEnd(reason: string, cause: DeallocationCause): void {
    if (this.flowEnded) return;
    this.flowEnded = true;
    this.stats.afterEnd += this.held.length;
    this.held = [];
    this.flow.off('drain', this.onDrain);
    this.hooks.onFlowEnd(this.appReason ?? reason, cause);
    if (this.closed) return;
    // Keep reading the application's socket only to notice it closing; its data is dropped.
    this.interest.want(native.UV_READABLE, true);
    this.lingerTimer = setTimeout(
      () => this.guard('linger timer', () => this.finish()),
      LINGER_MS,
    );
    this.lingerTimer.unref();
    if (this.listening) {
      // Whatever the flow still queues comes through read() from now on.
      this.listen(false);
      this.startDrainRest();
    }
  }

  /** The application closed its end (or it broke). */
  private appGone(): void {
    if (this.closed) return;
    if (!this.flowEnded) this.flow.deallocate(this.appReason ?? 'the application closed the flow');
    this.finish();
  }

  /** Close our end; idempotent, and it completes whatever the Flow's listeners do. What was not sent is lost (counted). */
  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.stats.lost += this.pending.length + this.outbox.discard();
    this.pending = [];
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.interest.close();
    safeClose(this.fd);
    this.ringHold?.dispose();
    try {
      this.listen(false);
      this.flow.off('drain', this.onDrain);
      this.flow.off('deallocated', this.onDeallocated);
    } catch (e) {
      this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: detaching from a flow failed');
    }
    this.hooks.onClosed();
  }
}

