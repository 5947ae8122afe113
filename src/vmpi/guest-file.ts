/**
 * guest-file.ts — a file of the guest driver's /dev/vmpiN as user space sees it: reading SDUs
 * from a file bound to a channel (the ioctl numbers and record format are guest-uapi.ts's):
 * many SDUs per read(2) in the driver's batch mode (VMPI_IOC_SET_BATCH: records of le32 length +
 * SDU, each starting at a multiple of 4), one per read(2) with a driver that predates it.
 *
 * Shared by the guest port (guest-port.ts: its channel files) and a flow's data file in the guest
 * (guest-flow-file.ts, which the IPC client reaches through dif/ipc/flow-file-io.ts). Under TCG a read(2) from Node costs more than the SDU's own handling, so a burst of
 * SDUs in one call is what lets a Node reader in a VM keep up (see bench:fig4a).
 */
import { readSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { native } from '../sys/native.js';
import { VMPI_BATCH_ALIGN, VMPI_BATCH_RECORD_HEADER, VMPI_IOC_NEXT_LEN, u32Arg } from './guest-uapi.js';

// The uapi lives in guest-uapi.ts; re-exported here for the readers of channel files that
// import it with the reader.
export {
  VMPI_BATCH_READ,
  VMPI_BATCH_WRITE,
  VMPI_INFO_F_BOUND,
  VMPI_INFO_F_REMOVED,
  VMPI_INFO_F_SHUTDOWN,
  VMPI_INFO_SIZE,
  VMPI_INFO_SIZES,
  VMPI_IOC_BIND,
  VMPI_IOC_GET_INFO,
  VMPI_IOC_NEXT_LEN,
  VMPI_IOC_SET_BATCH,
  VMPI_IOC_SHUTDOWN,
  setBatchMode,
  setBatchModes,
  u32Arg,
  vmpiIoc,
  vmpiIocGetInfo,
} from './guest-uapi.js';

/** A read buffer that holds a good burst (and any one SDU up to 64 KiB). */
export const CHANNEL_READ_BUFFER = 256 * 1024;

/** readChannelFile(): nothing queued now (EAGAIN). */
export const READ_EMPTY = -1;
/** readChannelFile(): the file's binding ended (ESHUTDOWN, ENOTCONN): nothing more will come. */
export const READ_ENDED = -2;
/** readChannelFile(): the device is gone (ENODEV). */
export const READ_GONE = -3;


/** readInto(): the next SDU is larger than the buffer (EMSGSIZE: the driver never truncates). */
const READ_OVERSIZE = -4;

/**
 * What the reads of one channel file said about it: a reader keeps one per file (made once, not
 * per read) and passes it with every read of that file, then asks it. Two files read alternately
 * each keep their own answer.
 */
export class ChannelReadState {
  /**
   * The last read of this file was a batch read into the caller's buffer that left this many
   * bytes of it unused; -1 otherwise (one SDU per read, an SDU larger than the buffer read into
   * one of its own, nothing read, an error).
   */
  room = -1;

  /**
   * The last read of this file took everything the file held then: a batch read that left room
   * for a record of `maxSdu` bytes (the driver moves every queued record that fits). A reader may
   * then wait for the next readable event instead of reading again: the read after it would
   * almost always find nothing (EAGAIN, which Node's readSync throws: an exception, more costly
   * under TCG than the SDUs it follows). The poll is level-triggered, so what comes meanwhile, or
   * a record that did not fit, wakes the reader again: nothing waits longer than one turn of the loop.
   */
  drained(maxSdu: number): boolean {
    return this.room >= VMPI_BATCH_RECORD_HEADER + maxSdu + VMPI_BATCH_ALIGN;
  }
}

/**
 * One read(2) of `fd` (non-blocking) into `into`: the bytes read, or READ_EMPTY, READ_ENDED,
 * READ_GONE, or READ_OVERSIZE (when `mayGrow`: the next SDU is larger than `into`). Other errors throw.
 */
function readInto(fd: number, into: Uint8Array, mayGrow: boolean): number {
  try {
    return readSync(fd, into, 0, into.byteLength, null);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') return READ_EMPTY;
    if (code === 'ESHUTDOWN' || code === 'ENOTCONN' || code === 'EPIPE') return READ_ENDED;
    if (code === 'ENODEV') return READ_GONE;
    if (code === 'EMSGSIZE' && mayGrow) return READ_OVERSIZE;
    throw e;
  }
}

/** A buffer of its own for the next SDU of `fd`, larger than the caller's (its length from VMPI_IOC_NEXT_LEN). */
function oversizeBuffer(fd: number, batch: boolean): Uint8Array {
  const len = u32Arg(0);
  native.ioctl(fd, VMPI_IOC_NEXT_LEN, len);
  return new Uint8Array((batch ? VMPI_BATCH_RECORD_HEADER : 0) + new Uint32Array(len.buffer)[0]!);
}

/** What a read of `n` bytes into `into` (the caller's `buf` or not) tells `state` of its file. */
function note(state: ChannelReadState | undefined, batch: boolean, buf: Uint8Array, into: Uint8Array, n: number): void {
  if (state !== undefined) state.room = batch && into === buf && n >= 0 ? buf.byteLength - n : -1;
}

/**
 * One read(2) of `fd` (non-blocking): calls `onSdu` for every SDU it returned (the bytes are a
 * view of `buf`, valid only during the call) and returns how many, or READ_EMPTY, READ_ENDED,
 * READ_GONE. `batch`: the file is in batch mode. An SDU larger than `buf` is read into a buffer of
 * its own (the driver never truncates, so it would otherwise block the channel). Other errors
 * throw. `state`: the file's ChannelReadState, told what this read left (drained()).
 */
export function readChannelFile(fd: number, buf: Uint8Array, batch: boolean, onSdu: (sdu: Uint8Array) => void, state?: ChannelReadState): number {
  let into = buf;
  let n = readInto(fd, buf, true);
  if (n === READ_OVERSIZE) n = readInto(fd, (into = oversizeBuffer(fd, batch)), false);
  note(state, batch, buf, into, n);
  if (n < 0) return n;
  if (!batch) {
    onSdu(into.subarray(0, n));
    return 1;
  }
  const view = new DataView(into.buffer, into.byteOffset, n);
  let count = 0;
  for (let off = 0; off + VMPI_BATCH_RECORD_HEADER <= n; ) {
    const len = view.getUint32(off, true);
    const start = off + VMPI_BATCH_RECORD_HEADER;
    if (start + len > n) throw new Error(`VMPI batch read: a record of ${len} bytes at ${off} overruns the ${n} bytes read (driver/reader mismatch)`);
    onSdu(into.subarray(start, start + len));
    count++;
    off = start + len + ((VMPI_BATCH_ALIGN - ((start + len) % VMPI_BATCH_ALIGN)) % VMPI_BATCH_ALIGN);
  }
  return count;
}

/**
 * Where readChannelRecords() puts a read's SDUs without a view or a call per SDU: SDU i is
 * buffer[offsets[i], offsets[i] + lengths[i]), for i < count; bytes is their total. The arrays
 * hold at least CHANNEL_RECORDS_MAX entries.
 */
export interface ChannelRecords {
  buffer: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  count: number;
  bytes: number;
}

/** The most SDUs one batch read of CHANNEL_READ_BUFFER bytes can return (0-byte SDUs, 4 bytes each). */
export const CHANNEL_RECORDS_MAX = CHANNEL_READ_BUFFER / VMPI_BATCH_ALIGN;

/**
 * Parse `n` bytes of a batch read in `buf` into `out` (count, bytes, offsets, lengths); the
 * buffer is `buf`. Throws on a record that overruns the bytes read (a driver/reader mismatch).
 */
export function parseChannelRecords(buf: Uint8Array, n: number, out: ChannelRecords): void {
  const view = new DataView(buf.buffer, buf.byteOffset, n);
  const { offsets, lengths } = out;
  let count = 0;
  let bytes = 0;
  for (let off = 0; off + VMPI_BATCH_RECORD_HEADER <= n; ) {
    const len = view.getUint32(off, true);
    const start = off + VMPI_BATCH_RECORD_HEADER;
    if (start + len > n) throw new Error(`VMPI batch read: a record of ${len} bytes at ${off} overruns the ${n} bytes read (driver/reader mismatch)`);
    if (count === offsets.length) throw new Error(`VMPI batch read: more than ${offsets.length} records in ${n} bytes`);
    offsets[count] = start;
    lengths[count] = len;
    count++;
    bytes += len;
    off = (start + len + VMPI_BATCH_ALIGN - 1) & ~(VMPI_BATCH_ALIGN - 1);
  }
  out.buffer = buf;
  out.count = count;
  out.bytes = bytes;
}

/**
 * readChannelFile() that hands the SDUs of one read(2) to `out` all at once (no view, no call
 * per SDU): returns how many, or READ_EMPTY, READ_ENDED, READ_GONE. `batch`: the file is in
 * batch-read mode (otherwise one SDU, at offset 0). `out.buffer` is `buf`, or a buffer of its own
 * for an SDU larger than `buf`; valid until the next read into `buf`. `state`: as readChannelFile's.
 */
export function readChannelRecords(fd: number, buf: Uint8Array, batch: boolean, out: ChannelRecords, state?: ChannelReadState): number {
  let into = buf;
  let n = readInto(fd, buf, true);
  if (n === READ_OVERSIZE) n = readInto(fd, (into = oversizeBuffer(fd, batch)), false);
  note(state, batch, buf, into, n);
  if (n < 0) return n;
  if (batch) {
    parseChannelRecords(into, n, out);
  } else {
    out.buffer = into;
    out.offsets[0] = 0;
    out.lengths[0] = n;
    out.count = 1;
    out.bytes = n;
  }
  return out.count;
}
