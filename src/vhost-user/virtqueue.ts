/**
 * virtqueue.ts — the device side of a virtio 1.2 split virtqueue in guest memory.
 *
 * Owns: walking descriptor chains (direct and indirect) from the available ring into a reusable
 * DescChain, returning chains through the used ring, VIRTIO_RING_F_EVENT_IDX / flag-based
 * notification suppression in both directions, and the validation of everything the driver wrote:
 * head and next indices, chain length and loops, readable-after-writable order, indirect tables,
 * and every address and length against mapped guest memory. A violation throws QueueError and
 * leaves the queue `broken` (it does nothing until reset); it never touches memory out of bounds.
 *
 * Hot path: no allocation per descriptor or per chain. Ordering: x86 is TSO, so plain stores to
 * guest memory become visible in program order; the one store→load ordering the protocol needs
 * (publish avail_event, then re-read avail.idx) uses a locked instruction via Atomics.
 */
import { QueueError } from './errors.js';
import type { GuestMemory, MappedRegion } from './memory.js';
import {
  MAX_QUEUE_SIZE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
} from './protocol.js';

/** Guest-physical addresses of the three ring parts and the queue size. */
export interface RingLayout {
  size: number;
  descGpa: number;
  availGpa: number;
  usedGpa: number;
}

/** Upper bound on segments in one chain (descriptors, plus splits where a buffer crosses regions). */
export const MAX_CHAIN_SEGMENTS = 1024;

const fence = new Int32Array(new SharedArrayBuffer(4));
/** Full memory barrier (a locked read-modify-write on x86). */
export function memoryBarrier(): void {
  Atomics.add(fence, 0, 0);
}

/**
 * Buffer's copy works on any Uint8Array and copies a range without making a view of it (a fast
 * API call in Node ≥ 24); `dst.set(src.subarray(…))` made one Uint8Array per copy, which was most
 * of the server's garbage at full rate (issue #15, docs/SCALE.md).
 */
const copyRange = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

/**
 * Copy n bytes (both ranges in bounds). Short copies byte by byte (a header costs less than a
 * call); longer ones through Buffer's copy. No allocation either way: it runs per SDU.
 */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, n: number): void {
  if (n <= 32) {
    for (let k = 0; k < n; k++) dst[dstOff + k] = src[srcOff + k]!;
  } else {
    copyRange.call(src, dst, dstOff, srcOff, srcOff + n);
  }
}

/**
 * One descriptor chain as scatter-gather segments over mapped guest memory. Readable segments come
 * first (indices < readableCount), writable after. Reused for every chain: hold no references to
 * its arrays across pops.
 */
export class DescChain {
  head = -1;
  count = 0;
  readableCount = 0;
  readableBytes = 0;
  writableBytes = 0;
  readonly bufs: Uint8Array[];
  readonly offs = new Float64Array(MAX_CHAIN_SEGMENTS);
  readonly lens = new Uint32Array(MAX_CHAIN_SEGMENTS);

  constructor() {
    this.bufs = new Array<Uint8Array>(MAX_CHAIN_SEGMENTS);
  }

  /** write()'s cursor: the segment it last wrote into and that segment's logical offset. */
  private wSeg = -1;
  private wBase = 0;

  reset(): void {
    this.head = -1;
    this.count = 0;
    this.readableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.wSeg = -1;
    this.wBase = 0;
  }

  /** Copy readable bytes starting at logical offset `from` into dst[dstOff..]; returns bytes copied. */
  read(dst: Uint8Array, dstOff: number, from: number, length: number): number {
    let skip = from;
    let copied = 0;
    for (let i = 0; i < this.readableCount && copied < length; i++) {
      const len = this.lens[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const off = this.offs[i]! + skip;
      const n = Math.min(len - skip, length - copied);
      copyBytes(this.bufs[i]!, off, dst, dstOff + copied, n);
      copied += n;
      skip = 0;
    }
    return copied;
  }

  /**
   * Copy src[srcOff, srcOff+length) into writable space starting at logical offset `to`; returns
   * bytes written. Writes at or after the previous one start from the segment it ended in, so
   * filling a long chain front to back (many packed records) does not walk it from the start
   * each time.
   */
  write(src: Uint8Array, srcOff: number, length: number, to: number): number {
    let i = this.readableCount;
    let base = 0;
    if (this.wSeg >= 0 && to >= this.wBase) {
      i = this.wSeg;
      base = this.wBase;
    }
    let skip = to - base;
    let written = 0;
    for (; i < this.count && written < length; i++) {
      const len = this.lens[i]!;
      if (skip >= len) {
        skip -= len;
        base += len;
        continue;
      }
      const off = this.offs[i]! + skip;
      const n = Math.min(len - skip, length - written);
      copyBytes(src, srcOff + written, this.bufs[i]!, off, n);
      written += n;
      this.wSeg = i;
      this.wBase = base;
      if (skip + n < len) break;
      skip = 0;
      base += len;
    }
    return written;
  }
}

export interface VirtqueueOptions {
  index: number;
  layout: RingLayout;
  /** Next available-ring index to consume (SET_VRING_BASE). */
  lastAvailIdx: number;
  /** Resume after a restart: start from used.idx in guest memory (see pushUsed), not lastAvailIdx. */
  rewind?: boolean;
  eventIdx: boolean;
  indirect: boolean;
}

/** Virtio's byte order is the host's: the ring words (avail16, used16) are read as they are. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class SplitVirtqueue {
  readonly index: number;
  readonly size: number;
  /** Next avail index to consume, 0..65535. */
  lastAvailIdx: number;
  /** Used index as we last published it. */
  usedIdx: number;
  /** Set when the driver broke the queue; the queue then does nothing. */
  broken: QueueError | null = null;
  /** Chains completed before an older one (see pushUsed): a rewind after a restart is then unsafe. */
  completedOutOfOrder = 0;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  private readonly mem: GuestMemory;
  private readonly desc: MappedRegion;
  private readonly descOff: number;
  private readonly avail: MappedRegion;
  private readonly availOff: number;
  private readonly used: MappedRegion;
  private readonly usedOff: number;
  /**
   * The two rings as 16-bit words, for every field the driver may change while we read it, or
   * reads while we change it (avail.flags, avail.idx, used_event; used.flags, used.idx,
   * avail_event): one element is one 16-bit load or store. DataView's getUint16/setUint16 moved
   * the two bytes separately (seen: 188 torn reads in 65M under Node 26), and a torn avail.idx read
   * as it crossed a multiple of 256 broke a running queue ("driver advanced avail.idx by 65281").
   * avail: [0] flags, [1] idx, [2 + i] ring[i], [2 + size] used_event. used: [0] flags, [1] idx,
   * [2 + 4 * size] avail_event. Little-endian hosts only, as virtio's byte order.
   */
  private readonly avail16: Uint16Array;
  private readonly used16: Uint16Array;
  /** Used idx at the moment of the last notification decision. */
  private signalledUsed: number;

  constructor(mem: GuestMemory, opts: VirtqueueOptions) {
    const { index, layout } = opts;
    const size = layout.size;
    this.index = index;
    this.size = size;
    this.mem = mem;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    if (!LITTLE_ENDIAN) throw new QueueError(index, "split virtqueues need a little-endian host here (the ring's 16-bit words are read in host order)");
    if (size === 0 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) throw new QueueError(index, `queue size ${size} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    if (layout.descGpa % 16 !== 0) throw new QueueError(index, `descriptor table address 0x${layout.descGpa.toString(16)} is not 16-byte aligned`);
    if (layout.availGpa % 2 !== 0) throw new QueueError(index, `available ring address 0x${layout.availGpa.toString(16)} is not 2-byte aligned`);
    if (layout.usedGpa % 4 !== 0) throw new QueueError(index, `used ring address 0x${layout.usedGpa.toString(16)} is not 4-byte aligned`);
    const ring = (gpa: number, len: number, what: string): MappedRegion => {
      const r = mem.find(gpa, len);
      if (!r) throw new QueueError(index, `${what} at guest address 0x${gpa.toString(16)} (+${len}) is outside guest memory`);
      return r;
    };
    this.desc = ring(layout.descGpa, 16 * size, 'descriptor table');
    this.descOff = layout.descGpa - this.desc.desc.guestPhysAddr;
    this.avail = ring(layout.availGpa, 6 + 2 * size, 'available ring');
    this.availOff = layout.availGpa - this.avail.desc.guestPhysAddr;
    this.used = ring(layout.usedGpa, 6 + 8 * size, 'used ring');
    this.usedOff = layout.usedGpa - this.used.desc.guestPhysAddr;
    const words = (r: MappedRegion, off: number, count: number, what: string): Uint16Array => {
      const at = r.bytes.byteOffset + off;
      // The guest addresses are aligned (checked above); a region mapped at an odd host offset is not.
      if (at % 2 !== 0) throw new QueueError(index, `${what} lies at an odd offset in its memory region's mapping (region guest address 0x${r.desc.guestPhysAddr.toString(16)}, mmap offset 0x${r.desc.mmapOffset.toString(16)})`);
      return new Uint16Array(r.bytes.buffer, at, count);
    };
    this.avail16 = words(this.avail, this.availOff, 3 + size, 'available ring');
    this.used16 = words(this.used, this.usedOff, 3 + 4 * size, 'used ring');
    this.lastAvailIdx = opts.lastAvailIdx & 0xffff;
    // The used index lives in guest memory; resuming from it is what makes restarts possible.
    this.usedIdx = Atomics.load(this.used16, 1);
    if (opts.rewind === true) this.lastAvailIdx = this.usedIdx;
    this.signalledUsed = this.usedIdx;
  }

  private fail(message: string): never {
    const err = new QueueError(this.index, message);
    this.broken = err;
    throw err;
  }

  /** avail.idx as the driver last published it. */
  availIdx(): number {
    return Atomics.load(this.avail16, 1);
  }

  /** Chains the driver made available that we have not consumed. Marks the queue broken if > size. */
  pending(): number {
    if (this.broken) return 0;
    const n = (this.availIdx() - this.lastAvailIdx) & 0xffff;
    if (n > this.size) this.fail(`driver advanced avail.idx by ${n}, more than the queue size ${this.size}`);
    return n;
  }

  /**
   * Take the next available chain into `chain`. Returns false when the ring is empty or broken.
   * Throws QueueError (and marks the queue broken) when the chain is invalid.
   */
  pop(chain: DescChain): boolean {
    if (this.broken || this.pending() === 0) return false;
    const head = this.avail16[2 + (this.lastAvailIdx % this.size)]!;
    if (head >= this.size) this.fail(`available ring entry ${this.lastAvailIdx} names descriptor ${head}, outside the table of ${this.size}`);
    chain.reset();
    chain.head = head;
    this.walk(chain, head);
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    return true;
  }

  private walk(chain: DescChain, head: number): void {
    let dv = this.desc.view;
    let base = this.descOff;
    let tableSize = this.size;
    let i = head;
    let seen = 0;
    let inIndirect = false;
    for (;;) {
      if (++seen > tableSize) this.fail(`descriptor chain from head ${head} is longer than its table (${tableSize}): loop`);
      const d = base + 16 * i;
      const lo = dv.getUint32(d, true);
      const hi = dv.getUint32(d + 4, true);
      const len = dv.getUint32(d + 8, true);
      const flags = dv.getUint16(d + 12, true);
      const next = dv.getUint16(d + 14, true);
      if (hi > 0x1fffff) this.fail(`descriptor ${i} address beyond 2^53`);
      const addr = hi * 0x1_0000_0000 + lo;
      if (flags & VRING_DESC_F_INDIRECT) {
        if (!this.indirect) this.fail(`descriptor ${i} is indirect but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`);
        if (inIndirect) this.fail(`indirect descriptor ${i} inside an indirect table`);
        if (flags & VRING_DESC_F_NEXT) this.fail(`descriptor ${i} has both INDIRECT and NEXT`);
        if (len === 0 || len % 16 !== 0) this.fail(`indirect table length ${len} is not a non-zero multiple of 16`);
        const region = this.mem.find(addr, len);
        if (!region) this.fail(`indirect table at 0x${addr.toString(16)} (+${len}) is outside guest memory`);
        dv = region.view;
        base = addr - region.desc.guestPhysAddr;
        tableSize = len / 16;
        if (tableSize > 0xffff + 1) this.fail(`indirect table of ${tableSize} entries is too long`);
        inIndirect = true;
        seen = 0;
        i = 0;
        continue;
      }
      const writable = (flags & VRING_DESC_F_WRITE) !== 0;
      if (!writable && chain.count > chain.readableCount) this.fail(`descriptor ${i} is device-readable after a device-writable one`);
      this.addSegments(chain, addr, len, writable, i);
      if (!(flags & VRING_DESC_F_NEXT)) return;
      if (next >= tableSize) this.fail(`descriptor ${i} links to ${next}, outside its table of ${tableSize}`);
      i = next;
    }
  }

  private addSegments(chain: DescChain, addr: number, len: number, writable: boolean, i: number): void {
    let gpa = addr;
    let left = len;
    while (left > 0) {
      const r = this.mem.findStart(gpa);
      if (!r) this.fail(`descriptor ${i} buffer 0x${addr.toString(16)} (+${len}) is outside guest memory`);
      const n = Math.min(left, r.gpaEnd - gpa);
      const k = chain.count;
      if (k >= MAX_CHAIN_SEGMENTS) this.fail(`descriptor chain has more than ${MAX_CHAIN_SEGMENTS} segments`);
      chain.bufs[k] = r.bytes;
      chain.offs[k] = gpa - r.desc.guestPhysAddr;
      chain.lens[k] = n;
      chain.count = k + 1;
      if (writable) chain.writableBytes += n;
      else {
        chain.readableCount = k + 1;
        chain.readableBytes += n;
      }
      gpa += n;
      left -= n;
    }
  }

  /**
   * Return chain `head` to the driver with `len` bytes written; publishes used.idx at once.
   *
   * Restart invariant: a resumed back-end rewinds its next avail index to used.idx (state.ts has
   * only what SET_VRING_BASE gave; the rest lives in guest memory), which replays exactly the
   * chains taken but not completed only if chains are completed in the order they were taken.
   * The avail slot at used.idx names the oldest chain not yet completed (the driver does not
   * reuse a slot before its chain is used), so each completion is checked against it in O(1);
   * one out of order is counted in `completedOutOfOrder` (a resume logs it: it may lose chains).
   */
  pushUsed(head: number, len: number): void {
    if (this.broken) return;
    const v = this.used.view;
    if (this.avail16[2 + (this.usedIdx % this.size)] !== head) this.completedOutOfOrder++;
    const e = this.usedOff + 4 + 8 * (this.usedIdx % this.size);
    v.setUint32(e, head, true);
    v.setUint32(e + 4, len, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    Atomics.store(this.used16, 1, this.usedIdx); // after the entry: a store fence, and one 16-bit store
  }

  /**
   * Whether the driver wants an interrupt for the used entries published since the last call
   * (VIRTIO_RING_F_EVENT_IDX or the NO_INTERRUPT flag). Call once per batch, then signal the call fd.
   */
  needsNotify(): boolean {
    const old = this.signalledUsed;
    const now = this.usedIdx;
    if (old === now) return false;
    this.signalledUsed = now;
    memoryBarrier();
    if (this.eventIdx) {
      const usedEvent = Atomics.load(this.avail16, 2 + this.size);
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask the driver to kick (enable = true) or not (false) when it adds buffers. Returns true when
   * buffers arrived meanwhile, so a caller going idle must process again instead of waiting.
   */
  setKickWanted(enable: boolean): boolean {
    if (this.broken) return false;
    if (this.eventIdx) {
      // Ask for a kick once avail.idx moves past what the driver has published now (as Linux
      // vhost does): a caller that stops with chains still pending is then woken by the next one.
      if (enable) Atomics.store(this.used16, 2 + 4 * this.size, this.availIdx());
    } else {
      const flags = Atomics.load(this.used16, 0);
      Atomics.store(this.used16, 0, enable ? flags & ~VRING_USED_F_NO_NOTIFY : flags | VRING_USED_F_NO_NOTIFY);
    }
    if (!enable) return false;
    memoryBarrier();
    return this.pending() > 0;
  }
}
