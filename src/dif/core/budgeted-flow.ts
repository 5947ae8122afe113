/**
 * budgeted-flow.ts — a flow whose SDUs arrive from its IPC process (deliver()) and wait in its
 * receive queue under the IPC process's receive budget: rxQueueLimit SDUs and rxQueueBytes per
 * flow, rxQueueTotalBytes over every flow (rx-queue.ts rxBudgetExceeded). A flow nobody reads
 * drops what is over it, counted in rxQueueDrops and told to the IPC process (budgetHit); its
 * queued bytes count against the total until the flow ends. Shared by the shim DIFs' flows
 * (shim-hv/flow.ts, shim-datagram/flow.ts). An IPC process that receives many SDUs of a flow at
 * once hands them over with deliverBatch(): to 'sdus' listeners without a copy.
 *
 * Borrowed reads: a consumer that only looks at each SDU during the call (the normal DIF's N-1
 * ports: the RMT copies what it keeps) sets `borrowReads(reader)`; while it is set and nothing is
 * queued, an SDU goes to it as the IPC process delivered it, with no copy. Unset it (null) to stop
 * reading: SDUs then queue under the budget as for an unread flow, and go to the reader, in order,
 * once it is set again.
 */
import type { QosSpec, SduBatch } from '../api.js';
import type { AppName } from '../naming.js';
import { RxQueue, rxBudgetExceeded, type RxBudget } from '../rx-queue.js';
import { BorrowPump, type BorrowedReader, type BorrowingFlow } from './borrow-pump.js';
import { BaseFlow, type FlowEnd } from './flow.js';

export { canBorrow, type BorrowedReader, type BorrowingFlow } from './borrow-pump.js';

/** Which bound an SDU broke. */
export type RxBudgetBound = 'sdus' | 'flow_bytes' | 'total_bytes';

/** The IPC process's side of the budget. */
export interface RxBudgetOwner extends RxBudget {
  /** A flow's queue grew (+) or shrank (-). */
  accountRx(delta: number): void;
}

export abstract class BudgetedFlow extends BaseFlow implements BorrowingFlow {
  /** Queue bytes count against the IPC process's budget until the flow ends. */
  private accounted = true;
  private warnedBudget = false;
  protected readonly rx: RxQueue;
  private readonly borrow: BorrowPump;

  constructor(
    private readonly budget: RxBudgetOwner,
    end: FlowEnd<BaseFlow>,
    portId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(end, portId, difName, localApp, remoteApp, qos);
    this.rx = new RxQueue(this, null, (delta) => {
      if (this.accounted) this.budget.accountRx(delta);
    });
    this.borrow = new BorrowPump(this.rx);
  }

  /** An SDU was dropped for the budget (`first`: the first time for this flow). */
  protected abstract budgetHit(which: RxBudgetBound, first: boolean): void;

  /** Hand SDUs to `reader` without copying them (null: stop; SDUs queue under the budget meanwhile). */
  borrowReads(reader: BorrowedReader | null): void {
    this.borrow.set(reader);
  }

  /** One SDU from the IPC process (bytes valid only now; copied when queued). */
  deliver(sdu: Uint8Array): void {
    this.stats.rxSdus++;
    this.stats.rxBytes += sdu.byteLength;
    const reader = this.borrow.reader;
    if (reader !== null) {
      if (this.rx.length === 0) {
        reader(sdu);
        return;
      }
    } else if (this.rx.passOne(sdu)) {
      // An 'sdus' listener and nothing queued: a batch of one, without a copy.
      return;
    }
    if (!this.rx.hasConsumer()) {
      const over = rxBudgetExceeded(this.rx, this.budget, sdu.byteLength);
      if (over !== null) {
        this.stats.rxQueueDrops++;
        this.budgetHit(over, !this.warnedBudget);
        this.warnedBudget = true;
        return;
      }
    }
    this.rx.push(Uint8Array.prototype.slice.call(sdu));
  }

  /**
   * Many SDUs of this flow at once (bytes valid only now): straight to the 'sdus' listeners
   * when the queue takes batches (rx-queue.ts takesBatch), else one by one as deliver().
   */
  deliverBatch(batch: SduBatch): void {
    if (this.borrow.reader === null && this.rx.takesBatch()) {
      this.stats.rxSdus += batch.count;
      this.stats.rxBytes += batch.bytes;
      this.rx.pushBatch(batch);
      return;
    }
    for (let i = 0; i < batch.count; i++) this.deliver(batch.sdu(i));
  }

  protected released(): void {
    // What is still queued goes with the flow object; it no longer counts against the budget.
    if (this.accounted) {
      this.accounted = false;
      this.budget.accountRx(-this.rx.bytes);
    }
  }
}
