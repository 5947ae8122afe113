/**
 * record.ts — the record codec of a flow's SOCK_SEQPACKET socket (the host data path, see
 * datapath.ts): one tag byte (RECORD_SDU) then the SDU, one record per SDU; reading and writing
 * one record, and sizing the socket's buffers so that a max-SDU record fits; and the batched
 * forms both ends use on their hot paths: readRecords (many records per recvmmsg, into one
 * shared buffer) and Outbox (SDUs accepted into a bounded queue, sent many per sendmmsg).
 */
import { native, records } from '../../sys/native.js';

export const RECORD_SDU = 0;
/**
 * A packed record: tag, then SDUs each as a u32 (little-endian) length and its bytes, in order.
 * Sent only to a peer that announced it reads them (RECORD_HELLO, or a packed record of its own):
 * an older peer counts any other tag as a bad record and drops it.
 */
export const RECORD_SDUS = 1;
/** "I read packed records": one byte, the tag (a peer that does not know it drops it as bad). */
export const RECORD_HELLO = 2;
/**
 * "Look at the ring": one byte, the tag, on a flow whose SDUs travel in a shared-memory ring
 * (ring.ts); sent only on such flows, where both ends read it.
 */
export const RECORD_BELL = 3;
/** A packed record's size at most (tag included): fits any flow socket's default buffers. */
export const PACK_RECORD_MAX = 16 * 1024;
/** SDUs in one packed record at most (bounds the read-ahead one record can bring). */
export const PACK_SDUS_MAX = 64;

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
  // Room for FLOW_RECORDS_IN_FLIGHT max-SDU records, at most FLOW_SOCKET_MAX_BYTES (the kernel doubles both): with the
  // default buffer (208 KiB) a flow of 64 KiB SDUs holds 3, and its writer meets a full socket
  // (EAGAIN, a wait for writable, a wakeup) every 3 SDUs (issue #15). Best effort: unprivileged,
  // the kernel caps it at net.core.wmem_max.
  const want = Math.min(FLOW_RECORDS_IN_FLIGHT * (record + 32), FLOW_SOCKET_MAX_BYTES);
  if (record <= DEFAULT_RECORD_ROOM && want <= DEFAULT_RECORD_ROOM) return true;
  // Linux doubles what is asked (half is bookkeeping) and wants 32 bytes of headroom per record.
  const granted = native.setSocketBuffers(fd, Math.max(record + 4096, want));
  return granted - 32 >= record;
}

/** Max-SDU records a flow socket should hold (sizeFlowSocket). */
const FLOW_RECORDS_IN_FLIGHT = 8;
/** What sizeFlowSocket asks for at most (the kernel doubles it). */
const FLOW_SOCKET_MAX_BYTES = 512 * 1024;

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
  /**
   * Optional: SDUs go here as offsets into the read buffer (one batch for the whole call, valid
   * until the next read), not to sdu() (copies is then ignored); one it has no room for goes to sdu().
   */
  readonly into?: RecordBatch | undefined;
  /**
   * Optional (a flow ring's reader only, ring.ts; without `into` or `copies`): sdu() may be handed
   * a view of the ring's shared memory itself, valid during the call, whose bytes the peer may
   * change meanwhile (changing only its own SDU): the sink copies what it keeps and never reads
   * the bytes twice expecting the same. Saves the reader's copy into a private buffer.
   */
  readonly shared?: boolean;
  /**
   * Optional (a flow ring's reader only, ring.ts, with `into`): the batch may hold offsets into the
   * ring's shared memory itself (bytes the peer may change meanwhile, as `shared` says), and those
   * records keep their room in the ring until the reader's releaseLent() (or its next read): the
   * caller hands the batch on, borrowed, and releases it as soon as that returns. Saves the
   * reader's copy into a private buffer for a batch consumer (a Flow's 'sdus' listener).
   */
  readonly lends?: boolean;
  /**
   * One SDU. false (a flow ring's reader only, ring.ts): taken, but the sink can take no more now
   * (its flow refused one): the read stops after it and leaves the rest in the ring, where the
   * writer's back-pressure holds it, instead of the sink copying every further record.
   */
  sdu(sdu: Uint8Array): boolean | void;
  bad(why: string): void;
  /** A record came with fds (the kernel closed them, the record is dropped). */
  fds(): void;
  /** Optional: the peer reads packed records (its RECORD_HELLO, or a packed record of its own). */
  packs?(): void;
  /** Optional: a doorbell of the flow's ring (RECORD_BELL, ring.ts); without it, a bad record. */
  bell?(): void;
}

/** Where readRecords() puts SDUs without a call per SDU (dif/sdu-batch.ts SduBatchBuffer). */
export interface RecordBatch {
  reset(buffer: Uint8Array): void;
  /** buffer[at, at + len); false when full. */
  add(at: number, len: number): boolean;
}

let recvBuf: Uint8Array | null = null;
let recvBusy = false;
const recvLengths = new Int32Array(CALL_RECORDS);

/**
 * Read up to `max` records (≥ 1) of SDUs of at most `maxSdu` bytes with one recvmmsg, into a
 * buffer shared by every flow of the process, and hand each SDU to `sink` in order (a packed
 * record gives many). Returns how many SDUs and bad records it gave, RECORDS_EMPTY, or
 * RECORDS_ENDED (the records before the end, if any, went to `sink` first). A record longer than
 * max SDU (cut by the kernel, MSG_TRUNC), a malformed packed one (its rest), or one of an unknown
 * tag goes to `sink.bad`; one that came with fds to `sink.fds`.
 */
export function readRecords(fd: number, maxSdu: number, max: number, sink: RecordSink): number {
  const slot = Math.max(maxSdu + 1, PACK_RECORD_MAX);
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
  const into = sink.into;
  into?.reset(buf);
  let items = 0;
  try {
    for (let k = 0; k < n; k++) {
      const len = lengths[k]!;
      // End of file (or an untagged 0-byte record, which only a broken peer sends: the same).
      if (len === 0) return RECORDS_ENDED;
      items++;
      if (len < 0) {
        sink.fds();
        continue;
      }
      const at = k * slot;
      const tag = buf[at];
      if (tag === RECORD_SDU) {
        if (len > maxSdu + 1) sink.bad(`record larger than the flow's max SDU of ${maxSdu} bytes`);
        else if (into === undefined || !into.add(at + 1, len - 1)) sink.sdu(copies ? buf.slice(at + 1, at + len) : buf.subarray(at + 1, at + len));
      } else if (len > slot) {
        sink.bad(`record of ${len} bytes larger than any this flow carries`);
      } else if (tag === RECORD_SDUS) {
        sink.packs?.();
        items += unpack(buf, at + 1, at + len, maxSdu, copies, sink, into) - 1;
      } else if (tag === RECORD_HELLO && sink.packs) {
        sink.packs();
        items--;
      } else if (tag === RECORD_BELL && sink.bell) {
        sink.bell();
        items--;
      } else {
        sink.bad(`unknown record tag ${tag}`);
      }
    }
  } finally {
    if (!nested) recvBusy = false;
  }
  return items;
}

/** The SDUs of a packed record buf[p, end) to `sink`; a malformed rest is one bad record. Returns SDUs + bad ones. */
function unpack(buf: Uint8Array, p: number, end: number, maxSdu: number, copies: boolean, sink: RecordSink, into: RecordBatch | undefined): number {
  let items = 0;
  while (p < end) {
    items++;
    const l = end - p >= 4 ? (buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16)) + buf[p + 3]! * 0x1000000 : -1;
    if (l < 0 || l > maxSdu || l > end - p - 4) {
      sink.bad(l < 0 ? 'packed record cut inside a length' : l > maxSdu ? `packed SDU larger than the flow's max SDU of ${maxSdu} bytes` : 'packed record cut inside an SDU');
      return items;
    }
    p += 4;
    if (into === undefined || !into.add(p, l)) sink.sdu(copies ? buf.slice(p, p + l) : buf.subarray(p, p + l));
    p += l;
  }
  return items;
}

/** Outbox.offer(): queued (sent by the next flush), sent at once (a large record), or not taken. */
export type OfferResult = 'queued' | 'sent' | 'full' | 'closed' | 'too_large';
/** Outbox.flush(): everything went; the socket is full (the rest kept: flush again once writable); the other end is gone. */
export type FlushResult = 'done' | 'full' | 'closed';

export interface OutboxHooks {
  /** `n` SDUs left for the socket. */
  onSent(n: number): void;
  /** A queued record the socket can never carry (EMSGSIZE) was dropped: `bytes` of SDU. */
  onTooLarge(bytes: number): void;
}

/**
 * The SDUs a writer has accepted but not yet sent on one flow socket, copied into one buffer as
 * the records they will leave in, sent in batches by flush() (sendmmsg). Once the peer said it
 * reads packed records (pack()), small SDUs share records (RECORD_SDUS, up to PACK_RECORD_MAX
 * bytes and PACK_SDUS_MAX SDUs each: one kernel buffer and copy for many SDUs); before that, one
 * record each (RECORD_SDU). Bounded: at most `maxRecords` records and `maxBytes` bytes; offer()
 * flushes when the bound is reached and says 'full' only when the socket takes nothing more.
 * What flush() could not send (EAGAIN midway) stays, in order, for the next flush. 0-byte SDUs
 * are kept (a record of the tag alone, or a 0 length in a packed one).
 */
export class Outbox {
  private buf: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  /** SDUs in each record (0 for a hello). */
  private readonly counts: Uint32Array;
  /** Records [head, tail) are queued, their bytes [offsets[head], end). */
  private head = 0;
  private tail = 0;
  private end = 0;
  /** The packed record still open for more SDUs (the last one, unsent), or -1. */
  private open = -1;
  private packing = false;

  constructor(
    private readonly fd: number,
    private readonly hooks: OutboxHooks,
    private readonly maxRecords = 256,
    private readonly maxBytes = 256 * 1024,
  ) {
    this.buf = new Uint8Array(Math.min(16 * 1024, maxBytes));
    this.offsets = new Uint32Array(maxRecords);
    this.lengths = new Uint32Array(maxRecords);
    this.counts = new Uint32Array(maxRecords);
  }

  /** Records queued. */
  get length(): number {
    return this.tail - this.head;
  }

  /** Bytes queued (tags and lengths included). */
  get bytes(): number {
    return this.length === 0 ? 0 : this.end - this.offsets[this.head]!;
  }

  /** Whether small SDUs share records (the peer reads packed records). */
  get packs(): boolean {
    return this.packing;
  }

  /** The peer reads packed records: pack from now on. */
  pack(): void {
    this.packing = true;
  }

  /** Queue a RECORD_HELLO ("this end reads packed records"); false when the outbox is full. */
  hello(): boolean {
    if (!this.roomFor(1)) return false;
    const at = this.end;
    this.buf[at] = RECORD_HELLO;
    this.push(at, 1, 0);
    return true;
  }

  /** Take one SDU: copied into the queue, or (a large one, only with nothing queued) sent at once. */
  offer(sdu: Uint8Array): OfferResult {
    const len = sdu.byteLength;
    if (len + 1 > BATCH_RECORD_MAX) {
      if (this.length > 0) {
        const r = this.flush();
        if (r !== 'done') return r;
      }
      const w = writeRecord(this.fd, sdu);
      if (w === 'sent') this.hooks.onSent(1);
      return w;
    }
    if (this.packing && len + 5 <= PACK_RECORD_MAX) {
      const o = this.open;
      if (o >= 0 && this.lengths[o]! + 4 + len <= PACK_RECORD_MAX && this.counts[o]! < PACK_SDUS_MAX && this.bytes + 4 + len <= this.maxBytes) {
        if (this.end + 4 + len > this.buf.byteLength) this.makeRoom(4 + len);
        this.putPacked(this.end, sdu);
        this.lengths[this.open]! += 4 + len;
        this.counts[this.open]!++;
        this.end += 4 + len;
        return 'queued';
      }
      const r = this.ensureRoom(5 + len);
      if (r !== 'done') return r;
      const at = this.end;
      this.buf[at] = RECORD_SDUS;
      this.putPacked(at + 1, sdu);
      this.push(at, 5 + len, 1);
      this.open = this.tail - 1;
      return 'queued';
    }
    const r = this.ensureRoom(len + 1);
    if (r !== 'done') return r;
    const at = this.end;
    this.buf[at] = RECORD_SDU;
    this.buf.set(sdu, at + 1);
    this.push(at, len + 1, 1);
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
      if (n < 0) break;
      if (n > 0) {
        let sdus = 0;
        for (let k = this.head; k < this.head + n; k++) sdus += this.counts[k]!;
        this.head += n;
        if (sdus > 0) this.hooks.onSent(sdus);
      }
    }
    if (this.open >= 0 && this.open < this.head) this.open = -1;
    if (this.head < this.tail) return 'full';
    this.head = this.tail = this.end = 0;
    this.open = -1;
    return 'done';
  }

  /** Drop what is queued (the socket is gone); returns how many SDUs. */
  discard(): number {
    let sdus = 0;
    for (let k = this.head; k < this.tail; k++) sdus += this.counts[k]!;
    this.head = this.tail = this.end = 0;
    this.open = -1;
    return sdus;
  }

  private putPacked(at: number, sdu: Uint8Array): void {
    const len = sdu.byteLength;
    const b = this.buf;
    b[at] = len & 0xff;
    b[at + 1] = (len >>> 8) & 0xff;
    b[at + 2] = (len >>> 16) & 0xff;
    b[at + 3] = len >>> 24;
    b.set(sdu, at + 4);
  }

  private roomFor(need: number): boolean {
    if (this.tail === this.maxRecords || this.bytes + need > this.maxBytes) return false;
    if (this.end + need > this.buf.byteLength) this.makeRoom(need);
    return true;
  }

  /** Room for one more record of `need` bytes, flushing first when the bounds are reached. */
  private ensureRoom(need: number): 'done' | 'full' | 'closed' {
    if (this.tail === this.maxRecords || this.bytes + need > this.maxBytes) {
      const r = this.flush();
      if (r !== 'done') return r;
    }
    if (this.end + need > this.buf.byteLength) this.makeRoom(need);
    return 'done';
  }

  private push(at: number, length: number, count: number): void {
    this.offsets[this.tail] = at;
    this.lengths[this.tail] = length;
    this.counts[this.tail] = count;
    this.tail++;
    this.end = at + length;
    this.open = -1; // a record after the open one closes it (order)
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
        this.counts[k] = this.counts[this.head + k]!;
      }
      if (this.open >= 0) this.open -= this.head;
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
