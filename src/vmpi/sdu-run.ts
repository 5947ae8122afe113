/**
 * sdu-run.ts — the PortSduBatch (port.ts) the VMPI ports hand to batch handlers: offsets and
 * lengths into the port's receive buffer, reused for every batch (no allocation per SDU or per
 * batch); a view per SDU only for whoever asks for it (sdu(i)), from the buffer's reused views
 * (sdu-views.ts), as the one-SDU handlers get theirs.
 */
import type { PortSduBatch } from './port.js';
import { SduViews } from './sdu-views.js';

export class SduRun implements PortSduBatch {
  readonly buffer: Uint8Array;
  private readonly views: SduViews;
  count = 0;
  bytes = 0;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;

  /** Room for `capacity` SDUs per batch, over `buffer`. */
  constructor(
    buffer: Uint8Array,
    readonly capacity: number,
  ) {
    this.buffer = buffer;
    this.views = new SduViews(buffer);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  offset(i: number): number {
    return this.offsets[i]!;
  }

  length(i: number): number {
    return this.lengths[i]!;
  }

  sdu(i: number): Uint8Array {
    const at = this.offsets[i]!;
    return this.views.view(at, at + this.lengths[i]!);
  }

  /** Start a new batch. */
  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Add buffer[at, at + len); false when full. */
  add(at: number, len: number): boolean {
    if (this.count === this.capacity) return false;
    this.offsets[this.count] = at;
    this.lengths[this.count] = len;
    this.count++;
    this.bytes += len;
    return true;
  }
}
