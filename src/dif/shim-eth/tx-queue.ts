/**
 * tx-queue.ts — the send side of the shim DIF over Ethernet (ipcp.ts): frames written in one turn
 * of the event loop leave in one system call (sendmmsg through the link's sendBatch), from slots
 * of one preallocated buffer, so nothing is allocated per frame and the per-call cost (the N-API
 * crossing, the syscall entry) is paid once per batch rather than once per frame.
 *
 * Owns: the slots (`batch` of them, each the largest frame), the order of frames (control and
 * data frames share the queue, so a DEALLOC never overtakes the SDUs written before it), the
 * flush at the end of the current tick (a microtask), the retry when the device queue is full,
 * and saying when there is room again. A frame taken (reserve + commit) is sent: when the
 * device queue is full the frames wait in their slots (retried every RETRY_MS) and new ones are
 * refused (reserve() gives null) until the slots are free again; only a down interface (the
 * link throws) loses the frames waiting, counted as errors. With `batch` 1 every frame is sent
 * at its commit, one system call each (the behaviour before batching; the bench compares both).
 */

/** What the queue needs of the link: send frames k = first..first+count-1 of buf in one call. */
export interface BatchSender {
  /** How many were sent (>= 1), 0 when the device queue is full; throws when the interface is down. */
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number;
}

export interface TxQueueEvents {
  /** `frames` frames of `bytes` bytes left in one call. */
  sent(frames: number, bytes: number): void;
  /** The device queue was full (the frames wait). */
  full(): void;
  /** The link threw: the `frames` waiting were lost. */
  failed(e: unknown, frames: number): void;
  /** The slots are free again after reserve() gave null. */
  drained(): void;
}

/** How long frames wait when the device queue was full before the next try. */
export const RETRY_MS = 2;
/** Most frames per call (the addon's PACKET_MAX_BATCH is 256). */
export const MAX_TX_BATCH = 256;

export class TxQueue {
  readonly batch: number;
  private readonly buf: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  /** Slots committed: [0, count); [0, sent) already left. */
  private count = 0;
  private sent = 0;
  private scheduled = false;
  private retry: NodeJS.Timeout | null = null;
  private refused = false;
  private closed = false;

  constructor(
    private readonly link: BatchSender,
    readonly slotBytes: number,
    batch: number,
    private readonly on: TxQueueEvents,
  ) {
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_TX_BATCH) throw new RangeError(`txBatch must be an integer 1..${MAX_TX_BATCH}, not ${String(batch)}`);
    this.batch = batch;
    this.buf = new Uint8Array(slotBytes * batch);
    this.offsets = new Uint32Array(batch);
    this.lengths = new Uint32Array(batch);
    for (let i = 0; i < batch; i++) this.offsets[i] = i * slotBytes;
  }

  /** Frames waiting (committed, not sent yet). */
  get waiting(): number {
    return this.count - this.sent;
  }

  /**
   * The next free slot (slotBytes long), to write one frame into and then commit(); null when
   * every slot waits for a full device queue (the caller is told drained() later).
   */
  reserve(): Uint8Array | null {
    if (this.closed) return null;
    if (this.count === this.batch) {
      if (this.retry === null) this.flush();
      if (this.count === this.batch) {
        this.refused = true;
        return null;
      }
    }
    const at = this.count * this.slotBytes;
    return this.buf.subarray(at, at + this.slotBytes);
  }

  /** The slot reserve() gave holds a frame of `length` bytes: it leaves at the end of this tick. */
  commit(length: number): void {
    this.lengths[this.count++] = length;
    if (this.batch === 1 || this.count === this.batch) {
      if (this.retry === null) this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.onTick);
    }
  }

  /** Copy `frame[0, length)` into a slot and commit it; false when no slot is free. */
  push(frame: Uint8Array, length: number): boolean {
    if (length > this.slotBytes) throw new RangeError(`a frame of ${length} bytes does not fit a ${this.slotBytes}-byte slot`);
    const slot = this.reserve();
    if (!slot) return false;
    slot.set(length === frame.byteLength ? frame : frame.subarray(0, length));
    this.commit(length);
    return true;
  }

  private readonly onTick = (): void => {
    this.scheduled = false;
    if (this.retry === null) this.flush();
  };

  /** Send what waits, as far as the device takes it. */
  private flush(): void {
    while (this.sent < this.count && !this.closed) {
      let n: number;
      try {
        n = this.link.sendBatch(this.buf, this.offsets, this.lengths, this.sent, this.count - this.sent);
      } catch (e) {
        const lost = this.count - this.sent;
        this.count = this.sent = 0;
        this.on.failed(e, lost);
        this.freed();
        return;
      }
      if (n <= 0) {
        this.on.full();
        this.retry = setTimeout(() => {
          this.retry = null;
          this.flush();
        }, RETRY_MS);
        return;
      }
      let bytes = 0;
      for (let k = this.sent; k < this.sent + n; k++) bytes += this.lengths[k]!;
      this.sent += n;
      this.on.sent(n, bytes);
    }
    this.count = this.sent = 0;
    this.freed();
  }

  private freed(): void {
    if (!this.refused) return;
    this.refused = false;
    this.on.drained();
  }

  /** Send what waits now (once: a full device queue drops the rest), then stop. */
  close(): void {
    if (this.closed) return;
    if (this.retry === null) this.flush();
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }
}
