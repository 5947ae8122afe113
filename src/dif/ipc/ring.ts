/**
 * ring.ts — the 'ring' data path of a flow between the IPC daemon and an application (see
 * datapath.ts): one sealed memfd holding one single-producer single-consumer ring of SDU records
 * per direction, shared by both ends (mmap), beside the flow's SOCK_SEQPACKET socketpair, which
 * stays as the doorbell and the end-of-flow signal. Owns the layout, the reader and writer of one
 * direction (every index and length the peer wrote is checked before use), the sleep/wake
 * handshake and the mapping's life.
 *
 * Layout (all fields u32, little-endian; only little-endian hosts offer rings):
 *
 *   offset 0     magic RING_MAGIC ('VMPR')          written once by the daemon
 *   offset 4     version RING_VERSION (1)
 *   offset 8     data bytes per direction D (a power of two, ≥ 4096; the daemon makes ≥ 4 MiB)
 *   offset 12    max SDU of the flow
 *   direction d (0: daemon → application, 1: application → daemon) at DIR_BASE + d × DIR_STRIDE:
 *     +0    producer index P: bytes the writer published, free running mod 2^32 (writer only)
 *     +256  consumer index C: bytes the reader consumed, free running mod 2^32 (reader only)
 *     +512  reader sleeping: 1 = the reader looks again only after a doorbell (reader only)
 *     +768  writer waiting: 1 = the writer waits for room, ring after consuming (writer only)
 *   data of direction d at HEADER_BYTES + d × D, D bytes
 *
 * Records: at a 4-aligned position C mod D, a u32 length L then L bytes, padded to 4; a record
 * never crosses the end of the data area: a length of RING_WRAP there means "the rest is unused,
 * the next record is at position 0". Always 0 ≤ P − C ≤ D (mod 2^32), both multiples of 4. A 0-byte
 * SDU is a record of length 0.
 *
 * Handshake (x86 TSO keeps store→store and load→load order; the StoreLoad cases need a fence,
 * native.fence(), once per batch or sleep transition): the writer copies a tick's records in,
 * publishes P once, fences, and reads "reader sleeping": set → one doorbell record (RECORD_BELL)
 * on the socket. The reader sets "reader sleeping", fences and re-reads P before it waits for the
 * socket; it clears the flag when it wakes. Symmetrically, a writer that finds no room sets
 * "writer waiting", fences and re-reads C; a reader that consumed fences after publishing C and
 * rings when the flag is set. A doorbell means "look at the ring" in either sense; a full socket
 * of bells is as good as one. Each side keeps its own index privately (it writes it, never reads
 * it back) and reads the peer's once per batch (re-read after an opaque call: no hoisting).
 *
 * Hostile peer: a producer index out of range (ahead by more than D, behind, unaligned), a
 * record length over the flow's max SDU, past the published data or across the end, or a
 * consumer index that moves backwards or past what was published ends the flow with a cause
 * (RingEnd.broken): a ring has no record boundary to resynchronise on. The reader copies the
 * published bytes into a private buffer first and parses only that copy (a length is read once,
 * and a peer changing the ring meanwhile changes only its own SDUs' bytes); for a sink that says
 * it takes shared bytes (RecordSink.shared: the daemon's bridge, which only passes each SDU to
 * flow.write(), a copy) it parses in place instead, each length one aligned u32 load into a
 * local, checked the same way, the SDUs lent as views of the ring until the consumer index moves
 * after the last of them. A peer that never
 * consumes stops the writer (offer() 'full'): the Flow's own bounded queues hold the rest. The
 * daemon creates the memfd with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL; an application checks the
 * seals, the size and the header before it maps it (mapRing).
 */
import { fstatSync } from 'node:fs';
import { native } from '../../sys/native.js';
import { safeClose } from '../../sys/fd.js';
import { readRecords, RECORD_BELL, RECORDS_ENDED, type FlushResult, type OfferResult, type RecordBatch, type RecordSink } from './record.js';

export const RING_MAGIC = 0x52504d56; // 'VMPR' little-endian
export const RING_VERSION = 1;
export const HEADER_BYTES = 4096;
const DIR_BASE = 256;
const DIR_STRIDE = 1024;
const OFF_PRODUCER = 0;
const OFF_CONSUMER = 256;
const OFF_SLEEPING = 512;
const OFF_WAITING = 768;
/** The length of a record that means "wrap to position 0". */
export const RING_WRAP = 0xffffffff;
/** Direction 0 carries the daemon's SDUs to the application, 1 the application's to the daemon. */
export const TO_APP = 0;
export const TO_DAEMON = 1;
/**
 * Data bytes per direction at least and at most. 4 MiB at least: the ring absorbs an application
 * that is off the CPU for a millisecond or two at full rate (1 MiB was 261 SDUs of 4000 B: the
 * bridge then stopped taking from the flow, whose queue copied and dropped what came meanwhile;
 * bench:host-stack g2h at 4000 B). A resumed flow keeps the size its ring was made with.
 */
export const RING_MIN_BYTES = 4 << 20;
export const RING_MAX_BYTES = 8 << 20;
/** Max-SDU records a direction holds at least (else the flow keeps the socket). */
const RING_MIN_RECORDS = 8;
/** Seals the daemon sets before it hands the memfd over; an application insists on SHRINK and GROW. */
export const RING_SEALS = native.F_SEAL_SHRINK | native.F_SEAL_GROW | native.F_SEAL_SEAL;

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The ring data bytes per direction for a flow of `maxSdu`, or 0 when it takes no ring (keeps the socket). */
export function ringBytesFor(maxSdu: number): number {
  if (!LITTLE_ENDIAN) return 0;
  const record = 4 + align4(maxSdu);
  const want = Math.max(RING_MIN_RECORDS * record, RING_MIN_BYTES);
  if (want > RING_MAX_BYTES) return 0;
  let d = RING_MIN_BYTES;
  while (d < want) d *= 2;
  return d;
}

/**
 * The data bytes per direction of an existing ring memfd, from its size (a resumed flow's ring
 * keeps the size its daemon made it with, whatever ringBytesFor says now); mapRing checks it.
 */
export function ringDataBytesOf(fd: number): number {
  const size = fstatSync(fd).size;
  return size > HEADER_BYTES ? Math.floor((size - HEADER_BYTES) / 2) : 0;
}

/** The memfd's size for `dataBytes` per direction. */
export function ringFileBytes(dataBytes: number): number {
  return HEADER_BYTES + 2 * dataBytes;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A ring that could not be set up (a bad memfd or header from the other end). */
export class RingError extends Error {
  override name = 'RingError';
  constructor(message: string) {
    super(message);
  }
}

/** One mapping of a flow's ring memfd. */
export class RingMap {
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  private mapped = true;

  constructor(
    readonly buffer: ArrayBuffer,
    readonly dataBytes: number,
    readonly maxSdu: number,
  ) {
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }

  /** Word index of a field of direction `dir`. */
  word(dir: number, field: number): number {
    return (DIR_BASE + dir * DIR_STRIDE + field) >>> 2;
  }

  /** Byte offset of direction `dir`'s data area. */
  data(dir: number): number {
    return HEADER_BYTES + dir * this.dataBytes;
  }

  /** False once unmapped (the views are detached then). */
  get isMapped(): boolean {
    return this.mapped;
  }

  unmap(): void {
    if (!this.mapped) return;
    this.mapped = false;
    native.munmap(this.buffer);
  }
}

/**
 * The daemon's side: a new sealed memfd for a flow of `maxSdu` (ringBytesFor > 0), its header
 * written. Returns the fd and its mapping; throws (errno) when no memfd can be had.
 */
export function createRing(maxSdu: number): { fd: number; map: RingMap } {
  const dataBytes = ringBytesFor(maxSdu);
  if (dataBytes === 0) throw new RingError(`a flow of max SDU ${maxSdu} takes no ring`);
  const size = ringFileBytes(dataBytes);
  const fd = native.memfdCreateSealed('vmpi-flow-ring', size, RING_SEALS);
  try {
    const map = new RingMap(native.mmap(fd, 0, size), dataBytes, maxSdu);
    const u = map.u32;
    u[0] = RING_MAGIC;
    u[1] = RING_VERSION;
    u[2] = dataBytes;
    u[3] = maxSdu;
    return { fd, map };
  } catch (e) {
    native.close(fd);
    throw e;
  }
}

/**
 * Map a ring memfd another process made (the application's side, or a restarted daemon): its
 * seals must forbid shrinking and growing, its size and header must say `dataBytes` and `maxSdu`.
 * Throws RingError saying what was wrong (the fd stays the caller's).
 */
export function mapRing(fd: number, dataBytes: number, maxSdu: number): RingMap {
  if (!LITTLE_ENDIAN) throw new RingError('flow rings need a little-endian host');
  if (dataBytes < 4096 || dataBytes > RING_MAX_BYTES || (dataBytes & (dataBytes - 1)) !== 0) throw new RingError(`ring of ${dataBytes} bytes per direction: not a power of two in 4096..${RING_MAX_BYTES}`);
  if (4 + align4(maxSdu) > dataBytes / 2) throw new RingError(`ring of ${dataBytes} bytes per direction is too small for SDUs of ${maxSdu} bytes`);
  const seals = native.fdSeals(fd);
  const need = native.F_SEAL_SHRINK | native.F_SEAL_GROW;
  if (seals < 0 || (seals & need) !== need) throw new RingError(`the ring's memfd is not sealed against shrinking and growing (seals ${seals}): refused`);
  const size = ringFileBytes(dataBytes);
  const st = fstatSync(fd);
  if (st.size !== size) throw new RingError(`the ring's memfd is ${st.size} bytes, not ${size}: refused`);
  const map = new RingMap(native.mmap(fd, 0, size), dataBytes, maxSdu);
  const u = map.u32;
  if (u[0] !== RING_MAGIC || u[1] !== RING_VERSION || u[2] !== dataBytes || u[3] !== maxSdu) {
    map.unmap();
    throw new RingError(`the ring's header (magic ${u[0]}, version ${u[1]}, ${u[2]} bytes, max SDU ${u[3]}) is not the flow's: refused`);
  }
  return map;
}

/**
 * The daemon's hold on one flow's ring: its end, the memfd, and what to give back when the ring
 * goes (the daemon's ring memory accounting). dispose() is the one teardown (bridge close and
 * abandon, a handover or resume that failed).
 */
export class RingHold {
  private disposed = false;

  constructor(
    readonly end: RingEnd,
    /** The daemon's fd of the ring's memfd (a successor process resumes the flow's ring from it). */
    readonly memfd: number,
    private readonly release: () => void = () => {},
  ) {}

  /**
   * Let go of the ring (idempotent): unmap this process's mapping, close the memfd unless
   * `keepMemfd` (abandon: a successor resumes from it), give back its accounting.
   */
  dispose(keepMemfd = false): void {
    if (this.disposed) return;
    this.disposed = true;
    try {
      this.end.map.unmap();
    } finally {
      if (!keepMemfd) safeClose(this.memfd);
      this.release();
    }
  }
}

let copyBuf: Uint8Array | null = null;
let copyBusy = false;
const BELL = new Uint8Array([RECORD_BELL]);
/** Bytes one read copies out at most, and at least per copy (when that much is published). */
const COPY_MAX = 2 << 20;
const COPY_CHUNK = 64 * 1024;

/** RingReader.read(): nothing published. */
export const RING_EMPTY = -1;
/** The ring is broken (a hostile or confused peer): see RingEnd.broken. */
export const RING_BROKEN = -3;

/** Ring a doorbell on `fd` (a full socket already holds one; a closed one is noticed by the reader). */
function ringBell(fd: number): void {
  try {
    native.sendMsg(fd, BELL, 0, 1, null);
  } catch {
    // EPIPE and the like: the other end is gone, its socket's end of file says so
  }
}

/**
 * Both directions of one end of a flow's ring: this end's reader of one direction and writer of
 * the other, and the doorbell socket `fd` (not owned: the caller closes it).
 */
export class RingEnd {
  /** Why the ring can no longer be used (the peer broke it), or null. */
  broken: string | null = null;
  private readonly rx: number;
  private readonly tx: number;
  private readonly D: number;
  private readonly mask: number;
  // reader (direction rx)
  private c: number;
  private readonly wP: number;
  private readonly wC: number;
  private readonly wSleeping: number;
  private readonly wPeerWaiting: number;
  private readonly rxData: number;
  // writer (direction tx)
  private p: number;
  /** Written, not yet published (p is published up to `published`). */
  private published: number;
  private unpublished = 0;
  /** The peer's consumer index as last seen (checked to move forward only). */
  private peerC: number;
  private readonly tP: number;
  private readonly tC: number;
  private readonly tPeerSleeping: number;
  private readonly tWaiting: number;
  private readonly txData: number;
  private readonly maxRecord: number;

  constructor(
    readonly map: RingMap,
    readonly fd: number,
    side: 'daemon' | 'app',
  ) {
    this.rx = side === 'daemon' ? TO_DAEMON : TO_APP;
    this.tx = side === 'daemon' ? TO_APP : TO_DAEMON;
    this.D = map.dataBytes;
    this.mask = this.D - 1;
    this.wP = map.word(this.rx, OFF_PRODUCER);
    this.wC = map.word(this.rx, OFF_CONSUMER);
    this.wSleeping = map.word(this.rx, OFF_SLEEPING);
    this.wPeerWaiting = map.word(this.rx, OFF_WAITING);
    this.rxData = map.data(this.rx);
    this.tP = map.word(this.tx, OFF_PRODUCER);
    this.tC = map.word(this.tx, OFF_CONSUMER);
    this.tPeerSleeping = map.word(this.tx, OFF_SLEEPING);
    this.tWaiting = map.word(this.tx, OFF_WAITING);
    this.txData = map.data(this.tx);
    this.maxRecord = 4 + align4(map.maxSdu);
    // Our own indices as the mapping holds them: 0 on a new ring, where a previous process of
    // this end left them on a resumed one (checked against the peer's on first use).
    const u = map.u32;
    this.c = u[this.wC]!;
    this.p = this.published = u[this.tP]!;
    this.peerC = u[this.tC]!;
    if (((this.p - this.peerC) >>> 0) > this.D || (this.p & 3) !== 0 || (this.c & 3) !== 0) this.broken = "the ring's indices are inconsistent: it cannot be resumed";
    // The reader starts asleep (the writer rings for its first records); its owner reads once
    // on its own when the ring may hold records already (a resumed flow).
    u[this.wSleeping] = 1;
    u[this.tWaiting] = 0;
  }

  /** Told how many SDUs each publish made visible. */
  onSent: ((n: number) => void) | null = null;

  // ---- the doorbell socket ----------------------------------------------------------------------

  /** The peer closed its end of the socket (pollSocket saw end of file): nothing more will be published. */
  ended = false;
  /** Records on the socket other than doorbells (dropped). */
  badRecords = 0;
  private sawFds = false;
  private readonly bellSink: RecordSink = {
    sdu: () => {
      this.badRecords++;
    },
    bad: () => {
      this.badRecords++;
    },
    fds: () => {
      this.sawFds = true;
    },
    bell: () => {},
  };

  /**
   * Take what the socket holds: doorbells, the end of file (`ended`), anything else dropped and
   * counted. 'fds' when a record came with fds (the kernel closed them), else 'ok'.
   */
  pollSocket(): 'ok' | 'fds' {
    // One recvmmsg (up to 64 records): what is left keeps the socket readable (the poll is
    // level-triggered), and a second call to learn "empty" would cost a syscall per wakeup.
    if (!this.ended && readRecords(this.fd, 0, 64, this.bellSink) === RECORDS_ENDED) this.ended = true;
    if (!this.sawFds) return 'ok';
    this.sawFds = false;
    return 'fds';
  }

  private fail(why: string): number {
    this.broken ??= why;
    return RING_BROKEN;
  }

  // ---- reading (direction rx) ------------------------------------------------------------------

  /**
   * Take up to `max` published records: copied out of the ring first (one or two copies per
   * call, no allocation per SDU), then parsed from the copy to `sink` (into its batch when it has
   * one, else sdu() with a view or a copy as it says). Returns how many SDUs, RING_EMPTY, or
   * RING_BROKEN (`broken` says why; the SDUs before it went to `sink`).
   */
  read(sink: RecordSink, max: number): number {
    // What the last read lent is given back first: lent SDUs are valid until then at the latest.
    this.releaseLent();
    if (this.broken !== null) return RING_BROKEN;
    const u = this.map.u32;
    const P = u[this.wP]!;
    const c = this.c;
    const avail = (P - c) >>> 0;
    if (avail === 0) return RING_EMPTY;
    if (avail > this.D || (P & 3) !== 0) return this.fail(`the peer's producer index ${P} is out of range (consumer at ${c}, ring of ${this.D} bytes): flow closed`);
    if (sink.lends === true && sink.into !== undefined) return this.readLent(sink.into, max, avail);
    if (sink.shared === true && sink.into === undefined && sink.copies !== true) return this.readShared(sink, max, avail);
    // Copy what is published into a private buffer as the parse needs it, a chunk at a time (at
    // most COPY_MAX bytes a call): [pos, D) then [0, …).
    const D = this.D;
    const pos = c & this.mask;
    const n1 = Math.min(avail, D - pos);
    const limit = Math.min(avail, COPY_MAX);
    const nested = copyBusy;
    let buf: Uint8Array;
    if (nested) buf = new Uint8Array(COPY_MAX);
    else {
      copyBuf ??= new Uint8Array(COPY_MAX);
      buf = copyBuf;
    }
    const u8 = this.map.u8;
    const data = this.rxData;
    let n = 0;
    /** Copy up to `want` (a chunk at least), within `limit`; the bytes copied so far. */
    const more = (want: number): number => {
      const to = Math.min(limit, Math.max(want, n + COPY_CHUNK));
      if (to <= n) return n;
      if (n < n1) {
        const e = Math.min(to, n1);
        buf.set(u8.subarray(data + pos + n, data + pos + e), n);
        n = e;
      }
      if (to > n) {
        buf.set(u8.subarray(data + (n - n1), data + (to - n1)), n);
        n = to;
      }
      return n;
    };
    more(0);
    const into: RecordBatch | undefined = sink.into;
    into?.reset(buf);
    const copies = sink.copies === true;
    const maxSdu = this.map.maxSdu;
    let at = 0;
    let items = 0;
    let broken = false;
    if (!nested) copyBusy = true;
    try {
      while (items < max && (at + 4 <= n || more(at + 4) >= at + 4)) {
        const len = (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
        if (len === RING_WRAP) {
          // The rest of the data area is unused: only in the first part (the second starts at 0).
          if (at >= n1) {
            broken = this.fail('a ring wrap marker that skips past the published data: flow closed') === RING_BROKEN;
            break;
          }
          at = n1;
          continue;
        }
        if (len > maxSdu) {
          broken = this.fail(`a ring record of ${len} bytes exceeds the flow's max SDU of ${maxSdu} bytes: flow closed`) === RING_BROKEN;
          break;
        }
        const end = at + 4 + align4(len);
        // A record ends within its part: the published data, and never across the data area's end.
        if (end > (at < n1 ? n1 : avail)) {
          broken = this.fail(`a ring record of ${len} bytes runs past the published data or the ring's end: flow closed`) === RING_BROKEN;
          break;
        }
        if (end > n && more(end) < end) break; // past this call's copy budget: the next read takes it
        const s = at + 4;
        items++;
        at = end;
        // The sink can take no more (RecordSink.sdu): the rest stays in the ring.
        if ((into === undefined || !into.add(s, len)) && sink.sdu(copies ? buf.slice(s, s + len) : buf.subarray(s, s + len)) === false) break;
      }
    } finally {
      if (!nested) copyBusy = false;
    }
    if (at > 0) this.consume(at);
    if (broken) return RING_BROKEN;
    return items === 0 ? RING_EMPTY : items;
  }

  /**
   * read() for a sink that takes views of the shared memory (RecordSink.shared): the records are
   * parsed in place (parseInPlace), the SDUs handed over as views of the ring; the consumer index
   * moves only after the last sdu() call, so the writer cannot reuse the bytes of a view while it
   * is lent.
   */
  private readShared(sink: RecordSink, max: number, avail: number): number {
    const items = this.parseInPlace(max, avail, null, sink);
    if (this.parsedBytes > 0) this.consume(this.parsedBytes);
    if (this.parsedBroken) return RING_BROKEN;
    return items === 0 ? RING_EMPTY : items;
  }

  /** Bytes of records the last read lent into a batch (RecordSink.lends), not yet consumed. */
  private lentBytes = 0;

  /**
   * read() into a batch that may point into the ring (RecordSink.lends): parsed in place, each SDU
   * an offset into the mapping (the batch's buffer is the whole mapping; a record never crosses
   * the data area's end), and nothing consumed: the records keep their room until releaseLent(),
   * so the writer cannot reuse the bytes while they are lent.
   */
  private readLent(into: RecordBatch, max: number, avail: number): number {
    into.reset(this.map.u8);
    const items = this.parseInPlace(max, avail, into, null);
    this.lentBytes = this.parsedBytes;
    if (this.parsedBroken) return RING_BROKEN;
    return items === 0 ? RING_EMPTY : items;
  }

  /** What the last parseInPlace() went past (bytes from c), and whether it broke the ring. */
  private parsedBytes = 0;
  private parsedBroken = false;

  /**
   * The in-place parse of readShared() and readLent(): up to `max` records from c, each length
   * read once (one aligned u32 load into a local) and checked as read() checks it, each SDU added
   * to `into` (stopping before one it has no room for) or else handed to `sink` as a view (stopping
   * after one it refuses). Returns the SDUs taken; parsedBytes / parsedBroken say the rest.
   */
  private parseInPlace(max: number, avail: number, into: RecordBatch | null, sink: RecordSink | null): number {
    const u8 = this.map.u8;
    const u32 = this.map.u32;
    const data = this.rxData;
    const mask = this.mask;
    const c = this.c;
    // The first part runs from c to the end of the data area (or to P), the second from 0 to P.
    const n1 = Math.min(avail, this.D - (c & mask));
    const maxSdu = this.map.maxSdu;
    let at = 0;
    let items = 0;
    let broken = false;
    while (items < max && at + 4 <= avail) {
      const pos = (c + at) & mask;
      const len = u32[(data + pos) >>> 2]!;
      if (len === RING_WRAP) {
        if (at >= n1) {
          broken = this.fail('a ring wrap marker that skips past the published data: flow closed') === RING_BROKEN;
          break;
        }
        at = n1;
        continue;
      }
      if (len > maxSdu) {
        broken = this.fail(`a ring record of ${len} bytes exceeds the flow's max SDU of ${maxSdu} bytes: flow closed`) === RING_BROKEN;
        break;
      }
      const end = at + 4 + align4(len);
      if (end > (at < n1 ? n1 : avail)) {
        broken = this.fail(`a ring record of ${len} bytes runs past the published data or the ring's end: flow closed`) === RING_BROKEN;
        break;
      }
      const s = data + pos + 4;
      if (into !== null) {
        if (!into.add(s, len)) break; // the batch is full: the rest stays for the next read
        items++;
        at = end;
      } else {
        items++;
        at = end;
        if (sink!.sdu(u8.subarray(s, s + len)) === false) break; // the sink can take no more: the rest stays in the ring
      }
    }
    this.parsedBytes = at;
    this.parsedBroken = broken;
    return items;
  }

  /** Give back the room of what the last read lent (RecordSink.lends); nothing when none is lent. */
  releaseLent(): void {
    const n = this.lentBytes;
    if (n === 0) return;
    this.lentBytes = 0;
    if (this.map.isMapped) this.consume(n); // unmapped meanwhile (the flow ended in the listener): nothing to give back
  }

  /**
   * Publish our consumer index `bytes` further; ring a waiting writer once a quarter of the ring
   * is free (it waits for one max-SDU record, at most D/8: so it wakes to a batch, not to one
   * record's room and a wait again), clearing its flag as we ring: one doorbell per wait, not
   * one per read while it has not run yet.
   */
  private consume(bytes: number): void {
    this.c = (this.c + bytes) >>> 0;
    const u = this.map.u32;
    u[this.wC] = this.c;
    native.fence();
    if (u[this.wPeerWaiting] !== 0 && ((u[this.wP]! - this.c) >>> 0) <= this.D - (this.D >>> 2)) {
      u[this.wPeerWaiting] = 0;
      ringBell(this.fd);
    }
  }

  /** Whether something is published and unread (a cheap look: no check). */
  get readable(): boolean {
    return this.map.u32[this.wP] !== this.c;
  }

  /**
   * Nothing more to read now: tell the writer to ring (flag, fence, look again). True when the
   * reader may wait for its socket; false when something came meanwhile (read again; the flag is
   * cleared).
   */
  sleep(): boolean {
    const u = this.map.u32;
    u[this.wSleeping] = 1;
    native.fence();
    if (u[this.wP] === this.c) return true;
    u[this.wSleeping] = 0;
    return false;
  }

  /** The reader woke (a doorbell, or it resumes on its own): the writer need not ring meanwhile. */
  wake(): void {
    this.map.u32[this.wSleeping] = 0;
  }

  // ---- writing (direction tx): the FlowOutbox interface -------------------------------------

  /** Records written and not yet published. */
  get length(): number {
    return this.unpublished;
  }

  /** Room for a record of `need` bytes at p (with a wrap marker first if it must): the bytes it takes, or 0. */
  private roomFor(need: number, peerC: number): number {
    const pos = this.p & this.mask;
    const take = pos + need > this.D ? this.D - pos + need : need;
    return ((this.p - peerC) >>> 0) + take <= this.D ? take : 0;
  }

  /** The peer's consumer index, checked (forward only, never past what we published); -1 when broken. */
  private readPeerC(): number {
    const C = this.map.u32[this.tC]!;
    if (C !== this.peerC) {
      if ((C & 3) !== 0 || ((C - this.peerC) >>> 0) > ((this.published - this.peerC) >>> 0)) {
        this.fail(`the peer's consumer index ${C} moved backwards or past the published data (was ${this.peerC}, published ${this.published}): flow closed`);
        return -1;
      }
      this.peerC = C;
    }
    return C;
  }

  /**
   * Copy one SDU into the ring (published by the next flush()). 'full': no room even after
   * publishing and a fresh look at the peer's index (the writer-waiting flag is then set: a
   * doorbell follows the peer's next consumption). 'closed': the ring is broken.
   */
  offer(sdu: Uint8Array): OfferResult {
    if (this.broken !== null) return 'closed';
    const len = sdu.byteLength;
    const need = 4 + align4(len);
    if (need > this.maxRecord) return 'too_large';
    let C = this.peerC;
    let take = this.roomFor(need, C);
    if (take === 0) {
      if (this.unpublished > 0) this.publish();
      C = this.readPeerC();
      if (C < 0) return 'closed';
      take = this.roomFor(need, C);
      if (take === 0) {
        const u = this.map.u32;
        u[this.tWaiting] = 1;
        native.fence();
        C = this.readPeerC();
        if (C < 0) return 'closed';
        take = this.roomFor(need, C);
        if (take === 0) return 'full';
        u[this.tWaiting] = 0;
      }
    }
    const u8 = this.map.u8;
    let pos = this.p & this.mask;
    if (take !== need) {
      this.putLen(this.txData + pos, RING_WRAP);
      this.p = (this.p + (this.D - pos)) >>> 0;
      pos = 0;
    }
    const at = this.txData + pos;
    this.putLen(at, len);
    u8.set(sdu, at + 4);
    this.p = (this.p + need) >>> 0;
    this.unpublished++;
    return 'queued';
  }

  /** Whether a max-SDU record fits now (a fresh look at the peer's index; false when broken). */
  hasRoom(): boolean {
    if (this.broken !== null) return false;
    const C = this.readPeerC();
    if (C < 0) return false;
    return this.roomFor(this.maxRecord, C) !== 0;
  }

  /**
   * Wait for room: true when a max-SDU record fits now; else the writer-waiting flag is set (a
   * doorbell follows the peer's next consumption) and false.
   */
  waitRoom(): boolean {
    if (this.hasRoom()) return true;
    const u = this.map.u32;
    u[this.tWaiting] = 1;
    native.fence();
    if (!this.hasRoom()) return false;
    u[this.tWaiting] = 0;
    return true;
  }

  private putLen(at: number, len: number): void {
    const u8 = this.map.u8;
    u8[at] = len & 0xff;
    u8[at + 1] = (len >>> 8) & 0xff;
    u8[at + 2] = (len >>> 16) & 0xff;
    u8[at + 3] = len >>> 24;
  }

  /** Publish what offer() wrote: one index store, a fence, and a doorbell if the reader sleeps. */
  private publish(): void {
    const u = this.map.u32;
    u[this.tP] = this.p;
    this.published = this.p;
    const n = this.unpublished;
    this.unpublished = 0;
    native.fence();
    // One doorbell per sleep: the flag is cleared as we ring (the reader clears it too when it
    // wakes), so publishes before it runs do not ring again.
    if (u[this.tPeerSleeping] !== 0) {
      u[this.tPeerSleeping] = 0;
      ringBell(this.fd);
    }
    this.onSent?.(n);
  }

  /** Publish the tick's records ('closed' when the ring is broken). */
  flush(): FlushResult {
    if (this.unpublished > 0) this.publish();
    return this.broken === null ? 'done' : 'closed';
  }

  /** Drop what was written and not published; returns how many SDUs. */
  discard(): number {
    const n = this.unpublished;
    this.p = this.published;
    this.unpublished = 0;
    return n;
  }
}
