/**
 * rx-queue.ts — the receive side of a flow as the IPC API presents it (api.ts, `Flow`): SDUs in
 * arrival order go to waiting read() calls first, else to 'sdus' listeners (in batches), else to
 * 'data' listeners, else wait in the queue; once the flow's end is known (`end()`) and the queue
 * is empty, reads return null. A data path that reads many SDUs at once asks `takesBatch()` and
 * hands them over with `pushBatch()`: straight to the 'sdus' listeners, without a copy.
 *
 * Owns: that queue and its hand-out rules, shared by the shim DIF's flows (shim-hv/flow.ts) and
 * the IPC client's flows (ipc/client.ts), so both ends of the daemon socket behave alike. How
 * SDUs get in (a VMPI port, a socket) and what a full queue means (drop, or stop reading) stay
 * with the owner: it asks `length`, `bytes` and `hasConsumer()` before pushing; `onBytes` tells
 * it how many bytes come and go, for a budget over many queues.
 *
 * Not the VMPI ports' send backlog (vmpi/backlog.ts: SDUs waiting for room in a ring, with
 * bounds and 'drain'): this queue has consumers to hand SDUs to and no bounds of its own. The two
 * share only the FIFO itself (sys/fifo.ts).
 */
import type { EventEmitter } from 'node:events';
import { Fifo } from '../sys/fifo.js';
import type { FlowEvents, SduBatch } from './api.js';
import { OneSdu, emitBatch } from './sdu-batch.js';

/** The receive budget of an IPC process whose flows queue SDUs no consumer takes yet. */
export interface RxBudget {
  /** SDUs one flow may hold. */
  readonly rxQueueLimit: number;
  /** Bytes one flow may hold. */
  readonly rxQueueBytes: number;
  /** Bytes all flows of the IPC process hold now, and may hold. */
  readonly rxQueuedBytes: number;
  readonly rxQueueTotalBytes: number;
}

/** Which bound an SDU of `n` bytes would break on `rx` (null: none), checked in this order. */
export function rxBudgetExceeded(rx: RxQueue, budget: RxBudget, n: number): 'sdus' | 'flow_bytes' | 'total_bytes' | null {
  if (rx.length >= budget.rxQueueLimit) return 'sdus';
  if (rx.bytes + n > budget.rxQueueBytes) return 'flow_bytes';
  if (budget.rxQueuedBytes + n > budget.rxQueueTotalBytes) return 'total_bytes';
  return null;
}

export class RxQueue {
  private readonly items = new Fifo<Uint8Array>();
  private readers: Array<(sdu: Uint8Array | null) => void> = [];
  private pumping = false;
  private ended = false;
  private _bytes = 0;
  private readonly one = new OneSdu();
  /** passOne()'s batch (not pump()'s: a listener may deliver again from inside pump()). */
  private readonly passed = new OneSdu();

  /**
   * @param flow the Flow whose 'data' event this queue feeds
   * @param onTake called after SDUs left the queue (the owner may resume reading its source)
   * @param onBytes called with +n when n bytes are queued and -n when they leave
   */
  constructor(
    private readonly flow: EventEmitter<FlowEvents>,
    private readonly onTake: (() => void) | null = null,
    private readonly onBytes: ((delta: number) => void) | null = null,
  ) {
    // SDUs queued before a 'data' listener was attached go to it first (once it is attached).
    (flow as unknown as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'data' || event === 'sdus') queueMicrotask(() => this.pump());
    });
  }

  /** SDUs waiting. */
  get length(): number {
    return this.items.length;
  }

  /** Bytes of the SDUs waiting. */
  get bytes(): number {
    return this._bytes;
  }

  /** A read() is waiting or a 'data' listener is attached: a pushed SDU leaves at once. */
  hasConsumer(): boolean {
    return this.readers.length > 0 || this.flow.listenerCount('sdus') > 0 || this.flow.listenerCount('data') > 0;
  }

  /**
   * A batch pushed now would go straight to 'sdus' listeners (one is attached, nothing is queued
   * before it and no read() waits): read many SDUs at once and hand them to pushBatch().
   */
  takesBatch(): boolean {
    return this.items.length === 0 && this.readers.length === 0 && this.flow.listenerCount('sdus') > 0;
  }

  /**
   * SDUs read together: to the 'sdus' listeners as they are when takesBatch(), else queued one by
   * one (copied: the batch's buffer is the reader's).
   */
  pushBatch(batch: SduBatch): void {
    if (this.takesBatch()) {
      emitBatch(this.flow, batch);
      return;
    }
    for (let i = 0; i < batch.count; i++) this.push(batch.sdu(i).slice());
  }

  /**
   * One SDU (a view, valid only during the call) straight to the 'sdus' listeners as a batch of
   * one, when takesBatch(): no copy, no queue. False (nothing done) otherwise: push a copy.
   */
  passOne(sdu: Uint8Array): boolean {
    if (!this.takesBatch()) return false;
    const one = this.passed;
    one.buffer = sdu;
    emitBatch(this.flow, one);
    return true;
  }

  /** Queue one SDU (the queue keeps this object: pass a private copy). */
  push(sdu: Uint8Array): void {
    this.items.push(sdu);
    this._bytes += sdu.byteLength;
    this.onBytes?.(sdu.byteLength);
    this.pump();
  }

  /** The next SDU, or null once ended and empty. */
  read(): Promise<Uint8Array | null> {
    if (this.length > 0) {
      const sdu = this.shift();
      this.onTake?.();
      return Promise.resolve(sdu);
    }
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.readers.push(resolve);
      this.onTake?.();
    });
  }

  /** The next SDU at once (undefined: none), for an owner that hands queued SDUs on itself. */
  takeNow(): Uint8Array | undefined {
    if (this.items.length === 0) return undefined;
    const sdu = this.shift();
    this.onTake?.();
    return sdu;
  }

  /** Nothing more will be pushed: waiting readers get null once the queue is empty. */
  end(): void {
    this.ended = true;
    this.pump();
  }

  /** Hand queued SDUs to readers and listeners (call after a listener may have appeared). */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    let took = false;
    try {
      while (this.items.length > 0) {
        const reader = this.readers.shift();
        if (reader) {
          reader(this.shift());
        } else if (this.flow.listenerCount('sdus') > 0) {
          // Queued one by one (before the listener came, or behind a read()): batches of one.
          this.one.buffer = this.shift();
          emitBatch(this.flow, this.one);
        } else if (this.flow.listenerCount('data') > 0) {
          const sdu = this.shift();
          try {
            this.flow.emit('data', sdu);
          } catch (e) {
            // An application bug must not break the receive loop that pushed the SDU: surface
            // it the way Node surfaces errors thrown by callbacks, as an uncaught exception.
            process.nextTick(() => {
              throw e;
            });
          }
        } else {
          break;
        }
        took = true;
      }
      if (this.ended && this.items.length === 0 && this.readers.length > 0) {
        const readers = this.readers;
        this.readers = [];
        for (const r of readers) r(null);
      }
    } finally {
      this.pumping = false;
    }
    if (took) this.onTake?.();
  }

  private shift(): Uint8Array {
    const sdu = this.items.shift()!;
    this._bytes -= sdu.byteLength;
    this.onBytes?.(-sdu.byteLength);
    return sdu;
  }
}
