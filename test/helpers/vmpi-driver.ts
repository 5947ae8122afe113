/**
 * vmpi-driver.ts — this test process as the VMPI guest driver on a real vhost-user connection
 * (test/frontend: memfd guest memory, split rings): frames out on the tx queue, rx buffers in.
 * Used by test/vmpi-echo.test.ts (a device served in-process) and by tests that need traffic
 * through a device served by another process (a real `vmpi serve`).
 */
import { VhostUserFrontend } from '../frontend/frontend.js';
import { GuestMemoryImage } from '../frontend/guest-memory.js';
import type { DriverQueue } from '../frontend/driver-queue.js';
import { FRAME_HEADER_SIZE } from '../../src/vmpi/device.js';

export class VmpiTestDriver {
  readonly received: { channel: number; sdu: Uint8Array }[] = [];
  private readonly txFree: number[] = [];
  private readonly txSlots: number[] = [];
  private readonly rxSlots: number[] = [];
  private readonly rxPosted = new Set<number>();
  /** Keep every harvested rx buffer posted again (false: the guest stops posting). */
  repost = true;

  private constructor(
    readonly fe: VhostUserFrontend,
    readonly mem: GuestMemoryImage,
    readonly rx: DriverQueue,
    readonly tx: DriverQueue,
    readonly queueSize: number,
    readonly maxSdu: number,
  ) {
    for (let i = 0; i < queueSize; i++) {
      this.txSlots.push(mem.alloc(FRAME_HEADER_SIZE + maxSdu, 64));
      this.txFree.push(i);
      this.rxSlots.push(mem.alloc(FRAME_HEADER_SIZE + maxSdu, 64));
    }
  }

  /** Connect to `path` and run the handshake QEMU does; `close()` ends it. */
  static async connect(path: string, o: { queueSize?: number; maxSdu?: number; timeoutMs?: number; eventIdx?: boolean } = {}): Promise<VmpiTestDriver> {
    const queueSize = o.queueSize ?? 64;
    const maxSdu = o.maxSdu ?? 4096;
    const mem = new GuestMemoryImage(4 * 2 ** 20, 'vmpi-test-driver');
    const fe = new VhostUserFrontend(path, { timeoutMs: o.timeoutMs ?? 5000 });
    try {
      const hs = await fe.handshake({ memory: mem, queues: [0, 1].map((index) => ({ index, size: queueSize })), eventIdx: o.eventIdx });
      return new VmpiTestDriver(fe, mem, hs.queues[0]!, hs.queues[1]!, queueSize, maxSdu);
    } catch (e) {
      fe.close();
      mem.close();
      throw e;
    }
  }

  close(): void {
    this.fe.close();
    this.mem.close();
  }

  /** Post every rx buffer not yet posted. */
  postRx(): void {
    for (let i = 0; i < this.queueSize && this.rx.numFree > 0; i++) {
      if (this.rxPosted.has(i)) continue;
      this.rx.addBuffer(this.rxSlots[i]!, FRAME_HEADER_SIZE + this.maxSdu, true, i);
      this.rxPosted.add(i);
    }
    this.rx.publish();
  }

  /** Queue one frame on the tx ring; false when the ring is full. */
  send(channel: number, sdu: Uint8Array): boolean {
    this.harvestTx();
    const slot = this.txFree.pop();
    if (slot === undefined) return false;
    const frame = new Uint8Array(FRAME_HEADER_SIZE + sdu.byteLength);
    new DataView(frame.buffer).setUint32(0, channel, true);
    frame.set(sdu, FRAME_HEADER_SIZE);
    this.mem.write(this.txSlots[slot]!, frame);
    this.tx.addBuffer(this.txSlots[slot]!, frame.byteLength, false, slot);
    this.tx.publish();
    return true;
  }

  /** Take back the tx buffers the device completed. */
  harvestTx(): void {
    this.tx.harvest((slot) => this.txFree.push(slot));
  }

  /** Frames on the tx ring the device has not taken yet. */
  get txOutstanding(): number {
    return this.tx.outstanding;
  }

  /** Take what the device wrote into rx buffers (and post them again if `repost`). */
  pump(): void {
    this.harvestTx();
    this.rx.harvest((slot, len) => {
      const frame = this.mem.read(this.rxSlots[slot]!, len);
      this.received.push({ channel: new DataView(frame.buffer).getUint32(0, true), sdu: frame.subarray(FRAME_HEADER_SIZE) });
      this.rxPosted.delete(slot);
    });
    if (this.repost) this.postRx();
  }
}
