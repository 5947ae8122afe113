/**
 * device.ts — the host side of one VMPI device (the paper's VMPI-HL over vhost-user virtqueues).
 *
 * Owns: framing (le32 channel id + SDU, one frame per descriptor chain; or, when the guest took
 * VMPI_F_RX_PACKED, host → guest records `le32 channel | le32 length | SDU` packed several to an
 * rx chain), the per-channel receive handlers, host → guest backpressure over the send backlog
 * (byte-backlog.ts: SDUs copied into reused chunks, no allocation per SDU), and the device's
 * counters.
 * Frames flow guest → host on the carrier's tx queue into channel handlers, and host → guest from
 * `send()` into the rx queue. Channel 0 is the control channel (used by the shim DIF).
 *
 * Packed rx (VMPI_F_RX_PACKED, docs/DEVICE.md): send() appends records to the open rx chain while
 * they fit, and the chain is returned (one used entry) when the next record does not fit, when it
 * is full, or at the end of the event-loop turn (the deferred flush, which also signals once), so a
 * burst of small SDUs costs one ring slot, one used entry and at most one interrupt per chain.
 * The open chain is always the oldest one taken, so chains still complete in order (restart).
 *
 * Packed tx (VMPI_F_TX_PACKED, docs/DEVICE.md): every guest → host chain carries records in the
 * same format, up to the chain's length. receiveFromGuest() reads a chain into one scratch buffer
 * and hands its records to the channel handlers in order (a channel bound with bindBatch() gets
 * its consecutive records in one call: one batch, no call or view per SDU); a malformed record
 * ends the chain (the records before it are delivered). A handler that pauses the device (or the per-turn budget)
 * stops it mid-chain: the rest waits in the scratch buffer, the chain is not returned (the guest's
 * ring stays full), and delivery goes on from that record on resume, before any later chain.
 * A queue stop does not return it either; snapshot()/restore() carry its undelivered records to a
 * new process, which returns it once they are delivered (each record exactly once, docs/DEVICE.md).
 *
 * Backpressure, host → guest: `send()` writes straight into a guest rx buffer when one is free;
 * otherwise it copies the SDU into a bounded backlog (delivered in order as the guest posts
 * buffers) and says so; when the backlog is full it refuses the SDU (counted) and the caller waits
 * for 'drain'. Guest → host: `pause()` stops consuming the tx queue, so the guest's ring fills and
 * its writers block; nothing is dropped for lack of host buffers.
 */
import { EventEmitter } from 'node:events';
import type { ReadyQueue, VhostUserDevice } from '../vhost-user/device.js';
import { ProtocolError } from '../vhost-user/errors.js';
import { SUPPORTED_PROTOCOL_FEATURES, VirtioFeature, bit, hasBit } from '../vhost-user/protocol.js';
import { DescChain } from '../vhost-user/virtqueue.js';
import type { BacklogCounters } from './backlog.js';
import { ByteBacklog } from './byte-backlog.js';
import { SduViews } from './sdu-views.js';
import { SendResult, badChannelMessage, isChannelId, type DirectionStats, type SduBatchHandler, type SduHandler, type VmpiPort } from './port.js';
import { SduRun } from './sdu-run.js';
import { DEFAULT_SDU_LOG2, GPIO_CARRIER, MAX_SDU_LOG2, MIN_SDU_LOG2, encodeVmpiConfig, type CarrierProfile } from './carrier.js';

// The shared VMPI API names live in port.ts; re-exported for the users of the host device.
export { CONTROL_CHANNEL, MAX_CHANNEL, SendResult } from './port.js';
export type { DirectionStats, PortSduBatch, SduBatchHandler, SduHandler } from './port.js';

/** Bytes in front of every SDU: the le32 channel id. */
export const FRAME_HEADER_SIZE = 4;

/**
 * Device feature bit 0, VMPI_F_RX_PACKED: host → guest rx chains carry a sequence of records
 * `le32 channel | le32 length | SDU`, each starting at a multiple of PACKED_RECORD_ALIGN,
 * ending at used.len (docs/DEVICE.md).
 */
export const VMPI_F_RX_PACKED = 0;
/**
 * Device feature bit 1, VMPI_F_TX_PACKED: guest → host tx chains carry a sequence of records in
 * the same format as packed rx, ending at the chain's length (docs/DEVICE.md, "Packed tx").
 */
export const VMPI_F_TX_PACKED = 1;
/** Bytes in front of every SDU in a packed rx or tx chain: le32 channel, le32 SDU length. */
export const PACKED_RECORD_HEADER_SIZE = 8;
/** Packed records start at multiples of this (from the chain's first writable byte). */
export const PACKED_RECORD_ALIGN = 8;

/** Why frames were dropped or refused; each reason is a counter. */
export type DropReason = 'malformed' | 'oversize' | 'unbound_channel' | 'backlog_full' | 'device_reset';

/** backlogSdus and backlogBytes (BacklogCounters) are the host → guest backlog's, kept by byte-backlog.ts. */
export interface VmpiDeviceStats extends BacklogCounters {
  /** Guest → host. */
  fromGuest: DirectionStats;
  /** Host → guest. */
  toGuest: DirectionStats;
  drops: Record<DropReason, number>;
  /** Times send() found no guest rx buffer. */
  rxQueueFull: number;
  /** Guest → host descriptor chains taken (one per frame; packed tx: many frames each). */
  txChains: number;
  kicks: number;
  calls: number;
}

export interface VmpiDeviceOptions {
  vmpiId: number;
  /** log2 of the largest SDU; default 16 (64 KiB). */
  maxSduLog2?: number;
  carrier?: CarrierProfile;
  /** Backlog bounds for host → guest SDUs waiting for guest buffers. */
  backlogMaxBytes?: number;
  backlogMaxSdus?: number;
  /** Offer VMPI_F_RX_PACKED (default true); false: one frame per rx chain whatever the driver takes. */
  rxPacked?: boolean;
  /** Offer VMPI_F_TX_PACKED (default true); false: one frame per tx chain whatever the driver takes. */
  txPacked?: boolean;
}

export interface VmpiDeviceEvents {
  /** Both queues are running: the guest driver is up. */
  up: [];
  /** A queue stopped or the device was reset: the guest driver is gone or restarting. */
  down: [reason: string];
  /** The backlog emptied (or fell to half its bounds after a refusal); send() may be called again. */
  drain: [];
}

export class VmpiDeviceError extends Error {
  override name = 'VmpiDeviceError';
}

/**
 * What a restarted process needs from this device (JSON): the packed tx chain held mid-way, if
 * any — its head, its place in the avail ring and its records not yet delivered (base64, at most
 * 8 + max SDU bytes). A snapshot without `txHeld` (or an older one) restores as a fresh device.
 * `backlog` (only in a hand-over's snapshot, see snapshot()): the host → guest SDUs accepted and
 * not yet written, as records (channel le32, length le32, bytes) in order, base64.
 */
export interface VmpiDeviceSnapshot {
  version: 1;
  txHeld?: { head: number; availIdx: number; records: string };
  backlog?: string;
}

export class VmpiDevice extends EventEmitter<VmpiDeviceEvents> implements VhostUserDevice, VmpiPort {
  readonly name: string;
  readonly vmpiId: number;
  readonly maxSdu: number;
  readonly maxSduLog2: number;
  readonly carrier: CarrierProfile;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly features: bigint;
  /** Every protocol feature the vhost-user layer implements (CONFIG is required by the carrier). */
  readonly protocolFeatures = SUPPORTED_PROTOCOL_FEATURES;
  readonly stats: VmpiDeviceStats = {
    fromGuest: { sdus: 0, bytes: 0 },
    toGuest: { sdus: 0, bytes: 0 },
    drops: { malformed: 0, oversize: 0, unbound_channel: 0, backlog_full: 0, device_reset: 0 },
    rxQueueFull: 0,
    txChains: 0,
    kicks: 0,
    calls: 0,
    backlogSdus: 0,
    backlogBytes: 0,
  };

  private readonly config: Uint8Array;
  private readonly handlers = new Map<number, SduHandler>();
  /** Channels bound with bindBatch(): a packed chain's consecutive records of one go in one call. */
  private readonly batchHandlers = new Map<number, SduBatchHandler>();
  /** The batch handed to them (over txScratch; reused). */
  private txRun: SduRun | null = null;
  private rx: ReadyQueue | null = null;
  private tx: ReadyQueue | null = null;
  private readonly rxChain = new DescChain();
  private readonly txChain = new DescChain();
  /** Where tx chains are read (packed header + max SDU); made when the tx queue first has work,
   * so a connection that never gets that far (a hostile or failed front-end) costs no 64 KiB. */
  private txScratch: Uint8Array | null = null;
  /** Views of txScratch handed to the handlers (reused: no allocation per SDU). */
  private txViews: SduViews | null = null;
  /** The driver took VMPI_F_TX_PACKED: every tx chain carries records. */
  private txPackedOn = false;
  /** Packed tx: the next undelivered record of the chain in txScratch, and where that chain ends
   * (txOff < txEnd: records wait, a handler paused or the turn's budget ran out). */
  private txOff = 0;
  private txEnd = 0;
  /** Those records are in a chain not yet returned (txHeldHead, taken at avail index txHeldAt); it
   * stays unreturned across a queue stop and a restart, and goes back on the tx queue running then. */
  private txHeld = false;
  private txHeldHead = 0;
  private txHeldAt = 0;
  /** Set by restore() until the first tx queue: that queue must show the held chain unreturned. */
  private txRestored = false;
  private readonly header = new Uint8Array(PACKED_RECORD_HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly backlog: ByteBacklog;
  /** The host → guest backlog's bounds (send() refuses an SDU past either: drops.backlog_full). */
  readonly backlogLimits: { readonly maxSdus: number; readonly maxBytes: number };
  private paused = false;
  /** The driver took VMPI_F_RX_PACKED (SET_FEATURES, or the saved state of a resumed connection). */
  private packed = false;
  /** The rx queue whose chain in rxChain is open (packed: taken, records written, not yet used). */
  private openFor: ReadyQueue | null = null;
  /** Bytes written to the open chain so far (its used.len when it is returned). */
  private openLen = 0;

  constructor(opts: VmpiDeviceOptions) {
    super();
    const log2 = opts.maxSduLog2 ?? DEFAULT_SDU_LOG2;
    if (!Number.isInteger(opts.vmpiId) || opts.vmpiId < 1 || opts.vmpiId > 0xffff) {
      throw new VmpiDeviceError(`VMPI-id ${opts.vmpiId} is out of range: use an integer 1..65535`);
    }
    if (!Number.isInteger(log2) || log2 < MIN_SDU_LOG2 || log2 > MAX_SDU_LOG2) {
      throw new VmpiDeviceError(`maxSduLog2 ${log2} is out of range ${MIN_SDU_LOG2}..${MAX_SDU_LOG2}`);
    }
    this.vmpiId = opts.vmpiId;
    this.name = `vmpi-${opts.vmpiId}`;
    this.maxSduLog2 = log2;
    this.maxSdu = 2 ** log2;
    this.carrier = opts.carrier ?? GPIO_CARRIER;
    this.features =
      bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC) | (opts.rxPacked === false ? 0n : bit(VMPI_F_RX_PACKED)) |
      (opts.txPacked === false ? 0n : bit(VMPI_F_TX_PACKED));
    this.numQueues = this.carrier.numQueues;
    this.maxQueueSize = Math.max(this.carrier.queueSize, 1024);
    this.config = new Uint8Array(Math.max(this.carrier.configSize, 8));
    this.config.set(encodeVmpiConfig({ vmpiId: this.vmpiId, maxSduLog2: log2 }));
    this.backlogLimits = { maxBytes: opts.backlogMaxBytes ?? 4 * 1024 * 1024, maxSdus: opts.backlogMaxSdus ?? 4096 };
    this.backlog = new ByteBacklog(this.stats, { ...this.backlogLimits, emptyTakesAny: false });
  }

  /** True while the guest driver has both queues running. */
  get isUp(): boolean {
    return this.rx !== null && this.tx !== null;
  }

  // -------------------------------------------------------------------------------------------
  // VMPI-HL API

  /** Receive SDUs arriving on `channel` with `handler` (replaces any previous one). */
  bind(channel: number, handler: SduHandler): void {
    checkChannel(channel);
    this.batchHandlers.delete(channel);
    this.handlers.set(channel, handler);
  }

  /**
   * Receive SDUs arriving on `channel` in batches (port.ts bindBatch): the consecutive records of
   * `channel` in one packed tx chain come in one call (a chain of one frame: a batch of one).
   * Replaces any previous handler of the channel.
   */
  bindBatch(channel: number, handler: SduBatchHandler): void {
    checkChannel(channel);
    this.handlers.delete(channel);
    this.batchHandlers.set(channel, handler);
  }

  unbind(channel: number): void {
    this.handlers.delete(channel);
    this.batchHandlers.delete(channel);
  }

  isBound(channel: number): boolean {
    return this.handlers.has(channel) || this.batchHandlers.has(channel);
  }

  /** Send one SDU to the guest on `channel`. See SendResult; throws on a bad channel or an SDU over the limit. */
  send(channel: number, sdu: Uint8Array): SendResult {
    checkChannel(channel);
    if (sdu.byteLength > this.maxSdu) {
      this.stats.drops.oversize++;
      throw new VmpiDeviceError(`SDU of ${sdu.byteLength} bytes exceeds this device's limit of ${this.maxSdu} bytes`);
    }
    if (this.backlog.isEmpty && this.writeToGuest(channel, sdu, 0, sdu.byteLength)) {
      this.flushRxSoon();
      return SendResult.Sent;
    }
    if (!this.backlog.add(channel, sdu)) {
      this.stats.drops.backlog_full++;
      return SendResult.Full;
    }
    return SendResult.Queued;
  }

  /** Stop taking frames from the guest (its tx ring fills and its writers block). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.tx) this.kicked(this.carrier.txQueue);
  }

  // -------------------------------------------------------------------------------------------
  // VhostUserDevice

  getConfig(offset: number, size: number): Uint8Array {
    const out = new Uint8Array(size);
    if (offset < this.config.byteLength) out.set(this.config.subarray(offset, Math.min(offset + size, this.config.byteLength)));
    return out;
  }

  setConfig(offset: number): void {
    throw new ProtocolError('SET_CONFIG', `the VMPI config is read-only (write at offset ${offset})`);
  }

  featuresAcked(features: bigint): void {
    this.packed = hasBit(features, VMPI_F_RX_PACKED);
    this.txPackedOn = hasBit(features, VMPI_F_TX_PACKED);
  }

  /** Whether guest → host chains carry many frames as records (the driver took VMPI_F_TX_PACKED). */
  get txPacked(): boolean {
    return this.txPackedOn;
  }

  /** Whether host → guest frames are packed several to an rx chain (the driver took VMPI_F_RX_PACKED). */
  get rxPacked(): boolean {
    return this.packed;
  }

  queueReady(q: ReadyQueue): void {
    const wasUp = this.isUp;
    if (q.index === this.carrier.rxQueue) this.rx = q;
    else if (q.index === this.carrier.txQueue) {
      this.tx = q;
      // A restored chain is the oldest one the guest has not got back, so the used index is at its
      // avail index; else the snapshot is older than the ring (a crash after a later persist:
      // the chain was returned since) and its records were delivered: forget them.
      if (this.txRestored) {
        this.txRestored = false;
        if (q.vq.usedIdx !== this.txHeldAt) {
          this.txHeld = false;
          this.txOff = this.txEnd = 0;
        }
      }
      // Records of a chain returned when the last tx queue stopped: deliver them (no kick may come).
      if (this.txOff < this.txEnd) q.defer(() => this.receiveFromGuest());
    }
    if (!wasUp && this.isUp) this.emit('up');
  }

  queueStopped(index: number): void {
    const wasUp = this.isUp;
    // The open chain's records were accepted (send() said Sent): give it back before the queue
    // goes (its memory is still mapped; GET_VRING_BASE counts it as taken).
    if (index === this.carrier.rxQueue && this.openFor !== null && this.openFor === this.rx) this.closeOpen();
    // A tx chain whose records wait (paused) is NOT returned here: once in the used ring a restart
    // could not get its records back. It stays taken (GET_VRING_BASE counts it so), its records in
    // txScratch (and in snapshot()), and is returned on the next tx queue once they are delivered.
    if (index === this.carrier.rxQueue) this.rx = null;
    else if (index === this.carrier.txQueue) this.tx = null;
    if (wasUp) this.emit('down', `queue ${index} stopped`);
  }

  kicked(index: number): void {
    this.stats.kicks++;
    if (index === this.carrier.rxQueue) this.drainBacklog();
    else if (index === this.carrier.txQueue) this.receiveFromGuest();
  }

  reset(reason: string): void {
    const wasUp = this.isUp;
    this.rx = null;
    this.tx = null;
    this.openFor = null;
    this.packed = false; // the next driver negotiates again
    this.txPackedOn = false;
    // Records of a tx chain not delivered yet belong to the driver instance that reset (and to
    // its channels): dropped, counted, as the frames still in its ring are.
    this.txHeld = false;
    this.txRestored = false;
    this.stats.drops.device_reset += this.dropTxRecords();
    // SDUs waiting for a guest that reset will never be asked for by the new driver instance.
    this.stats.drops.device_reset += this.backlog.clear();
    this.backlogHeld = false;
    if (wasUp) this.emit('down', reason);
  }

  // -------------------------------------------------------------------------------------------
  // Datapath

  private receiveFromGuest(): void {
    const q = this.tx;
    if (!q || this.paused) return;
    const vq = q.vq;
    const chain = this.txChain;
    const scratch = (this.txScratch ??= new Uint8Array(PACKED_RECORD_HEADER_SIZE + this.maxSdu));
    const views = (this.txViews ??= new SduViews(scratch));
    const limit = FRAME_HEADER_SIZE + this.maxSdu;
    let budget = TX_CHAIN_BUDGET;
    this.txRecordBudget = TX_RECORD_BUDGET;
    for (;;) {
      // Records left in the last chain go first: nothing is read into txScratch before they are out.
      if (this.txOff < this.txEnd) this.deliverRecords(views);
      if (this.txOff >= this.txEnd && this.txHeld) this.returnHeld(q);
      while (this.txOff >= this.txEnd && budget > 0 && this.txRecordBudget > 0 && !this.paused && vq.pop(chain)) {
        budget--;
        this.stats.txChains++;
        const len = chain.readableBytes;
        if (this.txPackedOn) {
          if (len < PACKED_RECORD_HEADER_SIZE || chain.writableBytes !== 0) this.stats.drops.malformed++;
          else if (len > PACKED_RECORD_HEADER_SIZE + this.maxSdu) this.stats.drops.oversize++;
          else {
            chain.read(scratch, 0, 0, len);
            this.txOff = 0;
            this.txEnd = len;
            this.deliverRecords(views);
            if (this.txOff < this.txEnd) {
              // Returned once its last record is delivered.
              this.txHeld = true;
              this.txHeldHead = chain.head;
              this.txHeldAt = (vq.lastAvailIdx - 1) & 0xffff;
              break;
            }
          }
        } else if (len < FRAME_HEADER_SIZE || chain.writableBytes !== 0) {
          this.stats.drops.malformed++;
        } else if (len > limit) {
          this.stats.drops.oversize++;
        } else {
          this.txRecordBudget -= recordCost(len);
          chain.read(scratch, 0, 0, len);
          const channel = le32(scratch, 0);
          const handler = this.handlers.get(channel);
          const batchHandler = handler === undefined ? this.batchHandlers.get(channel) : undefined;
          if (handler !== undefined) {
            this.stats.fromGuest.sdus++;
            this.stats.fromGuest.bytes += len - FRAME_HEADER_SIZE;
            handler(views.view(FRAME_HEADER_SIZE, len), channel);
          } else if (batchHandler !== undefined) {
            this.stats.fromGuest.sdus++;
            this.stats.fromGuest.bytes += len - FRAME_HEADER_SIZE;
            const run = this.runOver(scratch);
            run.add(FRAME_HEADER_SIZE, len - FRAME_HEADER_SIZE);
            batchHandler(run, channel);
          } else {
            this.stats.drops.unbound_channel++;
          }
        }
        vq.pushUsed(chain.head, 0);
      }
      this.notify(q);
      if (this.paused) return;
      if (budget === 0 || this.txRecordBudget <= 0 || this.txOff < this.txEnd) {
        // Yield to other devices and the socket; come back on the next turn of the loop.
        // (Through the connection, so that what this throws is the connection's, not the process's.)
        q.defer(() => this.receiveFromGuest());
        return;
      }
      if (!vq.setKickWanted(true)) return;
    }
  }

  /** Records a receiveFromGuest() turn may still deliver (TX_RECORD_BUDGET per turn). */
  private txRecordBudget = 0;

  /**
   * Packed tx: hand the records of the chain in `s` from txOff to their handlers, in order, until
   * the chain ends (txEnd), a handler pauses the device or the turn's record budget is spent.
   * A record whose header or SDU does not lie within the chain, or whose length is over max SDU,
   * ends the chain (drops.malformed, once): the records before it were delivered.
   */
  private deliverRecords(views: SduViews): void {
    const s = views.buffer;
    while (this.txOff < this.txEnd && this.txRecordBudget > 0 && !this.paused) {
      const off = this.txOff;
      const end = this.txEnd;
      if (end - off < PACKED_RECORD_HEADER_SIZE) {
        this.stats.drops.malformed++;
        this.txOff = end;
        return;
      }
      const channel = le32(s, off);
      const len = le32(s, off + 4);
      const at = off + PACKED_RECORD_HEADER_SIZE;
      if (len > this.maxSdu || len > end - at) {
        this.stats.drops.malformed++;
        this.txOff = end;
        return;
      }
      // Moved on before the handler runs: what it does (pause, resume) sees the next record.
      this.txOff = Math.min(alignRecord(at + len), end);
      this.txRecordBudget -= recordCost(len);
      const handler = this.handlers.get(channel);
      if (handler !== undefined) {
        this.stats.fromGuest.sdus++;
        this.stats.fromGuest.bytes += len;
        handler(views.view(at, at + len), channel);
        continue;
      }
      const batchHandler = this.batchHandlers.get(channel);
      if (batchHandler === undefined) {
        this.stats.drops.unbound_channel++;
        continue;
      }
      const run = this.runOver(s);
      run.add(at, len);
      this.takeRun(run, channel);
      this.stats.fromGuest.sdus += run.count;
      this.stats.fromGuest.bytes += run.bytes;
      batchHandler(run, channel);
    }
  }

  /** The batch for batch handlers, emptied, over `buffer` (txScratch). */
  private runOver(buffer: Uint8Array): SduRun {
    let run = this.txRun;
    if (run === null || run.buffer !== buffer) run = this.txRun = new SduRun(buffer, TX_RUN_MAX);
    run.clear();
    return run;
  }

  /**
   * Add to `run` the well-formed records of `channel` that follow at txOff, within the turn's
   * record budget, moving txOff past each (so the handler, as for one SDU, sees the next record):
   * the first record of another channel, a malformed one or the chain's end stops it.
   */
  private takeRun(run: SduRun, channel: number): void {
    const s = run.buffer;
    const end = this.txEnd;
    while (this.txRecordBudget > 0 && this.txOff < end && end - this.txOff >= PACKED_RECORD_HEADER_SIZE) {
      const off = this.txOff;
      if (le32(s, off) !== channel) return;
      const len = le32(s, off + 4);
      const at = off + PACKED_RECORD_HEADER_SIZE;
      if (len > this.maxSdu || len > end - at || !run.add(at, len)) return;
      this.txOff = Math.min(alignRecord(at + len), end);
      this.txRecordBudget -= recordCost(len);
    }
  }

  /**
   * Give back the held tx chain, all its records delivered, on `q`. A ring resumed after a restart
   * starts again at the used index, i.e. at this chain (never returned): take it off the ring
   * first (its records came from the snapshot), so it is not read again.
   */
  private returnHeld(q: ReadyQueue): void {
    this.txHeld = false;
    const vq = q.vq;
    if (vq.lastAvailIdx === this.txHeldAt) {
      const c = this.txChain;
      if (!vq.pop(c) || c.head !== this.txHeldHead) {
        throw new VmpiDeviceError(
          `the held tx chain (head ${this.txHeldHead} at avail index ${this.txHeldAt}) is not where the ring says (${c.head}): the snapshot does not match this guest's ring`,
        );
      }
    }
    vq.pushUsed(this.txHeldHead, 0);
  }

  /**
   * This device's state for a restarted process (see VmpiDeviceSnapshot); take it with the
   * connection's. `handover`: this process stops right after (an upgrade, a hand-over under
   * systemd), so nothing it holds for the guest need be lost: the open packed rx chain is returned
   * to the guest first, and the backlog goes into the snapshot. Never in a routine snapshot: after
   * a crash that resumed one, SDUs delivered since it was taken would arrive twice.
   */
  snapshot(handover = false): VmpiDeviceSnapshot {
    const snap: VmpiDeviceSnapshot = { version: 1 };
    const s = this.txScratch;
    if (this.txHeld && s !== null && this.txOff < this.txEnd) {
      const records = Buffer.from(s.buffer, s.byteOffset + this.txOff, this.txEnd - this.txOff).toString('base64');
      snap.txHeld = { head: this.txHeldHead, availIdx: this.txHeldAt, records };
    }
    if (handover) {
      this.flushRx();
      if (!this.backlog.isEmpty) {
        const out = Buffer.allocUnsafe(this.stats.backlogBytes + PACKED_RECORD_HEADER_SIZE * this.stats.backlogSdus);
        let at = 0;
        this.backlog.forEach((channel, src, off, len) => {
          out.writeUInt32LE(channel, at);
          out.writeUInt32LE(len, at + 4);
          out.set(src.subarray(off, off + len), at + PACKED_RECORD_HEADER_SIZE);
          at += PACKED_RECORD_HEADER_SIZE + len;
        });
        snap.backlog = out.toString('base64', 0, at);
      }
    }
    return snap;
  }

  /**
   * Take the state snapshot() gave in the last process: before the connection is adopted (its
   * queues come up here). The held chain's records are delivered first, then it is returned.
   */
  restore(snap: VmpiDeviceSnapshot): void {
    if (this.isUp || this.txHeld || this.txOff < this.txEnd || !this.backlog.isEmpty) throw new VmpiDeviceError('restore() on a device already in use: restore a new device before adopting its connection');
    if (typeof snap !== 'object' || snap === null || snap.version !== 1) {
      throw new VmpiDeviceError(`device snapshot version ${String((snap as { version?: unknown } | null)?.version)} is not supported (expected 1): restore it with the vmpi that wrote it`);
    }
    const h = snap.txHeld;
    let held: Buffer | undefined;
    if (h !== undefined) {
      const ok16 = (n: unknown): boolean => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffff;
      const bytes = typeof h.records === 'string' ? Buffer.from(h.records, 'base64') : null;
      if (!ok16(h.head) || !ok16(h.availIdx) || bytes === null || bytes.byteLength === 0 || bytes.byteLength > PACKED_RECORD_HEADER_SIZE + this.maxSdu) {
        throw new VmpiDeviceError(`device snapshot txHeld is malformed (head and availIdx 0..65535, records 1..${PACKED_RECORD_HEADER_SIZE + this.maxSdu} bytes of base64)`);
      }
      held = bytes;
    }
    // Last of the checks, first of the changes: a snapshot that throws leaves the device as it was.
    if (snap.backlog !== undefined) this.restoreBacklog(snap.backlog);
    if (h === undefined || held === undefined) return;
    const s = (this.txScratch ??= new Uint8Array(PACKED_RECORD_HEADER_SIZE + this.maxSdu));
    s.set(held);
    this.txOff = 0;
    this.txEnd = held.byteLength;
    this.txHeld = true;
    this.txHeldHead = h.head;
    this.txHeldAt = h.availIdx;
    this.txRestored = true;
  }

  /** A hand-over's backlog, queued again in order (written once the guest's rx queue runs). */
  private restoreBacklog(b64: unknown): void {
    const bytes = typeof b64 === 'string' ? Buffer.from(b64, 'base64') : null;
    if (bytes === null) throw new VmpiDeviceError('device snapshot backlog is malformed (expected base64 records)');
    // Checked whole before any is queued: a malformed one restores nothing.
    let n = 0;
    for (let at = 0; at < bytes.byteLength; n++) {
      const len = at + PACKED_RECORD_HEADER_SIZE <= bytes.byteLength ? bytes.readUInt32LE(at + 4) : -1;
      if (len < 0 || len > this.maxSdu || len > bytes.byteLength - at - PACKED_RECORD_HEADER_SIZE || !isChannelId(bytes.readUInt32LE(at))) {
        throw new VmpiDeviceError(`device snapshot backlog is malformed at byte ${at} (records of a channel id le32, a length le32 up to the max SDU ${this.maxSdu}, then the bytes)`);
      }
      at += PACKED_RECORD_HEADER_SIZE + len;
    }
    for (let at = 0; at < bytes.byteLength; ) {
      const len = bytes.readUInt32LE(at + 4);
      const sdu = bytes.subarray(at + PACKED_RECORD_HEADER_SIZE, at + PACKED_RECORD_HEADER_SIZE + len);
      // Bounds smaller than the last process's (another config) refuse the rest: counted.
      if (!this.backlog.add(bytes.readUInt32LE(at), sdu)) this.stats.drops.backlog_full++;
      at += PACKED_RECORD_HEADER_SIZE + len;
    }
    this.restoredBacklog = n;
    this.backlogHeld = n > 0;
  }

  /** SDUs a hand-over's snapshot carried into this device's backlog (restore()). */
  restoredBacklog = 0;
  /**
   * A restored backlog waits for releaseBacklog(): the restart worker first saves a state without
   * it, so that a crash after it was delivered cannot hand it to the next worker again (at most
   * once: a crash in between loses it, as a crash loses any backlog).
   */
  private backlogHeld = false;

  /** Deliver a restored backlog (see backlogHeld); nothing when none is held. */
  releaseBacklog(): void {
    if (!this.backlogHeld) return;
    this.backlogHeld = false;
    this.drainBacklog();
  }

  /** Forget the records still waiting in txScratch; returns how many well-formed ones there were. */
  private dropTxRecords(): number {
    const s = this.txScratch;
    let n = 0;
    if (s !== null) {
      for (let off = this.txOff; off + PACKED_RECORD_HEADER_SIZE <= this.txEnd; n++) {
        const len = le32(s, off + 4);
        if (len > this.txEnd - off - PACKED_RECORD_HEADER_SIZE) break;
        off = alignRecord(off + PACKED_RECORD_HEADER_SIZE + len);
      }
    }
    this.txOff = this.txEnd = 0;
    return n;
  }

  /** Write one frame, the SDU src[off, off+len), into the next guest rx buffer; false when there is none. */
  private writeToGuest(channel: number, src: Uint8Array, off: number, len: number): boolean {
    const q = this.rx;
    if (!q) return false;
    if (this.packed) return this.writePacked(q, channel, src, off, len);
    const chain = this.rxChain;
    // If the guest posted buffers between the empty pop and asking for a kick, use them now:
    // no kick would come for them.
    if (!q.vq.pop(chain) && !(q.vq.setKickWanted(true) && q.vq.pop(chain))) {
      this.stats.rxQueueFull++;
      return false;
    }
    const frameLen = FRAME_HEADER_SIZE + len;
    if (chain.writableBytes < frameLen || chain.readableCount !== 0) {
      // The driver posted a buffer it should not have: too small for a frame, or readable.
      q.vq.pushUsed(chain.head, 0);
      this.stats.drops.malformed++;
      q.fail(new VmpiDeviceError(`guest rx buffer of ${chain.writableBytes} writable bytes cannot hold a ${frameLen}-byte frame (needs 4 + ${this.maxSdu})`));
      this.rx = null;
      return false;
    }
    this.headerView.setUint32(0, channel, true);
    chain.write(this.header, 0, FRAME_HEADER_SIZE, 0);
    chain.write(src, off, len, FRAME_HEADER_SIZE);
    q.vq.pushUsed(chain.head, frameLen);
    this.stats.toGuest.sdus++;
    this.stats.toGuest.bytes += len;
    return true;
  }

  /**
   * Packed: append the record to the open chain if it fits, else return that chain and take the
   * next one (a record that fits in no empty chain breaks the queue, as in the one-frame case).
   * False when no chain is free (the record is not written).
   */
  private writePacked(q: ReadyQueue, channel: number, src: Uint8Array, off: number, len: number): boolean {
    const chain = this.rxChain;
    const rec = PACKED_RECORD_HEADER_SIZE + len;
    let at = 0;
    if (this.openFor === q) {
      at = alignRecord(this.openLen);
      if (at + rec > chain.writableBytes) {
        this.closeOpen();
        this.flushRxSoon();
        at = 0;
      }
    } else this.openFor = null;
    if (this.openFor === null) {
      if (!q.vq.pop(chain) && !(q.vq.setKickWanted(true) && q.vq.pop(chain))) {
        this.stats.rxQueueFull++;
        return false;
      }
      if (chain.writableBytes < rec || chain.readableCount !== 0) {
        q.vq.pushUsed(chain.head, 0);
        this.stats.drops.malformed++;
        q.fail(
          new VmpiDeviceError(
            `guest rx buffer of ${chain.writableBytes} writable bytes cannot hold a ${rec}-byte packed record (needs ${PACKED_RECORD_HEADER_SIZE} + ${this.maxSdu})`,
          ),
        );
        this.rx = null;
        return false;
      }
      this.openFor = q;
    }
    const h = this.headerView;
    h.setUint32(0, channel, true);
    h.setUint32(4, len, true);
    chain.write(this.header, 0, PACKED_RECORD_HEADER_SIZE, at);
    chain.write(src, off, len, at + PACKED_RECORD_HEADER_SIZE);
    this.openLen = at + rec;
    this.stats.toGuest.sdus++;
    this.stats.toGuest.bytes += len;
    // Full (not even an empty record fits after it): return it now.
    if (alignRecord(this.openLen) + PACKED_RECORD_HEADER_SIZE > chain.writableBytes) this.closeOpen();
    return true;
  }

  /** Return the open packed chain with used.len = the bytes its records take. */
  private closeOpen(): void {
    const q = this.openFor;
    if (q === null) return;
    this.openFor = null;
    q.vq.pushUsed(this.rxChain.head, this.openLen);
  }

  private flushRx(): void {
    if (this.openFor !== null && this.openFor === this.rx) this.closeOpen();
    if (this.rx) this.notify(this.rx);
  }

  /**
   * Signal the guest for what send() wrote, once for every send() of this turn of the event loop
   * (a caller sending a burst, e.g. the IPC daemon's bridge reading 64 records, makes one call, not
   * one per SDU: the call is an eventfd write, two system calls). Through the queue's defer(),
   * so a failing eventfd is the connection's error, not the caller's.
   */
  private flushRxSoon(): void {
    const q = this.rx;
    if (!q || this.rxFlushFor === q) return;
    this.rxFlushFor = q;
    q.defer(this.flushRxDeferred);
  }

  /** The queue a deferred call is due on (a queue that stops drops it: a new queue gets its own). */
  private rxFlushFor: ReadyQueue | null = null;
  private readonly flushRxDeferred = (): void => {
    this.rxFlushFor = null;
    this.flushRx();
  };

  private notify(q: ReadyQueue): void {
    if (q.notify()) this.stats.calls++;
  }

  private readonly writeBacklogged = (channel: number, src: Uint8Array, off: number, len: number): boolean => this.writeToGuest(channel, src, off, len);

  private drainBacklog(): void {
    if (this.backlogHeld) return;
    if (this.backlog.drain(this.writeBacklogged) === 0) return;
    this.flushRx();
    if (this.backlog.drainDue()) this.emit('drain');
  }
}

/** Guest → host chains taken per receiveFromGuest() turn before it yields to the event loop. */
const TX_CHAIN_BUDGET = 256;
/** SDUs in one batch to a batch handler at most (a 64 KiB chain of empty records has 8192). */
const TX_RUN_MAX = 1024;
/**
 * Frames (packed: records) delivered per turn before it yields; a packed chain may stop mid-way.
 * A frame costs 1 + one per RECORD_COST_BYTES of its SDU (recordCost): 4096 small SDUs per turn,
 * or about 512 KiB of large ones (8 of 64 KiB), so that a guest writing large SDUs as fast as its
 * ring lets it does not hand the IPC process many MiB in one turn (more than any flow's receive
 * budget: dropped) before the consumers (the IPC daemon's sockets) get a turn (issue #15).
 */
const TX_RECORD_BUDGET = 4096;
const RECORD_COST_BYTES = 128;

/** What one frame of `len` bytes takes from the turn's budget. */
function recordCost(len: number): number {
  return 1 + Math.floor(len / RECORD_COST_BYTES);
}

/**
 * The le32 at `off` of `b` as an unsigned number (0..2^32-1). Not `a | b << 24`: `|` works on
 * int32, so a channel or length of 2^31 or more would come out negative.
 */
function le32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000;
}

/** The offset of the record after one that ends at `end`. */
function alignRecord(end: number): number {
  return (end + PACKED_RECORD_ALIGN - 1) & ~(PACKED_RECORD_ALIGN - 1);
}

function checkChannel(channel: number): void {
  if (!isChannelId(channel)) throw new VmpiDeviceError(badChannelMessage(channel));
}
