/**
 * loopback.ts — the raw vhost-user loopback measurement of bench:datapath, as a front-end that
 * can be measured again and again (bench:host-stack interleaves it with its own runs, so that
 * both are measured under the same load).
 *
 * The front-end (QEMU's and the guest driver's role, test/frontend) keeps every buffer of queue
 * 1 (guest → host) in flight with `size` bytes, the back-end's LoopbackDevice copies each into a
 * queue-0 buffer (host → guest), and the front-end counts round trips. Event-driven on both
 * sides (kick and call eventfds with VIRTIO_RING_F_EVENT_IDX), no busy polling; the tx buffers
 * are filled once (this measures the back-end, not the guest writing data).
 *
 * With a frame header (bench:scale: the le32 VMPI channel id of an echo channel, so the real
 * VmpiDevice and EchoResponder of `vmpi serve` send every SDU back), every tx buffer starts with
 * those bytes and carries `size` bytes after them; the counts and Gb/s are of the `size` bytes.
 */
import { VhostUserFrontend } from '../../test/frontend/frontend.js';
import { GuestMemoryImage } from '../../test/frontend/guest-memory.js';
import type { DriverQueue } from '../../test/frontend/driver-queue.js';
import { RX_QUEUE, TX_QUEUE } from '../../test/frontend/loopback-device.js';

export interface LoopbackResult {
  size: number;
  packets: number;
  seconds: number;
  pps: number;
  gbps: number;
  kicksPerPacket: number;
  callsPerPacket: number;
  errors: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class LoopbackFrontend {
  private size = 0;
  private sending = false;
  private sent = 0;
  private received = 0;
  private errors = 0;
  private onIdle: (() => void) | null = null;
  private pumping = false;
  private readonly txFree: Int32Array;
  private txFreeTop = 0;
  private readonly txSlots: Float64Array;
  private readonly rxSlots: Float64Array;

  private constructor(
    private readonly fe: VhostUserFrontend,
    private readonly mem: GuestMemoryImage,
    private readonly rx: DriverQueue,
    private readonly tx: DriverQueue,
    private readonly slotBytes: number,
    private readonly header: Uint8Array,
  ) {
    const qs = tx.size;
    this.txSlots = new Float64Array(qs);
    this.rxSlots = new Float64Array(qs);
    this.txFree = new Int32Array(qs);
    for (let i = 0; i < qs; i++) this.txSlots[i] = mem.alloc(slotBytes, 64);
    for (let i = 0; i < qs; i++) this.rxSlots[i] = mem.alloc(slotBytes, 64);
    const fill = new Uint8Array(slotBytes);
    for (let k = 0; k < slotBytes; k++) fill[k] = k & 0xff;
    fill.set(header, 0);
    for (let i = 0; i < qs; i++) mem.write(this.txSlots[i]!, fill);
    // Keep every rx buffer posted.
    for (let i = 0; i < qs; i++) rx.addBuffer(this.rxSlots[i]!, slotBytes, true, i);
    rx.publish();
    for (let i = 0; i < qs; i++) this.txFree[this.txFreeTop++] = i;
    rx.onCall(this.pump);
    tx.onCall(this.pump);
  }

  /**
   * Connect to the loopback back-end at `path`: queues of `queueSize`, buffers of `maxSize` bytes
   * (plus the header's, when `header` is given: it leads every tx buffer).
   */
  static async connect(path: string, maxSize: number, queueSize: number, header: Uint8Array = new Uint8Array(0)): Promise<LoopbackFrontend> {
    const slotBytes = Math.ceil((maxSize + header.byteLength) / 64) * 64;
    const mem = new GuestMemoryImage(2 * queueSize * slotBytes + 8 * 1024 * 1024, 'vmpi-bench-guest');
    const fe = new VhostUserFrontend(path, { timeoutMs: 5000 });
    const hs = await fe.handshake({ memory: mem, queues: [{ size: queueSize }, { size: queueSize }] });
    return new LoopbackFrontend(fe, mem, hs.queues[RX_QUEUE]!, hs.queues[TX_QUEUE]!, slotBytes, header);
  }

  private readonly onTx = (token: number): void => {
    this.txFree[this.txFreeTop++] = token;
  };

  private readonly onRx = (token: number, len: number): void => {
    this.received++;
    if (len !== this.size + this.header.byteLength) this.errors++;
    this.rx.addBuffer(this.rxSlots[token]!, this.slotBytes, true, token);
  };

  private readonly pump = (): void => {
    if (this.pumping) return;
    this.pumping = true;
    const { rx, tx } = this;
    try {
      for (;;) {
        tx.harvest(this.onTx);
        rx.harvest(this.onRx);
        rx.publish();
        if (this.sending) {
          while (this.txFreeTop > 0) {
            const slot = this.txFree[--this.txFreeTop]!;
            tx.addBuffer(this.txSlots[slot]!, this.size + this.header.byteLength, false, slot);
            this.sent++;
          }
          tx.publish();
        }
        if (!this.sending && this.received === this.sent && tx.outstanding === 0) {
          const cb = this.onIdle;
          this.onIdle = null;
          cb?.();
          return;
        }
        const more = rx.enableCalls();
        if (!(tx.enableCalls() || more)) return;
      }
    } finally {
      this.pumping = false;
    }
  };

  /** Round trips of `size` bytes for `seconds` after a warm-up of `warmupMs`; then waits until idle. */
  async measure(size: number, seconds: number, warmupMs = Math.min(1000, (seconds * 1000) / 5)): Promise<LoopbackResult> {
    const { rx, tx } = this;
    if (size + this.header.byteLength > this.slotBytes) throw new Error(`size ${size} exceeds the buffers of ${this.slotBytes} bytes`);
    this.size = size;
    this.sent = 0;
    this.received = 0;
    this.errors = 0;
    const k0 = tx.stats.kicks + rx.stats.kicks;
    const c0 = tx.stats.calls + rx.stats.calls;
    this.sending = true;
    this.pump();
    await sleep(warmupMs);
    const r0 = this.received;
    const kk0 = tx.stats.kicks + rx.stats.kicks - k0;
    const cc0 = tx.stats.calls + rx.stats.calls - c0;
    const t0 = process.hrtime.bigint();
    await sleep(seconds * 1000);
    const packets = this.received - r0;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const kicks = tx.stats.kicks + rx.stats.kicks - k0 - kk0;
    const calls = tx.stats.calls + rx.stats.calls - c0 - cc0;
    this.sending = false;
    await new Promise<void>((r) => {
      this.onIdle = r;
      this.pump();
    });
    return {
      size,
      packets,
      seconds: secs,
      pps: packets / secs,
      gbps: (packets * size * 8) / secs / 1e9,
      kicksPerPacket: kicks / Math.max(1, packets),
      callsPerPacket: calls / Math.max(1, packets),
      errors: this.errors,
    };
  }

  close(): void {
    this.rx.close();
    this.tx.close();
    this.fe.close();
    this.mem.close();
  }
}
