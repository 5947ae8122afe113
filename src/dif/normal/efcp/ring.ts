/**
 * ring.ts — a growable FIFO on a power-of-two ring array, for EFCP's queues (closed-window
 * queue, retransmission queue): O(1) push/shift without Array.prototype.shift's copying.
 *
 * Owns: storage only. Bounds (PDUs and bytes) are the caller's: it checks before it pushes.
 */
export class Fifo<T> {
  private buf: (T | undefined)[] = new Array<T | undefined>(8);
  private head = 0;
  private len = 0;

  get length(): number {
    return this.len;
  }

  push(v: T): void {
    if (this.len === this.buf.length) this.grow();
    this.buf[(this.head + this.len) & (this.buf.length - 1)] = v;
    this.len++;
  }

  /** Put `v` before the oldest element (it becomes the next shift()). */
  unshift(v: T): void {
    if (this.len === this.buf.length) this.grow();
    this.head = (this.head - 1) & (this.buf.length - 1);
    this.buf[this.head] = v;
    this.len++;
  }

  /** The oldest element, left in place. */
  peek(): T | undefined {
    return this.len === 0 ? undefined : this.buf[this.head];
  }

  /** The i-th oldest element (0 = peek()). */
  at(i: number): T | undefined {
    return i < 0 || i >= this.len ? undefined : this.buf[(this.head + i) & (this.buf.length - 1)];
  }

  shift(): T | undefined {
    if (this.len === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) & (this.buf.length - 1);
    this.len--;
    return v;
  }

  clear(): void {
    this.buf = new Array<T | undefined>(8);
    this.head = 0;
    this.len = 0;
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.buf.length * 2);
    for (let i = 0; i < this.len; i++) next[i] = this.buf[(this.head + i) & (this.buf.length - 1)];
    this.buf = next;
    this.head = 0;
  }
}
