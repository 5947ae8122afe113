/**
 * byte-backlog.ts — the host → guest backlog of a VMPI device (SDUs send() accepted while the
 * guest's rx ring had no room, written in order as the guest posts buffers), kept without an
 * allocation per SDU.
 *
 * Owns: the copy of each SDU into chunks of bytes that are reused (CHUNK_BYTES each; an SDU
 * larger than a chunk gets one of its own), the entries (channel, chunk, offset, length) in
 * typed rings that grow to the SDU bound and stay, the FIFO order, and giving chunks back: a
 * chunk whose records have all gone goes to a pool of spares, at most as many as the byte bound
 * needs (so a backlog that swings between its bound and half of it, the usual pattern under an
 * application that outruns the guest, allocates nothing; nor does one that fills and empties
 * again and again), and the pool is cut to one spare once the backlog has stayed empty for
 * TRIM_MS (one unref'd timer per empty spell, not per SDU): an idle device holds at most two
 * chunks. The bounds and the 'drain' rule are backlog.ts's (BacklogGate), on the same counters
 * (the port's stats: backlogSdus, backlogBytes).
 *
 * Why: a copy per backlogged SDU (slice) is an ArrayBuffer per SDU: with an application that
 * outruns the guest most SDUs pass through here, and at 4000 B those buffers were the host's
 * main garbage (bench:host-stack h2g: GC 15% of the back-end's profile).
 */
import { BacklogGate, type BacklogCounters, type BacklogLimits } from './backlog.js';

/** Bytes per chunk (several max-size records of the usual 64 KiB device limit). */
export const CHUNK_BYTES = 256 * 1024;
const MIN_ENTRIES = 64;
/** An empty backlog gives its spare chunks but one back after this long. */
export const TRIM_MS = 1000;

/** Writes one backlogged SDU, src[off, off+len), on `channel`; false: no room (it stays at the head). */
export type BacklogWriter = (channel: number, src: Uint8Array, off: number, len: number) => boolean;

export class ByteBacklog {
  private chan = new Uint32Array(MIN_ENTRIES);
  private off = new Uint32Array(MIN_ENTRIES);
  private len = new Uint32Array(MIN_ENTRIES);
  private buf: Array<Uint8Array | null> = new Array<Uint8Array | null>(MIN_ENTRIES).fill(null);
  private head = 0;
  private count = 0;
  /** The chunk new SDUs are copied into, and how much of it is used. */
  private tail: Uint8Array | null = null;
  private tailUsed = 0;
  /** Chunks of CHUNK_BYTES none of whose records is queued, for reuse. */
  private readonly spares: Uint8Array[] = [];
  private readonly maxSpares: number;
  private readonly gate: BacklogGate;
  private trimTimer: NodeJS.Timeout | null = null;
  /** Chunks allocated over the backlog's life (a steady flow through it allocates none). */
  chunksAllocated = 0;

  constructor(
    private readonly counters: BacklogCounters,
    limits: BacklogLimits,
  ) {
    this.gate = new BacklogGate(counters, limits);
    this.maxSpares = Math.min(1024, Math.ceil(limits.maxBytes / CHUNK_BYTES) + 1);
  }

  /** Spare chunks held for reuse now. */
  get pooled(): number {
    return this.spares.length;
  }

  get isEmpty(): boolean {
    return this.count === 0;
  }

  /** Copy `sdu` in at the tail; false when the bounds refuse it (nothing kept; 'drain' will follow). */
  add(channel: number, sdu: Uint8Array): boolean {
    const c = this.counters;
    const n = sdu.byteLength;
    if (!this.gate.takes(n)) return false;
    if (this.count === this.chan.length) this.growEntries();
    let chunk = this.tail;
    if (chunk === null || chunk.byteLength - this.tailUsed < n) {
      if (chunk !== null && this.count === 0) this.keep(chunk);
      chunk = this.tail = this.newChunk(n);
      this.tailUsed = 0;
    }
    const at = this.tailUsed;
    chunk.set(sdu, at);
    this.tailUsed = at + n;
    const i = (this.head + this.count) & (this.chan.length - 1);
    this.chan[i] = channel;
    this.off[i] = at;
    this.len[i] = n;
    this.buf[i] = chunk;
    this.count++;
    c.backlogSdus++;
    c.backlogBytes += n;
    return true;
  }

  /**
   * Write entries from the head with `write` until it returns false (the entry stays at the head;
   * or the port tore down and cleared the backlog from inside `write`). Returns how many left.
   */
  drain(write: BacklogWriter): number {
    const c = this.counters;
    let sent = 0;
    while (this.count > 0) {
      const i = this.head;
      const chunk = this.buf[i]!;
      const n = this.len[i]!;
      if (!write(this.chan[i]!, chunk, this.off[i]!, n)) break;
      if (this.count === 0 || this.buf[i] !== chunk) break; // cleared from inside write
      this.buf[i] = null;
      this.head = (i + 1) & (this.chan.length - 1);
      this.count--;
      c.backlogSdus--;
      c.backlogBytes -= n;
      sent++;
      if (chunk !== this.tail && (this.count === 0 || this.buf[this.head] !== chunk)) this.keep(chunk);
      if (this.count === 0) this.emptied();
    }
    return sent;
  }

  /** Every entry from the head, in order, without taking any (a hand-over's snapshot). */
  forEach(visit: (channel: number, src: Uint8Array, off: number, len: number) => void): void {
    const mask = this.chan.length - 1;
    for (let k = 0; k < this.count; k++) {
      const i = (this.head + k) & mask;
      visit(this.chan[i]!, this.buf[i]!, this.off[i]!, this.len[i]!);
    }
  }

  /** After a drain() that moved SDUs: true when the port should emit 'drain' now (backlog.ts's rule). */
  drainDue(): boolean {
    return this.gate.drainDue();
  }

  /** Forget every entry (the peer reset or went away); returns how many were dropped. */
  clear(): number {
    const dropped = this.count;
    this.buf.fill(null);
    this.head = 0;
    this.count = 0;
    this.emptied();
    this.counters.backlogSdus = 0;
    this.counters.backlogBytes = 0;
    return dropped;
  }

  /** A chunk none of whose records is queued any more: a spare, if a regular one and the pool has room. */
  private keep(chunk: Uint8Array): void {
    if (chunk.byteLength === CHUNK_BYTES && this.spares.length < this.maxSpares) this.spares.push(chunk);
  }

  /** Nothing queued: the tail chunk is reused from its start; the pool is cut if it stays so. */
  private emptied(): void {
    this.tailUsed = 0;
    if (this.spares.length > 1 && this.trimTimer === null) {
      this.trimTimer = setTimeout(this.trim, TRIM_MS);
      this.trimTimer.unref();
    }
  }

  private readonly trim = (): void => {
    this.trimTimer = null;
    if (this.count === 0) this.spares.length = Math.min(this.spares.length, 1);
    // Busy again: the spares are in use; the next empty spell arms the timer again.
  };

  private newChunk(n: number): Uint8Array {
    if (n <= CHUNK_BYTES && this.spares.length > 0) return this.spares.pop()!;
    this.chunksAllocated++;
    return new Uint8Array(Math.max(n, CHUNK_BYTES));
  }

  /** Twice the entries, in order from 0 (the rings' length stays a power of two). */
  private growEntries(): void {
    const cap = this.chan.length;
    const chan = new Uint32Array(2 * cap);
    const off = new Uint32Array(2 * cap);
    const len = new Uint32Array(2 * cap);
    const buf = new Array<Uint8Array | null>(2 * cap).fill(null);
    for (let k = 0; k < this.count; k++) {
      const i = (this.head + k) & (cap - 1);
      chan[k] = this.chan[i]!;
      off[k] = this.off[i]!;
      len[k] = this.len[i]!;
      buf[k] = this.buf[i]!;
    }
    this.chan = chan;
    this.off = off;
    this.len = len;
    this.buf = buf;
    this.head = 0;
  }
}
