/**
 * conn.ts — one end of an IPC control connection (a non-blocking Unix stream socket): frames in
 * (protocol.ts: u32 length + JSON), frames out with optional fds (SCM_RIGHTS), an output queue
 * for when the socket is full, and the fds that arrive, in order.
 *
 * Fds: Linux hands an fd to the recvmsg that reads the first byte sent with it, so by the time a
 * whole frame is parsed, the fd sent with it is in `fds` (a FIFO); the consumer of a message that
 * carries one takes it with `takeFd()`. Fds nobody took are closed with the connection.
 * Outgoing fds may be given to close after sending (the daemon's copy of a flow's app end).
 *
 * Output budget (bytes): a peer that sends requests and never reads the answers must not grow
 * us. Past `outputHighWater` queued bytes the connection stops reading (and parsing what it has
 * read): the peer's requests wait in its own socket until it reads; below `outputLowWater` reading
 * resumes. Events not caused by requests (flow requests, flow ends) can still queue; past
 * `outputLimit` the connection is closed with a reason ('output_limit').
 *
 * Containment: the fd callback runs guarded: an exception from it, or from a 'message' listener,
 * closes this connection with the reason (and is logged by whoever listens to 'close').
 *
 * Restart (the IPC daemon's snapshot.ts): the stream is in step when nothing read is unparsed
 * and nothing queued is unsent, i.e. a successor process reading the same socket starts at a
 * frame boundary both ways and no answer is lost. `step` says whether it is ('in_step'), or
 * what breaks it: 'mid_request' (bytes read and not yet parsed: a request half read, or read
 * while paused), 'answers_pending' (frames queued and not sent; the peer's stream may stop
 * mid-frame). `onStepChange` is called when it changes (rare: a frame split across reads, or a peer whose socket is full), so
 * the owner can persist it cheaply. `abandon()` stops watching without closing anything.
 */
import { EventEmitter } from 'node:events';
import { safeClose } from '../../sys/fd.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import { MAX_MESSAGE_BYTES, decodeBody, encodeFrame, IpcProtocolError } from './protocol.js';

export interface FramedConnEvents {
  /** One decoded, version-checked frame body. */
  message: [msg: Record<string, unknown>];
  /** A frame that was not readable (the connection stays up). */
  malformed: [error: IpcProtocolError];
  /** The connection ended (peer closed, error, or close()). Emitted once. */
  close: [reason: string, cause: ConnCloseCause];
}

/** Why a connection ended: the peer went, it broke the protocol, we ran out of budget, a fault, or close(). */
export type ConnCloseCause = 'peer_closed' | 'protocol_error' | 'output_limit' | 'internal_error' | 'io_error' | 'local';

export interface FramedConnOptions {
  /** Queued output bytes past which reading stops (default 256 KiB). */
  outputHighWater?: number;
  /** Queued output bytes below which reading resumes (default high water / 4). */
  outputLowWater?: number;
  /** Queued output bytes past which the connection is closed (default 4 × high water). */
  outputLimit?: number;
  /** Called when `step` changes (see the file comment); must not throw into us (guarded). */
  onStepChange?: (step: StreamStep) => void;
}

/** Whether a successor could carry the stream on (see the file comment). */
export type StreamStep = 'in_step' | 'mid_request' | 'answers_pending';

export const DEFAULT_OUTPUT_HIGH_WATER = 256 * 1024;

interface OutChunk {
  buf: Buffer;
  off: number;
  fds: number[] | null;
  closeFds: boolean;
}

const READ_CHUNK = 65536;
const READS_PER_TURN = 16;

export class FramedConn extends EventEmitter<FramedConnEvents> {
  private readonly interest: FdInterest;
  private inBuf: Buffer = Buffer.alloc(0);
  private readonly readBuf = Buffer.allocUnsafe(READ_CHUNK);
  private readonly out: OutChunk[] = [];
  private readonly fdQueue: number[] = [];
  private _closed = false;
  private outBytes = 0;
  /** Reading stopped until the output queue drains below the low water mark. */
  private paused = false;
  private resumeScheduled = false;
  private readonly highWater: number;
  private readonly lowWater: number;
  private readonly outputLimit: number;
  private readonly onStepChange: ((step: StreamStep) => void) | undefined;
  private lastStep: StreamStep = 'in_step';

  /** `maxFds`: fds accepted per recvmsg (0 = none: a peer sending fds is dropped). */
  constructor(
    readonly fd: number,
    private readonly maxFds: number,
    opts: FramedConnOptions = {},
  ) {
    super();
    this.highWater = opts.outputHighWater ?? DEFAULT_OUTPUT_HIGH_WATER;
    this.lowWater = opts.outputLowWater ?? Math.floor(this.highWater / 4);
    this.outputLimit = Math.max(opts.outputLimit ?? 4 * this.highWater, this.highWater + MAX_MESSAGE_BYTES + 4);
    this.onStepChange = opts.onStepChange;
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => this.onEvents(ev));
  }

  /** Bytes queued for the peer (not yet accepted by its socket). */
  get queuedBytes(): number {
    return this.outBytes;
  }

  /** True while reading is stopped because the peer does not read its answers. */
  get readPaused(): boolean {
    return this.paused;
  }

  get closed(): boolean {
    return this._closed;
  }

  /** Whether nothing read is unparsed and nothing queued is unsent (see the file comment). */
  get step(): StreamStep {
    if (this.out.length > 0) return 'answers_pending';
    return this.inBuf.byteLength === 0 ? 'in_step' : 'mid_request';
  }

  /**
   * Stop watching the socket and let go of everything without closing any fd or emitting
   * 'close': what a crash does (a successor process carries on with the same socket).
   */
  abandon(): void {
    if (this._closed) return;
    this._closed = true;
    this.interest.close();
    this.out.length = 0;
    this.fdQueue.length = 0;
    this.outBytes = 0;
  }

  /** Report a change of step (guarded). */
  private checkStep(): void {
    if (this._closed || this.onStepChange === undefined) return;
    const now = this.step;
    if (now === this.lastStep) return;
    this.lastStep = now;
    try {
      this.onStepChange(now);
    } catch {
      // the owner's problem; never ours
    }
  }

  /** Take the oldest fd that arrived and nobody took yet; null when none. */
  takeFd(): number | null {
    return this.fdQueue.shift() ?? null;
  }

  /** Send one message; `fds` go with its first byte. Returns false when the connection is closed. */
  send(msg: object, fds: number[] | null = null, closeFdsAfterSend = false): boolean {
    if (this._closed) {
      if (closeFdsAfterSend && fds) for (const fd of fds) safeClose(fd);
      return false;
    }
    const buf = encodeFrame(msg);
    if (this.outBytes + buf.byteLength > this.outputLimit) {
      if (closeFdsAfterSend && fds) for (const fd of fds) safeClose(fd);
      this.close(`the application does not read its answers: more than ${this.outputLimit} bytes queued for it`, 'output_limit');
      return false;
    }
    this.out.push({ buf, off: 0, fds, closeFds: closeFdsAfterSend });
    this.outBytes += buf.byteLength;
    if (this.out.length === 1) this.flush();
    else this.updateInterest();
    return !this._closed;
  }

  close(reason = 'closed', cause: ConnCloseCause = 'local'): void {
    if (this._closed) return;
    this._closed = true;
    this.interest.close();
    safeClose(this.fd);
    for (const c of this.out) if (c.closeFds && c.fds) for (const fd of c.fds) safeClose(fd);
    this.out.length = 0;
    for (const fd of this.fdQueue) safeClose(fd);
    this.fdQueue.length = 0;
    this.outBytes = 0;
    this.emit('close', reason, cause);
  }

  private onEvents(ev: number): void {
    try {
      if (this._closed) return;
      if (ev < 0) {
        // E.g. ECONNRESET: what the peer sent before it went is still readable (a refusal's reason).
        this.readSome();
        return this.close('poll error on the control socket', 'io_error');
      }
      if (ev & native.UV_WRITABLE) this.flush();
      if (!this._closed && !this.paused && ev & (native.UV_READABLE | native.UV_DISCONNECT)) this.readSome();
    } catch (e) {
      this.fault(e);
    }
  }

  /** An exception in our callback (or a listener of ours): this connection ends, nothing else. */
  private fault(e: unknown): void {
    const msg = e instanceof Error ? e.message : String(e);
    if (!this._closed) this.close(`internal error: ${msg}`, 'internal_error');
  }

  private updateInterest(): void {
    if (this._closed) return;
    if (!this.paused && this.outBytes >= this.highWater) this.paused = true;
    const resume = this.paused && this.outBytes <= this.lowWater;
    if (resume) this.paused = false;
    const r = this.paused ? 0 : native.UV_READABLE;
    this.interest.set(this.out.length > 0 ? r | native.UV_WRITABLE : r);
    // What was read but not parsed while paused: parse it on a later turn (never from inside a
    // send(), which may run while parse() is on the stack).
    if (resume && this.inBuf.byteLength > 0 && !this.resumeScheduled) {
      this.resumeScheduled = true;
      setImmediate(() => {
        this.resumeScheduled = false;
        try {
          if (!this._closed && !this.paused) this.parse();
        } catch (e) {
          this.fault(e);
        }
      });
    }
  }

  private flush(): void {
    while (this.out.length > 0 && !this._closed) {
      const c = this.out[0]!;
      let n: number;
      try {
        n = native.sendMsg(this.fd, c.buf, c.off, c.buf.byteLength - c.off, c.off === 0 ? c.fds : null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const peer = code === 'EPIPE' || code === 'ECONNRESET';
        return this.close(peer ? 'peer closed the connection' : `send failed: ${(e as Error).message}`, peer ? 'peer_closed' : 'io_error');
      }
      if (n < 0) break;
      if (c.off === 0 && c.closeFds && c.fds) {
        for (const fd of c.fds) safeClose(fd);
        c.closeFds = false;
      }
      c.off += n;
      this.outBytes -= n;
      if (c.off >= c.buf.byteLength) this.out.shift();
    }
    this.updateInterest();
    this.checkStep();
  }

  private readSome(): void {
    for (let i = 0; i < READS_PER_TURN && !this._closed && !this.paused; i++) {
      let r;
      try {
        r = native.recvMsg(this.fd, this.readBuf, 0, READ_CHUNK, this.maxFds);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EMSGSIZE' && this.maxFds === 0) return this.close('the peer sent file descriptors, which this end does not accept', 'protocol_error');
        if (err.code === 'ECONNRESET') return this.close('peer closed the connection', 'peer_closed');
        return this.close(`receive failed: ${err.message}`, 'io_error');
      }
      if (r === null) return;
      this.fdQueue.push(...r.fds);
      if (r.bytes === 0) return this.close('peer closed the connection', 'peer_closed');
      this.inBuf = this.inBuf.byteLength === 0 ? Buffer.from(this.readBuf.subarray(0, r.bytes)) : Buffer.concat([this.inBuf, this.readBuf.subarray(0, r.bytes)]);
      this.parse();
    }
    this.checkStep();
  }

  private parse(): void {
    let off = 0;
    while (!this._closed && !this.paused && this.inBuf.byteLength - off >= 4) {
      const len = this.inBuf.readUInt32BE(off);
      if (len === 0 || len > MAX_MESSAGE_BYTES) {
        this.emit('malformed', new IpcProtocolError(`bad frame length ${len} (1..${MAX_MESSAGE_BYTES}); closing`));
        return this.close(`bad frame length ${len}`, 'protocol_error');
      }
      if (this.inBuf.byteLength - off - 4 < len) break;
      const body = this.inBuf.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      let msg: Record<string, unknown>;
      try {
        msg = decodeBody(body);
      } catch (e) {
        if (!(e instanceof IpcProtocolError)) throw e;
        this.emit('malformed', e);
        continue;
      }
      this.emit('message', msg);
      // Answers queued past the high water mark: stop here, the rest waits (paused).
      if (!this.paused && this.outBytes >= this.highWater) this.updateInterest();
    }
    if (this._closed) return;
    this.inBuf = off >= this.inBuf.byteLength ? Buffer.alloc(0) : this.inBuf.subarray(off);
    this.checkStep();
  }
}
