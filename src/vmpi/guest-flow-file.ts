/**
 * guest-flow-file.ts — SDU I/O on a /dev/vmpiN file bound to one flow's channel, as an
 * application in the guest does it: writes go through a GuestFlowOutbox (the SDUs of a tick
 * leave with one write(2) in the driver's batch-write mode, guest-tx-batch.ts; one untagged SDU
 * per write(2) with a driver that predates it), reads in the driver's batch mode when it has one
 * (guest-file.ts; all SDUs of a read at once with readVmpiFileRecords), the flow's end
 * (ESHUTDOWN) and the device's (ENODEV) as "ended". The IPC client reaches this through its FlowFileIo (dif/ipc/flow-file-io.ts) when the
 * daemon hands it such a file ('vmpi_file' data path), so it never sees the driver's format.
 */
import { writeSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { CHANNEL_READ_BUFFER, ChannelReadState, READ_EMPTY, READ_ENDED, READ_GONE, readChannelFile, readChannelRecords, setBatchModes, type ChannelRecords } from './guest-file.js';
import { TxRecords, fileWriter, type TxWriter } from './guest-tx-batch.js';

export { CHANNEL_RECORDS_MAX, ChannelReadState, type ChannelRecords } from './guest-file.js';

/** 'full': the tx ring has no room (EAGAIN); 'closed': the flow's binding or the device ended. */
export type GuestFlowWriteResult = 'sent' | 'full' | 'closed';

/** Where the SDUs of one read go: each SDU (bytes valid only during the call), or a bad one. */
export interface GuestFlowSink {
  sdu(sdu: Uint8Array): void;
  bad(why: string): void;
}

/** readVmpiFileBatch(): nothing queued now. */
export const FLOW_FILE_EMPTY = READ_EMPTY;
/** readVmpiFileBatch(): the flow (or the device) ended: nothing more will come. */
export const FLOW_FILE_ENDED = READ_ENDED;

/** The flow's file was shut down (its end), or the device went away. */
const FILE_ENDED = new Set(['ESHUTDOWN', 'ENODEV', 'ENOTCONN', 'EPIPE']);

/** Write one SDU to a flow's /dev/vmpiN file (non-blocking). 'full': the tx ring has no room. */
export function writeVmpiFile(fd: number, sdu: Uint8Array): GuestFlowWriteResult {
  try {
    writeSync(fd, sdu, 0, sdu.byteLength);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') return 'full';
    if (code !== undefined && FILE_ENDED.has(code)) return 'closed';
    throw e;
  }
  return 'sent';
}

let fileBuf: Uint8Array | null = null;

/**
 * One read of a flow's /dev/vmpiN file (non-blocking; in batch mode when `batch`, see
 * guest-file.ts): every SDU goes to `sink`, an SDU longer than `maxSdu` (the peer broke the
 * flow's QoS) as bad. Returns how many SDUs it read, FLOW_FILE_EMPTY or FLOW_FILE_ENDED (the end
 * of the flow, ESHUTDOWN, and of the device, ENODEV). `state`: the file's, told what the read left.
 */
export function readVmpiFileBatch(fd: number, batch: boolean, maxSdu: number, sink: GuestFlowSink, state?: ChannelReadState): number {
  fileBuf ??= new Uint8Array(CHANNEL_READ_BUFFER);
  const n = readChannelFile(
    fd,
    fileBuf,
    batch,
    (sdu) => {
      if (sdu.byteLength > maxSdu) sink.bad(`SDU of ${sdu.byteLength} bytes exceeds the flow's max SDU of ${maxSdu} bytes`);
      else sink.sdu(sdu);
    },
    state,
  );
  return n === READ_GONE ? FLOW_FILE_ENDED : n;
}

/**
 * One read of a flow's file with every SDU it returned in `out` at once (guest-file.ts
 * readChannelRecords; valid until the next read of any flow's file in this process): how many,
 * FLOW_FILE_EMPTY or FLOW_FILE_ENDED. The caller checks the lengths against the flow's max SDU.
 * `state`: the file's, told what the read left.
 */
export function readVmpiFileRecords(fd: number, batch: boolean, out: ChannelRecords, state?: ChannelReadState): number {
  fileBuf ??= new Uint8Array(CHANNEL_READ_BUFFER);
  const n = readChannelRecords(fd, fileBuf, batch, out, state);
  return n === READ_GONE ? FLOW_FILE_ENDED : n;
}

/** GuestFlowOutbox.offer(): copied in (it leaves with the next flush), or not taken. */
export type GuestOfferResult = 'queued' | 'full' | 'closed';

/**
 * The SDUs a flow's writer accepted but did not write yet, copied into batch-write records
 * (guest-tx-batch.ts), bounded (256 SDUs, 256 KiB; an empty one takes any SDU). offer() flushes
 * when the bound is reached and says 'full' only when the ring takes nothing more; flush() writes
 * as many as the ring takes and keeps the rest, in order.
 */
export class GuestFlowOutbox {
  private readonly recs = new TxRecords();
  private readonly writer: TxWriter;

  constructor(
    fd: number,
    /** The file is in batch-write mode (VMPI_BATCH_WRITE); else one write(2) per SDU. */
    readonly batch: boolean,
  ) {
    this.writer = fileWriter(fd);
  }

  /** SDUs waiting. */
  get length(): number {
    return this.recs.sdus;
  }

  offer(sdu: Uint8Array): GuestOfferResult {
    if (!this.recs.fits(sdu.byteLength)) {
      const r = this.flush();
      if (r !== 'done') return r;
    }
    this.recs.add(sdu);
    return 'queued';
  }

  flush(): 'done' | 'full' | 'closed' {
    return this.recs.isEmpty ? 'done' : this.recs.flush(this.writer, this.batch);
  }

  /** Drop what waits; returns how many SDUs. */
  discard(): number {
    return this.recs.clear();
  }
}

/** Read and write SDUs on one flow's file (one per file: it keeps what the file's last read left). */
export interface GuestFlowFileIo {
  /** The file is in batch-read mode. */
  readonly batchRead: boolean;
  /** The file is in batch-write mode. */
  readonly batchWrite: boolean;
  /** readVmpiFileBatch() of this file. */
  read(fd: number, maxSdu: number, sink: GuestFlowSink): number;
  /** readVmpiFileRecords() of this file. */
  readRecords(fd: number, out: ChannelRecords): number;
  write(fd: number, sdu: Uint8Array): GuestFlowWriteResult;
  /** The last read of this file took everything it held then (guest-file.ts ChannelReadState.drained). */
  drained(maxSdu: number): boolean;
}

class GuestFlowFile implements GuestFlowFileIo {
  private readonly state = new ChannelReadState();
  readonly write = writeVmpiFile;

  constructor(
    readonly batchRead: boolean,
    readonly batchWrite: boolean,
  ) {}

  read(fd: number, maxSdu: number, sink: GuestFlowSink): number {
    return readVmpiFileBatch(fd, this.batchRead, maxSdu, sink, this.state);
  }

  readRecords(fd: number, out: ChannelRecords): number {
    return readVmpiFileRecords(fd, this.batchRead, out, this.state);
  }

  drained(maxSdu: number): boolean {
    return this.state.drained(maxSdu);
  }
}

/**
 * Set up a flow's file for SDU I/O: batch reads and writes when the driver has them, one SDU
 * per read or write otherwise. A file in batch-write mode takes records only: write through a
 * GuestFlowOutbox of its `batchWrite`, not writeVmpiFile.
 */
export function guestFlowFileIo(fd: number): GuestFlowFileIo {
  const m = setBatchModes(fd);
  return new GuestFlowFile(m.read, m.write);
}
