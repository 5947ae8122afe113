/**
 * record.ts — the record codec of a flow's SOCK_SEQPACKET socket (the host data path, see
 * datapath.ts): one tag byte (RECORD_SDU) then the SDU, one record per SDU; reading and writing
 * one record, and sizing the socket's buffers so that a max-SDU record fits.
 */
import { native } from '../../sys/native.js';

export const RECORD_SDU = 0;

let scratch = new Uint8Array(4096);

function scratchOf(size: number): Uint8Array {
  if (scratch.byteLength < size) scratch = new Uint8Array(Math.max(size, scratch.byteLength * 2));
  return scratch;
}

/**
 * 'full': nothing was sent (EAGAIN). 'too_large': the record is larger than the socket's send
 * buffer (EMSGSIZE): it can never be sent on this socket (see sizeFlowSocket).
 */
export type WriteRecordResult = 'sent' | 'full' | 'closed' | 'too_large';

/** Send one SDU as one record (tag + bytes). */
export function writeRecord(fd: number, sdu: Uint8Array): WriteRecordResult {
  const buf = scratchOf(sdu.byteLength + 1);
  buf[0] = RECORD_SDU;
  buf.set(sdu, 1);
  let n: number;
  try {
    n = native.sendMsg(fd, buf, 0, sdu.byteLength + 1, null);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ENOTCONN') return 'closed';
    if (code === 'EMSGSIZE') return 'too_large';
    throw e;
  }
  return n < 0 ? 'full' : 'sent';
}

/**
 * Records up to this size fit the default AF_UNIX send buffer (net.core.wmem_default, 208 KiB,
 * less the kernel's overhead) with room to spare: smaller flows keep the defaults.
 */
const DEFAULT_RECORD_ROOM = 128 * 1024;

/**
 * Give a flow socket send/receive buffers that fit one record of the flow's max SDU (SDU + tag),
 * for both ends of the pair. Unprivileged, the kernel caps the buffer at net.core.wmem_max:
 * returns false when a max-SDU record still does not fit (those SDUs are then refused: dropped
 * and counted by the bridge, `sdu_too_large` for the application's writes).
 */
export function sizeFlowSocket(fd: number, maxSdu: number): boolean {
  const record = maxSdu + 1;
  if (record <= DEFAULT_RECORD_ROOM) return true;
  // Linux doubles what is asked (half is bookkeeping) and wants 32 bytes of headroom per record.
  const granted = native.setSocketBuffers(fd, record + 4096);
  return granted - 32 >= record;
}

export type ReadRecordResult =
  | { kind: 'sdu'; sdu: Uint8Array }
  | { kind: 'empty' }
  | { kind: 'eof' }
  | { kind: 'bad'; why: string }
  /** The peer sent file descriptors with a record (they were closed unread, the record lost). */
  | { kind: 'fds' };

const EMPTY: ReadRecordResult = Object.freeze({ kind: 'empty' });
const EOF: ReadRecordResult = Object.freeze({ kind: 'eof' });

/**
 * Read one record whose SDU is at most `maxSdu` bytes. The SDU returned is a view of a shared
 * scratch buffer, valid until the next call: copy it (or hand it to something that copies).
 */
export function readRecord(fd: number, maxSdu: number): ReadRecordResult {
  const cap = maxSdu + 2; // tag + max SDU + 1 byte to notice a longer (truncated) record
  const buf = scratchOf(cap);
  let n: number;
  try {
    // recvBytes: no result object per record (this runs once per SDU, in the daemon and the client).
    n = native.recvBytes(fd, buf, 0, cap);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') return { kind: 'eof' };
    if (code === 'EMSGSIZE') return { kind: 'fds' };
    throw e;
  }
  if (n < 0) return EMPTY;
  if (n === 0) return EOF;
  if (n >= cap) return { kind: 'bad', why: `record larger than the flow's max SDU of ${maxSdu} bytes` };
  if (buf[0] !== RECORD_SDU) return { kind: 'bad', why: `unknown record tag ${buf[0]}` };
  return { kind: 'sdu', sdu: buf.subarray(1, n) };
}
