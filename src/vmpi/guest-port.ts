/**
 * guest-port.ts — the VMPI API inside the guest, over the guest driver's /dev/vmpiN.
 *
 * Owns: one `VmpiPort` per /dev/vmpiN, for the same stack (shim DIF and up) the host runs over a
 * `VmpiDevice`. The driver's contract is docs/DEVICE.md ("Guest character device"): one open file
 * per channel, bound with VMPI_IOC_BIND; one SDU per read()/write(); O_NONBLOCK; poll.
 *
 *   - construction opens a control file (never bound) and reads vmpi_id and max_sdu with
 *     VMPI_IOC_GET_INFO; the control file's poll reports only the device's removal;
 *   - bind(channel) opens a non-blocking file for the channel, binds it and switches it to batch
 *     reads; a uv_poll watcher (native.watchFd) reads bursts of SDUs until EAGAIN into one
 *     reusable buffer (guest-file.ts) and calls the handler per SDU (the bytes are valid only
 *     during the call); bindBatch(channel) instead hands each read(2)'s SDUs (the file holds only
 *     that channel's records) to its handler in one call, as a reused SduRun over that buffer;
 *   - send() copies the SDU into the port's staged records (guest-tx-batch.ts): the SDUs sent in
 *     one tick on one channel leave with one write(2) in the driver's batch-write mode (on a
 *     microtask, or at once when the channel changes or the records reach their bound; one
 *     write(2) per SDU with a driver that predates it): Queued. What the tx ring does not take
 *     (EAGAIN) stays staged, in order, and later SDUs are copied into a bounded backlog shared by
 *     all channels of the port (the ring is shared too, so once anything waits later SDUs queue
 *     behind it, keeping order): Queued; when the backlog is full: Full, and 'drain' follows once
 *     it has room. Staged records and backlog drain when the file of their head SDU polls
 *     writable (EPOLLOUT: room for a max-size frame), the backlog's head moving into the staged
 *     records a channel's run at a time;
 *   - a send on a channel that is not bound opens (and binds) a file for it on demand: the driver
 *     writes only through a bound file. SDUs arriving on such a channel have no handler and are
 *     read and dropped (counted), as the host drops SDUs for channels without a handler;
 *   - ENODEV from any call (the device was removed: unplug, driver unbind) closes every file and
 *     emits 'down' once; isUp is then false for good (open a new port when /dev/vmpiN is back).
 *
 * An open port keeps the Node event loop alive (its watchers are active handles): close() it.
 * A handler that throws raises an uncaught exception, as for any I/O callback.
 *
 * This file is the port's state machine (bind/unbind/send, the backlog's use, up → down); the
 * files and watchers are guest-channel.ts's, the backlog itself backlog.ts's (shared with the host
 * device), the driver's numbers guest-uapi.ts's, the errors guest-error.ts's.
 */
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { native, type FdEventsWatcher } from '../sys/native.js';
import { SendBacklog, type BacklogCounters } from './backlog.js';
import { GuestChannelSet, openVmpiDevice, type GuestChannel } from './guest-channel.js';
import { GuestPortError, guestPortError } from './guest-error.js';
import { TxRecords } from './guest-tx-batch.js';
import type { SduRun } from './sdu-run.js';
import { VMPI_INFO_SIZE, VMPI_INFO_SIZES, VMPI_IOC_GET_INFO, parseVmpiInfo, vmpiIocGetInfo, type GuestVmpiInfo } from './guest-uapi.js';
// port.ts imports nothing concrete: the compiled module does not load device.js (nor vhost-user/).
import { SendResult, badChannelMessage, isChannelId, type ChannelFile, type DirectionStats, type SduBatchHandler, type SduHandler, type VmpiPort, type VmpiPortEvents } from './port.js';

// The numbers of guest-driver/vmpi_uapi.h live in guest-uapi.ts, the errors in guest-error.ts;
// re-exported for users of this port.
export {
  VMPI_INFO_SIZE,
  VMPI_IOC_BIND,
  VMPI_IOC_GET_INFO,
  VMPI_IOC_NEXT_LEN,
  VMPI_IOC_SHUTDOWN,
  VMPI_INFO_F_BOUND,
  VMPI_INFO_F_REMOVED,
  VMPI_INFO_F_SHUTDOWN,
  parseVmpiInfo,
  vmpiIocGetInfo,
  type GuestVmpiInfo,
} from './guest-uapi.js';
export { GuestPortError, type GuestPortErrorCode } from './guest-error.js';

export interface GuestVmpiPortOptions {
  /** Bound of the send backlog (SDUs waiting for room in the tx ring); default 1024 SDUs. */
  backlogMaxSdus?: number;
  /** Default 4 MiB. */
  backlogMaxBytes?: number;
}

export type GuestDropReason = 'unbound_channel' | 'backlog_full' | 'oversize' | 'device_gone' | 'write_error';

/** backlogSdus and backlogBytes (BacklogCounters) are the send backlog's, kept by backlog.ts. */
export interface GuestVmpiPortStats extends BacklogCounters {
  /** Host → guest, delivered to handlers. */
  fromHost: DirectionStats;
  /** Guest → host, written to the driver. */
  toHost: DirectionStats;
  drops: Record<GuestDropReason, number>;
  /** Writes that found the tx ring full (EAGAIN). */
  txRingFull: number;
}

interface Backlogged {
  ch: GuestChannel;
  sdu: Uint8Array;
}

/** SDUs and bytes the staged records hold at most (fewer when the backlog's bounds are smaller: what is staged always fits them). */
const STAGE_MAX_SDUS = 64;
const STAGE_MAX_BYTES = 256 * 1024;

export class GuestVmpiPort extends EventEmitter<VmpiPortEvents> implements VmpiPort {
  /** The character device, e.g. /dev/vmpi0. */
  readonly path: string;
  readonly vmpiId: number;
  readonly maxSdu: number;
  /** N in /dev/vmpiN. */
  readonly index: number;
  readonly stats: GuestVmpiPortStats = {
    fromHost: { sdus: 0, bytes: 0 },
    toHost: { sdus: 0, bytes: 0 },
    drops: { unbound_channel: 0, backlog_full: 0, oversize: 0, device_gone: 0, write_error: 0 },
    txRingFull: 0,
    backlogSdus: 0,
    backlogBytes: 0,
  };

  private ctlFd: number;
  private ctlWatcher: FdEventsWatcher | null = null;
  private readonly channels: GuestChannelSet;
  private infoBuf = new Uint8Array(VMPI_INFO_SIZE);
  private infoRequest = VMPI_IOC_GET_INFO;
  /** Shared by all channels: the tx ring is shared too, so once anything waits later SDUs queue behind it. */
  private readonly backlog: SendBacklog<Backlogged>;
  /** SDUs of one channel (stagedCh) copied into batch-write records: the head of what waits, before the backlog. */
  private readonly staged: TxRecords;
  private stagedCh: GuestChannel | null = null;
  private flushDue = false;
  /** The last flush found the tx ring full: wait for the staged records' file to poll writable. */
  private ringFull = false;
  private up = true;
  private closed = false;

  /** `device`: a path (/dev/vmpi0) or the index N of /dev/vmpiN. */
  constructor(device: string | number = 0, opts: GuestVmpiPortOptions = {}) {
    super();
    this.path = typeof device === 'number' ? `/dev/vmpi${device}` : device;
    const maxSdus = opts.backlogMaxSdus ?? 1024;
    const maxBytes = opts.backlogMaxBytes ?? 4 * 1024 * 1024;
    this.backlog = new SendBacklog(this.stats, {
      maxSdus,
      maxBytes,
      // An empty backlog takes any SDU, so a Full is always followed by a 'drain'.
      emptyTakesAny: true,
    });
    this.staged = new TxRecords(Math.max(1, Math.min(STAGE_MAX_SDUS, maxSdus)), Math.min(STAGE_MAX_BYTES, maxBytes));
    this.ctlFd = openVmpiDevice(this.path);
    let info: GuestVmpiInfo;
    try {
      this.negotiateInfo();
      info = parseVmpiInfo(this.infoBuf);
      if (info.removed) throw new GuestPortError('device_gone', `cannot read the device info of ${this.path}: the VMPI device is gone (removed)`);
      if (info.maxSdu < 1) throw new GuestPortError('io', `${this.path} reports a max SDU of ${info.maxSdu} bytes`);
      this.ctlWatcher = native.watchFd(this.ctlFd, native.UV_READABLE, () => this.checkRemoved());
      this.ctlWatcher.start();
    } catch (e) {
      closeSync(this.ctlFd);
      throw guestPortError(e, this.path, 'read the device info of');
    }
    this.vmpiId = info.vmpiId;
    this.maxSdu = info.maxSdu;
    this.index = info.index;
    this.channels = new GuestChannelSet(this.path, this.maxSdu, {
      events: (ch, ev) => this.onEvents(ch, ev),
      deliver: (ch, sdu) => this.deliverTo(ch, sdu),
      deliverBatch: (ch, run) => this.deliverBatchTo(ch, run),
      gone: (reason) => this.gone(reason),
    });
  }

  /** True while the device is present and the port open. */
  get isUp(): boolean {
    return this.up;
  }

  /** Current driver view (VMPI_IOC_GET_INFO on the control file); the vmpi_id may have changed. */
  info(): GuestVmpiInfo {
    this.checkOpen();
    try {
      native.ioctl(this.ctlFd, this.infoRequest, this.infoBuf);
    } catch (e) {
      if (errnoCode(e) === 'ENODEV') this.gone('the device was removed');
      throw guestPortError(e, this.path, 'read the device info of');
    }
    const info = parseVmpiInfo(this.infoBuf);
    if (info.removed) this.gone('the device was removed');
    return info;
  }

  /** Deliver SDUs of `channel` to `handler` (replaces any previous one); opens and binds its file. */
  bind(channel: number, handler: SduHandler): void {
    const ch = this.openForHandler(channel);
    ch.handler = handler;
    ch.batchHandler = null;
  }

  /**
   * Like bind(), but the SDUs of one read(2) of the channel's file (a burst of its records) come
   * to `handler` in one call, in order (valid only during the call; the batch object is reused).
   * Replaces a bind() of the channel and the other way round.
   */
  bindBatch(channel: number, handler: SduBatchHandler): void {
    const ch = this.openForHandler(channel);
    ch.batchHandler = handler;
    ch.handler = null;
  }

  /** bind() and bindBatch(): the checks, the channel's file opened (or the open one), kept open. */
  private openForHandler(channel: number): GuestChannel {
    this.checkOpen();
    checkChannel(channel);
    if (!this.up) throw new GuestPortError('device_gone', `cannot bind channel ${channel}: ${this.path} is gone`);
    const ch = this.channels.open(channel);
    ch.closeWhenIdle = false;
    return ch;
  }

  /** Stop delivering `channel`; its file is closed (releasing the channel) once its queued SDUs are written. */
  unbind(channel: number): void {
    const ch = this.channels.get(channel);
    if (!ch) return;
    ch.handler = null;
    ch.batchHandler = null;
    ch.closeWhenIdle = true;
    if (ch.pending === 0) this.channels.close(ch);
  }

  isBound(channel: number): boolean {
    const ch = this.channels.get(channel);
    return ch !== undefined && (ch.handler !== null || ch.batchHandler !== null);
  }

  /**
   * Send one SDU on `channel`. Throws on a bad channel, an SDU over maxSdu, a closed port, or a
   * channel another file holds. While the device is gone it refuses (Full, counted).
   */
  send(channel: number, sdu: Uint8Array): SendResult {
    this.checkOpen();
    checkChannel(channel);
    if (sdu.byteLength > this.maxSdu) {
      this.stats.drops.oversize++;
      throw new GuestPortError('oversize', `SDU of ${sdu.byteLength} bytes exceeds ${this.path}'s limit of ${this.maxSdu} bytes`);
    }
    if (!this.up) {
      this.stats.drops.device_gone++;
      return SendResult.Full;
    }
    const ch = this.channels.open(channel);
    if (this.backlog.isEmpty) {
      // Staged records take SDUs of one channel: another channel's (or no room) writes them first.
      // (Not while the ring is known to be full: the writability event flushes them.)
      if (this.stagedCh !== null && !this.ringFull && (this.stagedCh !== ch || !this.staged.fits(sdu.byteLength))) {
        this.flushStaged();
        if (!this.up) {
          this.stats.drops.device_gone++;
          return SendResult.Full;
        }
      }
      if (this.stagedCh === null || (this.stagedCh === ch && this.staged.fits(sdu.byteLength))) {
        this.stagedCh = ch;
        this.staged.add(sdu);
        ch.pending++;
        if (!this.flushDue) {
          this.flushDue = true;
          queueMicrotask(this.flushSoon);
        }
        return SendResult.Queued;
      }
    }
    if (!this.backlog.add({ ch, sdu: Uint8Array.prototype.slice.call(sdu) })) {
      this.stats.drops.backlog_full++;
      return SendResult.Full;
    }
    ch.pending++;
    return SendResult.Queued;
  }

  /**
   * Open `channel` as a file of its own, bound in the driver but never read by this port (see
   * ChannelFile): for handing a flow's data path to another process. The port must not have the
   * channel bound itself. The caller closes it; the port's close() does not.
   */
  openChannelFile(channel: number): ChannelFile {
    this.checkOpen();
    checkChannel(channel);
    if (!this.up) throw new GuestPortError('device_gone', `cannot open channel ${channel}: ${this.path} is gone`);
    if (this.channels.has(channel)) throw new GuestPortError('channel_busy', `channel ${channel} of ${this.path} is bound by this port`);
    return this.channels.openFile(channel);
  }

  /** Close every file. Idempotent; queued SDUs are discarded; emits nothing. */
  close(): void {
    if (this.closed) return;
    // What was sent this tick still goes, if the ring takes it (as when send() wrote at once).
    if (this.up) {
      try {
        this.flushStaged();
      } catch {
        // closing anyway
      }
    }
    this.closed = true;
    this.up = false;
    this.teardown();
  }

  // -------------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new GuestPortError('closed', `the VMPI port on ${this.path} is closed`);
  }

  /** The first struct vmpi_info layout the driver knows; throws what the last attempt threw. */
  private negotiateInfo(): void {
    for (const [i, size] of VMPI_INFO_SIZES.entries()) {
      const buf = new Uint8Array(size);
      try {
        native.ioctl(this.ctlFd, vmpiIocGetInfo(size), buf);
      } catch (e) {
        if (errnoCode(e) === 'ENOTTY' && i < VMPI_INFO_SIZES.length - 1) continue;
        if (errnoCode(e) === 'ENOTTY') {
          throw new GuestPortError('io', `${this.path} does not answer VMPI_IOC_GET_INFO (ENOTTY): is it a VMPI device of a matching driver version?`, { cause: e });
        }
        throw e;
      }
      this.infoBuf = buf;
      this.infoRequest = vmpiIocGetInfo(size);
      return;
    }
  }

  private onEvents(ch: GuestChannel, events: number): void {
    if (ch.fd < 0) return;
    if (events < 0) {
      // EPOLLERR (the watcher is stopped now): the driver reports it only for a removed device.
      this.checkRemoved();
      if (this.up) this.channels.restart(ch);
      return;
    }
    if (events & native.UV_WRITABLE) {
      this.ringFull = false;
      this.flushStaged();
    }
    if (events & native.UV_READABLE) this.channels.read(ch);
  }

  private deliverTo(ch: GuestChannel, sdu: Uint8Array): void {
    const handler = ch.handler;
    if (handler === null) {
      // bindBatch() during this read's one-SDU deliveries: the rest go to the batch handler.
      if (ch.batchHandler !== null) this.deliverBatchTo(ch, this.channels.single(sdu));
      else this.stats.drops.unbound_channel++;
      return;
    }
    this.stats.fromHost.sdus++;
    this.stats.fromHost.bytes += sdu.byteLength;
    handler(sdu, ch.channel);
  }

  /** The SDUs of one read of `ch`'s file (≥ 1); read for a batch handler only. */
  private deliverBatchTo(ch: GuestChannel, run: SduRun): void {
    const handler = ch.batchHandler;
    if (handler === null) {
      // Unbound (or bind()) during the read: as on the one-SDU path, each SDU goes to the handler or is counted.
      for (let i = 0; i < run.count; i++) this.deliverTo(ch, run.sdu(i));
      return;
    }
    this.stats.fromHost.sdus += run.count;
    this.stats.fromHost.bytes += run.bytes;
    handler(run, ch.channel);
  }

  /** The writes of this tick, together (queued once per batch, not per SDU). */
  private readonly flushSoon = (): void => {
    this.flushDue = false;
    if (this.up && !this.closed && !this.ringFull) this.flushStaged();
  };

  /**
   * Write the staged records; when they all went, move the backlog's head run (one channel's
   * SDUs, up to the staged bounds) into them and go on, until the ring is full or nothing waits.
   * A full ring leaves the rest staged and arms writability on their file.
   */
  private flushStaged(): void {
    /** SDUs that came out of the backlog: 'drain' is due only after those (backlog.ts). */
    let moved = 0;
    for (;;) {
      const ch = this.stagedCh;
      if (ch === null) break;
      let r: 'done' | 'full' | 'closed';
      try {
        r = ch.fd < 0 ? 'closed' : this.staged.flush(ch.writer, this.channels.batchWrite);
      } catch {
        // A write error other than a full ring or the device's end (none is expected): the head SDU is dropped, counted.
        this.account(ch);
        if (!this.staged.isEmpty) {
          this.staged.dropHead();
          this.stats.drops.write_error++;
          this.released(ch, 1);
        }
        if (this.staged.isEmpty) {
          this.stagedCh = null;
          moved += this.refill();
        }
        continue;
      }
      this.account(ch);
      if (r === 'closed') {
        this.gone('the device was removed');
        return;
      }
      if (r === 'full') {
        this.stats.txRingFull++;
        this.ringFull = true;
        this.channels.armWritable(ch);
        if (moved > 0 && this.backlog.drainDue()) this.emit('drain');
        return;
      }
      this.stagedCh = null;
      moved += this.refill();
    }
    this.channels.armWritable(null);
    if (moved > 0 && this.backlog.drainDue()) this.emit('drain');
  }

  /** What the last flush of the staged records of `ch` wrote: counted; returns how many SDUs. */
  private account(ch: GuestChannel): number {
    const n = this.staged.sentSdus;
    if (n === 0) return 0;
    this.stats.toHost.sdus += n;
    this.stats.toHost.bytes += this.staged.sentBytes;
    this.staged.sentSdus = 0;
    this.staged.sentBytes = 0;
    this.released(ch, n);
    return n;
  }

  /** `n` SDUs of `ch` left (written or dropped): its file closes once nothing waits and it was unbound. */
  private released(ch: GuestChannel, n: number): void {
    ch.pending -= n;
    if (ch.pending === 0 && ch.closeWhenIdle) this.channels.close(ch);
  }

  /** Move the backlog's head run (SDUs of one channel, within the staged bounds) into the staged records; how many. */
  private refill(): number {
    const head = this.backlog.peek();
    if (head === undefined) return 0;
    const ch = head.ch;
    this.stagedCh = ch;
    return this.backlog.drain((b) => {
      if (b.ch !== ch || !this.staged.fits(b.sdu.byteLength)) return false;
      this.staged.add(b.sdu);
      return true;
    });
  }

  /** The control file polled (only removal makes an unbound file poll) or a watcher failed. */
  private checkRemoved(): void {
    if (!this.up) return;
    try {
      native.ioctl(this.ctlFd, this.infoRequest, this.infoBuf);
      if (parseVmpiInfo(this.infoBuf).removed) this.gone('the device was removed');
    } catch (e) {
      this.gone(errnoCode(e) === 'ENODEV' ? 'the device was removed' : `device check failed: ${(e as Error).message}`);
    }
  }

  private gone(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.stats.drops.device_gone += this.backlog.clear() + this.staged.clear();
    this.stagedCh = null;
    this.teardown();
    this.emit('down', reason);
  }

  private teardown(): void {
    this.backlog.clear();
    this.staged.clear();
    this.stagedCh = null;
    this.channels.closeAll();
    if (this.ctlWatcher) {
      this.ctlWatcher.close();
      this.ctlWatcher = null;
    }
    if (this.ctlFd >= 0) {
      closeSync(this.ctlFd);
      this.ctlFd = -1;
    }
  }
}

function checkChannel(channel: number): void {
  if (!isChannelId(channel)) throw new GuestPortError('bad_channel', badChannelMessage(channel));
}
