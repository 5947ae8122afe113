/**
 * A Mapper (src/vhost-user/memory.ts) backed by plain ArrayBuffers, for tests that need guest
 * memory without the native addon. Records every map/unmap/closeFd call so tests can check that
 * each fd is closed exactly once and each mapping released. `inspect` reports a file's size
 * (unbounded when no file is set) and, unless `infos` says otherwise, a sealed memfd.
 */
import { GuestMemory, type FdInfo, type Mapper } from '../../src/vhost-user/memory.js';
import type { MemRegionDesc } from '../../src/vhost-user/messages.js';

export interface MapCall {
  fd: number;
  offset: number;
  length: number;
  buffer: ArrayBuffer;
}

export class ArrayMapper implements Mapper {
  /** Contents of the "files" behind fds; a mapping starts as a copy of the mapped file range. */
  readonly files = new Map<number, Uint8Array>();
  readonly maps: MapCall[] = [];
  readonly unmaps: ArrayBuffer[] = [];
  readonly closed: number[] = [];
  /** What inspect() reports per fd, overriding the default (sealed memfd, size of `files` or unbounded). */
  readonly infos = new Map<number, Partial<FdInfo>>();
  /** When set, the next map() throws this and clears it. */
  failNextMap: Error | null = null;

  inspect(fd: number): FdInfo {
    const file = this.files.get(fd);
    return { size: file ? file.byteLength : Number.MAX_SAFE_INTEGER, seals: 0x7, what: `/memfd:test-${fd} (deleted)`, ...this.infos.get(fd) };
  }

  constructor(readonly pageSize = 4096) {}

  map(fd: number, offset: number, length: number): ArrayBuffer {
    // mmap(2) refuses an offset that is not a multiple of the page size (EINVAL).
    if (offset % this.pageSize !== 0) throw new Error(`EINVAL: offset ${offset} is not page-aligned`);
    if (this.failNextMap) {
      const e = this.failNextMap;
      this.failNextMap = null;
      throw e;
    }
    const buffer = new ArrayBuffer(length);
    const file = this.files.get(fd);
    if (file) new Uint8Array(buffer).set(file.subarray(offset, offset + length));
    this.maps.push({ fd, offset, length, buffer });
    return buffer;
  }

  unmap(buffer: ArrayBuffer): void {
    this.unmaps.push(buffer);
  }

  closeFd(fd: number): void {
    this.closed.push(fd);
  }

  /** Mappings made and not yet unmapped. */
  live(): MapCall[] {
    return this.maps.filter((m) => !this.unmaps.includes(m.buffer));
  }
}

/** Guest memory with the given regions, fds 100, 101, ... */
export function memoryWith(regions: MemRegionDesc[], maxRegions = 32, pageSize = 4096): { mem: GuestMemory; mapper: ArrayMapper } {
  const mapper = new ArrayMapper(pageSize);
  const mem = new GuestMemory(mapper, maxRegions);
  regions.forEach((r, i) => mem.add('TEST', r, 100 + i));
  return { mem, mapper };
}
