/**
 * record.ts — the record codec of a flow's SOCK_SEQPACKET socket (the host data path, see
 * datapath.ts): one tag byte (RECORD_SDU) then the SDU, one record per SDU; reading and writing
 * one record, and sizing the socket's buffers so that a max-SDU record fits; and the batched
 * forms both ends use on their hot paths: readRecords (many records per recvmmsg, into one
 * shared buffer) and Outbox (SDUs accepted into a bounded queue, sent many per sendmmsg).
 */
import { native, records } from '../../sys/native.js';

export const RECORD_SDU = 0;

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

const EMPTY: ReadRecordResult = Object.freeze({ kind: 'empty' });
const EOF: ReadRecordResult = Object.freeze({ kind: 'eof' });

/**
 * Read one record whose SDU is at most `maxSdu` bytes. The SDU returned is a view of a shared
 * scratch buffer, valid until the next call: copy it (or hand it to something that copies).
 */
export function readRecord(fd: number, maxSdu: number): ReadRecordResult {
  const cap = maxSdu + 2; // tag + max SDU + 1 byte to notice a longer (truncated) record
  const buf = scratchOf(cap);
  let n: number;
  try {
    // recvBytes: no result object per record (this runs once per SDU, in the daemon and the client).
    n = native.recvBytes(fd, buf, 0, cap);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') return { kind: 'eof' };
    if (code === 'EMSGSIZE') return { kind: 'fds' };
    throw e;
  }
  if (n < 0) return EMPTY;
  if (n === 0) return EOF;
  if (n >= cap) return { kind: 'bad', why: `record larger than the flow's max SDU of ${maxSdu} bytes` };
  if (buf[0] !== RECORD_SDU) return { kind: 'bad', why: `unknown record tag ${buf[0]}` };
  return { kind: 'sdu', sdu: buf.subarray(1, n) };
}

// ---- batches: many records per system call (sendmmsg/recvmmsg, native.ts `records`) ----------

/**
 * Records (tag included) up to this size go through an Outbox's batches; larger ones are sent
 * alone, at once, so that a record the socket can never carry (EMSGSIZE, see sizeFlowSocket) is
 * known to the writer when it writes, as before batching.
 */
export const BATCH_RECORD_MAX = 64 * 1024 + 1;
/** Records per sendmmsg/recvmmsg call (the addon's limit). */
const CALL_RECORDS = 256;
/** The shared receive buffer: slots of max SDU + 1 bytes, as many as fit (at least one). */
const RECV_BUFFER_BYTES = 2 * 1024 * 1024;

/** readRecords(): nothing queued now. */
export const RECORDS_EMPTY = -1;
/** readRecords(): the other end closed: nothing more will come. */
export const RECORDS_ENDED = -2;

/**
 * Where readRecords() puts what it read; `sdu` bytes are a view valid only during the call, or
 * a copy of its own when the sink says `copies` (one allocation per SDU instead of a view and a copy).
 */
export interface RecordSink {
  readonly copies?: boolean;
  sdu(sdu: Uint8Array): void;
  bad(why: string): void;
  /** A record came with fds (the kernel closed them, the record is dropped). */
  fds(): void;
}

let recvBuf: Uint8Array | null = null;
let recvBusy = false;
const recvLengths = new Int32Array(CALL_RECORDS);

/**
 * Read up to `max` records (≥ 1) of SDUs of at most `maxSdu` bytes with one recvmmsg, into a
 * buffer shared by every flow of the process, and hand each to `sink` in order. Returns how many
 * records it read, RECORDS_EMPTY, or RECORDS_ENDED (the records before the end, if any, went
 * to `sink` first). A record longer than max SDU (cut by the kernel,
 * MSG_TRUNC), or of an unknown tag, goes to `sink.bad`; one that came with fds to `sink.fds`.
 */
export function readRecords(fd: number, maxSdu: number, max: number, sink: RecordSink): number {
  const slot = maxSdu + 1;
  const slots = Math.max(1, Math.min(max, CALL_RECORDS, Math.floor(RECV_BUFFER_BYTES / slot)));
  // A sink that reads another flow from inside its callback gets a buffer of its own (rare).
  const nested = recvBusy;
  let buf: Uint8Array;
  if (nested) buf = new Uint8Array(slots * slot);
  else {
    if (recvBuf === null || recvBuf.byteLength < slots * slot) recvBuf = new Uint8Array(Math.max(slots * slot, Math.min(RECV_BUFFER_BYTES, 64 * 1024)));
    buf = recvBuf;
  }
  const lengths = nested ? new Int32Array(slots) : recvLengths;
  let n: number;
  try {
    n = records.recvRecords(fd, buf, slot, slots, lengths);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') return RECORDS_ENDED;
    throw e;
  }
  if (n < 0) return RECORDS_EMPTY;
  if (!nested) recvBusy = true;
  const copies = sink.copies === true;
  try {
    for (let k = 0; k < n; k++) {
      const len = lengths[k]!;
      // End of file (or an untagged 0-byte record, which only a broken peer sends: the same).
      if (len === 0) return RECORDS_ENDED;
      if (len < 0) sink.fds();
      else if (len > slot) sink.bad(`record larger than the flow's max SDU of ${maxSdu} bytes`);
      else {
        const at = k * slot;
        if (buf[at] !== RECORD_SDU) sink.bad(`unknown record tag ${buf[at]}`);
        else sink.sdu(copies ? buf.slice(at + 1, at + len) : buf.subarray(at + 1, at + len));
      }
    }
  } finally {
    if (!nested) recvBusy = false;
  }
  return n;
}

/** Outbox.offer(): queued (sent by the next flush), sent at once (a large record), or not taken. */
export type OfferResult = 'queued' | 'sent' | 'full' | 'closed' | 'too_large';
/** Outbox.flush(): everything went; the socket is full (the rest kept: flush again once writable); the other end is gone. */
export type FlushResult = 'done' | 'full' | 'closed';

export interface OutboxHooks {
  /** `n` records left for the socket. */
  onSent(n: number): void;
  /** A queued record the socket can never carry (EMSGSIZE) was dropped. */
  onTooLarge(bytes: number): void;
}

/**
 * The records a writer has accepted but not yet sent on one flow socket: SDUs copied in (tag
 * and bytes, one after the other in one buffer), sent in batches by flush() (sendmmsg). Bounded:
 * at most `maxRecords` records and `maxBytes` bytes; offer() flushes when the bound is reached
 * and says 'full' only when the socket takes nothing more. What flush() could not send (EAGAIN
 * midway) stays, in order, for the next flush. 0-byte SDUs are records of one byte (the tag).
 */
export class Outbox {
  private buf: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  /** Records [head, tail) are queued, their bytes [offsets[head], end). */
  private head = 0;
  private tail = 0;
  private end = 0;

  constructor(
    private readonly fd: number,
    private readonly hooks: OutboxHooks,
    private readonly maxRecords = 256,
    private readonly maxBytes = 256 * 1024,
  ) {
    this.buf = new Uint8Array(Math.min(16 * 1024, maxBytes));
    this.offsets = new Uint32Array(maxRecords);
    this.lengths = new Uint32Array(maxRecords);
  }

  /** Records queued. */
  get length(): number {
    return this.tail - this.head;
  }

  /** Bytes queued (tags included). */
  get bytes(): number {
    return this.length === 0 ? 0 : this.end - this.offsets[this.head]!;
  }

  /** Take one SDU: copied into the queue, or (a large one, only with nothing queued) sent at once. */
  offer(sdu: Uint8Array): OfferResult {
    const need = sdu.byteLength + 1;
    if (need > BATCH_RECORD_MAX) {
      if (this.length > 0) {
        const r = this.flush();
        if (r !== 'done') return r;
      }
      const w = writeRecord(this.fd, sdu);
      if (w === 'sent') this.hooks.onSent(1);
      return w;
    }
    if (this.tail === this.maxRecords || this.bytes + need > this.maxBytes) {
      const r = this.flush();
      if (r !== 'done') return r;
    }
    if (this.end + need > this.buf.byteLength) this.makeRoom(need);
    const at = this.end;
    this.buf[at] = RECORD_SDU;
    this.buf.set(sdu, at + 1);
    this.offsets[this.tail] = at;
    this.lengths[this.tail] = need;
    this.tail++;
    this.end = at + need;
    return 'queued';
  }

  /** Send what is queued, in batches, until done or the socket is full. */
  flush(): FlushResult {
    while (this.head < this.tail) {
      let n: number;
      try {
        n = records.sendRecords(this.fd, this.buf, this.offsets, this.lengths, this.head, Math.min(CALL_RECORDS, this.tail - this.head));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ENOTCONN') return 'closed';
        if (code !== 'EMSGSIZE') throw e;
        this.hooks.onTooLarge(this.lengths[this.head]! - 1);
        n = 0;
        this.head++;
      }
      if (n < 0) return 'full';
      this.head += n;
      if (n > 0) this.hooks.onSent(n);
    }
    this.head = this.tail = this.end = 0;
    return 'done';
  }

  /** Drop what is queued (the socket is gone); returns how many records. */
  discard(): number {
    const n = this.length;
    this.head = this.tail = this.end = 0;
    return n;
  }

  /** Room for `need` more bytes at the end: move the queued records to the front, then grow. */
  private makeRoom(need: number): void {
    if (this.head > 0) {
      const base = this.length > 0 ? this.offsets[this.head]! : this.end;
      const count = this.length;
      this.buf.copyWithin(0, base, this.end);
      for (let k = 0; k < count; k++) {
        this.offsets[k] = this.offsets[this.head + k]! - base;
        this.lengths[k] = this.lengths[this.head + k]!;
      }
      this.end -= base;
      this.head = 0;
      this.tail = count;
    }
    if (this.end + need > this.buf.byteLength) {
      let size = this.buf.byteLength;
      while (size < this.end + need) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.buf.subarray(0, this.end));
      this.buf = grown;
    }
  }
}
