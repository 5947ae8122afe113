/**
 * flow-file-io.ts — how an IPC client reads and writes SDUs on the fd of one of its flows,
 * chosen by the data path the daemon announced (protocol.ts FlowDatapath): 'socket', tagged
 * records on the daemon's SOCK_SEQPACKET end (record.ts); 'vmpi_file', the guest driver's file
 * of the flow's channel (vmpi/guest-flow-file.ts); 'ring', the flow's shared-memory rings
 * (ring.ts: RingEnd reads and writes them; the fd then carries doorbells and end of file). The
 * client sees only FlowFileIo: reads SDU
 * by SDU to a sink, or all SDUs of one read at once into an SduBatchBuffer (for 'sdus'
 * listeners), and writes through the data path's outbox (SDUs of a tick leave together).
 */
import { guestFlowFileIo, FLOW_FILE_EMPTY, FLOW_FILE_ENDED, CHANNEL_RECORDS_MAX, GuestFlowOutbox, type GuestFlowFileIo } from '../../vmpi/guest-flow-file.js';
import { SduBatchBuffer } from '../sdu-batch.js';
import { Outbox, PACK_SDUS_MAX, readRecords, RECORDS_EMPTY, RECORDS_ENDED, writeRecord, type FlushResult, type OfferResult, type OutboxHooks, type RecordSink, type WriteRecordResult } from './record.js';
import type { FlowDatapath } from './protocol.js';
import { RING_BROKEN, RING_EMPTY, type RingEnd } from './ring.js';

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

/** What a flow's writes go through: SDUs accepted in order, sent in batches (record.ts Outbox on a socket, GuestFlowOutbox on a VMPI file). */
export interface FlowOutbox {
  /** SDUs (or records) waiting. */
  readonly length: number;
  offer(sdu: Uint8Array): OfferResult;
  flush(): FlushResult;
  /** Drop what waits; returns how many SDUs. */
  discard(): number;
}

/** How a flow's fd carries SDUs. */
export interface FlowFileIo {
  /** One read: records to `sink` (at most `max`, where the data path batches); their count, or FLOW_READ_EMPTY / FLOW_READ_ENDED. */
  read(fd: number, maxSdu: number, sink: SduSink, max?: number): number;
  /**
   * One read with its SDUs in `batch` (its buffer the data path's shared read buffer: valid
   * until the next read); records that are not SDUs of the flow go to `sink` (bad, fds,
   * packs). Returns as read() does (bad records counted too).
   */
  readBatch(fd: number, maxSdu: number, batch: SduBatchBuffer, sink: SduSink, max?: number): number;
  /**
   * Optional (a ring): the batch of the last readBatch() has been handed on; what it lent from
   * the ring (its SDUs are views of the ring itself, no copy) may be reused by the writer now.
   * Call it right after the batch's consumers return, before any other read of the flow.
   */
  batchDone?(): void;
  write(fd: number, sdu: Uint8Array): WriteRecordResult;
  /**
   * Optional: the last read of this fd took everything the fd held then, so reading again
   * before the next readable event would find nothing (guest-file.ts ChannelReadState): the
   * reader may stop until then (the poll is level-triggered).
   */
  drained?(maxSdu: number): boolean;
  /** The outbox for this fd's writes. */
  outbox(fd: number, hooks: OutboxHooks): FlowOutbox;
  /**
   * Optional (a ring): read() found nothing; tell the writer to ring the fd, and say whether the
   * reader may now wait for it (true), or something came meanwhile (false: read again).
   */
  sleep?(): boolean;
  /** The flow's ring, on the 'ring' data path. */
  readonly ring?: RingEnd;
}

/** SDUs one readBatch() can give: a VMPI file's batch read of 0-byte SDUs, or 256 packed records. */
export const BATCH_CAPACITY = Math.max(CHANNEL_RECORDS_MAX, 256 * PACK_SDUS_MAX);
let sharedBatch: SduBatchBuffer | null = null;

/** The batch every flow of this process reads into (a batch lives only until the next read, like the read buffers). */
export function flowReadBatch(): SduBatchBuffer {
  sharedBatch ??= new SduBatchBuffer(BATCH_CAPACITY);
  return sharedBatch;
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

const batchSinks = new WeakMap<SduSink, RecordSink>();

/** readRecords() into `batch` (socket data path). */
function readSocketInto(fd: number, maxSdu: number, batch: SduBatchBuffer, sink: SduSink, max = SOCKET_BATCH): number {
  let r = batchSinks.get(sink);
  if (r === undefined || r.into !== batch) {
    r = { ...sinkOf(sink), into: batch };
    batchSinks.set(sink, r);
  }
  const n = readRecords(fd, maxSdu, max, r);
  if (n === RECORDS_EMPTY) return FLOW_READ_EMPTY;
  if (n === RECORDS_ENDED) return FLOW_READ_ENDED;
  return n;
}

const SOCKET_IO: FlowFileIo = {
  read: readSocketBatch,
  readBatch: readSocketInto,
  write: writeRecord,
  outbox: (fd, hooks) => new Outbox(fd, hooks),
};

/** One batch read of a VMPI file into `batch`; SDUs over the flow's max SDU go to `sink.bad` and leave the batch. */
function readVmpiInto(io: GuestFlowFileIo, fd: number, maxSdu: number, batch: SduBatchBuffer, sink: SduSink): number {
  const n = io.readRecords(fd, batch);
  if (n <= 0) return n;
  let keep = 0;
  for (let i = 0; i < batch.count; i++) {
    const len = batch.lengths[i]!;
    if (len > maxSdu) {
      sink.bad(`SDU of ${len} bytes exceeds the flow's max SDU of ${maxSdu} bytes`);
      batch.bytes -= len;
      continue;
    }
    if (keep !== i) {
      batch.offsets[keep] = batch.offsets[i]!;
      batch.lengths[keep] = len;
    }
    keep++;
  }
  batch.count = keep;
  return n;
}

function vmpiFileIo(io: GuestFlowFileIo): FlowFileIo {
  return {
    read: (fd, maxSdu, sink) => io.read(fd, maxSdu, sink),
    readBatch: (fd, maxSdu, batch, sink) => readVmpiInto(io, fd, maxSdu, batch, sink),
    write: io.write,
    drained: (maxSdu) => io.drained(maxSdu),
    outbox: (fd) => new GuestFlowOutbox(fd, io.batchWrite),
  };
}

/** One read of a ring: its published records; at the end of the ring, the socket's end of file (or a broken ring: ended). */
function readRing(ring: RingEnd, sink: RecordSink, max: number): number {
  const n = ring.read(sink, max);
  if (n >= 0) return n;
  if (n === RING_BROKEN) return FLOW_READ_ENDED;
  return n === RING_EMPTY && ring.ended ? FLOW_READ_ENDED : FLOW_READ_EMPTY;
}

/** The 'ring' data path's I/O of one flow (the socket's doorbells and end of file are the caller's: RingEnd.pollSocket). */
export function ringFileIo(ring: RingEnd): FlowFileIo {
  const batchSinks = new WeakMap<SduSink, RecordSink>();
  return {
    ring,
    read: (_fd, _maxSdu, sink, max = SOCKET_BATCH) => readRing(ring, sinkOf(sink), max),
    // The batch is handed on borrowed (a Flow's 'sdus' listeners, valid during the call): it
    // points into the ring itself, which keeps the records' room until batchDone().
    readBatch: (_fd, _maxSdu, batch, sink, max = SOCKET_BATCH) => {
      let r = batchSinks.get(sink);
      if (r === undefined || r.into !== batch) {
        r = { ...sinkOf(sink), into: batch, lends: true };
        batchSinks.set(sink, r);
      }
      return readRing(ring, r, max);
    },
    batchDone: () => ring.releaseLent(),
    write: (_fd, sdu) => {
      const r = ring.offer(sdu);
      if (r === 'queued') ring.flush();
      return r === 'queued' || r === 'sent' ? 'sent' : r;
    },
    sleep: () => ring.sleep(),
    outbox: () => ring,
  };
}

/** The I/O for a flow's fd of data path `datapath` (sets the fd up: batch reads and writes of a VMPI file; a ring's end). */
export function flowFileIo(datapath: FlowDatapath, fd: number, ring?: RingEnd): FlowFileIo {
  if (datapath === 'vmpi_file') return vmpiFileIo(guestFlowFileIo(fd));
  if (datapath === 'ring') {
    if (ring === undefined) throw new TypeError("a 'ring' flow needs its RingEnd");
    return ringFileIo(ring);
  }
  return SOCKET_IO;
}
