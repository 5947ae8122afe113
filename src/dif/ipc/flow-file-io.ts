/**
 * flow-file-io.ts — how an IPC client reads and writes SDUs on the fd of one of its flows,
 * chosen by the data path the daemon announced (protocol.ts FlowDatapath): 'socket', tagged
 * records on the daemon's SOCK_SEQPACKET end (record.ts); 'vmpi_file', the guest driver's file
 * of the flow's channel (vmpi/guest-flow-file.ts). The client sees only FlowFileIo.
 */
import { guestFlowFileIo, FLOW_FILE_EMPTY, FLOW_FILE_ENDED } from '../../vmpi/guest-flow-file.js';
import { readRecord, writeRecord, type WriteRecordResult } from './record.js';
import type { FlowDatapath } from './protocol.js';

/** Where the SDUs of one read of a flow's fd go: each SDU (bytes valid only during the call), or a bad record. */
export interface SduSink {
  sdu(sdu: Uint8Array): void;
  bad(why: string): void;
}

/** One read of a flow's fd: how many records it gave (≥ 0), or one of these. */
export const FLOW_READ_EMPTY = FLOW_FILE_EMPTY;
export const FLOW_READ_ENDED = FLOW_FILE_ENDED;

/** How a flow's fd carries SDUs. */
export interface FlowFileIo {
  /** One read: records to `sink`; their count, or FLOW_READ_EMPTY / FLOW_READ_ENDED. */
  read(fd: number, maxSdu: number, sink: SduSink): number;
  write(fd: number, sdu: Uint8Array): WriteRecordResult;
}

/** readRecord() as a batch of one, for the socket data path. */
export function readSocketBatch(fd: number, maxSdu: number, sink: SduSink): number {
  const r = readRecord(fd, maxSdu);
  if (r.kind === 'empty') return FLOW_READ_EMPTY;
  if (r.kind === 'eof') return FLOW_READ_ENDED;
  if (r.kind === 'bad') sink.bad(r.why);
  else if (r.kind === 'fds') sink.bad('the other end sent file descriptors with a record (closed, record dropped)');
  else sink.sdu(r.sdu);
  return 1;
}

const SOCKET_IO: FlowFileIo = { read: readSocketBatch, write: writeRecord };

/** The I/O for a flow's fd of data path `datapath` (sets the fd up: batch reads of a VMPI file). */
export function flowFileIo(datapath: FlowDatapath, fd: number): FlowFileIo {
  return datapath === 'vmpi_file' ? guestFlowFileIo(fd) : SOCKET_IO;
}
