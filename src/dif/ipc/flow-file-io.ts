/**
 * flow-file-io.ts — how an IPC client reads and writes SDUs on the fd of one of its flows,
 * chosen by the data path the daemon announced (protocol.ts FlowDatapath): 'socket', tagged
 * records on the daemon's SOCK_SEQPACKET end (record.ts); 'vmpi_file', the guest driver's file
 * of the flow's channel (vmpi/guest-flow-file.ts). The client sees only FlowFileIo.
 */
import { guestFlowFileIo, FLOW_FILE_EMPTY, FLOW_FILE_ENDED } from '../../vmpi/guest-flow-file.js';
import { readRecords, RECORDS_EMPTY, RECORDS_ENDED, writeRecord, type RecordSink, type WriteRecordResult } from './record.js';
import type { FlowDatapath } from './protocol.js';

/** Where the SDUs of one read of a flow's fd go: each SDU (bytes valid only during the call), or a bad record. */
export interface SduSink {
  /** The socket data path then hands each SDU as a copy of its own (the guest file's reads do not: check `copies` there). */
  readonly copies?: boolean;
  sdu(sdu: Uint8Array): void;
  bad(why: string): void;
  /** Optional: a record came with fds (closed, dropped); without it, that is a bad record. */
  fds?(): void;
  /** Optional: the other end reads packed records (record.ts RECORD_HELLO); without it, a hello is a bad record. */
  packs?(): void;
}

/** One read of a flow's fd: how many records it gave (≥ 0), or one of these. */
export const FLOW_READ_EMPTY = FLOW_FILE_EMPTY;
export const FLOW_READ_ENDED = FLOW_FILE_ENDED;

/** How a flow's fd carries SDUs. */
export interface FlowFileIo {
  /** One read: records to `sink` (at most `max`, where the data path batches); their count, or FLOW_READ_EMPTY / FLOW_READ_ENDED. */
  read(fd: number, maxSdu: number, sink: SduSink, max?: number): number;
  write(fd: number, sdu: Uint8Array): WriteRecordResult;
}

/** Records per socket read when the caller sets no bound. */
const SOCKET_BATCH = 64;

/** readRecords() for the socket data path: up to `max` records per recvmmsg. */
export function readSocketBatch(fd: number, maxSdu: number, sink: SduSink, max = SOCKET_BATCH): number {
  const n = readRecords(fd, maxSdu, max, (sink as Partial<RecordSink>).fds ? (sink as RecordSink) : sinkOf(sink));
  if (n === RECORDS_EMPTY) return FLOW_READ_EMPTY;
  if (n === RECORDS_ENDED) return FLOW_READ_ENDED;
  return n;
}

const FDS_WHY = 'the other end sent file descriptors with a record (closed, record dropped)';
const recordSinks = new WeakMap<SduSink, RecordSink>();

/** The RecordSink of an SduSink (made once per sink: fds are a bad record here). */
function sinkOf(sink: SduSink): RecordSink {
  let r = recordSinks.get(sink);
  if (r === undefined) {
    const s = sink;
    r = { copies: s.copies, sdu: (b) => s.sdu(b), bad: (why) => s.bad(why), fds: () => s.bad(FDS_WHY), ...(s.packs ? { packs: () => s.packs!() } : {}) };
    recordSinks.set(sink, r);
  }
  return r;
}

const SOCKET_IO: FlowFileIo = { read: readSocketBatch, write: writeRecord };

/** The I/O for a flow's fd of data path `datapath` (sets the fd up: batch reads of a VMPI file). */
export function flowFileIo(datapath: FlowDatapath, fd: number): FlowFileIo {
  return datapath === 'vmpi_file' ? guestFlowFileIo(fd) : SOCKET_IO;
}
