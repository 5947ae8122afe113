/**
 * vmpi-driver.ts — this test process as the VMPI guest driver on a real vhost-user connection
 * (test/frontend: memfd guest memory, split rings): frames out on the tx queue, rx buffers in.
 * Used by test/vmpi-echo.test.ts (a device served in-process) and by tests that need traffic
 * through a device served by another process (a real `vmpi serve`).
 */
import { VhostUserFrontend } from '../frontend/frontend.js';
import { GuestMemoryImage } from '../frontend/guest-memory.js';
import type { DriverQueue } from '../frontend/driver-queue.js';
import { FRAME_HEADER_SIZE, PACKED_RECORD_ALIGN, PACKED_RECORD_HEADER_SIZE, VMPI_F_RX_PACKED, VMPI_F_TX_PACKED } from '../../src/vmpi/device.js';
import { VirtioFeature, bit, hasBit } from '../../src/vhost-user/protocol.js';

export interface VmpiTestDriverOptions {
  queueSize?: number;
  maxSdu?: number;
  timeoutMs?: number;
  eventIdx?: boolean;
  /** Take VMPI_F_RX_PACKED when offered (default false: an old driver). */
  rxPacked?: boolean;
  /** Take VMPI_F_TX_PACKED when offered (default false: an old driver); send() then sends one record per chain. */
  txPacked?: boolean;
  /** Writable bytes per rx buffer (default 4 + maxSdu, packed 8 + maxSdu). */
  rxBufLen?: number;
  /** Post each rx buffer as a direct chain of segments this long (the last one shorter); default one segment. */
  rxSegLen?: number;
}

export class VmpiTestDriver {
  readonly received: { channel: number; sdu: Uint8Array }[] = [];
  /** used.len of every rx chain harvested, in order. */
  readonly rxUsedLens: number[] = [];
  /** Records per harvested rx chain (1 without packing), in order. */
  readonly rxRecordsPerChain: number[] = [];
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
    /** VMPI_F_RX_PACKED was negotiated. */
    readonly rxPacked: boolean,
    readonly rxBufLen: number,
    readonly rxSegLen: number,
    /** VMPI_F_TX_PACKED was negotiated. */
    readonly txPacked: boolean,
  ) {
    for (let i = 0; i < queueSize; i++) {
      // Room for a chain a little over the limit (a hostile driver's, in tests).
      this.txSlots.push(mem.alloc(PACKED_RECORD_HEADER_SIZE + maxSdu + 64, 64));
      this.txFree.push(i);
      this.rxSlots.push(mem.alloc(rxBufLen, 64));
    }
  }

  /** Connect to `path` and run the handshake QEMU does; `close()` ends it. */
  static async connect(path: string, o: VmpiTestDriverOptions = {}): Promise<VmpiTestDriver> {
    const queueSize = o.queueSize ?? 64;
    const maxSdu = o.maxSdu ?? 4096;
    const mem = new GuestMemoryImage(4 * 2 ** 20, 'vmpi-test-driver');
    const fe = new VhostUserFrontend(path, { timeoutMs: o.timeoutMs ?? 5000 });
    try {
      const features =
        bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC) | (o.rxPacked === true ? bit(VMPI_F_RX_PACKED) : 0n) |
        (o.txPacked === true ? bit(VMPI_F_TX_PACKED) : 0n);
      const hs = await fe.handshake({ memory: mem, queues: [0, 1].map((index) => ({ index, size: queueSize })), eventIdx: o.eventIdx, features });
      const packed = hasBit(fe.features, VMPI_F_RX_PACKED);
      const rxBufLen = o.rxBufLen ?? (packed ? PACKED_RECORD_HEADER_SIZE : FRAME_HEADER_SIZE) + maxSdu;
      return new VmpiTestDriver(fe, mem, hs.queues[0]!, hs.queues[1]!, queueSize, maxSdu, packed, rxBufLen, o.rxSegLen ?? rxBufLen, hasBit(fe.features, VMPI_F_TX_PACKED));
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
    const segs = Math.ceil(this.rxBufLen / this.rxSegLen);
    for (let i = 0; i < this.queueSize && this.rx.numFree >= segs; i++) {
      if (this.rxPosted.has(i)) continue;
      for (let k = 0; k < segs; k++) {
        this.rx.segAddr[k] = this.rxSlots[i]! + k * this.rxSegLen;
        this.rx.segLen[k] = Math.min(this.rxSegLen, this.rxBufLen - k * this.rxSegLen);
      }
      this.rx.add(segs, 0, false, i);
      this.rxPosted.add(i);
    }
    this.rx.publish();
  }

  /**
   * Split a packed rx chain (`le32 channel | le32 length | SDU`, aligned, up to used.len) into
   * `received`; throws on a record the device must never write. Returns the record count.
   */
  private unpack(buf: Uint8Array): number {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let off = 0;
    let n = 0;
    while (off < buf.byteLength) {
      if (off + PACKED_RECORD_HEADER_SIZE > buf.byteLength) throw new Error(`packed rx chain: record header at ${off} crosses used.len ${buf.byteLength}`);
      const channel = dv.getUint32(off, true);
      const len = dv.getUint32(off + 4, true);
      const end = off + PACKED_RECORD_HEADER_SIZE + len;
      if (len > this.maxSdu || end > buf.byteLength) throw new Error(`packed rx chain: record at ${off} of ${len} bytes ends past used.len ${buf.byteLength} or max SDU ${this.maxSdu}`);
      this.received.push({ channel, sdu: buf.subarray(off + PACKED_RECORD_HEADER_SIZE, end) });
      n++;
      off = (end + PACKED_RECORD_ALIGN - 1) & ~(PACKED_RECORD_ALIGN - 1);
    }
    return n; // used.len 0: a chain given back empty (the device refused it)
  }

  /** Queue one frame on the tx ring (packed tx: one record); false when the ring is full. */
  send(channel: number, sdu: Uint8Array): boolean {
    if (this.txPacked) return this.sendChain(packRecords([{ channel, sdu }]));
    const frame = new Uint8Array(FRAME_HEADER_SIZE + sdu.byteLength);
    new DataView(frame.buffer).setUint32(0, channel, true);
    frame.set(sdu, FRAME_HEADER_SIZE);
    return this.sendChain(frame);
  }

  /**
   * Queue `bytes` as one tx chain, as they are (packed records, or anything a hostile driver
   * sends; at most 8 + maxSdu bytes), split into descriptors of `segLen` bytes (default one);
   * false when the ring is full.
   */
  sendChain(bytes: Uint8Array, segLen = bytes.byteLength): boolean {
    this.harvestTx();
    const segs = Math.max(1, Math.ceil(bytes.byteLength / Math.max(1, segLen)));
    if (this.tx.numFree < segs) return false;
    const slot = this.txFree.pop();
    if (slot === undefined) return false;
    const base = this.txSlots[slot]!;
    this.mem.write(base, bytes);
    for (let k = 0; k < segs; k++) {
      this.tx.segAddr[k] = base + k * segLen;
      this.tx.segLen[k] = Math.min(segLen, bytes.byteLength - k * segLen);
    }
    this.tx.add(segs, segs, false, slot);
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
      this.rxUsedLens.push(len);
      if (this.rxPacked) this.rxRecordsPerChain.push(this.unpack(frame));
      else {
        this.received.push({ channel: new DataView(frame.buffer).getUint32(0, true), sdu: frame.subarray(FRAME_HEADER_SIZE) });
        this.rxRecordsPerChain.push(1);
      }
      this.rxPosted.delete(slot);
    });
    if (this.repost) this.postRx();
  }
}

/** Records `le32 channel | le32 length | SDU`, each at a multiple of 8, ending at the last SDU (packed rx and tx). */
export function packRecords(recs: readonly { channel: number; sdu: Uint8Array }[]): Uint8Array {
  let len = 0;
  for (const r of recs) len = ((len + PACKED_RECORD_ALIGN - 1) & ~(PACKED_RECORD_ALIGN - 1)) + PACKED_RECORD_HEADER_SIZE + r.sdu.byteLength;
  const out = new Uint8Array(len);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const r of recs) {
    off = (off + PACKED_RECORD_ALIGN - 1) & ~(PACKED_RECORD_ALIGN - 1);
    dv.setUint32(off, r.channel, true);
    dv.setUint32(off + 4, r.sdu.byteLength, true);
    out.set(r.sdu, off + PACKED_RECORD_HEADER_SIZE);
    off += PACKED_RECORD_HEADER_SIZE + r.sdu.byteLength;
  }
  return out;
}
