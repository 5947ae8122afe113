/**
 * guest-flow-file.ts — SDU I/O on a /dev/vmpiN file bound to one flow's channel, as an
 * application in the guest does it: one untagged SDU per write(2), reads in the driver's batch
 * mode when it has one (guest-file.ts), the flow's end (ESHUTDOWN) and the device's (ENODEV) as
 * "ended". The IPC client reaches this through its FlowFileIo (dif/ipc/flow-file-io.ts) when the
 * daemon hands it such a file ('vmpi_file' data path), so it never sees the driver's format.
 */
import { writeSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { CHANNEL_READ_BUFFER, READ_EMPTY, READ_ENDED, READ_GONE, readChannelFile, setBatchMode } from './guest-file.js';

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
 * of the flow, ESHUTDOWN, and of the device, ENODEV).
 */
export function readVmpiFileBatch(fd: number, batch: boolean, maxSdu: number, sink: GuestFlowSink): number {
  fileBuf ??= new Uint8Array(CHANNEL_READ_BUFFER);
  const n = readChannelFile(fd, fileBuf, batch, (sdu) => {
    if (sdu.byteLength > maxSdu) sink.bad(`SDU of ${sdu.byteLength} bytes exceeds the flow's max SDU of ${maxSdu} bytes`);
    else sink.sdu(sdu);
  });
  return n === READ_GONE ? FLOW_FILE_ENDED : n;
}

/** Read and write SDUs on a flow's file. */
export interface GuestFlowFileIo {
  read(fd: number, maxSdu: number, sink: GuestFlowSink): number;
  write(fd: number, sdu: Uint8Array): GuestFlowWriteResult;
}

const BATCHED: GuestFlowFileIo = { read: (fd, maxSdu, sink) => readVmpiFileBatch(fd, true, maxSdu, sink), write: writeVmpiFile };
const UNBATCHED: GuestFlowFileIo = { read: (fd, maxSdu, sink) => readVmpiFileBatch(fd, false, maxSdu, sink), write: writeVmpiFile };

/** Set up a flow's file for SDU I/O: batch reads when the driver has them, one SDU per read otherwise. */
export function guestFlowFileIo(fd: number): GuestFlowFileIo {
  return setBatchMode(fd) ? BATCHED : UNBATCHED;
}
