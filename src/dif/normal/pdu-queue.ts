/**
 * pdu-queue.ts — a FIFO of PDUs bounded in count AND bytes, for the RMT's per-N-1-port output
 * queues. A ring of slots that grows to its PDU bound at most (no shift(), no per-PDU allocation
 * once grown); the caller decides what to do when `fits()` says no.
 */

export class PduQueue {
  private slots: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(8);
  private head = 0;
  private count = 0;
  private byteCount = 0;

  constructor(
    /** Most PDUs held at once. */
    readonly maxPdus: number,
    /** Most bytes held at once (sum of PDU lengths). */
    readonly maxBytes: number,
  ) {}

  get length(): number {
    return this.count;
  }

  get bytes(): number {
    return this.byteCount;
  }

  /** Would a PDU of `size` bytes fit under both bounds? */
  fits(size: number): boolean {
    return this.count < this.maxPdus && this.byteCount + size <= this.maxBytes;
  }

  /** Append; the caller has checked `fits`. */
  push(pdu: Uint8Array): void {
    if (this.count === this.slots.length) this.grow();
    this.slots[(this.head + this.count) % this.slots.length] = pdu;
    this.count++;
    this.byteCount += pdu.length;
  }

  peek(): Uint8Array | undefined {
    return this.count === 0 ? undefined : this.slots[this.head];
  }

  shift(): Uint8Array | undefined {
    if (this.count === 0) return undefined;
    const pdu = this.slots[this.head]!;
    this.slots[this.head] = undefined;
    this.head = (this.head + 1) % this.slots.length;
    this.count--;
    this.byteCount -= pdu.length;
    return pdu;
  }

  /** Drop everything; returns how many PDUs were dropped. */
  clear(): number {
    const n = this.count;
    this.slots = new Array<Uint8Array | undefined>(8);
    this.head = 0;
    this.count = 0;
    this.byteCount = 0;
    return n;
  }

  private grow(): void {
    const next = new Array<Uint8Array | undefined>(this.slots.length * 2);
    for (let i = 0; i < this.count; i++) next[i] = this.slots[(this.head + i) % this.slots.length];
    this.slots = next;
    this.head = 0;
  }
}
