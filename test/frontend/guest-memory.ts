/**
 * guest-memory.ts — the "guest RAM" of the test front-end: one memfd, mapped as 1..8 regions.
 *
 * Owns: creating the memfd (native.memfdCreate), mapping each region of it (native.mmap) at its
 * own offset in the file, the region table the front-end sends with SET_MEM_TABLE / ADD_MEM_REG
 * (guest-physical base, size, a fake front-end "user address", mmap offset), a bump allocator for
 * rings and buffers, and guest-physical address → bytes translation for the driver side.
 *
 * The memfd is sealed like QEMU's memory-backend-memfd (seal=on: F_SEAL_GROW|F_SEAL_SHRINK|
 * F_SEAL_SEAL) unless `seals` says otherwise (0: an unsealed memfd, as with seal=off).
 *
 * Regions may leave holes between them in guest-physical space and always get user addresses
 * unrelated to their guest addresses, so a back-end that confuses the two, or ignores the hole,
 * reads the wrong bytes. Adjacent regions (no hole) let a buffer straddle two regions.
 */
import { native } from '../../src/sys/native.js';
import type { MemRegionDesc } from '../../src/vhost-user/messages.js';

export interface RegionLayout {
  /** Guest-physical base (page-aligned). */
  gpa: number;
  /** Size in bytes (page multiple). */
  size: number;
  /** Front-end virtual address to report; default: a distinct fake address per region. */
  uva?: number;
}

export interface GuestRegion extends MemRegionDesc {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly buffer: ArrayBuffer;
  readonly gpaEnd: number;
  /** Bump-allocation pointer, as an offset into the region. */
  next: number;
}

/** The seals QEMU's memory-backend-memfd adds by default (seal=on). */
export const QEMU_MEMFD_SEALS = native.F_SEAL_GROW | native.F_SEAL_SHRINK | native.F_SEAL_SEAL;

/** Fake user addresses start here: nowhere near the guest-physical addresses tests use. */
const UVA_BASE = 0x7f00_0000_0000;
const UVA_STRIDE = 0x10_0000_0000;

export class GuestMemoryImage {
  readonly fd: number;
  readonly regions: GuestRegion[] = [];
  readonly totalSize: number;
  private closed = false;

  /**
   * `layout`: a byte count (one region at guest address 0) or a list of regions.
   * Helpers: `GuestMemoryImage.split(size)` gives two regions with a hole between them.
   */
  constructor(layout: number | readonly RegionLayout[], name = 'vmpi-test-guest', opts: { seals?: number } = {}) {
    const page = native.pageSize();
    const list: RegionLayout[] = typeof layout === 'number' ? [{ gpa: 0, size: layout }] : [...layout];
    if (list.length === 0 || list.length > 8) throw new Error(`guest memory needs 1..8 regions, got ${list.length}`);
    let total = 0;
    for (const r of list) {
      if (r.gpa % page || r.size % page || r.size <= 0) throw new Error(`region 0x${r.gpa.toString(16)}+0x${r.size.toString(16)} is not page-aligned`);
      total += r.size;
    }
    this.totalSize = total;
    this.fd = native.memfdCreateSealed(name, total, opts.seals ?? QEMU_MEMFD_SEALS);
    let offset = 0;
    try {
      list.forEach((r, i) => {
        const buffer = native.mmap(this.fd, offset, r.size);
        this.regions.push({
          guestPhysAddr: r.gpa,
          size: r.size,
          userAddr: r.uva ?? UVA_BASE + i * UVA_STRIDE + 0x1000 * (i + 1),
          mmapOffset: offset,
          bytes: new Uint8Array(buffer),
          view: new DataView(buffer),
          buffer,
          gpaEnd: r.gpa + r.size,
          next: 0,
        });
        offset += r.size;
      });
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Two regions of `size/2` each with a hole between them (guest 0 and 0x4000_0000 + size/2). */
  static splitLayout(size: number): RegionLayout[] {
    const half = size / 2;
    return [
      { gpa: 0, size: half },
      { gpa: 0x4000_0000 + half, size: half },
    ];
  }

  static split(size: number, name?: string): GuestMemoryImage {
    return new GuestMemoryImage(GuestMemoryImage.splitLayout(size), name);
  }

  /** The region table for SET_MEM_TABLE / ADD_MEM_REG (plain data). */
  descs(): MemRegionDesc[] {
    return this.regions.map((r) => ({ guestPhysAddr: r.guestPhysAddr, size: r.size, userAddr: r.userAddr, mmapOffset: r.mmapOffset }));
  }

  /** Index of the region holding `gpa`, or -1. */
  regionIndex(gpa: number): number {
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i]!;
      if (gpa >= r.guestPhysAddr && gpa < r.gpaEnd) return i;
    }
    return -1;
  }

  /** The region holding [gpa, gpa+len) whole; throws otherwise. */
  region(gpa: number, len = 1): GuestRegion {
    const i = this.regionIndex(gpa);
    const r = i >= 0 ? this.regions[i]! : undefined;
    if (!r || gpa + len > r.gpaEnd) throw new Error(`guest range 0x${gpa.toString(16)}+${len} is not inside one region`);
    return r;
  }

  gpaToUva(gpa: number): number {
    const r = this.region(gpa);
    return r.userAddr + (gpa - r.guestPhysAddr);
  }

  /**
   * Allocate `size` bytes aligned to `align` from region `regionIdx` (default: the first with room).
   * Returns the guest-physical address. Never freed (the image is per test / per run).
   */
  alloc(size: number, align = 16, regionIdx?: number): number {
    const candidates = regionIdx === undefined ? this.regions.map((_, i) => i) : [regionIdx];
    for (const i of candidates) {
      const r = this.regions[i];
      if (!r) throw new Error(`no region ${i}`);
      const start = Math.ceil(r.next / align) * align;
      if (start + size <= r.size) {
        r.next = start + size;
        return r.guestPhysAddr + start;
      }
    }
    throw new Error(`guest memory exhausted: cannot allocate ${size} bytes${regionIdx === undefined ? '' : ` in region ${regionIdx}`}`);
  }

  /** Allocate `size` bytes ending exactly at the end of region `regionIdx` (for straddling buffers). */
  allocAtEnd(size: number, regionIdx: number): number {
    const r = this.regions[regionIdx]!;
    if (r.size - size < r.next) throw new Error(`region ${regionIdx} has no ${size} bytes left at its end`);
    const gpa = r.gpaEnd - size;
    return gpa;
  }

  /** Copy `src` into guest memory at `gpa` (may cross into the next adjacent region). */
  write(gpa: number, src: Uint8Array, srcOff = 0, len = src.byteLength - srcOff): void {
    let done = 0;
    while (done < len) {
      const r = this.region(gpa + done);
      const off = gpa + done - r.guestPhysAddr;
      const n = Math.min(len - done, r.size - off);
      r.bytes.set(src.subarray(srcOff + done, srcOff + done + n), off);
      done += n;
    }
  }

  /** Copy `len` bytes at `gpa` into `dst` (may cross into the next adjacent region). */
  read(gpa: number, len: number, dst: Uint8Array = new Uint8Array(len), dstOff = 0): Uint8Array {
    let done = 0;
    while (done < len) {
      const r = this.region(gpa + done);
      const off = gpa + done - r.guestPhysAddr;
      const n = Math.min(len - done, r.size - off);
      dst.set(r.bytes.subarray(off, off + n), dstOff + done);
      done += n;
    }
    return dst;
  }

  /** Unmap every region and close the memfd. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.regions) native.munmap(r.buffer);
    native.close(this.fd);
  }
}
