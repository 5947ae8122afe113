/**
 * endpoint.ts — the socket end of one vhost-user connection: framing in, queued replies out.
 *
 * Owns: the connected socket and its watcher, cutting the byte stream into messages (header,
 * payload, and the fds that arrived with them, in arrival order), and a non-blocking output
 * queue: a reply goes out at once when the socket takes it, the rest waits for the socket to turn
 * writable. The queue has a byte budget: a front-end that sends requests but never reads the
 * replies gets its connection closed with a reason saying so, instead of growing our memory.
 * At most `messagesPerTurn` requests are read per event-loop turn; the rest wait for the next
 * turn (the watcher is level-triggered), so one busy front-end cannot starve other connections.
 * What the messages mean is the dispatcher's business (dispatch.ts).
 */
import { errnoCode, errText, safeClose } from '../sys/fd.js';
import { native, type FdEventsWatcher } from '../sys/native.js';
import { ConnectionError, VhostUserError } from './errors.js';
import { decodeRequestHeader, encodeReply, type Header, type Message } from './messages.js';
import { HEADER_SIZE, MAX_FDS_PER_MESSAGE, requestName } from './protocol.js';

/** Why a connection ended: a fixed set, so it can label metrics. */
export type DisconnectCause = 'peer_closed' | 'shutdown' | 'protocol_error' | 'internal_error' | 'io_error';

/** Default bytes of unsent replies one front-end may leave queued (replies are tens of bytes). */
export const DEFAULT_OUTPUT_BUDGET = 64 * 1024;
/** Default requests read per event-loop turn before yielding to other connections. */
export const DEFAULT_MESSAGES_PER_TURN = Infinity;

export interface EndpointOptions {
  /** Bytes of replies that may wait for a front-end that does not read (default 64 KiB). */
  outputBudget?: number;
  /** Requests handled per event-loop turn before yielding (default: no limit). */
  messagesPerTurn?: number;
}

export interface EndpointOwner {
  /** One whole request; its fds are the owner's from here on. */
  message(msg: Message): void;
  /** The endpoint cannot go on (peer gone, unframeable stream, I/O error, budget): close. */
  fail(reason: string, cause: DisconnectCause): void;
  /** Run an event-loop callback; what it throws closes the connection. */
  guarded(what: string, fn: () => void): void;
  isClosed(): boolean;
}

export class Endpoint {
  private readonly watcher: FdEventsWatcher;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private payload = new Uint8Array(0);
  private pendingHeader: Header | null = null;
  private got = 0;
  private fds: number[] = [];
  private readonly out: Uint8Array[] = [];
  private outOff = 0;
  private outBytes = 0;
  private writable = false;
  private closed = false;
  private readonly outputBudget: number;
  private readonly messagesPerTurn: number;

  constructor(
    readonly fd: number,
    private readonly owner: EndpointOwner,
    opts: EndpointOptions = {},
  ) {
    this.outputBudget = opts.outputBudget ?? DEFAULT_OUTPUT_BUDGET;
    this.messagesPerTurn = opts.messagesPerTurn ?? DEFAULT_MESSAGES_PER_TURN;
    this.watcher = native.watchFd(fd, native.UV_READABLE | native.UV_DISCONNECT, (events) => owner.guarded('socket watcher', () => this.onEvents(events)));
    this.watcher.start();
  }

  /** Bytes of replies waiting for the socket. */
  get queuedBytes(): number {
    return this.outBytes;
  }

  /** Queue a reply to `request`; sent now if the socket takes it, else when it turns writable. */
  send(request: number, payload?: Uint8Array): void {
    if (this.closed) return;
    const buf = encodeReply(request, payload);
    if (this.outBytes + buf.byteLength > this.outputBudget) {
      const e = new ConnectionError(
        `front-end does not read its replies: ${this.outBytes} bytes unread and ${requestName(request)}'s reply would exceed the budget of ${this.outputBudget} bytes; closing the connection`,
        'replies_not_read',
      );
      return this.owner.fail(e.message, 'io_error');
    }
    this.out.push(buf);
    this.outBytes += buf.byteLength;
    this.flush();
  }

  /** Stop watching, close nothing (restart hand-over: another process takes the socket). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
  }

  /** Stop watching and close the socket and any fds of a half-read message. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.watcher.close();
    } finally {
      for (const fd of this.fds.splice(0)) safeClose(fd);
      this.out.length = 0;
      this.outBytes = 0;
      safeClose(this.fd);
    }
  }

  private onEvents(events: number): void {
    if (this.closed) return;
    if (events < 0) {
      // The poll saw an error on the socket (the watcher is stopped now). Reading surfaces which:
      // a front-end killed with our replies unread resets the socket (ECONNRESET, it left).
      this.readMessages();
      if (!this.closed && !this.owner.isClosed()) this.owner.fail('socket error', 'io_error');
      return;
    }
    if (events & native.UV_WRITABLE) this.flush();
    if (this.closed) return;
    if (events & (native.UV_READABLE | native.UV_DISCONNECT)) this.readMessages();
  }

  private flush(): void {
    try {
      while (this.out.length > 0) {
        const head = this.out[0]!;
        const n = native.sendMsg(this.fd, head, this.outOff, head.byteLength - this.outOff, null);
        if (n < 0) break; // EAGAIN: wait for writable
        this.outOff += n;
        this.outBytes -= n;
        if (this.outOff === head.byteLength) {
          this.out.shift();
          this.outOff = 0;
        }
      }
    } catch (e) {
      return this.owner.fail(`cannot send a reply to the front-end: ${errText(e)}`, 'io_error');
    }
    const want = this.out.length > 0;
    if (want !== this.writable && !this.closed) {
      this.writable = want;
      this.watcher.start(native.UV_READABLE | native.UV_DISCONNECT | (want ? native.UV_WRITABLE : 0));
    }
  }

  /**
   * Keep the fds that came with a piece of the message being read. A message may carry at most
   * MAX_FDS_PER_MESSAGE in all: a front-end that sends a message in many small pieces, each with
   * fds, would otherwise make us hold fds without a bound until it completes. False: closed.
   */
  private takeFds(fds: number[]): boolean {
    this.fds.push(...fds);
    if (this.fds.length <= MAX_FDS_PER_MESSAGE) return true;
    const n = this.fds.length;
    for (const fd of this.fds.splice(0)) safeClose(fd);
    this.owner.fail(`front-end sent ${n} fds with one message; a message carries at most ${MAX_FDS_PER_MESSAGE}`, 'protocol_error');
    return false;
  }

  /** Read and hand on up to `messagesPerTurn` whole messages; the rest wait for the next turn. */
  private readMessages(): void {
    try {
      for (let handled = 0; handled < this.messagesPerTurn; ) {
        if (!this.pendingHeader) {
          const r = native.recvMsg(this.fd, this.header, this.got, HEADER_SIZE - this.got, MAX_FDS_PER_MESSAGE);
          if (r === null) return;
          if (r.bytes === 0) return this.owner.fail('front-end closed the socket', 'peer_closed');
          if (!this.takeFds(r.fds)) return;
          this.got += r.bytes;
          if (this.got < HEADER_SIZE) continue;
          this.pendingHeader = decodeRequestHeader(this.header);
          this.got = 0;
          if (this.payload.byteLength < this.pendingHeader.size) this.payload = new Uint8Array(this.pendingHeader.size);
        }
        const h = this.pendingHeader;
        if (this.got < h.size) {
          const r = native.recvMsg(this.fd, this.payload, this.got, h.size - this.got, MAX_FDS_PER_MESSAGE);
          if (r === null) return;
          if (r.bytes === 0) return this.owner.fail('front-end closed the socket in the middle of a message', 'peer_closed');
          if (!this.takeFds(r.fds)) return;
          this.got += r.bytes;
          if (this.got < h.size) continue;
        }
        const msg: Message = { ...h, payload: this.payload.subarray(0, h.size), fds: this.fds };
        this.pendingHeader = null;
        this.got = 0;
        this.fds = [];
        handled++;
        this.owner.message(msg);
        if (this.owner.isClosed() || this.closed) return;
      }
    } catch (e) {
      // A front-end killed with our replies unread resets the socket: it left, nothing broke.
      if (errnoCode(e) === 'ECONNRESET') return this.owner.fail('front-end closed the socket (connection reset)', 'peer_closed');
      // Framing errors (bad header, recvmsg failure) leave the stream unusable.
      this.owner.fail(errText(e), e instanceof VhostUserError ? 'protocol_error' : 'io_error');
    }
  }
}
