/**
 * guest-uapi.ts — the user-space interface of the VMPI guest driver (guest-driver/vmpi_uapi.h)
 * in TypeScript: the ioctl numbers, the VMPI_INFO_F_* flags, struct vmpi_info and its parser,
 * the batch-read record format, and the two ioctl calls every user makes (bind, batch mode).
 *
 * Owns: the one copy of those numbers and layouts. The guest port (guest-port.ts), the channel
 * file reader (guest-file.ts) and a flow's data file (guest-flow-file.ts) use them from here; a change to vmpi_uapi.h is a
 * change to this file only.
 */
import { constants as fsc } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { native } from '../sys/native.js';

const IOC_WRITE = 1;
const IOC_READ = 2;
const VMPI_IOC_MAGIC = 0xb7;
/** _IOC(dir, type, nr, size) of asm-generic/ioctl.h, as an unsigned 32-bit number. */
export function vmpiIoc(dir: 'none' | 'read' | 'write', nr: number, size: number): number {
  const d = dir === 'none' ? 0 : dir === 'read' ? IOC_READ : IOC_WRITE;
  return d * 2 ** 30 + size * 2 ** 16 + VMPI_IOC_MAGIC * 2 ** 8 + nr;
}
/**
 * sizeof(struct vmpi_info): 8 u32 + struct vmpi_stats (9 u64). The size is part of the ioctl
 * number and counters get appended to vmpi_stats, so readers also accept the older layouts.
 */
export const VMPI_INFO_SIZE = 104;
export const VMPI_INFO_SIZES = [VMPI_INFO_SIZE, 96];
export const VMPI_IOC_BIND = vmpiIoc('write', 1, 4);
export const vmpiIocGetInfo = (size: number): number => vmpiIoc('read', 2, size);
export const VMPI_IOC_GET_INFO = vmpiIocGetInfo(VMPI_INFO_SIZE);
/** Length of the next queued SDU (u32), without taking it. */
export const VMPI_IOC_NEXT_LEN = vmpiIoc('read', 3, 4);
/** _IO: no direction, no argument: issue it with native.ioctlNoArg. */
export const VMPI_IOC_SHUTDOWN = vmpiIoc('none', 4, 0);
/** Batch modes (u32, a mask of VMPI_BATCH_READ | VMPI_BATCH_WRITE; 0: one SDU per read and per write). */
export const VMPI_IOC_SET_BATCH = vmpiIoc('write', 5, 4);
/** read(2) returns many SDUs, as records. */
export const VMPI_BATCH_READ = 1;
/** write(2) takes many SDUs, as records (drivers that predate it refuse the bit with EINVAL). */
export const VMPI_BATCH_WRITE = 2;
export const VMPI_INFO_F_BOUND = 1 << 0;
export const VMPI_INFO_F_REMOVED = 1 << 1;
export const VMPI_INFO_F_SHUTDOWN = 1 << 2;

/** Batch-mode records (read(2) and write(2)): a le32 length, then the SDU; the next record starts at a multiple of VMPI_BATCH_ALIGN. */
export const VMPI_BATCH_RECORD_HEADER = 4;
export const VMPI_BATCH_ALIGN = 4;

/** How every user opens /dev/vmpiN: read-write, non-blocking (libuv adds O_CLOEXEC). */
export const VMPI_OPEN_FLAGS = fsc.O_RDWR | fsc.O_NONBLOCK;

/** struct vmpi_info, as VMPI_IOC_GET_INFO returns it. Counters are per device, since probe. */
export interface GuestVmpiInfo {
  vmpiId: number;
  maxSdu: number;
  /** N in /dev/vmpiN. */
  index: number;
  /** VMPI_INFO_F_*. */
  flags: number;
  removed: boolean;
  /** Driver's per-channel receive queue bound, in SDUs. */
  rxQueueLen: number;
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  rxDropsUnbound: number;
  rxDropsFull: number;
  rxMalformed: number;
  rxDropsNomem: number;
  /** 0 from drivers whose vmpi_stats predate it. */
  rxDropsStalled: number;
}

export function parseVmpiInfo(b: Uint8Array): GuestVmpiInfo {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u32 = (o: number) => v.getUint32(o, true);
  const u64 = (o: number) => Number(v.getBigUint64(o, true));
  const flags = u32(12);
  return {
    vmpiId: u32(0),
    maxSdu: u32(4),
    index: u32(8),
    flags,
    removed: (flags & VMPI_INFO_F_REMOVED) !== 0,
    rxQueueLen: u32(24),
    rxFrames: u64(32),
    rxBytes: u64(40),
    txFrames: u64(48),
    txBytes: u64(56),
    rxDropsUnbound: u64(64),
    rxDropsFull: u64(72),
    rxMalformed: u64(80),
    rxDropsNomem: u64(88),
    rxDropsStalled: b.byteLength >= 104 ? u64(96) : 0,
  };
}

/** A u32 ioctl argument, in host byte order as the kernel reads it. */
export function u32Arg(v: number): Uint8Array {
  const arg = new Uint8Array(4);
  new Uint32Array(arg.buffer)[0] = v;
  return arg;
}

/** Switch `fd` (its open file description) to batch reads; false if the driver predates them. */
export function setBatchMode(fd: number): boolean {
  return trySetBatch(fd, VMPI_BATCH_READ);
}

/** What setBatchModes() could switch on. */
export interface BatchModes {
  read: boolean;
  write: boolean;
}

/**
 * Switch `fd` to batch reads and batch writes, or to batch reads alone with a driver that
 * predates batch writes (it refuses the bit with EINVAL), or to neither with one older still.
 */
export function setBatchModes(fd: number): BatchModes {
  if (trySetBatch(fd, VMPI_BATCH_READ | VMPI_BATCH_WRITE)) return { read: true, write: true };
  return { read: trySetBatch(fd, VMPI_BATCH_READ), write: false };
}

function trySetBatch(fd: number, mode: number): boolean {
  try {
    native.ioctl(fd, VMPI_IOC_SET_BATCH, u32Arg(mode));
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOTTY' || errnoCode(e) === 'EINVAL') return false;
    throw e;
  }
}
