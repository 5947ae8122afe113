/**
 * guest-channel.ts — the open files of a guest VMPI port: one per channel, bound in the driver,
 * each with a uv_poll watcher.
 *
 * Owns: opening /dev/vmpiN, binding a file to a channel and switching it to batch reads and
 * writes (`batchWrite`: the files take write(2)s of records, guest-tx-batch.ts), the
 * watcher of each file (readable always; writable only for the one file the port's backlog waits
 * on), reading bursts of SDUs into one reusable buffer (handed on SDU by SDU, or, for a channel
 * with a batch handler, as one SduRun per read(2): a file holds one channel's records, so each
 * read is one run), closing files, and the stand-alone
 * channel files handed to other processes (ChannelFile). What the SDUs mean, the send backlog and
 * the port's up/down state are guest-port.ts's; it hears from here through `ChannelSetHooks`.
 */
import { closeSync, openSync } from 'node:fs';
import { errnoCode } from '../sys/fd.js';
import { native, type FdEventsWatcher } from '../sys/native.js';
import { CHANNEL_READ_BUFFER, READ_GONE, readChannelFile, readChannelRecords, type ChannelRecords } from './guest-file.js';
import { GuestPortError, guestPortError } from './guest-error.js';
import { VMPI_BATCH_ALIGN, VMPI_IOC_BIND, VMPI_IOC_SHUTDOWN, VMPI_OPEN_FLAGS, setBatchModes, u32Arg } from './guest-uapi.js';
import { fileWriter, type TxWriter } from './guest-tx-batch.js';
import type { ChannelFile, SduBatchHandler, SduHandler } from './port.js';
import { SduRun } from './sdu-run.js';

export interface GuestChannel {
  readonly channel: number;
  /** -1 once closed. */
  fd: number;
  readonly watcher: FdEventsWatcher;
  handler: SduHandler | null;
  /** Set instead of `handler` (bindBatch): each read(2)'s SDUs come as one batch (deliverBatch). */
  batchHandler: SduBatchHandler | null;
  /** SDUs of this channel waiting to be written (the port's staged records and backlog): the file stays open until they are. */
  pending: number;
  /** write(2) on this file (guest-tx-batch.ts). */
  readonly writer: TxWriter;
  /** unbind() was called: close the file once nothing is pending. */
  closeWhenIdle: boolean;
  /** Hands one SDU read from the file to the port (made once per channel: no per-read closure). */
  readonly deliver: (sdu: Uint8Array) => void;
}

/** What the channel files report to their port. */
export interface ChannelSetHooks {
  /** The file of `ch` polled: `events` as native.watchFd reports them (negative: the watcher failed). */
  events(ch: GuestChannel, events: number): void;
  /** One SDU read from `ch`'s file (valid only during the call). */
  deliver(ch: GuestChannel, sdu: Uint8Array): void;
  /** The SDUs of one read(2) of `ch`'s file (≥ 1, in order; valid only during the call), for a channel with a batch handler. */
  deliverBatch(ch: GuestChannel, run: SduRun): void;
  /** A call on a file said ENODEV: the device was removed. */
  gone(reason: string): void;
}

/** Open `path` (non-blocking, read-write) or throw the GuestPortError saying why not. */
export function openVmpiDevice(path: string): number {
  try {
    return openSync(path, VMPI_OPEN_FLAGS);
  } catch (e) {
    throw guestPortError(e, path, 'open');
  }
}

export class GuestChannelSet {
  private readonly channels = new Map<number, GuestChannel>();
  /** One receive buffer for every channel: SDUs are valid only during the handler call. */
  private readonly rxBuf: Uint8Array;
  /** The driver reads many SDUs per read(2) (guest-file.ts); false with an older driver. */
  private batch = false;
  /** The files take many SDUs per write(2), as records; false with an older driver. */
  private _batchWrite = false;
  /** The channel whose watcher also waits for writability (the backlog head's). */
  private writableCh: GuestChannel | null = null;
  /** The batch handed to batch handlers: offsets and lengths into rxBuf, made on the first batch read. */
  private run: SduRun | null = null;
  /** Where readChannelRecords() parses a read: the run's own offset and length arrays. */
  private records: ChannelRecords | null = null;

  constructor(
    private readonly path: string,
    maxSdu: number,
    private readonly hooks: ChannelSetHooks,
  ) {
    this.rxBuf = new Uint8Array(Math.max(CHANNEL_READ_BUFFER, 4 + maxSdu));
  }

  /** The files are in batch-write mode (write records, not SDUs). */
  get batchWrite(): boolean {
    return this._batchWrite;
  }

  get(channel: number): GuestChannel | undefined {
    return this.channels.get(channel);
  }

  has(channel: number): boolean {
    return this.channels.has(channel);
  }

  /** The channel's open, bound file; opened on demand. */
  open(channel: number): GuestChannel {
    const have = this.channels.get(channel);
    if (have) return have;
    const fd = openVmpiDevice(this.path);
    let watcher: FdEventsWatcher;
    try {
      native.ioctl(fd, VMPI_IOC_BIND, u32Arg(channel));
      const modes = setBatchModes(fd);
      this.batch = modes.read;
      this._batchWrite = modes.write;
      watcher = native.watchFd(fd, native.UV_READABLE, (ev) => this.hooks.events(ch, ev));
    } catch (e) {
      closeSync(fd);
      if (errnoCode(e) === 'ENODEV') this.hooks.gone('the device was removed');
      throw guestPortError(e, this.path, `bind channel ${channel} on`, channel);
    }
    const ch: GuestChannel = { channel, fd, watcher, handler: null, batchHandler: null, pending: 0, closeWhenIdle: false, writer: fileWriter(fd), deliver: (sdu) => this.hooks.deliver(ch, sdu) };
    this.channels.set(channel, ch);
    watcher.start();
    return ch;
  }

  close(ch: GuestChannel): void {
    if (ch.fd < 0) return;
    ch.watcher.close(); // before the fd, as native.ts asks
    closeSync(ch.fd);
    ch.fd = -1;
    if (this.writableCh === ch) this.writableCh = null;
    if (this.channels.get(ch.channel) === ch) this.channels.delete(ch.channel);
  }

  /** Close every file. */
  closeAll(): void {
    this.writableCh = null;
    for (const ch of [...this.channels.values()]) this.close(ch);
  }

  /** Restart a watcher that stopped on an error (the port is still up). */
  restart(ch: GuestChannel): void {
    if (ch.fd >= 0) ch.watcher.start();
  }

  /** Wait for writability on `ch`'s file only (null: on none). */
  armWritable(ch: GuestChannel | null): void {
    if (this.writableCh === ch) return;
    const prev = this.writableCh;
    this.writableCh = ch;
    if (prev && prev.fd >= 0) prev.watcher.start(native.UV_READABLE);
    if (ch && ch.fd >= 0) ch.watcher.start(native.UV_READABLE | native.UV_WRITABLE);
  }

  /** Read what `ch`'s file holds, SDU by SDU to its `deliver` (or a read at a time to deliverBatch); a budget per call. */
  read(ch: GuestChannel): void {
    // A budget per wake-up: the watcher is level-triggered and comes back for the rest, so one busy
    // channel cannot starve the others or the event loop.
    for (let budget = 256; budget > 0 && ch.fd >= 0; ) {
      let n: number;
      try {
        n = ch.batchHandler !== null ? this.readRun(ch) : readChannelFile(ch.fd, this.rxBuf, this.batch, ch.deliver);
      } catch (e) {
        throw guestPortError(e, this.path, `read channel ${ch.channel} of`, ch.channel);
      }
      if (n === READ_GONE) return this.hooks.gone('the device was removed');
      if (n < 0) return; // READ_EMPTY; READ_ENDED cannot happen to the port's own files
      budget -= n;
    }
  }

  /**
   * `sdu` (a view of the receive buffer, or of an oversize SDU's own buffer) as a batch of one:
   * for an SDU of a read made for a one-SDU handler when bindBatch() replaced it during that read.
   */
  single(sdu: Uint8Array): SduRun {
    const run = this.batchRun();
    if (sdu.buffer === this.rxBuf.buffer) {
      run.clear();
      run.add(sdu.byteOffset - this.rxBuf.byteOffset, sdu.byteLength);
      return run;
    }
    const own = new SduRun(sdu, 1); // an SDU larger than the receive buffer: rare
    own.add(0, sdu.byteLength);
    return own;
  }

  /** One read(2) of `ch`'s file, its records handed to deliverBatch as one run: how many, or READ_*. */
  private readRun(ch: GuestChannel): number {
    const run = this.batchRun();
    const recs = this.records!;
    const n = readChannelRecords(ch.fd, this.rxBuf, this.batch, recs);
    if (n <= 0) return n;
    if (recs.buffer === this.rxBuf) {
      run.count = recs.count;
      run.bytes = recs.bytes;
      this.hooks.deliverBatch(ch, run);
    } else {
      // An SDU larger than the receive buffer, read into one of its own (rare): a run over that.
      const own = new SduRun(recs.buffer, recs.count);
      for (let i = 0; i < recs.count; i++) own.add(recs.offsets[i]!, recs.lengths[i]!);
      this.hooks.deliverBatch(ch, own);
    }
    return n;
  }

  private batchRun(): SduRun {
    if (this.run !== null) return this.run;
    // As many records as one read into rxBuf can hold (0-byte SDUs: one per VMPI_BATCH_ALIGN bytes).
    const run = new SduRun(this.rxBuf, Math.ceil(this.rxBuf.byteLength / VMPI_BATCH_ALIGN));
    this.run = run;
    this.records = { buffer: this.rxBuf, offsets: run.offsets, lengths: run.lengths, count: 0, bytes: 0 };
    return run;
  }

  /**
   * Open `channel` as a file of its own, bound in the driver but never read here (see
   * ChannelFile). The caller closes it.
   */
  openFile(channel: number): ChannelFile {
    const path = this.path;
    const fd = openVmpiDevice(path);
    try {
      native.ioctl(fd, VMPI_IOC_BIND, u32Arg(channel));
    } catch (e) {
      closeSync(fd);
      if (errnoCode(e) === 'ENODEV') this.hooks.gone('the device was removed');
      throw guestPortError(e, path, `bind channel ${channel} on`, channel);
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
          if (errnoCode(e) !== 'ENODEV') throw guestPortError(e, path, `shut down channel ${channel} of`, channel);
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
}
