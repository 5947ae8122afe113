/**
 * fifo.ts — a first-in first-out queue over an array with a moving head.
 *
 * Owns: the one queue shape every layer's backlogs and read queues use. shift() is O(1): it
 * advances a head index instead of moving the array, forgets the item it hands out (so the
 * queue keeps nothing alive), and gives the array back when it empties or compacts it once the
 * consumed prefix is large.
 */

/** Consumed slots kept before the array is compacted. */
const COMPACT_AFTER = 1024;

export class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, left in the queue; undefined when empty. */
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  /** Take the oldest item; undefined when empty. */
  shift(): T | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.items[this.head] = undefined as unknown as T;
    this.head++;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > COMPACT_AFTER) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
