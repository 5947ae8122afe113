/**
 * datapath.ts — the per-flow data path between an application and the IPC daemon: one
 * SOCK_SEQPACKET socketpair per flow, one record per SDU, and the daemon's bridge between its end
 * of that pair and the IPC process's Flow. This file is the overview and the one import point;
 * the parts: record.ts (the record codec), ring.ts (the shared-memory rings), flow-file-io.ts (how a client reads and writes its
 * flow's fd, whichever data path), bridge.ts (the daemon's FlowLinks).
 *
 * Why this shape (the cheapest path we have on the host): after allocation the daemon hands the
 * application its end of the pair (SCM_RIGHTS) and never relays SDUs through its control socket.
 * An SDU costs one kernel copy each way between application and daemon (sendmsg copies into the
 * socket buffer, recvmsg copies out), and no hop besides the IPC process that owns the VMPI device,
 * which lives in the daemon anyway. Per SDU, what used to cost most was not the copy but the
 * record: a sendmsg and a recvmsg (a system call, a call into the addon, a kernel buffer and a
 * wakeup each). So both ends batch (record.ts): the writes of one tick are copied into a bounded
 * Outbox and leave with one sendmmsg; reads take many records per recvmmsg into one shared
 * buffer; and once both ends said they read them, small SDUs travel many per record (packed). SEQPACKET keeps SDU boundaries (no length framing to parse)
 * and gives kernel backpressure: when the reader's queue is full, the writer's sendmsg returns
 * EAGAIN. Backpressure therefore runs end to end: Flow.write() → false makes the bridge stop
 * reading the application's socket until 'drain', so the application's own writes fill its socket
 * and return false (EAGAIN); in the other direction a full application socket makes the bridge
 * stop taking SDUs from the Flow, which queues them (bounded by the IPC process).
 *
 * The 'ring' data path (ring.ts; negotiated: the client's allocate/accept says `rings: true`, the
 * answer's datapath says 'ring', protocol.ts): beside the socketpair, one sealed memfd mapped by
 * both ends, holding one SPSC ring of length-prefixed SDU records per direction. An SDU then costs
 * one copy into the ring and one out, and no system call: the writer publishes a tick's records
 * with one index store; the socket stays as the doorbell (a RECORD_BELL record, sent only when the
 * reader said it sleeps, or when a waiting writer got room) and the end-of-flow signal (0 bytes).
 * Layout (u32 little-endian): magic 'VMPR' @0, version @4, data bytes D per direction @8, max SDU
 * @12; direction d (0 daemon → application, 1 back) at 256 + 1024·d: producer index @+0,
 * consumer index @+256, reader sleeping @+512, writer waiting @+768 (indices free running mod
 * 2^32 in bytes, 0 ≤ P − C ≤ D); data of d at 4096 + D·d; a record is a u32 length, the bytes, pad
 * to 4, never across the end (length 0xFFFFFFFF: skip to 0). Handshake: store index, full fence
 * (native.fence()), read the other side's flag; the peer sets its flag, fences, re-reads the
 * index. Bounds: D = max(1 MiB, 8 max-SDU records) rounded to a power of two, at most 8 MiB, and
 * the daemon's rings in all at most IpcDaemonOptions.maxRingBytes (then 'socket'). A peer's bad
 * index or length ends the flow with a cause (ring_broken). docs/IPC.md has the full account.
 *
 * In the guest, a flow of the shim DIF skips the daemon altogether: the daemon passes the
 * application a /dev/vmpiN file bound to the flow's channel (ChannelFile, vmpi/port.ts), which
 * the application reads and writes itself, with no tag (the driver never reads 0 bytes for end
 * of file: the flow's end is ESHUTDOWN); both directions in the driver's batch modes: a read
 * takes a burst of SDUs, and the writes of a tick leave with one write(2) of records. vmpi/guest-flow-file.ts is that path's counterpart of
 * readRecord/writeRecord; the daemon keeps only a DirectFlowLink.
 *
 * Record format: one tag byte, then by tag: RECORD_SDU (0), one SDU; RECORD_SDUS (1), packed
 * SDUs, each a u32 little-endian length and its bytes (at most PACK_RECORD_MAX bytes per record);
 * RECORD_HELLO (2), nothing: "this end reads packed records". The tag exists because a 0-byte
 * SEQPACKET record reads as 0 bytes, exactly like end of file, and 0-byte SDUs are valid data;
 * with the tag every record has at least one byte, so 0 always means the other end closed.
 * Compatibility: a client sends RECORD_HELLO first on a new flow; the daemon packs toward it only
 * after its hello or a packed record of its own, and answers with its hello, after which the
 * client packs too. An older peer counts the hello as a bad record and drops it, and never gets
 * a packed record. A daemon that resumes flows after a restart (snapshot.ts) starts unpacked
 * toward the application and packs again as soon as the application sends a packed record.
 *
 * End of a flow: the side that ends it closes its end of the pair after the other learned why
 * (the daemon sends `flow_deallocated` before closing; the application sends `deallocate` and
 * closes on the answer). The bridge keeps delivering what the Flow already received, then closes
 * its end, so the application reads everything and then end of file. If the application stops
 * reading, the bridge gives up after LINGER_MS.
 */
export { RECORD_SDU, RECORD_SDUS, RECORD_HELLO, RECORD_BELL, readRecord, readRecords, Outbox, sizeFlowSocket, writeRecord, type ReadRecordResult, type WriteRecordResult } from './record.js';
export { FLOW_READ_EMPTY, FLOW_READ_ENDED, flowFileIo, readSocketBatch, type FlowFileIo, type SduSink } from './flow-file-io.js';
export { DirectFlowLink, FlowBridge, LINGER_MS, type BridgeAbort, type BridgeHooks, type BridgeStats, type FlowLink } from './bridge.js';
export { createRing, mapRing, ringBytesFor, RingEnd, RingError, type RingMap } from './ring.js';
