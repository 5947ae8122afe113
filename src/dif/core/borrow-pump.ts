/**
 * borrow-pump.ts — borrowed reads of a flow's receive queue: the reader a consumer set with
 * `borrowReads(reader)` (it only looks at each SDU during the call, so the flow hands SDUs over
 * without a copy), and the hand-over of what queued while no reader was set.
 *
 * Owns: the reader, and the pump that, once a reader is set on a non-empty queue, hands it the
 * queued SDUs in order from a microtask (not from inside the caller, which may be in the middle
 * of its own work), one scheduled at a time, until the queue is empty or the reader is unset.
 * The flow itself decides what an arriving SDU does (straight to `reader` when nothing is
 * queued). Shared by the shim DIFs' flows (budgeted-flow.ts) and the normal DIF's
 * (normal/ipcp-flow.ts).
 */
import type { RxQueue } from '../rx-queue.js';

/** Takes one SDU whose bytes are valid only during the call. */
export type BorrowedReader = (sdu: Uint8Array) => void;

/** A flow that can hand its SDUs to a borrowing reader. */
export interface BorrowingFlow {
  borrowReads(reader: BorrowedReader | null): void;
}

/** Whether `flow` offers borrowed reads. */
export function canBorrow(flow: object): flow is BorrowingFlow {
  return typeof (flow as Partial<BorrowingFlow>).borrowReads === 'function';
}

export class BorrowPump {
  /** The borrowing reader, or null (SDUs then queue in `rx`). */
  reader: BorrowedReader | null = null;
  private scheduled = false;

  constructor(private readonly rx: RxQueue) {}

  /** Set (or, with null, unset) the reader; what is queued goes to it from a microtask. */
  set(reader: BorrowedReader | null): void {
    this.reader = reader;
    if (reader !== null && this.rx.length > 0 && !this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.pump);
    }
  }

  private readonly pump = (): void => {
    this.scheduled = false;
    for (;;) {
      const reader = this.reader;
      const sdu = reader === null ? undefined : this.rx.takeNow();
      if (reader === null || sdu === undefined) return;
      reader(sdu);
    }
  };
}
