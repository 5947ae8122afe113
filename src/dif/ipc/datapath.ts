/**
 * datapath.ts — the per-flow data path between an application and the IPC daemon: one
 * SOCK_SEQPACKET socketpair per flow, one record per SDU, and the daemon's bridge between its end
 * of that pair and the IPC process's Flow.
 *
 * Why this shape (the cheapest path we have on the host): after allocation the daemon hands the
 * application its end of the pair (SCM_RIGHTS) and never relays SDUs through its control socket.
 * An SDU costs one kernel copy each way between application and daemon (sendmsg copies into the
 * socket buffer, recvmsg copies out), and no hop besides the IPC process that owns the VMPI device,
 * which lives in the daemon anyway. SEQPACKET keeps SDU boundaries (no length framing to parse)
 * and gives kernel backpressure: when the reader's queue is full, the writer's sendmsg returns
 * EAGAIN. Backpressure therefore runs end to end: Flow.write() → false makes the bridge stop
 * reading the application's socket until 'drain', so the application's own writes fill its socket
 * and return false (EAGAIN); in the other direction a full application socket makes the bridge
 * stop taking SDUs from the Flow, which queues them (bounded by the IPC process).
 * Future work: a shared-memory ring per flow would save the kernel copy, but needs a doorbell
 * (an eventfd per direction, i.e. a wakeup syscall per batch) and its own flow control.
 *
 * In the guest, a flow of the shim DIF skips the daemon altogether: the daemon passes the
 * application a /dev/vmpiN file bound to the flow's channel (ChannelFile, vmpi/port.ts), which
 * the application reads and writes itself, one SDU per call, with no tag (the driver never reads
 * 0 bytes for end of file: the flow's end is ESHUTDOWN; reads take bursts of SDUs in the
 * driver's batch mode). readVmpiFileBatch/writeVmpiFile below are that path's counterpart of
 * readRecord/writeRecord; the daemon keeps only a DirectFlowLink.
 *
 * Record format: one tag byte (RECORD_SDU) followed by the SDU. The tag exists because a 0-byte
 * SEQPACKET record reads as 0 bytes, exactly like end of file, and 0-byte SDUs are valid data;
 * with the tag every record has at least one byte, so 0 always means the other end closed.
 * The tag byte is also where a later record kind would go.
 *
 * End of a flow: the side that ends it closes its end of the pair after the other learned why
 * (the daemon sends `flow_deallocated` before closing; the application sends `deallocate` and
 * closes on the answer). The bridge keeps delivering what the Flow already received, then closes
 * its end, so the application reads everything and then end of file. If the application stops
 * reading, the bridge gives up after LINGER_MS.
 */
import { DifError, type DeallocationCause, type Flow } from '../api.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import type { Logger } from '../../sys/log.js';
import { errnoCode, errText, safeClose } from '../../sys/fd.js';
import { writeSync } from 'node:fs';
import { CHANNEL_READ_BUFFER, READ_EMPTY, READ_ENDED, READ_GONE, readChannelFile } from '../../vmpi/guest-file.js';

export const RECORD_SDU = 0;
/** How long a bridge keeps delivering to an application after its flow ended. */
export const LINGER_MS = 5000;
/** Records read from the application per wakeup before yielding to the event loop. */
const READS_PER_TURN = 64;

let scratch = new Uint8Array(4096);

function scratchOf(size: number): Uint8Array {
  if (scratch.byteLength < size) scratch = new Uint8Array(Math.max(size, scratch.byteLength * 2));
  return scratch;
}

/**
 * 'full': nothing was sent (EAGAIN). 'too_large': the record is larger than the socket's send
 * buffer (EMSGSIZE): it can never be sent on this socket (see sizeFlowSocket).
 */
export type WriteRecordResult = 'sent' | 'full' | 'closed' | 'too_large';

/** Send one SDU as one record (tag + bytes). */
export function writeRecord(fd: number, sdu: Uint8Array): WriteRecordResult {
  const buf = scratchOf(sdu.byteLength + 1);
  buf[0] = RECORD_SDU;
  buf.set(sdu, 1);
  let n: number;
  try {
    n = native.sendMsg(fd, buf, 0, sdu.byteLength + 1, null);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ENOTCONN') return 'closed';
    if (code === 'EMSGSIZE') return 'too_large';
    throw e;
  }
  return n < 0 ? 'full' : 'sent';
}

/**
 * Records up to this size fit the default AF_UNIX send buffer (net.core.wmem_default, 208 KiB,
 * less the kernel's overhead) with room to spare: smaller flows keep the defaults.
 */
const DEFAULT_RECORD_ROOM = 128 * 1024;

/**
 * Give a flow socket send/receive buffers that fit one record of the flow's max SDU (SDU + tag),
 * for both ends of the pair. Unprivileged, the kernel caps the buffer at net.core.wmem_max:
 * returns false when a max-SDU record still does not fit (those SDUs are then refused: dropped
 * and counted by the bridge, `sdu_too_large` for the application's writes).
 */
export function sizeFlowSocket(fd: number, maxSdu: number): boolean {
  const record = maxSdu + 1;
  if (record <= DEFAULT_RECORD_ROOM) return true;
  // Linux doubles what is asked (half is bookkeeping) and wants 32 bytes of headroom per record.
  const granted = native.setSocketBuffers(fd, record + 4096);
  return granted - 32 >= record;
}

export type ReadRecordResult =
  | { kind: 'sdu'; sdu: Uint8Array }
  | { kind: 'empty' }
  | { kind: 'eof' }
  | { kind: 'bad'; why: string }
  /** The peer sent file descriptors with a record (they were closed unread, the record lost). */
  | { kind: 'fds' };

/**
 * Read one record whose SDU is at most `maxSdu` bytes. The SDU returned is a view of a shared
 * scratch buffer, valid until the next call: copy it (or hand it to something that copies).
 */
export function readRecord(fd: number, maxSdu: number): ReadRecordResult {
  const cap = maxSdu + 2; // tag + max SDU + 1 byte to notice a longer (truncated) record
  const buf = scratchOf(cap);
  let r;
  try {
    r = native.recvMsg(fd, buf, 0, cap, 0);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') return { kind: 'eof' };
    if (code === 'EMSGSIZE') return { kind: 'fds' };
    throw e;
  }
  if (r === null) return { kind: 'empty' };
  if (r.bytes === 0) return { kind: 'eof' };
  if (r.bytes >= cap) return { kind: 'bad', why: `record larger than the flow's max SDU of ${maxSdu} bytes` };
  if (buf[0] !== RECORD_SDU) return { kind: 'bad', why: `unknown record tag ${buf[0]}` };
  return { kind: 'sdu', sdu: buf.subarray(1, r.bytes) };
}


/** The flow's file was shut down (its end), or the device went away. */
const FILE_ENDED = new Set(['ESHUTDOWN', 'ENODEV', 'ENOTCONN', 'EPIPE']);

/** Write one SDU to a flow's /dev/vmpiN file (non-blocking). 'full': the tx ring has no room. */
export function writeVmpiFile(fd: number, sdu: Uint8Array): WriteRecordResult {
  try {
    writeSync(fd, sdu, 0, sdu.byteLength);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') return 'full';
    if (code !== undefined && FILE_ENDED.has(code)) return 'closed';
    throw e;
  }
  return 'sent';
}

/** Where the SDUs of one read of a flow's fd go: each SDU (bytes valid only during the call), or a bad record. */
export interface SduSink {
  sdu(sdu: Uint8Array): void;
  bad(why: string): void;
}

/** One read of a flow's fd: how many records it gave (≥ 0), or one of these. */
export const FLOW_READ_EMPTY = READ_EMPTY;
export const FLOW_READ_ENDED = READ_ENDED;

/** readRecord() as a batch of one, for the socket data path. */
export function readSocketBatch(fd: number, maxSdu: number, sink: SduSink): number {
  const r = readRecord(fd, maxSdu);
  if (r.kind === 'empty') return FLOW_READ_EMPTY;
  if (r.kind === 'eof') return FLOW_READ_ENDED;
  if (r.kind === 'bad') sink.bad(r.why);
  else if (r.kind === 'fds') sink.bad('the other end sent file descriptors with a record (closed, record dropped)');
  else sink.sdu(r.sdu);
  return 1;
}

let fileBuf: Uint8Array | null = null;

/**
 * One read of a flow's /dev/vmpiN file (non-blocking; in batch mode when `batch`, see
 * vmpi/guest-file.ts): every SDU goes to `sink`, an SDU longer than `maxSdu` (the peer broke
 * the flow's QoS) as bad. The end of the flow (ESHUTDOWN) and of the device read as ENDED.
 */
export function readVmpiFileBatch(fd: number, batch: boolean, maxSdu: number, sink: SduSink): number {
  fileBuf ??= new Uint8Array(CHANNEL_READ_BUFFER);
  const n = readChannelFile(fd, fileBuf, batch, (sdu) => {
    if (sdu.byteLength > maxSdu) sink.bad(`SDU of ${sdu.byteLength} bytes exceeds the flow's max SDU of ${maxSdu} bytes`);
    else sink.sdu(sdu);
  });
  return n === READ_GONE ? FLOW_READ_ENDED : n;
}

/** What the daemon holds for one flow of an application, whatever its data path. */
export interface FlowLink {
  readonly flow: Flow;
  /** The application asked to end the flow. */
  appDeallocate(reason: string): void;
  /** Tear down now (daemon shutdown, application gone): deallocates the flow too. */
  destroy(reason: string): void;
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
export type BridgeAbort = 'fds_on_flow_socket' | 'internal_error';

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
  /** SDUs from the flow waiting for room in the application's socket. */
  private pending: Uint8Array[] = [];
  /** An SDU from the application that flow.write() refused (a copy), resent on 'drain'. */
  private held: Uint8Array | null = null;
  private listening = false;
  private flowEnded = false;
  private closed = false;
  private lingerTimer: NodeJS.Timeout | null = null;
  /** Why the application ended the flow (its `deallocate` request), or why the bridge did. */
  private appReason: string | null = null;
  private readonly maxSdu: number;
  private warnedTooLarge = false;

  private readonly onData = (sdu: Uint8Array): void => this.guard('data', () => this.toApp(sdu));
  private readonly onDrain = (): void => this.guard('drain', () => this.retryHeld());
  private readonly onDeallocated = (reason: string, cause: DeallocationCause): void => this.guard('deallocated', () => this.flowEnd(reason, cause));

  constructor(
    readonly flow: Flow,
    readonly fd: number,
    private readonly hooks: BridgeHooks,
    private readonly log: Logger,
  ) {
    this.maxSdu = flow.qos.maxSdu;
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => this.guard('flow socket', () => this.onEvents(ev)));
    flow.on('deallocated', this.onDeallocated);
    flow.on('drain', this.onDrain);
    this.listen(true);
    if (flow.state === 'deallocated') this.flowEnd(flow.deallocationReason ?? 'deallocated', 'closed');
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
      if (!this.flowEnded) this.flow.deallocate(reason);
    } catch (e) {
      this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: deallocating a flow failed');
    }
    this.finish();
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
    this.stats.lost += this.pending.length;
    this.pending = [];
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
    if (on) this.flow.on('data', this.onData);
    else this.flow.off('data', this.onData);
  }

  private onEvents(ev: number): void {
    if (this.closed) return;
    if (ev < 0) {
      this.log.debug({ portId: this.flow.portId }, 'ipc: poll error on a flow socket');
      return this.appGone();
    }
    if (ev & native.UV_WRITABLE) this.flushPending();
    if (!this.closed && ev & native.UV_READABLE) this.readFromApp(READS_PER_TURN);
  }

  /** Flow → application. */
  private toApp(sdu: Uint8Array): void {
    if (this.closed) return;
    if (this.pending.length === 0) {
      const r = writeRecord(this.fd, sdu);
      if (r === 'sent') {
        this.stats.toApp++;
        return;
      }
      if (r === 'closed') return this.appGone();
      if (r === 'too_large') return this.tooLarge(sdu);
    }
    // The application's socket is full: keep this one, let the flow hold the next ones.
    this.pending.push(sdu);
    this.listen(false);
    this.interest.want(native.UV_WRITABLE, true);
  }

  /** An SDU the socket can never carry (its buffer is below the flow's max SDU): drop, count, say so once. */
  private tooLarge(sdu: Uint8Array): void {
    this.stats.tooLarge++;
    this.hooks.onTooLarge?.();
    if (this.warnedTooLarge) return;
    this.warnedTooLarge = true;
    this.log.warn(
      { portId: this.flow.portId, bytes: sdu.byteLength, maxSdu: this.maxSdu },
      "ipc: an SDU larger than the flow socket's buffer was dropped (raise net.core.wmem_max, run with CAP_NET_ADMIN, or use a smaller max SDU); counted in vmpi_ipc_sdus_dropped_total",
    );
  }

  private flushPending(): void {
    while (this.pending.length > 0) {
      const r = writeRecord(this.fd, this.pending[0]!);
      if (r === 'full') return;
      if (r === 'closed') return this.appGone();
      const sdu = this.pending.shift()!;
      if (r === 'too_large') this.tooLarge(sdu);
      else this.stats.toApp++;
    }
    this.interest.want(native.UV_WRITABLE, false);
    if (this.flowEnded) this.startDrainRest();
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
    while (!this.closed && this.pending.length === 0) {
      const sdu = await this.flow.read();
      if (this.closed) return;
      if (sdu === null) return this.finish();
      this.toApp(sdu);
    }
    // Otherwise flushPending() calls us again once the socket has room.
  }

  /** Application → flow. */
  private readFromApp(max: number): void {
    for (let i = 0; i < max && !this.closed && this.held === null; i++) {
      const r = readRecord(this.fd, this.maxSdu);
      if (r.kind === 'empty') return;
      if (r.kind === 'eof') return this.appGone();
      if (r.kind === 'fds') {
        this.log.warn({ portId: this.flow.portId }, 'ipc: an application sent file descriptors over its flow socket: flow closed');
        return this.abort('fds_on_flow_socket', 'the application sent file descriptors over its flow socket (SDUs only; the fds were closed): flow closed');
      }
      if (r.kind === 'bad') {
        this.stats.badRecords++;
        this.log.debug({ portId: this.flow.portId, why: r.why }, 'ipc: bad record from an application dropped');
        continue;
      }
      if (this.flowEnded) {
        this.stats.afterEnd++;
        continue;
      }
      let ok: boolean;
      try {
        ok = this.flow.write(r.sdu);
      } catch (e) {
        if (e instanceof DifError && (e.code === 'flow_deallocated' || e.code === 'port_down')) {
          this.stats.afterEnd++;
          continue;
        }
        if (e instanceof DifError && e.code === 'sdu_too_large') {
          this.stats.badRecords++;
          continue;
        }
        throw e;
      }
      if (ok) {
        this.stats.fromApp++;
      } else {
        // Not sent: keep a copy, stop reading so the application's socket fills up.
        this.held = r.sdu.slice();
        this.interest.want(native.UV_READABLE, false);
      }
    }
  }

  private retryHeld(): void {
    if (this.held === null || this.closed) return;
    if (this.flowEnded) {
      this.held = null;
      return;
    }
    let ok: boolean;
    try {
      ok = this.flow.write(this.held);
    } catch {
      this.held = null;
      return;
    }
    if (!ok) return; // still full: wait for the next 'drain'
    this.stats.fromApp++;
    this.held = null;
    this.interest.want(native.UV_READABLE, true);
  }

  private flowEnd(reason: string, cause: DeallocationCause): void {
    if (this.flowEnded) return;
    this.flowEnded = true;
    this.held = null;
    this.flow.off('drain', this.onDrain);
    this.hooks.onFlowEnd(this.appReason ?? reason, cause);
    if (this.closed) return;
    // Keep reading the application's socket only to notice it closing; its data is dropped.
    this.interest.want(native.UV_READABLE, true);
    this.lingerTimer = setTimeout(
      () =>
        this.guard('linger timer', () => {
          this.stats.lost += this.pending.length;
          this.finish();
        }),
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
    this.stats.lost += this.pending.length;
    this.pending = [];
    if (!this.flowEnded) this.flow.deallocate(this.appReason ?? 'the application closed the flow');
    this.finish();
  }

  /** Close our end; idempotent, and it completes whatever the Flow's listeners do. */
  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.interest.close();
    safeClose(this.fd);
    try {
      this.listening = false;
      this.flow.off('data', this.onData);
      this.flow.off('drain', this.onDrain);
      this.flow.off('deallocated', this.onDeallocated);
    } catch (e) {
      this.log.warn({ portId: this.flow.portId, err: errText(e) }, 'ipc: detaching from a flow failed');
    }
    this.hooks.onClosed();
  }
}

