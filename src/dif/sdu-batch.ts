/**
 * sdu-batch.ts — the one SduBatch implementation (api.ts, the 'sdus' event): SDUs as offsets
 * and lengths into one buffer, filled by a data path's read (a VMPI file's batch read, a
 * recvmmsg of records) and handed to listeners without a view, a copy or a call per SDU.
 *
 * Owns: the batch object (reused: one per reader, not one per read), adding SDUs to it, and
 * handing one batch to a flow's 'sdus' listeners (an exception there is surfaced as for 'data',
 * without breaking the receive loop). The receive queue (rx-queue.ts) decides when a batch may
 * go straight to the listeners.
 */
import type { EventEmitter } from 'node:events';
import type { FlowEvents, SduBatch } from './api.js';

export class SduBatchBuffer implements SduBatch {
  buffer: Uint8Array = EMPTY;
  count = 0;
  bytes = 0;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;

  /** Room for `capacity` SDUs per batch. */
  constructor(readonly capacity: number) {
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
    return this.buffer.subarray(at, at + this.lengths[i]!);
  }

  /** Start a new batch over `buffer`. */
  reset(buffer: Uint8Array): void {
    this.buffer = buffer;
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

const EMPTY = new Uint8Array(0);

/** A batch of one SDU (for SDUs that were queued one by one): reused. */
export class OneSdu implements SduBatch {
  buffer: Uint8Array = EMPTY;
  readonly count = 1;
  get bytes(): number {
    return this.buffer.byteLength;
  }
  offset(): number {
    return 0;
  }
  length(): number {
    return this.buffer.byteLength;
  }
  sdu(): Uint8Array {
    return this.buffer;
  }
}

/** Hand `batch` to `flow`'s 'sdus' listeners; a listener's exception becomes an uncaught one, later. */
export function emitBatch(flow: EventEmitter<FlowEvents>, batch: SduBatch): void {
  try {
    flow.emit('sdus', batch);
  } catch (e) {
    process.nextTick(() => {
      throw e;
    });
  }
}
