/**
 * loopback-device.ts — a tiny VhostUserDevice (src/vhost-user/device.ts) for tests and benchmarks.
 *
 * Owns: two queues. Every chain the driver makes available on queue 1 (driver → device, readable
 * buffers) is copied, bytes and length preserved, into the next chain available on queue 0
 * (device → driver, writable buffers), whose used.len is the copied length. When queue 0 has no
 * buffer, frames are copied into a bounded backlog (queue-1 chains are returned at once); the
 * backlog drains, in order, when the driver kicks queue 0. When the backlog is full, queue 1 is
 * simply not consumed until queue 0 has room (its ring fills: backpressure, no loss).
 * Work is batched per kick (bounded, rescheduled with setImmediate) with one notify() per queue
 * per batch. `inject()` sends device-originated bytes to queue 0 (to test queue 0 on its own).
 * A chain that does not fit (queue-0 buffer smaller than the frame) is truncated and counted.
 */
import type { ReadyQueue, VhostUserDevice } from '../../src/vhost-user/device.js';
import { QueueError } from '../../src/vhost-user/errors.js';
import { SUPPORTED_PROTOCOL_FEATURES, VirtioFeature, bit } from '../../src/vhost-user/protocol.js';
import { DescChain } from '../../src/vhost-user/virtqueue.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;

export interface LoopbackOptions {
  name?: string;
  features?: bigint;
  protocolFeatures?: bigint;
  /** Config space bytes returned by GET_CONFIG (default "LOOPBK\x01\x00"). */
  config?: Uint8Array;
  maxQueueSize?: number;
  /** Frames kept while queue 0 has no buffers (default 256). */
  backlogLimit?: number;
  /** Chains handled per batch before yielding to the event loop (default 256). */
  batch?: number;
  /**
   * Catch QueueErrors and report them with ReadyQueue.fail (default true). false: let them
   * propagate out of kicked(), to test how the connection attributes them.
   */
  catchQueueErrors?: boolean;
}

export interface LoopbackStats {
  forwarded: number;
  bytes: number;
  backlogged: number;
  truncated: number;
  kicks: number;
  notifies: number;
  batches: number;
  queueErrors: number;
  resets: number;
}

export const DEFAULT_LOOPBACK_FEATURES = bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC);
export const DEFAULT_LOOPBACK_PROTOCOL_FEATURES = SUPPORTED_PROTOCOL_FEATURES;

export class LoopbackDevice implements VhostUserDevice {
  readonly name: string;
  readonly numQueues = 2;
  /** Optional: requests of the device's own (tests set it to exercise VhostUserDevice.handleRequest). */
  handleRequest?: VhostUserDevice['handleRequest'];
  readonly maxQueueSize: number;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly config: Uint8Array;
  readonly stats: LoopbackStats = { forwarded: 0, bytes: 0, backlogged: 0, truncated: 0, kicks: 0, notifies: 0, batches: 0, queueErrors: 0, resets: 0 };
  ackedFeatures = 0n;
  readonly queues: (ReadyQueue | null)[] = [null, null];
  /** Last queue error reported through ReadyQueue.fail, per queue. */
  readonly errors: (Error | null)[] = [null, null];
  lastReset = '';

  private readonly rxChain = new DescChain();
  private readonly txChain = new DescChain();
  private backlog: Uint8Array[] = [];
  private backlogHead = 0;
  private readonly backlogLimit: number;
  private readonly batch: number;
  private scheduled = false;
  private readonly catchQueueErrors: boolean;

  constructor(opts: LoopbackOptions = {}) {
    this.name = opts.name ?? 'loopback';
    this.features = opts.features ?? DEFAULT_LOOPBACK_FEATURES;
    this.protocolFeatures = opts.protocolFeatures ?? DEFAULT_LOOPBACK_PROTOCOL_FEATURES;
    this.config = opts.config ?? new Uint8Array([0x4c, 0x4f, 0x4f, 0x50, 0x42, 0x4b, 0x01, 0x00]);
    this.maxQueueSize = opts.maxQueueSize ?? 1024;
    this.backlogLimit = opts.backlogLimit ?? 256;
    this.batch = opts.batch ?? 256;
    this.catchQueueErrors = opts.catchQueueErrors ?? true;
  }

  get backlogLength(): number {
    return this.backlog.length - this.backlogHead;
  }

  // -------------------------------------------------------------------------------------------
  // VhostUserDevice

  getConfig(offset: number, size: number): Uint8Array {
    const out = new Uint8Array(size);
    if (offset < this.config.byteLength) out.set(this.config.subarray(offset, Math.min(offset + size, this.config.byteLength)));
    return out;
  }

  setConfig(offset: number, data: Uint8Array): void {
    if (offset + data.byteLength > this.config.byteLength) return;
    this.config.set(data, offset);
  }

  featuresAcked(features: bigint): void {
    this.ackedFeatures = features;
  }

  queueReady(q: ReadyQueue): void {
    this.queues[q.index] = q;
    this.errors[q.index] = null;
    q.vq.setKickWanted(true);
  }

  queueStopped(index: number): void {
    this.queues[index] = null;
  }

  kicked(index: number): void {
    this.stats.kicks++;
    if (index === RX_QUEUE || index === TX_QUEUE) this.run();
  }

  reset(reason: string): void {
    this.stats.resets++;
    this.lastReset = reason;
    this.queues[0] = null;
    this.queues[1] = null;
    this.backlog = [];
    this.backlogHead = 0;
  }

  // -------------------------------------------------------------------------------------------
  // Datapath

  /** Send device-originated bytes to queue 0 (backlogged when it has no buffer). */
  inject(data: Uint8Array): void {
    this.backlog.push(data.slice());
    this.stats.backlogged++;
    this.run();
  }

  private run(): void {
    if (this.scheduled) return;
    let budget = this.batch;
    for (;;) {
      budget = this.pass(budget);
      if (budget === 0) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.run();
        });
        return;
      }
      // Going idle: re-enable kicks, and go round again when buffers arrived meanwhile.
      let again = false;
      const rx = this.usable(RX_QUEUE);
      const tx = this.usable(TX_QUEUE);
      try {
        if (rx && rx.vq.setKickWanted(true) && this.backlogLength > 0) again = true;
      } catch (e) {
        this.queueError(RX_QUEUE, e);
      }
      try {
        if (tx && tx.vq.setKickWanted(true) && this.backlogLength < this.backlogLimit) again = true;
      } catch (e) {
        this.queueError(TX_QUEUE, e);
      }
      if (!again) return;
    }
  }

  private usable(index: number): ReadyQueue | null {
    const q = this.queues[index];
    return q && !q.vq.broken ? q : null;
  }

  /** One batch: drain the backlog, then forward tx → rx. Returns the budget left. */
  private pass(budget: number): number {
    this.stats.batches++;
    const rxChain = this.rxChain;
    const txChain = this.txChain;
    let rxUsed = false;
    let txUsed = false;
    // 1. Backlog first: order is preserved.
    while (budget > 0 && this.backlogLength > 0) {
      const rx = this.usable(RX_QUEUE);
      if (!rx || !this.popSafe(rx, rxChain)) break;
      const data = this.backlog[this.backlogHead]!;
      this.backlog[this.backlogHead++] = EMPTY;
      const n = rxChain.write(data, 0, data.byteLength, 0);
      if (n < data.byteLength) this.stats.truncated++;
      rx.vq.pushUsed(rxChain.head, n);
      rxUsed = true;
      this.stats.forwarded++;
      this.stats.bytes += n;
      budget--;
    }
    if (this.backlogHead === this.backlog.length && this.backlogHead > 0) {
      this.backlog = [];
      this.backlogHead = 0;
    }
    // 2. tx → rx, directly chain to chain (one copy).
    while (budget > 0) {
      const tx = this.usable(TX_QUEUE);
      if (!tx) break;
      const rx = this.backlogLength === 0 ? this.usable(RX_QUEUE) : null;
      if (rx && this.pendingSafe(rx) > 0) {
        if (!this.popSafe(tx, txChain)) break;
        if (!this.popSafe(rx, rxChain)) {
          // rx broke between pending() and pop(): keep the frame.
          this.toBacklog(txChain);
        } else {
          let to = 0;
          for (let i = 0; i < txChain.readableCount; i++) {
            to += rxChain.write(txChain.bufs[i]!, txChain.offs[i]!, txChain.lens[i]!, to);
          }
          if (to < txChain.readableBytes) this.stats.truncated++;
          rx.vq.pushUsed(rxChain.head, to);
          rxUsed = true;
          this.stats.forwarded++;
          this.stats.bytes += to;
        }
      } else {
        if (this.backlogLength >= this.backlogLimit) break;
        if (!this.popSafe(tx, txChain)) break;
        this.toBacklog(txChain);
      }
      tx.vq.pushUsed(txChain.head, 0);
      txUsed = true;
      budget--;
    }
    if (rxUsed) this.notify(RX_QUEUE);
    if (txUsed) this.notify(TX_QUEUE);
    return budget;
  }

  private toBacklog(chain: DescChain): void {
    const copy = new Uint8Array(chain.readableBytes);
    chain.read(copy, 0, 0, copy.byteLength);
    this.backlog.push(copy);
    this.stats.backlogged++;
  }

  private notify(index: number): void {
    const q = this.queues[index];
    if (q && q.notify()) this.stats.notifies++;
  }

  private popSafe(q: ReadyQueue, chain: DescChain): boolean {
    try {
      return q.vq.pop(chain);
    } catch (e) {
      this.queueError(q.index, e);
      return false;
    }
  }

  private pendingSafe(q: ReadyQueue): number {
    try {
      return q.vq.pending();
    } catch (e) {
      this.queueError(q.index, e);
      return 0;
    }
  }

  private queueError(index: number, e: unknown): void {
    if (!(e instanceof QueueError) || !this.catchQueueErrors) throw e;
    this.stats.queueErrors++;
    this.errors[index] = e;
    const q = this.queues[index];
    this.queues[index] = null;
    q?.fail(e);
  }
}

const EMPTY = new Uint8Array(0);
