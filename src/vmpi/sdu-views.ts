/**
 * sdu-views.ts — reusable views of a port's receive scratch buffer, so handing an SDU to its
 * channel handler costs no allocation.
 *
 * Owns: a small direct-mapped cache of `Uint8Array` views of one buffer, keyed by (start, end).
 * A port reads every frame into the same scratch buffer and hands the handler a view of the SDU
 * in it; `subarray()` per SDU was a new object per SDU (with the copies, nearly all of the
 * server's garbage at full rate: issue #15, docs/SCALE.md). SduHandler's contract already says the
 * bytes are valid only during the call, so handing the same view object again is within it.
 *
 * Bounded: at most SLOTS views per buffer, whatever sizes a peer sends (a pair of (start, end)
 * keys that share a slot just makes a new view each time, as before).
 */

/** Views kept per buffer: 2^SLOTS_LOG2. */
const SLOTS_LOG2 = 6;
const SLOTS = 1 << SLOTS_LOG2;

export class SduViews {
  private readonly views: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(SLOTS).fill(undefined);
  private readonly base: number;

  constructor(readonly buffer: Uint8Array) {
    this.base = buffer.byteOffset;
  }

  /** `buffer.subarray(start, end)` (0 ≤ start ≤ end ≤ buffer.length), reused when last made for the same range. */
  view(start: number, end: number): Uint8Array {
    // The start in units of 8 (packed records start at multiples of 8: consecutive records of one
    // length take consecutive slots, none shared among 64) mixed with a hash of the length (one
    // start, many lengths: the one-frame chains). (end ^ start << 3) kept only low bits, which
    // alignment zeroes: 16 records of 4000 B in a chain shared 8 slots, a new view every time.
    const slot = ((start >>> 3) ^ (Math.imul(end - start, 0x9e3779b1) >>> (32 - SLOTS_LOG2))) & (SLOTS - 1);
    const v = this.views[slot];
    if (v !== undefined && v.byteOffset - this.base === start && v.byteLength === end - start) return v;
    const fresh = this.buffer.subarray(start, end);
    this.views[slot] = fresh;
    return fresh;
  }
}
