/**
 * conn.ts — one end of an IPC control connection (a non-blocking Unix stream socket): frames in
 * (protocol.ts: u32 length + JSON), frames out with optional fds (SCM_RIGHTS), an output queue
 * for when the socket is full, and the fds that arrive, in order.
 *
 * Fds: Linux hands an fd to the recvmsg that reads the first byte sent with it, so by the time a
 * whole frame is parsed, the fd sent with it is in `fds` (a FIFO); the consumer of a message that
 * carries one takes it with `takeFd()`. Fds nobody took are closed with the connection.
 * Outgoing fds may be given to close after sending (the daemon's copy of a flow's app end).
 */
import { EventEmitter } from 'node:events';
import { native } from '../../native.js';
import { FdInterest } from './fd-interest.js';
import { MAX_MESSAGE_BYTES, decodeBody, encodeFrame, IpcProtocolError } from './protocol.js';

export interface FramedConnEvents {
  /** One decoded, version-checked frame body. */
  message: [msg: Record<string, unknown>];
  /** A frame that was not readable (the connection stays up). */
  malformed: [error: IpcProtocolError];
  /** The connection ended (peer closed, error, or close()). Emitted once. */
  close: [reason: string];
}

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

  /** `maxFds`: fds accepted per recvmsg (0 = none: a peer sending fds is dropped). */
  constructor(
    readonly fd: number,
    private readonly maxFds: number,
  ) {
    super();
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => this.onEvents(ev));
  }

  get closed(): boolean {
    return this._closed;
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
    this.out.push({ buf: encodeFrame(msg), off: 0, fds, closeFds: closeFdsAfterSend });
    if (this.out.length === 1) this.flush();
    return !this._closed;
  }

  close(reason = 'closed'): void {
    if (this._closed) return;
    this._closed = true;
    this.interest.close();
    safeClose(this.fd);
    for (const c of this.out) if (c.closeFds && c.fds) for (const fd of c.fds) safeClose(fd);
    this.out.length = 0;
    for (const fd of this.fdQueue) safeClose(fd);
    this.fdQueue.length = 0;
    this.emit('close', reason);
  }

  private onEvents(ev: number): void {
    if (this._closed) return;
    if (ev < 0) return this.close('poll error on the control socket');
    if (ev & native.UV_WRITABLE) this.flush();
    if (!this._closed && ev & (native.UV_READABLE | native.UV_DISCONNECT)) this.readSome();
  }

  private flush(): void {
    while (this.out.length > 0 && !this._closed) {
      const c = this.out[0]!;
      let n: number;
      try {
        n = native.sendMsg(this.fd, c.buf, c.off, c.buf.byteLength - c.off, c.off === 0 ? c.fds : null);
      } catch (e) {
        return this.close(`send failed: ${(e as Error).message}`);
      }
      if (n < 0) break;
      if (c.off === 0 && c.closeFds && c.fds) {
        for (const fd of c.fds) safeClose(fd);
        c.closeFds = false;
      }
      c.off += n;
      if (c.off >= c.buf.byteLength) this.out.shift();
    }
    if (this._closed) return;
    this.interest.set(this.out.length > 0 ? native.UV_READABLE | native.UV_WRITABLE : native.UV_READABLE);
  }

  private readSome(): void {
    for (let i = 0; i < READS_PER_TURN && !this._closed; i++) {
      let r;
      try {
        r = native.recvMsg(this.fd, this.readBuf, 0, READ_CHUNK, this.maxFds);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EMSGSIZE' && this.maxFds === 0) return this.close('the peer sent file descriptors, which this end does not accept');
        return this.close(`receive failed: ${err.message}`);
      }
      if (r === null) return;
      this.fdQueue.push(...r.fds);
      if (r.bytes === 0) return this.close('peer closed the connection');
      this.inBuf = this.inBuf.byteLength === 0 ? Buffer.from(this.readBuf.subarray(0, r.bytes)) : Buffer.concat([this.inBuf, this.readBuf.subarray(0, r.bytes)]);
      this.parse();
    }
  }

  private parse(): void {
    let off = 0;
    while (!this._closed && this.inBuf.byteLength - off >= 4) {
      const len = this.inBuf.readUInt32BE(off);
      if (len === 0 || len > MAX_MESSAGE_BYTES) {
        this.emit('malformed', new IpcProtocolError(`bad frame length ${len} (1..${MAX_MESSAGE_BYTES}); closing`));
        return this.close(`bad frame length ${len}`);
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
    }
    this.inBuf = off >= this.inBuf.byteLength ? Buffer.alloc(0) : this.inBuf.subarray(off);
  }
}

export function safeClose(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // already closed: nothing to release
  }
}
