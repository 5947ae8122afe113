/**
 * address-pool.ts — the addresses one enroller of a normal DIF may hand out: its range (the DIF's
 * whole pool at the DIF's first enroller, or a block delegated to it at its own enrollment), the
 * addresses bound to the members it knows, and the blocks it delegated to members that enroll
 * others in turn.
 *
 * Owns: uniqueness inside the range. An address is handed out only if it is not this enroller's
 * own, not bound to another member, not inside a delegated block and not in use in the DIF (the
 * caller's `used`: addresses routing still reaches); a block only if none of its addresses is.
 * Blocks are disjoint sub-ranges, so members holding blocks never hand out the same address
 * (docs/NORMAL-DIF-ENROLLMENT.md, "Addresses").
 */
import type { AddressRange } from './cdap-objects.js';

/** A delegated block is this fraction of the delegator's range… */
export const BLOCK_FRACTION = 16;
/** …and at least this many addresses; a range too small for that delegates none. */
export const MIN_BLOCK = 4;

export class AddressPool {
  private range: AddressRange | undefined;
  private cursor = 0;
  /** address → key of the member it is bound to. */
  private readonly bound = new Map<number, string>();
  /** member key → the block delegated to it. */
  private readonly blocks = new Map<string, AddressRange>();

  constructor(
    range: AddressRange | undefined,
    /** This enroller's own address (0 while it has none). */
    private readonly self: () => number,
    /** Addresses members of the DIF answer at now (those routing reaches). */
    private readonly used: () => Iterable<number> = () => [],
  ) {
    this.setRange(range);
  }

  /** The range this enroller assigns from (undefined: none; it hands out no addresses). */
  get current(): AddressRange | undefined {
    return this.range;
  }

  setRange(range: AddressRange | undefined): void {
    if (range && !(range.first >= 1 && range.last >= range.first && range.last <= 0xffffffff)) throw new RangeError(`address pool ${range.first}..${range.last} is not a range of u32 addresses above 0`);
    this.range = range;
    this.cursor = range?.first ?? 0;
  }

  contains(addr: number): boolean {
    return this.range !== undefined && addr >= this.range.first && addr <= this.range.last;
  }

  /** The member an address is bound to here. */
  holder(addr: number): string | undefined {
    return this.bound.get(addr);
  }

  bind(key: string, addr: number): void {
    this.bound.set(addr, key);
  }

  /** `addr` is no longer `key`'s (if it was). */
  unbind(key: string, addr: number): void {
    if (this.bound.get(addr) === key) this.bound.delete(addr);
  }

  blockOf(key: string): AddressRange | undefined {
    return this.blocks.get(key);
  }

  releaseBlock(key: string): void {
    this.blocks.delete(key);
  }

  /** `addr` may be handed to a new member. */
  isFree(addr: number, inUse: ReadonlySet<number> = new Set(this.used())): boolean {
    if (!this.contains(addr) || addr === this.self() || this.bound.has(addr) || inUse.has(addr)) return false;
    for (const b of this.blocks.values()) if (addr >= b.first && addr <= b.last) return false;
    return true;
  }

  /** The next free address (round-robin from the bottom of the range), or undefined. */
  next(): number | undefined {
    const r = this.range;
    if (!r) return undefined;
    const size = r.last - r.first + 1;
    const inUse = new Set(this.used());
    for (let i = 0; i < size; i++) {
      const a = this.cursor;
      this.cursor = a >= r.last ? r.first : a + 1;
      if (this.isFree(a, inUse)) return a;
    }
    return undefined;
  }

  /**
   * A block for `key`: the one it holds here, else `proposed` if it lies in the range and is free
   * (it held it before this enroller restarted), else a free block of 1/BLOCK_FRACTION of the
   * range carved from the top (single addresses come from the bottom). Undefined: none free, or
   * the range is too small to split.
   */
  delegate(key: string, proposed?: AddressRange): AddressRange | undefined {
    const held = this.blocks.get(key);
    if (held) return held;
    const r = this.range;
    if (!r) return undefined;
    const pick = (b: AddressRange): AddressRange => {
      this.blocks.set(key, b);
      return b;
    };
    if (proposed && this.blockFree(proposed)) return pick({ first: proposed.first, last: proposed.last });
    const size = Math.floor((r.last - r.first + 1) / BLOCK_FRACTION);
    if (size < MIN_BLOCK) return undefined;
    for (let k = 1; k < BLOCK_FRACTION; k++) {
      const b = { first: r.last - k * size + 1, last: r.last - (k - 1) * size };
      if (this.blockFree(b)) return pick(b);
    }
    return undefined;
  }

  private blockFree(b: AddressRange): boolean {
    if (!this.contains(b.first) || !this.contains(b.last) || b.last < b.first) return false;
    for (const o of this.blocks.values()) if (o.first <= b.last && b.first <= o.last) return false;
    const self = this.self();
    if (self >= b.first && self <= b.last) return false;
    for (const a of this.bound.keys()) if (a >= b.first && a <= b.last) return false;
    for (const a of this.used()) if (a >= b.first && a <= b.last) return false;
    return true;
  }
}
