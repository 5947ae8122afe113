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
 *     during the call);
 *   - send() writes one SDU per write(): Sent; when the tx ring is full (EAGAIN) the SDU is copied
 *     into a bounded backlog shared by all channels of the port (the ring is shared too, so once
 *     anything is queued later SDUs queue behind it, keeping order): Queued; when the backlog is
 *     full: Full, and 'drain' follows once it has room. The backlog drains when the file of its
 *     head SDU polls writable (EPOLLOUT: room for a max-size frame);
 *   - a send on a channel that is not bound opens (and binds) a file for it on demand: the driver
 *     writes only through a bound file. SDUs arriving on such a channel have no handler and are
 *     read and dropped (counted), as the host drops SDUs for channels without a handler;
 *   - ENODEV from any call (the device was removed: unplug, driver unbind) closes every file and
 *     emits 'down' once; isUp is then false for good (open a new port when /dev/vmpiN is back).
 *
 * An open port keeps the Node event loop alive (its watchers are active handles): close() it.
 * A handler that throws raises an uncaught exception, as for any I/O callback.
 */
import { EventEmitter } from 'node:events';
import { closeSync, constants as fsc, openSync, writeSync } from 'node:fs';
import { native, type FdEventsWatcher } from '../sys/native.js';
import {
  CHANNEL_READ_BUFFER,
  READ_GONE,
  VMPI_INFO_SIZE,
  VMPI_INFO_SIZES,
  VMPI_IOC_BIND,
  VMPI_IOC_GET_INFO,
  VMPI_IOC_SHUTDOWN,
  VMPI_INFO_F_REMOVED,
  readChannelFile,
  setBatchMode,
  u32Arg,
  vmpiIocGetInfo,
} from './guest-file.js';
// Types and a const enum only: the compiled module does not load device.js (nor vhost-user/).
import { SendResult, type DirectionStats, type SduHandler } from './device.js';
import type { ChannelFile, VmpiPort, VmpiPortEvents } from './port.js';

// ---- guest-driver/vmpi_uapi.h -----------------------------------------------------------------

// The numbers of guest-driver/vmpi_uapi.h live in guest-file.ts; re-exported for users of this port.
export {
  VMPI_INFO_SIZE,
  VMPI_IOC_BIND,
  VMPI_IOC_GET_INFO,
  VMPI_IOC_NEXT_LEN,
  VMPI_IOC_SHUTDOWN,
  VMPI_INFO_F_BOUND,
  VMPI_INFO_F_REMOVED,
  VMPI_INFO_F_SHUTDOWN,
  vmpiIocGetInfo,
} from './guest-file.js';

/** struct vmpi_info, as VMPI_IOC_GET_INFO returns it. Counters are per device, since probe. */
export interface GuestVmpiInfo {
  vmpiId: number;
  maxSdu: number;
  /** N in /dev/vmpiN. */
  index: number;
  /** VMPI_INFO_F_*. */
  flags: number;
  removed: boolean;
  /** Driver's per-channel receive queue bound, in SDUs. */
  rxQueueLen: number;
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  rxDropsUnbound: number;
  rxDropsFull: number;
  rxMalformed: number;
  rxDropsNomem: number;
  /** 0 from drivers whose vmpi_stats predate it. */
  rxDropsStalled: number;
}

export function parseVmpiInfo(b: Uint8Array): GuestVmpiInfo {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u32 = (o: number) => v.getUint32(o, true);
  const u64 = (o: number) => Number(v.getBigUint64(o, true));
  const flags = u32(12);
  return {
    vmpiId: u32(0),
    maxSdu: u32(4),
    index: u32(8),
    flags,
    removed: (flags & VMPI_INFO_F_REMOVED) !== 0,
    rxQueueLen: u32(24),
    rxFrames: u64(32),
    rxBytes: u64(40),
    txFrames: u64(48),
    txBytes: u64(56),
    rxDropsUnbound: u64(64),
    rxDropsFull: u64(72),
    rxMalformed: u64(80),
    rxDropsNomem: u64(88),
    rxDropsStalled: b.byteLength >= 104 ? u64(96) : 0,
  };
}

// ---- the port ----------------------------------------------------------------------------------

export type GuestPortErrorCode =
  | 'device_missing' // no /dev/vmpiN: driver not loaded, or no such device
  | 'device_gone' // the device was removed (ENODEV)
  | 'access' // permission denied on /dev/vmpiN
  | 'channel_busy' // another open file (another process?) holds the channel
  | 'bad_channel'
  | 'oversize'
  | 'closed' // this port was closed
  | 'io'; // any other system error (cause says which)

export class GuestPortError extends Error {
  override name = 'GuestPortError';
  constructor(
    readonly code: GuestPortErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface GuestVmpiPortOptions {
  /** Bound of the send backlog (SDUs waiting for room in the tx ring); default 1024 SDUs. */
  backlogMaxSdus?: number;
  /** Default 4 MiB. */
  backlogMaxBytes?: number;
}

export type GuestDropReason = 'unbound_channel' | 'backlog_full' | 'oversize' | 'device_gone' | 'write_error';

export interface GuestVmpiPortStats {
  /** Host → guest, delivered to handlers. */
  fromHost: DirectionStats;
  /** Guest → host, written to the driver. */
  toHost: DirectionStats;
  drops: Record<GuestDropReason, number>;
  /** Writes that found the tx ring full (EAGAIN). */
  txRingFull: number;
  backlogSdus: number;
  backlogBytes: number;
}

interface Channel {
  readonly channel: number;
  fd: number;
  readonly watcher: FdEventsWatcher;
  handler: SduHandler | null;
  /** SDUs of this channel in the backlog: the file stays open until they are written. */
  pending: number;
  /** unbind() was called: close the file once nothing is pending. */
  closeWhenIdle: boolean;
  /** Hands one SDU read from the file to `handler` (made once per channel: no per-read closure). */
  readonly deliver: (sdu: Uint8Array) => void;
}

interface Backlogged {
  ch: Channel;
  sdu: Uint8Array;
}

type WriteOutcome = 'ok' | 'again' | 'gone';

const MAX_CHANNEL = 0xffffffff;
const OPEN_FLAGS = fsc.O_RDWR | fsc.O_NONBLOCK; // libuv adds O_CLOEXEC


function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

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
  private readonly channels = new Map<number, Channel>();
  /** One receive buffer for every channel: SDUs are valid only during the handler call. */
  private readonly rxBuf: Uint8Array;
  /** The driver reads many SDUs per read(2) (guest-file.ts); false with an older driver. */
  private batch = false;
  private infoBuf = new Uint8Array(VMPI_INFO_SIZE);
  private infoRequest = VMPI_IOC_GET_INFO;
  private backlog: Backlogged[] = [];
  private backlogHead = 0;
  private readonly backlogMaxSdus: number;
  private readonly backlogMaxBytes: number;
  /** The channel whose watcher also waits for writability (the backlog head's). */
  private writableCh: Channel | null = null;
  private refused = false;
  private up = true;
  private closed = false;

  /** `device`: a path (/dev/vmpi0) or the index N of /dev/vmpiN. */
  constructor(device: string | number = 0, opts: GuestVmpiPortOptions = {}) {
    super();
    this.path = typeof device === 'number' ? `/dev/vmpi${device}` : device;
    this.backlogMaxSdus = opts.backlogMaxSdus ?? 1024;
    this.backlogMaxBytes = opts.backlogMaxBytes ?? 4 * 1024 * 1024;
    this.ctlFd = this.openDevice();
    let info: GuestVmpiInfo;
    try {
      this.negotiateInfo();
      info = parseVmpiInfo(this.infoBuf);
      if (info.removed) throw Object.assign(new Error('device removed'), { code: 'ENODEV' });
      if (info.maxSdu < 1) throw new GuestPortError('io', `${this.path} reports a max SDU of ${info.maxSdu} bytes`);
      this.ctlWatcher = native.watchFd(this.ctlFd, native.UV_READABLE, () => this.checkRemoved());
      this.ctlWatcher.start();
    } catch (e) {
      closeSync(this.ctlFd);
      throw this.mapError(e, 'read the device info of');
    }
    this.vmpiId = info.vmpiId;
    this.maxSdu = info.maxSdu;
    this.index = info.index;
    this.rxBuf = new Uint8Array(Math.max(CHANNEL_READ_BUFFER, 4 + this.maxSdu));
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
      if (errCode(e) === 'ENODEV') this.gone('the device was removed');
      throw this.mapError(e, 'read the device info of');
    }
    const info = parseVmpiInfo(this.infoBuf);
    if (info.removed) this.gone('the device was removed');
    return info;
  }

  /** Deliver SDUs of `channel` to `handler` (replaces any previous one); opens and binds its file. */
  bind(channel: number, handler: SduHandler): void {
    this.checkOpen();
    checkChannel(channel);
    if (!this.up) throw new GuestPortError('device_gone', `cannot bind channel ${channel}: ${this.path} is gone`);
    const ch = this.channelFor(channel);
    ch.handler = handler;
    ch.closeWhenIdle = false;
  }

  /** Stop delivering `channel`; its file is closed (releasing the channel) once its queued SDUs are written. */
  unbind(channel: number): void {
    const ch = this.channels.get(channel);
    if (!ch) return;
    ch.handler = null;
    ch.closeWhenIdle = true;
    if (ch.pending === 0) this.closeChannel(ch);
  }

  isBound(channel: number): boolean {
    return this.channels.get(channel)?.handler != null;
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
    const ch = this.channelFor(channel);
    if (this.backlogHead === this.backlog.length) {
      const r = this.write(ch, sdu, true);
      if (r === 'ok') return SendResult.Sent;
      if (r === 'gone') {
        this.stats.drops.device_gone++;
        return SendResult.Full;
      }
    }
    // An empty backlog takes any SDU, so a Full is always followed by a 'drain'.
    const { backlogSdus, backlogBytes } = this.stats;
    if (backlogSdus > 0 && (backlogSdus >= this.backlogMaxSdus || backlogBytes + sdu.byteLength > this.backlogMaxBytes)) {
      this.stats.drops.backlog_full++;
      this.refused = true;
      return SendResult.Full;
    }
    this.backlog.push({ ch, sdu: Uint8Array.prototype.slice.call(sdu) });
    ch.pending++;
    this.stats.backlogSdus++;
    this.stats.backlogBytes += sdu.byteLength;
    this.armWritable(this.backlog[this.backlogHead]!.ch);
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
    const fd = this.openDevice();
    try {
      native.ioctl(fd, VMPI_IOC_BIND, u32Arg(channel));
    } catch (e) {
      closeSync(fd);
      if (errCode(e) === 'ENODEV') this.gone('the device was removed');
      throw this.mapError(e, `bind channel ${channel} on`, channel);
    }
    let open = true;
    let shut = false;
    return {
      channel,
      fd,
      shutdown: () => {
        if (!open || shut) return;
        shut = true;
        try {
          native.ioctlNoArg(fd, VMPI_IOC_SHUTDOWN);
        } catch (e) {
          if (errCode(e) !== 'ENODEV') throw this.mapError(e, `shut down channel ${channel} of`, channel);
        }
      },
      close: () => {
        if (!open) return;
        open = false;
        closeSync(fd);
      },
      dup: () => {
        if (!open) throw new GuestPortError('closed', `the file of channel ${channel} is closed`);
        return native.dup(fd);
      },
    };
  }

  /** Close every file. Idempotent; queued SDUs are discarded; emits nothing. */
  close(): void {
    if (this.closed) return;
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
        if (errCode(e) === 'ENOTTY' && i < VMPI_INFO_SIZES.length - 1) continue;
        if (errCode(e) === 'ENOTTY') {
          throw new GuestPortError('io', `${this.path} does not answer VMPI_IOC_GET_INFO (ENOTTY): is it a VMPI device of a matching driver version?`, { cause: e });
        }
        throw e;
      }
      this.infoBuf = buf;
      this.infoRequest = vmpiIocGetInfo(size);
      return;
    }
  }

  private openDevice(): number {
    try {
      return openSync(this.path, OPEN_FLAGS);
    } catch (e) {
      throw this.mapError(e, 'open');
    }
  }

  private mapError(e: unknown, what: string, channel?: number): GuestPortError {
    if (e instanceof GuestPortError) return e;
    const code = errCode(e);
    const msg = e instanceof Error ? e.message : String(e);
    switch (code) {
      case 'ENOENT':
        return new GuestPortError(
          'device_missing',
          `cannot ${what} ${this.path}: no such device. Is the VMPI guest driver loaded (insmod vmpi.ko) and does the VM have a VMPI device?`,
          { cause: e },
        );
      case 'ENODEV':
      case 'ENXIO':
        return new GuestPortError('device_gone', `cannot ${what} ${this.path}: the VMPI device is gone (${code})`, { cause: e });
      case 'EACCES':
      case 'EPERM':
        return new GuestPortError('access', `cannot ${what} ${this.path}: permission denied`, { cause: e });
      case 'EBUSY':
        return new GuestPortError('channel_busy', `channel ${channel} of ${this.path} is already bound by another open file (another process?)`, { cause: e });
      default:
        return new GuestPortError('io', `cannot ${what} ${this.path}: ${msg}`, { cause: e });
    }
  }

  /** The channel's open, bound file; opened on demand. */
  private channelFor(channel: number): Channel {
    const have = this.channels.get(channel);
    if (have) return have;
    const fd = this.openDevice();
    let watcher: FdEventsWatcher;
    try {
      native.ioctl(fd, VMPI_IOC_BIND, u32Arg(channel));
      this.batch = setBatchMode(fd);
      watcher = native.watchFd(fd, native.UV_READABLE, (ev) => this.onEvents(ch, ev));
    } catch (e) {
      closeSync(fd);
      if (errCode(e) === 'ENODEV') this.gone('the device was removed');
      throw this.mapError(e, `bind channel ${channel} on`, channel);
    }
    const ch: Channel = { channel, fd, watcher, handler: null, pending: 0, closeWhenIdle: false, deliver: (sdu) => this.deliverTo(ch, sdu) };
    this.channels.set(channel, ch);
    watcher.start();
    return ch;
  }

  private closeChannel(ch: Channel): void {
    if (ch.fd < 0) return;
    ch.watcher.close(); // before the fd, as native.ts asks
    closeSync(ch.fd);
    ch.fd = -1;
    if (this.writableCh === ch) this.writableCh = null;
    if (this.channels.get(ch.channel) === ch) this.channels.delete(ch.channel);
  }

  private onEvents(ch: Channel, events: number): void {
    if (ch.fd < 0) return;
    if (events < 0) {
      // EPOLLERR (the watcher is stopped now): the driver reports it only for a removed device.
      this.checkRemoved();
      if (this.up && ch.fd >= 0) ch.watcher.start();
      return;
    }
    if (events & native.UV_WRITABLE) this.drainBacklog();
    if (events & native.UV_READABLE) this.readChannel(ch);
  }

  private readChannel(ch: Channel): void {
    // A budget per wake-up: the watcher is level-triggered and comes back for the rest, so one busy
    // channel cannot starve the others or the event loop.
    for (let budget = 256; budget > 0 && ch.fd >= 0; ) {
      let n: number;
      try {
        n = readChannelFile(ch.fd, this.rxBuf, this.batch, ch.deliver);
      } catch (e) {
        throw this.mapError(e, `read channel ${ch.channel} of`, ch.channel);
      }
      if (n === READ_GONE) return this.gone('the device was removed');
      if (n < 0) return; // READ_EMPTY; READ_ENDED cannot happen to the port's own files
      budget -= n;
    }
  }

  private deliverTo(ch: Channel, sdu: Uint8Array): void {
    const handler = ch.handler;
    if (handler === null) {
      this.stats.drops.unbound_channel++;
      return;
    }
    this.stats.fromHost.sdus++;
    this.stats.fromHost.bytes += sdu.byteLength;
    handler(sdu, ch.channel);
  }

  /** One write(2) of one SDU. Errors other than EAGAIN/ENODEV throw when `direct`, else are dropped. */
  private write(ch: Channel, sdu: Uint8Array, direct: boolean): WriteOutcome {
    try {
      writeSync(ch.fd, sdu, 0, sdu.byteLength);
    } catch (e) {
      const code = errCode(e);
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
        this.stats.txRingFull++;
        return 'again';
      }
      if (code === 'ENODEV') {
        this.gone('the device was removed');
        return 'gone';
      }
      if (direct) throw this.mapError(e, `write to channel ${ch.channel} of`, ch.channel);
      this.stats.drops.write_error++;
      return 'ok';
    }
    this.stats.toHost.sdus++;
    this.stats.toHost.bytes += sdu.byteLength;
    return 'ok';
  }

  private drainBacklog(): void {
    let sent = 0;
    while (this.backlogHead < this.backlog.length) {
      const b = this.backlog[this.backlogHead]!;
      const r = this.write(b.ch, b.sdu, false);
      if (r === 'gone') return; // gone() cleared everything
      if (r === 'again') break;
      this.backlog[this.backlogHead] = undefined as unknown as Backlogged;
      this.backlogHead++;
      this.stats.backlogSdus--;
      this.stats.backlogBytes -= b.sdu.byteLength;
      sent++;
      if (--b.ch.pending === 0 && b.ch.closeWhenIdle) this.closeChannel(b.ch);
    }
    if (this.backlogHead === this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
      this.armWritable(null);
    } else {
      if (this.backlogHead > 1024) {
        this.backlog = this.backlog.slice(this.backlogHead);
        this.backlogHead = 0;
      }
      this.armWritable(this.backlog[this.backlogHead]!.ch);
    }
    if (sent === 0) return;
    const empty = this.stats.backlogSdus === 0;
    if (empty || (this.refused && this.stats.backlogSdus < this.backlogMaxSdus / 2 && this.stats.backlogBytes < this.backlogMaxBytes / 2)) {
      this.refused = false;
      this.emit('drain');
    }
  }

  /** Wait for writability on `ch`'s file only (null: on none). */
  private armWritable(ch: Channel | null): void {
    if (this.writableCh === ch) return;
    const prev = this.writableCh;
    this.writableCh = ch;
    if (prev && prev.fd >= 0) prev.watcher.start(native.UV_READABLE);
    if (ch && ch.fd >= 0) ch.watcher.start(native.UV_READABLE | native.UV_WRITABLE);
  }

  /** The control file polled (only removal makes an unbound file poll) or a watcher failed. */
  private checkRemoved(): void {
    if (!this.up) return;
    try {
      native.ioctl(this.ctlFd, this.infoRequest, this.infoBuf);
      if (parseVmpiInfo(this.infoBuf).removed) this.gone('the device was removed');
    } catch (e) {
      this.gone(errCode(e) === 'ENODEV' ? 'the device was removed' : `device check failed: ${(e as Error).message}`);
    }
  }

  private gone(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.stats.drops.device_gone += this.stats.backlogSdus;
    this.teardown();
    this.emit('down', reason);
  }

  private teardown(): void {
    this.backlog = [];
    this.backlogHead = 0;
    this.stats.backlogSdus = 0;
    this.stats.backlogBytes = 0;
    this.writableCh = null;
    for (const ch of [...this.channels.values()]) this.closeChannel(ch);
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
  if (!Number.isInteger(channel) || channel < 0 || channel > MAX_CHANNEL) {
    throw new GuestPortError('bad_channel', `channel ${channel} is not a u32 channel id`);
  }
}
