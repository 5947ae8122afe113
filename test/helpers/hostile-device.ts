/**
 * hostile-device.ts — a VMPI device that misbehaves on demand, to test that the guest driver does
 * not trust its host (docs/DEVICE.md, "A host that misbehaves").
 *
 * Owns: the test-only ways a host can lie to the guest: an rx completion whose used length is not
 * what was written (shorter than the header, longer than the buffer, or longer than the bytes
 * actually written), a used entry whose id is out of range or completes a chain twice (on the rx
 * or the tx ring), and a device config that changes at run time. It subclasses the production
 * VmpiDevice and drives the same SplitVirtqueue, so the production code carries no test hooks;
 * well-behaved traffic (`send`, channel handlers) still goes through VmpiDevice itself.
 */
import type { ReadyQueue } from '../../src/vhost-user/device.js';
import { DescChain } from '../../src/vhost-user/virtqueue.js';
import { FRAME_HEADER_SIZE, VmpiDevice, type VmpiDeviceOptions } from '../../src/vmpi/device.js';

export class HostileError extends Error {
  override name = 'HostileError';
}

export class HostileVmpiDevice extends VmpiDevice {
  /** Replaces the config bytes GET_CONFIG returns (QEMU's vhost-user-gpio asks on every guest read). */
  configOverride: Uint8Array | null = null;
  private rxq: ReadyQueue | null = null;
  private txq: ReadyQueue | null = null;
  private readonly chain = new DescChain();

  constructor(opts: VmpiDeviceOptions) {
    super(opts);
  }

  override queueReady(q: ReadyQueue): void {
    if (q.index === this.carrier.rxQueue) this.rxq = q;
    else if (q.index === this.carrier.txQueue) this.txq = q;
    super.queueReady(q);
  }

  override queueStopped(index: number): void {
    if (index === this.carrier.rxQueue) this.rxq = null;
    else if (index === this.carrier.txQueue) this.txq = null;
    super.queueStopped(index);
  }

  override reset(reason: string): void {
    this.rxq = this.txq = null;
    super.reset(reason);
  }

  override getConfig(offset: number, size: number): Uint8Array {
    if (!this.configOverride) return super.getConfig(offset, size);
    const out = new Uint8Array(size);
    if (offset < this.configOverride.byteLength) out.set(this.configOverride.subarray(offset, Math.min(offset + size, this.configOverride.byteLength)));
    return out;
  }

  /** Take the next guest rx buffer, waiting up to `ms` for the guest to post one. */
  private async popRx(ms: number): Promise<ReadyQueue> {
    const end = Date.now() + ms;
    for (;;) {
      const q = this.rxq;
      if (q && (q.vq.pop(this.chain) || (q.vq.setKickWanted(true) && q.vq.pop(this.chain)))) return q;
      if (Date.now() > end) throw new HostileError(`no guest rx buffer within ${ms} ms (queue ${q ? 'running' : 'stopped'})`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Write the frame `le32 channel | sdu` into the next guest rx buffer and complete it with used
   * length `claimed` (a lie when it differs from 4 + sdu.length). `times` > 1 completes the same
   * chain again: the later entries name a chain the guest no longer has outstanding.
   */
  async sendClaiming(channel: number, sdu: Uint8Array, claimed: number, opts: { times?: number; timeoutMs?: number } = {}): Promise<void> {
    const q = await this.popRx(opts.timeoutMs ?? 5000);
    const frame = new Uint8Array(FRAME_HEADER_SIZE + sdu.byteLength);
    new DataView(frame.buffer).setUint32(0, channel, true);
    frame.set(sdu, FRAME_HEADER_SIZE);
    if (this.chain.writableBytes < frame.byteLength) throw new HostileError(`guest rx buffer of ${this.chain.writableBytes} bytes is smaller than the ${frame.byteLength}-byte frame`);
    this.chain.write(frame, 0, frame.byteLength, 0);
    for (let i = 0; i < (opts.times ?? 1); i++) q.vq.pushUsed(this.chain.head, claimed);
    q.notify();
  }

  /** Publish a used entry with descriptor id `id` on the rx or tx ring without a chain behind it. */
  pushBogusUsed(queue: 'rx' | 'tx', id: number, len: number): void {
    const q = queue === 'rx' ? this.rxq : this.txq;
    if (!q) throw new HostileError(`${queue} queue is not running`);
    q.vq.pushUsed(id, len);
    q.notify();
  }

  /** Ring size of the running rx queue (used ids >= it are out of range). */
  get rxRingSize(): number {
    if (!this.rxq) throw new HostileError('rx queue is not running');
    return this.rxq.vq.size;
  }
}
