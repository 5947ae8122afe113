/**
 * guest-tx-batch.ts — SDUs waiting to be written to one /dev/vmpiN file, copied into the
 * driver's batch-write records (VMPI_BATCH_WRITE, docs/DEVICE.md: le32 length, the SDU, padding
 * to a multiple of 4), so that many leave with one write(2) and the driver makes a frame of each.
 *
 * Owns: that buffer (bounded in SDUs and bytes; an empty one takes any SDU), what a write's
 * return value means for it (whole records from the head, never part of one), and writing it
 * out: one write(2) for all of it in batch-write mode, one write(2) per SDU with a driver that
 * predates batch writes (the same buffer, each SDU's bytes). Used by a flow's file in the guest
 * (guest-flow-file.ts) and by the guest port (guest-port.ts). Under TCG a system call per SDU
 * cost more than the SDU (issue #15), so this is what lets a Node writer in a VM keep up.
 */
import { writeSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { VMPI_BATCH_ALIGN, VMPI_BATCH_RECORD_HEADER } from './guest-uapi.js';

/** Bytes a record of an SDU of `len` bytes takes, its padding included. */
export function recordSize(len: number): number {
  return (VMPI_BATCH_RECORD_HEADER + len + VMPI_BATCH_ALIGN - 1) & ~(VMPI_BATCH_ALIGN - 1);
}

/**
 * One write(2): the bytes it took (≥ 0), 'again' (EAGAIN: the tx ring is full), or 'closed'
 * (the binding or the device ended: ESHUTDOWN, ENODEV, ENOTCONN, EPIPE). Other errors throw.
 */
export type TxWriter = (buf: Uint8Array, off: number, len: number) => number | 'again' | 'closed';

const ENDED = new Set(['ESHUTDOWN', 'ENODEV', 'ENOTCONN', 'EPIPE']);

/** The TxWriter of a non-blocking /dev/vmpiN file. */
export function fileWriter(fd: number): TxWriter {
  return (buf, off, len) => {
    try {
      return writeSync(fd, buf, off, len);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') return 'again';
      if (code !== undefined && ENDED.has(code)) return 'closed';
      throw e;
    }
  };
}

/** TxRecords.flush(): all written; the ring filled (the rest stays, in order); the file ended (the rest stays, for discard()). */
export type TxFlushResult = 'done' | 'full' | 'closed';

export class TxRecords {
  private buf: Uint8Array;
  private view: DataView;
  /** Pending records are buf[head, end). */
  private head = 0;
  private end = 0;
  private _sdus = 0;
  private _bytes = 0;
  /** SDUs and bytes the last flush() wrote. */
  sentSdus = 0;
  sentBytes = 0;

  constructor(
    readonly maxSdus = 256,
    readonly maxBytes = 256 * 1024,
  ) {
    this.buf = new Uint8Array(Math.min(64 * 1024, maxBytes));
    this.view = new DataView(this.buf.buffer);
  }

  /** SDUs waiting. */
  get sdus(): number {
    return this._sdus;
  }

  /** SDU bytes waiting (records' headers and padding not counted). */
  get bytes(): number {
    return this._bytes;
  }

  get isEmpty(): boolean {
    return this._sdus === 0;
  }

  /** Whether an SDU of `len` bytes fits the bounds now (an empty buffer takes any). */
  fits(len: number): boolean {
    return this._sdus === 0 || (this._sdus < this.maxSdus && this.end - this.head + recordSize(len) <= this.maxBytes);
  }

  /** Copy `sdu` in as a record, at the tail (whatever the bounds: ask fits() first). */
  add(sdu: Uint8Array): void {
    const len = sdu.byteLength;
    const need = recordSize(len);
    if (this.end + need > this.buf.byteLength) this.makeRoom(need);
    const at = this.end;
    this.view.setUint32(at, len, true);
    this.buf.set(sdu, at + VMPI_BATCH_RECORD_HEADER);
    this.end = at + need;
    this._sdus++;
    this._bytes += len;
  }

  /**
   * Write the records out with `write` until done, the ring is full or the file ended: in batch
   * mode (`batch`) as few write(2) calls as the ring allows, each taking whole records from the
   * head; otherwise one write(2) per SDU. sentSdus/sentBytes say what went.
   */
  flush(write: TxWriter, batch: boolean): TxFlushResult {
    this.sentSdus = 0;
    this.sentBytes = 0;
    while (this._sdus > 0) {
      if (batch) {
        const r = write(this.buf, this.head, this.end - this.head);
        if (r === 'again') return 'full';
        if (r === 'closed') return 'closed';
        if (r === 0) return 'full';
        this.consumed(r);
        // The driver takes records until its ring fills (or a record is bad, or a signal came):
        // a prefix means the ring is full now, and writing again would only throw EAGAIN, one
        // exception per ring-full cycle under TCG. Poll for writable instead; it is level-
        // triggered, so a ring with room (the bad-record and signal cases) fires at once.
        if (this._sdus > 0) return 'full';
      } else {
        const len = this.view.getUint32(this.head, true);
        const r = write(this.buf, this.head + VMPI_BATCH_RECORD_HEADER, len);
        if (r === 'again') return 'full';
        if (r === 'closed') return 'closed';
        this.consumed(recordSize(len));
      }
    }
    return 'done';
  }

  /** Length of the head SDU (the buffer must not be empty). */
  headLength(): number {
    return this.view.getUint32(this.head, true);
  }

  /** Drop the head SDU (it could not be written); returns its length. */
  dropHead(): number {
    const len = this.headLength();
    this.head += recordSize(len);
    this._sdus--;
    this._bytes -= len;
    if (this._sdus === 0) this.head = this.end = 0;
    return len;
  }

  /** Forget what waits (the file or device is gone); returns how many SDUs. */
  clear(): number {
    const n = this._sdus;
    this.head = this.end = this._sdus = this._bytes = 0;
    return n;
  }

  /**
   * `n` bytes from the head were written: the driver takes whole records only, the last one's
   * padding included, or up to the end of the buffer. Anything else is a driver mismatch.
   */
  private consumed(n: number): void {
    const stop = this.head + n;
    if (stop > this.end) throw new Error(`VMPI batch write: the driver took ${n} bytes of ${this.end - this.head}`);
    let p = this.head;
    while (p < stop) {
      const len = this.view.getUint32(p, true);
      const next = p + recordSize(len);
      if (next > stop && stop !== this.end) throw new Error(`VMPI batch write: the driver took ${n} bytes, which ends inside a record (driver/writer mismatch)`);
      p = next;
      this._sdus--;
      this._bytes -= len;
      this.sentSdus++;
      this.sentBytes += len;
    }
    this.head = Math.min(p, this.end);
    if (this.head === this.end) this.head = this.end = 0;
  }

  /** Room for `need` more bytes at the tail: move the pending records to the front, then grow. */
  private makeRoom(need: number): void {
    if (this.head > 0) {
      this.buf.copyWithin(0, this.head, this.end);
      this.end -= this.head;
      this.head = 0;
    }
    if (this.end + need > this.buf.byteLength) {
      let size = this.buf.byteLength;
      while (size < this.end + need) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.buf.subarray(0, this.end));
      this.buf = grown;
      this.view = new DataView(grown.buffer);
    }
  }
}
