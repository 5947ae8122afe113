/**
 * driver-queue.ts — the DRIVER side of one virtio 1.2 split virtqueue (§2.7), for the test
 * front-end: what a guest's virtio driver does, in the memfd-backed guest memory.
 *
 * Owns: allocating the descriptor table, available ring, used ring (and a pool of indirect
 * tables) in guest memory; a descriptor free list; adding chains of readable and/or writable
 * buffers (direct: chained descriptors, or indirect: one descriptor pointing to a table);
 * publishing avail.idx and deciding whether to kick (VIRTIO_RING_F_EVENT_IDX avail_event, or the
 * device's VRING_USED_F_NO_NOTIFY flag); harvesting used entries (validated: a used id must be an
 * outstanding head, len must fit the chain's writable space) and asking for interrupts (used_event,
 * or VRING_AVAIL_F_NO_INTERRUPT); and the queue's kick/call/err eventfds.
 *
 * Hot path: `add*`, `publish`, `harvest` do not allocate. Chains carry a numeric token chosen by
 * the caller. Raw writers (`rawDesc`, `rawAvail`) let tests corrupt the ring on purpose.
 */
import { native, type FdWatcher } from '../../src/sys/native.js';
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
} from '../../src/vhost-user/protocol.js';
import { memoryBarrier } from '../../src/vhost-user/virtqueue.js';
import type { GuestMemoryImage, GuestRegion } from './guest-memory.js';

export interface DriverQueueOptions {
  index: number;
  /** Queue size: a power of two. */
  size: number;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** Entries per indirect table (0 = no indirect chains). A table pool of size × this is allocated. */
  maxIndirect?: number;
  /** Initial avail and used index (also what SET_VRING_BASE sends). */
  base?: number;
  /** Region to put the rings in (default: first with room). */
  region?: number;
}

export interface DriverQueueStats {
  chains: number;
  kicks: number;
  kicksSuppressed: number;
  used: number;
  calls: number;
}

export class DriverQueue {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly base: number;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly kickFd: number;
  readonly callFd: number;
  readonly errFd: number;
  readonly maxIndirect: number;
  readonly stats: DriverQueueStats = { chains: 0, kicks: 0, kicksSuppressed: 0, used: 0, calls: 0 };

  /** Scatter list for `add()`: fill `segAddr[0..n)`, `segLen[0..n)` then call add(n, readable, ...). */
  readonly segAddr: Float64Array;
  readonly segLen: Uint32Array;

  private readonly mem: GuestMemoryImage;
  private readonly dv: DataView;
  private readonly w16: Uint16Array;
  private readonly descOff: number;
  private readonly availOff: number;
  private readonly usedOff: number;
  private readonly indirectGpa: number;
  private readonly indirectOff: number;
  private readonly freeStack: Uint16Array;
  private freeTop: number;
  /** Per head: ring descriptors the chain holds (0 = not outstanding). */
  private readonly chainDescs: Uint16Array;
  /** Per head: writable bytes the chain offered. */
  private readonly chainWritable: Float64Array;
  private readonly shadowNext: Uint16Array;
  private readonly tokens: Float64Array;
  /** avail.idx we will publish next. */
  private availIdx: number;
  /** avail.idx as of the last kick decision. */
  private kickedIdx: number;
  lastUsedIdx: number;
  private watchers: FdWatcher[] = [];
  private closed = false;

  constructor(mem: GuestMemoryImage, opts: DriverQueueOptions) {
    const size = opts.size;
    if (size < 1 || size > 32768 || (size & (size - 1)) !== 0) throw new Error(`queue size ${size} is not a power of two`);
    this.mem = mem;
    this.index = opts.index;
    this.size = size;
    this.eventIdx = opts.eventIdx;
    this.base = (opts.base ?? 0) & 0xffff;
    this.maxIndirect = opts.maxIndirect ?? 0;
    // All three ring parts in one allocation, so they share one region and one DataView.
    const descBytes = 16 * size;
    const availBytes = 6 + 2 * size;
    const usedBytes = 6 + 8 * size;
    const availStart = descBytes;
    const usedStart = Math.ceil((availStart + availBytes) / 4) * 4;
    const ringEnd = usedStart + usedBytes;
    // Indirect tables follow the rings in the same allocation: one region, one DataView.
    const indirectStart = Math.ceil(ringEnd / 16) * 16;
    const total = indirectStart + 16 * this.maxIndirect * size;
    this.descGpa = mem.alloc(total, 4096, opts.region);
    this.availGpa = this.descGpa + availStart;
    this.usedGpa = this.descGpa + usedStart;
    this.indirectGpa = this.descGpa + indirectStart;
    const r: GuestRegion = mem.region(this.descGpa, total);
    this.dv = r.view;
    // The fields the device reads or writes while we do, as 16-bit words (one load or store each;
    // DataView moves the two bytes separately: see SplitVirtqueue's avail16).
    this.w16 = new Uint16Array(r.bytes.buffer, r.bytes.byteOffset, Math.floor(r.bytes.byteLength / 2));
    this.descOff = this.descGpa - r.guestPhysAddr;
    this.availOff = this.availGpa - r.guestPhysAddr;
    this.usedOff = this.usedGpa - r.guestPhysAddr;
    this.indirectOff = this.indirectGpa - r.guestPhysAddr;
    r.bytes.fill(0, this.descOff, this.descOff + ringEnd);
    this.dv.setUint16(this.availOff + 2, this.base, true);
    this.dv.setUint16(this.usedOff + 2, this.base, true);
    // Event idx starts "interrupt me on the next used entry / kick on the next avail entry", as
    // at index 0 after a reset; a ring resumed at `base` needs the same relative to base.
    this.dv.setUint16(this.availOff + 4 + 2 * size, this.base, true);
    this.dv.setUint16(this.usedOff + 4 + 8 * size, this.base, true);
    this.availIdx = this.base;
    this.kickedIdx = this.base;
    this.lastUsedIdx = this.base;
    this.freeStack = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.freeStack[i] = size - 1 - i;
    this.freeTop = size;
    this.chainDescs = new Uint16Array(size);
    this.chainWritable = new Float64Array(size);
    this.shadowNext = new Uint16Array(size);
    this.tokens = new Float64Array(size);
    this.segAddr = new Float64Array(Math.max(64, this.maxIndirect));
    this.segLen = new Uint32Array(Math.max(64, this.maxIndirect));
    this.kickFd = native.eventfd(0);
    this.callFd = native.eventfd(0);
    this.errFd = native.eventfd(0);
  }

  /** Free ring descriptors. */
  get numFree(): number {
    return this.freeTop;
  }

  /** Chains added and not yet returned by the device. */
  get outstanding(): number {
    return (this.availIdx - this.lastUsedIdx) & 0xffff;
  }

  /** Front-end virtual addresses for SET_VRING_ADDR. */
  userAddrs(): { descUser: number; availUser: number; usedUser: number } {
    return { descUser: this.mem.gpaToUva(this.descGpa), availUser: this.mem.gpaToUva(this.availGpa), usedUser: this.mem.gpaToUva(this.usedGpa) };
  }

  // -------------------------------------------------------------------------------------------
  // Adding chains

  /** Add a chain of one buffer. Returns the head, or -1 when the ring is full. */
  addBuffer(gpa: number, len: number, writable: boolean, token: number): number {
    this.segAddr[0] = gpa;
    this.segLen[0] = len;
    return this.add(1, writable ? 0 : 1, false, token);
  }

  /**
   * Add a chain of `n` segments from `segAddr`/`segLen`; the first `readable` are device-readable,
   * the rest device-writable. `indirect`: put them in an indirect table (one ring descriptor).
   * Returns the head, or -1 when there are not enough free descriptors. Not visible to the device
   * until `publish()`.
   */
  add(n: number, readable: number, indirect: boolean, token: number): number {
    if (n < 1) throw new Error('a chain needs at least one segment');
    const dv = this.dv;
    let writable = 0;
    for (let k = readable; k < n; k++) writable += this.segLen[k]!;
    let head: number;
    if (indirect) {
      if (n > this.maxIndirect) throw new Error(`indirect chain of ${n} segments exceeds maxIndirect ${this.maxIndirect}`);
      if (this.freeTop < 1) return -1;
      head = this.freeStack[--this.freeTop]!;
      const tOff = this.indirectOff + 16 * this.maxIndirect * head;
      for (let k = 0; k < n; k++) {
        const d = tOff + 16 * k;
        setAddr(dv, d, this.segAddr[k]!);
        dv.setUint32(d + 8, this.segLen[k]!, true);
        dv.setUint16(d + 12, (k < n - 1 ? VRING_DESC_F_NEXT : 0) | (k >= readable ? VRING_DESC_F_WRITE : 0), true);
        dv.setUint16(d + 14, k < n - 1 ? k + 1 : 0, true);
      }
      const d = this.descOff + 16 * head;
      setAddr(dv, d, this.indirectGpa + 16 * this.maxIndirect * head);
      dv.setUint32(d + 8, 16 * n, true);
      dv.setUint16(d + 12, VRING_DESC_F_INDIRECT, true);
      dv.setUint16(d + 14, 0, true);
      this.chainDescs[head] = 1;
    } else {
      if (this.freeTop < n) return -1;
      head = this.freeStack[this.freeTop - 1]!;
      let prev = -1;
      for (let k = 0; k < n; k++) {
        const i = this.freeStack[--this.freeTop]!;
        if (prev >= 0) {
          dv.setUint16(this.descOff + 16 * prev + 14, i, true);
          dv.setUint16(this.descOff + 16 * prev + 12, dv.getUint16(this.descOff + 16 * prev + 12, true) | VRING_DESC_F_NEXT, true);
          this.shadowNext[prev] = i;
        }
        const d = this.descOff + 16 * i;
        setAddr(dv, d, this.segAddr[k]!);
        dv.setUint32(d + 8, this.segLen[k]!, true);
        dv.setUint16(d + 12, k >= readable ? VRING_DESC_F_WRITE : 0, true);
        dv.setUint16(d + 14, 0, true);
        prev = i;
      }
      this.chainDescs[head] = n;
    }
    this.chainWritable[head] = writable;
    this.tokens[head] = token;
    dv.setUint16(this.availOff + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.stats.chains++;
    return head;
  }

  /**
   * Make added chains visible (write avail.idx) and kick the device if it asked for it.
   * Returns true when it kicked.
   */
  publish(): boolean {
    const old = this.kickedIdx;
    const now = this.availIdx;
    if (old === now) return false;
    Atomics.store(this.w16, (this.availOff + 2) / 2, now);
    this.kickedIdx = now;
    // avail.idx store must be visible before we read the device's avail_event / flags.
    memoryBarrier();
    let kick: boolean;
    if (this.eventIdx) {
      const availEvent = Atomics.load(this.w16, (this.usedOff + 4 + 8 * this.size) / 2);
      kick = ((now - availEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    } else {
      kick = (Atomics.load(this.w16, this.usedOff / 2) & VRING_USED_F_NO_NOTIFY) === 0;
    }
    if (kick) this.kick();
    else this.stats.kicksSuppressed++;
    return kick;
  }

  /** Kick unconditionally. */
  kick(): void {
    this.stats.kicks++;
    native.eventfdWrite(this.kickFd, 1);
  }

  // -------------------------------------------------------------------------------------------
  // Used ring

  /** used.idx as the device last published it. */
  usedIdx(): number {
    return Atomics.load(this.w16, (this.usedOff + 2) / 2);
  }

  /**
   * Take every used entry the device published: frees its descriptors and calls `onUsed(token,
   * len, head)`. Throws when the device returns something it must not (unknown head, len larger
   * than the writable space offered). Returns the number harvested.
   */
  harvest(onUsed: (token: number, len: number, head: number) => void): number {
    const dv = this.dv;
    const end = this.usedIdx();
    const n = (end - this.lastUsedIdx) & 0xffff;
    if (n > this.outstanding) throw new Error(`queue ${this.index}: device advanced used.idx by ${n} but only ${this.outstanding} chains are outstanding`);
    for (let k = 0; k < n; k++) {
      const e = this.usedOff + 4 + 8 * ((this.lastUsedIdx + k) % this.size);
      const head = dv.getUint32(e, true);
      const len = dv.getUint32(e + 4, true);
      if (head >= this.size || this.chainDescs[head] === 0) throw new Error(`queue ${this.index}: device returned descriptor ${head}, which is not an outstanding head`);
      if (len > this.chainWritable[head]!) throw new Error(`queue ${this.index}: device wrote ${len} bytes into a chain with ${this.chainWritable[head]} writable bytes`);
      const token = this.tokens[head]!;
      this.freeChain(head);
      this.stats.used++;
      onUsed(token, len, head);
    }
    this.lastUsedIdx = end;
    return n;
  }

  private freeChain(head: number): void {
    let i = head;
    const count = this.chainDescs[head]!;
    this.chainDescs[head] = 0;
    for (let k = 0; k < count; k++) {
      this.freeStack[this.freeTop++] = i;
      i = this.shadowNext[i]!;
    }
  }

  /**
   * Ask for a call when the device uses the next chain (used_event = last seen used index, or
   * clear VRING_AVAIL_F_NO_INTERRUPT). Returns true when entries arrived meanwhile: harvest again.
   */
  enableCalls(): boolean {
    const w = this.w16;
    const flags = this.availOff / 2;
    if (this.eventIdx) Atomics.store(w, (this.availOff + 4 + 2 * this.size) / 2, this.lastUsedIdx);
    else Atomics.store(w, flags, Atomics.load(w, flags) & ~VRING_AVAIL_F_NO_INTERRUPT);
    memoryBarrier();
    return this.usedIdx() !== this.lastUsedIdx;
  }

  /** Ask for no calls (flag mode only; with event idx simply do not move used_event forward). */
  disableCalls(): void {
    if (!this.eventIdx) Atomics.store(this.w16, this.availOff / 2, Atomics.load(this.w16, this.availOff / 2) | VRING_AVAIL_F_NO_INTERRUPT);
  }

  // -------------------------------------------------------------------------------------------
  // Eventfds

  /** Run `cb` whenever the device signals the call eventfd. */
  onCall(cb: (count: number) => void): FdWatcher {
    const w = native.watchEventfd(this.callFd, (c) => {
      this.stats.calls++;
      cb(c);
    });
    w.start();
    this.watchers.push(w);
    return w;
  }

  /** Run `cb` when the back-end signals the error eventfd (the queue is broken). */
  onError(cb: (count: number) => void): FdWatcher {
    const w = native.watchEventfd(this.errFd, cb);
    w.start();
    this.watchers.push(w);
    return w;
  }

  // -------------------------------------------------------------------------------------------
  // Raw access for tests that corrupt the ring

  /** Write descriptor `i` of the ring's table verbatim. */
  rawDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const d = this.descOff + 16 * i;
    setAddr(this.dv, d, addr);
    this.dv.setUint32(d + 8, len, true);
    this.dv.setUint16(d + 12, flags, true);
    this.dv.setUint16(d + 14, next, true);
  }

  /** Put `head` in the next avail slot without any bookkeeping (publish() makes it visible). */
  rawAvail(head: number): void {
    this.dv.setUint16(this.availOff + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Write avail.idx verbatim (e.g. jump further than the queue size). */
  rawAvailIdx(idx: number): void {
    this.dv.setUint16(this.availOff + 2, idx & 0xffff, true);
  }

  /** Close watchers and the three eventfds. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers = [];
    native.close(this.kickFd);
    native.close(this.callFd);
    native.close(this.errFd);
  }
}

function setAddr(dv: DataView, off: number, addr: number): void {
  dv.setUint32(off, addr % 0x1_0000_0000, true);
  dv.setUint32(off + 4, Math.floor(addr / 0x1_0000_0000), true);
}
