/**
 * The driver side of a split virtqueue, for tests: lays out descriptors, the available ring and
 * reads the used ring in GuestMemory (addresses are guest-physical; ranges may cross regions).
 */
import type { GuestMemory } from '../../src/vhost-user/memory.js';
import type { RingLayout } from '../../src/vhost-user/virtqueue.js';

/** Byte access to guest memory by guest-physical address. */
export class GuestBytes {
  constructor(readonly mem: GuestMemory) {}

  private at(gpa: number, len: number): { view: DataView; off: number } {
    const r = this.mem.find(gpa, len);
    if (!r) throw new Error(`test bug: gpa 0x${gpa.toString(16)}+${len} is not in one region`);
    return { view: r.view, off: gpa - r.desc.guestPhysAddr };
  }

  u16(gpa: number): number {
    const { view, off } = this.at(gpa, 2);
    return view.getUint16(off, true);
  }
  setU16(gpa: number, v: number): void {
    const { view, off } = this.at(gpa, 2);
    view.setUint16(off, v, true);
  }
  u32(gpa: number): number {
    const { view, off } = this.at(gpa, 4);
    return view.getUint32(off, true);
  }
  setU32(gpa: number, v: number): void {
    const { view, off } = this.at(gpa, 4);
    view.setUint32(off, v, true);
  }
  setU64(gpa: number, v: bigint): void {
    const { view, off } = this.at(gpa, 8);
    view.setBigUint64(off, v, true);
  }

  /** Write bytes that may span adjacent regions. */
  write(gpa: number, bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) {
      const r = this.mem.findStart(gpa + done);
      if (!r) throw new Error(`test bug: gpa 0x${(gpa + done).toString(16)} unmapped`);
      const off = gpa + done - r.desc.guestPhysAddr;
      const n = Math.min(bytes.byteLength - done, r.desc.size - off);
      r.bytes.set(bytes.subarray(done, done + n), off);
      done += n;
    }
  }

  /** Read bytes that may span adjacent regions. */
  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const r = this.mem.findStart(gpa + done);
      if (!r) throw new Error(`test bug: gpa 0x${(gpa + done).toString(16)} unmapped`);
      const off = gpa + done - r.desc.guestPhysAddr;
      const n = Math.min(len - done, r.desc.size - off);
      out.set(r.bytes.subarray(off, off + n), done);
      done += n;
    }
    return out;
  }
}

export interface Desc {
  addr: number | bigint;
  len: number;
  flags?: number;
  next?: number;
}

export class DriverRing {
  readonly g: GuestBytes;
  /** The driver's shadow of avail.idx (what it publishes next). */
  private shadowAvail: number;

  constructor(
    mem: GuestMemory,
    readonly layout: RingLayout,
  ) {
    this.g = new GuestBytes(mem);
    this.shadowAvail = this.g.u16(layout.availGpa + 2);
  }

  /** Write descriptor `i` of the table at `tableGpa` (the ring's own table by default). */
  setDesc(i: number, d: Desc, tableGpa = this.layout.descGpa): void {
    const a = tableGpa + 16 * i;
    this.g.setU64(a, BigInt(d.addr));
    this.g.setU32(a + 8, d.len);
    this.g.setU16(a + 12, d.flags ?? 0);
    this.g.setU16(a + 14, d.next ?? 0);
  }

  /** Put `head` in the next available slot without publishing. */
  place(head: number): void {
    this.g.setU16(this.layout.availGpa + 4 + 2 * (this.shadowAvail % this.layout.size), head);
    this.shadowAvail = (this.shadowAvail + 1) & 0xffff;
  }

  /** Publish every placed head (avail.idx = shadow). */
  publish(): void {
    this.g.setU16(this.layout.availGpa + 2, this.shadowAvail);
  }

  /** Place and publish heads. */
  offer(...heads: number[]): void {
    for (const h of heads) this.place(h);
    this.publish();
  }

  get availIdx(): number {
    return this.g.u16(this.layout.availGpa + 2);
  }
  /** Set avail.idx (and the shadow) directly, e.g. to start near the wrap point or to corrupt it. */
  set availIdx(v: number) {
    this.shadowAvail = v & 0xffff;
    this.g.setU16(this.layout.availGpa + 2, v & 0xffff);
  }
  availRing(slot: number): number {
    return this.g.u16(this.layout.availGpa + 4 + 2 * slot);
  }
  setAvailRing(slot: number, head: number): void {
    this.g.setU16(this.layout.availGpa + 4 + 2 * slot, head);
  }
  set availFlags(v: number) {
    this.g.setU16(this.layout.availGpa, v);
  }
  /** used_event (VIRTIO_RING_F_EVENT_IDX): after the avail ring. */
  set usedEvent(v: number) {
    this.g.setU16(this.layout.availGpa + 4 + 2 * this.layout.size, v);
  }

  get usedFlags(): number {
    return this.g.u16(this.layout.usedGpa);
  }
  set usedFlags(v: number) {
    this.g.setU16(this.layout.usedGpa, v);
  }
  get usedIdx(): number {
    return this.g.u16(this.layout.usedGpa + 2);
  }
  set usedIdx(v: number) {
    this.g.setU16(this.layout.usedGpa + 2, v);
  }
  usedElem(slot: number): { id: number; len: number } {
    const e = this.layout.usedGpa + 4 + 8 * slot;
    return { id: this.g.u32(e), len: this.g.u32(e + 4) };
  }
  /** avail_event (VIRTIO_RING_F_EVENT_IDX): after the used ring. */
  get availEvent(): number {
    return this.g.u16(this.layout.usedGpa + 4 + 8 * this.layout.size);
  }
}
