/**
 * guest-file.ts — a file of the guest driver's /dev/vmpiN as user space sees it: the ioctl
 * numbers and flags of guest-driver/vmpi_uapi.h, and reading SDUs from a file bound to a channel:
 * many SDUs per read(2) in the driver's batch mode (VMPI_IOC_SET_BATCH: records of le32 length +
 * SDU, each starting at a multiple of 4), one per read(2) with a driver that predates it.
 *
 * Shared by the guest port (guest-port.ts: its channel files) and the IPC client (a flow's data
 * file in the guest). Under TCG a read(2) from Node costs more than the SDU's own handling, so a burst of
 * SDUs in one call is what lets a Node reader in a VM keep up (see bench:fig4a).
 */
import { readSync } from 'node:fs';
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
/** Read mode (u32): 0 one SDU per read, 1 batch. */
export const VMPI_IOC_SET_BATCH = vmpiIoc('write', 5, 4);
export const VMPI_INFO_F_BOUND = 1 << 0;
export const VMPI_INFO_F_REMOVED = 1 << 1;
export const VMPI_INFO_F_SHUTDOWN = 1 << 2;
const BATCH_ALIGN = 4;

/** A read buffer that holds a good burst (and any one SDU up to 64 KiB). */
export const CHANNEL_READ_BUFFER = 256 * 1024;

/** readChannelFile(): nothing queued now (EAGAIN). */
export const READ_EMPTY = -1;
/** readChannelFile(): the file's binding ended (ESHUTDOWN, ENOTCONN): nothing more will come. */
export const READ_ENDED = -2;
/** readChannelFile(): the device is gone (ENODEV). */
export const READ_GONE = -3;


/** A u32 ioctl argument, in host byte order as the kernel reads it. */
export function u32Arg(v: number): Uint8Array {
  const arg = new Uint8Array(4);
  new Uint32Array(arg.buffer)[0] = v;
  return arg;
}

/** Switch `fd` (its open file description) to batch reads; false if the driver predates them. */
export function setBatchMode(fd: number): boolean {
  try {
    native.ioctl(fd, VMPI_IOC_SET_BATCH, u32Arg(1));
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOTTY' || errnoCode(e) === 'EINVAL') return false;
    throw e;
  }
}

/**
 * One read(2) of `fd` (non-blocking): calls `onSdu` for every SDU it returned (the bytes are a
 * view of `buf`, valid only during the call) and returns how many, or READ_EMPTY, READ_ENDED,
 * READ_GONE. `batch`: the file is in batch mode. An SDU larger than `buf` is read into a buffer of
 * its own (the driver never truncates, so it would otherwise block the channel). Other errors
 * throw.
 */
export function readChannelFile(fd: number, buf: Uint8Array, batch: boolean, onSdu: (sdu: Uint8Array) => void): number {
  let n: number;
  let into = buf;
  for (;;) {
    try {
      n = readSync(fd, into, 0, into.byteLength, null);
      break;
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') return READ_EMPTY;
      if (code === 'ESHUTDOWN' || code === 'ENOTCONN' || code === 'EPIPE') return READ_ENDED;
      if (code === 'ENODEV') return READ_GONE;
      if (code !== 'EMSGSIZE' || into !== buf) throw e;
      const len = u32Arg(0);
      native.ioctl(fd, VMPI_IOC_NEXT_LEN, len);
      into = new Uint8Array((batch ? 4 : 0) + new Uint32Array(len.buffer)[0]!);
    }
  }
  if (!batch) {
    onSdu(into.subarray(0, n));
    return 1;
  }
  const view = new DataView(into.buffer, into.byteOffset, n);
  let count = 0;
  for (let off = 0; off + 4 <= n; ) {
    const len = view.getUint32(off, true);
    const start = off + 4;
    if (start + len > n) throw new Error(`VMPI batch read: a record of ${len} bytes at ${off} overruns the ${n} bytes read (driver/reader mismatch)`);
    onSdu(into.subarray(start, start + len));
    count++;
    off = start + len + ((BATCH_ALIGN - ((start + len) % BATCH_ALIGN)) % BATCH_ALIGN);
  }
  return count;
}
