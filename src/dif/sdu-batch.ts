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
import { SduList } from '../sys/sdu-list.js';
import type { FlowEvents, SduBatch } from './api.js';

export class SduBatchBuffer extends SduList implements SduBatch {
  buffer: Uint8Array = EMPTY;

  sdu(i: number): Uint8Array {
    const at = this.offsets[i]!;
    return this.buffer.subarray(at, at + this.lengths[i]!);
  }

  /** Start a new batch over `buffer`. */
  reset(buffer: Uint8Array): void {
    this.buffer = buffer;
    this.clear();
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
