/**
 * memory.ts — guest memory as the back-end sees it.
 *
 * Owns: the mapped memory regions of one connection (from SET_MEM_TABLE or ADD_MEM_REG), and the
 * translations the virtqueues need: guest-physical address → (region, offset) with bounds checks,
 * and front-end virtual address → guest-physical address (ring addresses arrive as the front-end's
 * virtual addresses). Each region keeps its fd open so the mapping can be handed to a process that
 * survives a restart; the region descriptions are plain data (see state.ts).
 *
 * Mapping is done through a small `Mapper` so tests can back regions with plain ArrayBuffers.
 *
 * Ownership: `add` owns the fd it is given from the first line on (closed on failure, or later by
 * `remove`/`clear`); every close of a region fd goes through `Mapper.closeFd`, exactly once.
 *
 * SIGBUS policy: touching a mapped page beyond the end of its file kills the process, and no
 * JavaScript can catch that. So before mapping, a region must lie inside its file
 * (mmapOffset + size <= fstat size: else 'region_beyond_fd'), and the file must not be able to
 * shrink later: it must carry F_SEAL_SHRINK, which QEMU's memory-backend-memfd sets by default
 * (seal=on adds F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL). An fd without that seal (an unsealed memfd,
 * memory-backend-file on tmpfs or hugetlbfs, memory-backend-shm) is refused ('memory_not_sealed')
 * unless the owner of the server trusts its front-ends and sets `allowUnsealed`: a front-end that
 * then truncates its memory file crashes the whole server.
 *
 * Address-space budget: a mapping costs no RAM until touched, but virtual address space is finite
 * (128 TiB for an x86-64 process, shared with the JavaScript heap), and a front-end can describe
 * huge sparse memfds. So one connection maps at most `maxMappedBytes` (default 4 TiB) and all the
 * connections of the process together at most `GuestMemory.processMaxMappedBytes` (64 TiB);
 * beyond either, the region is refused ('memory_budget') and nothing else is affected.
 */
import { MemoryAccessError, ProtocolError } from './errors.js';
import type { MemRegionDesc } from './messages.js';

/** F_SEAL_SHRINK from <linux/fcntl.h>. */
export const F_SEAL_SHRINK = 0x0002;

/** What `Mapper.inspect` reports about a memory fd. */
export interface FdInfo {
  /** File size (fstat st_size). */
  size: number;
  /** F_SEAL_* bits, or -1 when the file cannot be sealed at all. */
  seals: number;
  /** What the fd is, for messages (e.g. "/memfd:mem (deleted)"); read only when a region is refused. */
  what: string;
}

/** Maps `length` bytes of `fd` from the page-aligned `offset`; releases a mapping. */
export interface Mapper {
  pageSize: number;
  /** Size and seals of a memory fd; throws if the fd cannot be inspected. */
  inspect(fd: number): FdInfo;
  map(fd: number, offset: number, length: number): ArrayBuffer;
  unmap(buffer: ArrayBuffer): void;
  closeFd(fd: number): void;
}

/** Default per-connection cap on mapped guest memory (address space, not RAM): 4 TiB. */
export const DEFAULT_MAX_MAPPED_BYTES = 4 * 2 ** 40;
/** Default cap for every connection of the process together: 64 TiB of the 128 TiB there are. */
export const DEFAULT_PROCESS_MAX_MAPPED_BYTES = 64 * 2 ** 40;

export interface GuestMemoryOptions {
  /** Bytes of guest memory this connection may map at once (default DEFAULT_MAX_MAPPED_BYTES). */
  maxMappedBytes?: number;
  /**
   * Accept memory fds that could shrink under the mapping (no F_SEAL_SHRINK). Default false: only
   * for trusted front-ends, since one that truncates its file crashes the server with SIGBUS.
   */
  allowUnsealed?: boolean;
}

export class MappedRegion {
  /** Bytes of guest memory [guestPhysAddr, guestPhysAddr + size). */
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly gpaEnd: number;
  readonly uvaEnd: number;

  constructor(
    readonly desc: Readonly<MemRegionDesc>,
    readonly fd: number,
    private readonly mapping: ArrayBuffer,
    mapDelta: number,
    /** Bytes of address space the mapping takes (page-aligned start to end of the region). */
    readonly mappedBytes: number = mapDelta + desc.size,
  ) {
    this.bytes = new Uint8Array(mapping, mapDelta, desc.size);
    this.view = new DataView(mapping, mapDelta, desc.size);
    this.gpaEnd = desc.guestPhysAddr + desc.size;
    this.uvaEnd = desc.userAddr + desc.size;
  }

  /** @internal */
  release(mapper: Mapper): void {
    mapper.unmap(this.mapping);
    mapper.closeFd(this.fd);
  }
}

export class GuestMemory {
  /** Cap on the bytes all GuestMemory instances of the process map together. */
  static processMaxMappedBytes = DEFAULT_PROCESS_MAX_MAPPED_BYTES;
  private static processMapped = 0;

  /** Bytes all GuestMemory instances of the process map now. */
  static get processMappedBytes(): number {
    return GuestMemory.processMapped;
  }

  private regions: MappedRegion[] = [];
  private last: MappedRegion | undefined;
  private mapped = 0;

  private readonly allowUnsealed: boolean;
  readonly maxMappedBytes: number;

  constructor(
    private readonly mapper: Mapper,
    readonly maxRegions: number,
    opts: GuestMemoryOptions = {},
  ) {
    this.allowUnsealed = opts.allowUnsealed ?? false;
    this.maxMappedBytes = opts.maxMappedBytes ?? DEFAULT_MAX_MAPPED_BYTES;
  }

  /** Bytes of address space this connection's regions take. */
  get mappedBytes(): number {
    return this.mapped;
  }

  get regionCount(): number {
    return this.regions.length;
  }

  /** The region descriptions, in insertion order (serialisable). */
  descriptions(): MemRegionDesc[] {
    return this.regions.map((r) => ({ ...r.desc }));
  }

  /** The fds that back the regions, in the same order as `descriptions()`. */
  fds(): number[] {
    return this.regions.map((r) => r.fd);
  }

  /**
   * Map one region and take ownership of `fd` (closed on failure and on removal).
   * Rejects overlaps in guest-physical or front-end virtual space.
   */
  add(request: string, desc: MemRegionDesc, fd: number): MappedRegion {
    try {
      if (this.regions.length >= this.maxRegions) {
        throw new ProtocolError(request, `too many memory regions (limit ${this.maxRegions})`);
      }
      for (const r of this.regions) {
        if (desc.guestPhysAddr < r.gpaEnd && r.desc.guestPhysAddr < desc.guestPhysAddr + desc.size) {
          throw new ProtocolError(request, `region 0x${desc.guestPhysAddr.toString(16)}+0x${desc.size.toString(16)} overlaps region 0x${r.desc.guestPhysAddr.toString(16)}+0x${r.desc.size.toString(16)} in guest-physical space`);
        }
        if (desc.userAddr < r.uvaEnd && r.desc.userAddr < desc.userAddr + desc.size) {
          throw new ProtocolError(request, `region at user address 0x${desc.userAddr.toString(16)} overlaps another region's user addresses`);
        }
      }
      const where = `region 0x${desc.guestPhysAddr.toString(16)}+0x${desc.size.toString(16)} (fd ${fd}, offset ${desc.mmapOffset})`;
      let info: FdInfo;
      try {
        info = this.mapper.inspect(fd);
      } catch (e) {
        throw new ProtocolError(request, `cannot inspect the fd of ${where}: ${(e as Error).message}`, 'map_failed');
      }
      const end = desc.mmapOffset + desc.size;
      if (end > info.size) {
        throw new ProtocolError(request, `${where} ends at file offset ${end}, beyond the end of its fd (${info.size} bytes, ${info.what}): the front-end described memory its file does not hold`, 'region_beyond_fd');
      }
      if (!this.allowUnsealed && (info.seals < 0 || (info.seals & F_SEAL_SHRINK) === 0)) {
        throw new ProtocolError(
          request,
          `the fd of ${where} (${info.what}) ${info.seals < 0 ? 'cannot be sealed' : 'has no F_SEAL_SHRINK seal'}, so it could shrink under the mapping and crash the server (SIGBUS); give QEMU memory-backend-memfd with seal=on (the default), or allow unsealed memory for trusted front-ends`,
          'memory_not_sealed',
        );
      }
      const page = this.mapper.pageSize;
      const mapOffset = Math.floor(desc.mmapOffset / page) * page;
      const delta = desc.mmapOffset - mapOffset;
      const length = delta + desc.size;
      if (this.mapped + length > this.maxMappedBytes) {
        throw new ProtocolError(request, `${where} would bring this front-end's guest memory to ${this.mapped + length} bytes, over its budget of ${this.maxMappedBytes}`, 'memory_budget');
      }
      if (GuestMemory.processMapped + length > GuestMemory.processMaxMappedBytes) {
        throw new ProtocolError(request, `${where} would bring the guest memory this server maps for all its front-ends to ${GuestMemory.processMapped + length} bytes, over the budget of ${GuestMemory.processMaxMappedBytes}`, 'memory_budget');
      }
      let mapping: ArrayBuffer;
      try {
        mapping = this.mapper.map(fd, mapOffset, length);
      } catch (e) {
        throw new ProtocolError(request, `cannot map ${where}: ${(e as Error).message}`, 'map_failed');
      }
      const region = new MappedRegion({ ...desc }, fd, mapping, delta, length);
      this.regions.push(region);
      this.mapped += length;
      GuestMemory.processMapped += length;
      return region;
    } catch (e) {
      this.mapper.closeFd(fd);
      throw e;
    }
  }

  private release(r: MappedRegion): void {
    this.mapped -= r.mappedBytes;
    GuestMemory.processMapped -= r.mappedBytes;
    r.release(this.mapper);
  }

  /** Close a region fd that never reached `add` (e.g. the rest of a failed SET_MEM_TABLE). */
  closeFd(fd: number): void {
    this.mapper.closeFd(fd);
  }

  /** Remove the region matching `desc` (REM_MEM_REG matches on guest address, size and user address). */
  remove(request: string, desc: MemRegionDesc): void {
    const i = this.regions.findIndex(
      (r) => r.desc.guestPhysAddr === desc.guestPhysAddr && r.desc.size === desc.size && r.desc.userAddr === desc.userAddr,
    );
    if (i < 0) throw new ProtocolError(request, `no region at guest address 0x${desc.guestPhysAddr.toString(16)} of size 0x${desc.size.toString(16)}`);
    const [r] = this.regions.splice(i, 1);
    if (this.last === r) this.last = undefined;
    this.release(r!);
  }

  /** Unmap every region and close its fd. */
  clear(): void {
    for (const r of this.regions) this.release(r);
    this.regions = [];
    this.last = undefined;
  }

  /**
   * The region holding guest-physical [gpa, gpa+len) whole, or undefined. Hot path: checks the
   * last region found first.
   */
  find(gpa: number, len: number): MappedRegion | undefined {
    const last = this.last;
    if (last !== undefined && gpa >= last.desc.guestPhysAddr && gpa + len <= last.gpaEnd) return last;
    for (const r of this.regions) {
      if (gpa >= r.desc.guestPhysAddr && gpa + len <= r.gpaEnd) {
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** The region holding the first byte of `gpa` (for ranges that may continue into the next region). */
  findStart(gpa: number): MappedRegion | undefined {
    return this.find(gpa, 1);
  }

  /** Translate a front-end virtual range (ring addresses) to a guest-physical address. */
  uvaToGpa(uva: number, len: number, what: string): number {
    for (const r of this.regions) {
      if (uva >= r.desc.userAddr && uva + len <= r.uvaEnd) return r.desc.guestPhysAddr + (uva - r.desc.userAddr);
    }
    throw new MemoryAccessError(`${what} at front-end address 0x${uva.toString(16)} (+${len}) is not inside any memory region`);
  }
}
