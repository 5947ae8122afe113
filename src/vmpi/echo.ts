/**
 * echo.ts — an echo responder on a host VMPI device: every SDU the guest sends on one of the
 * echo channels goes back to the guest on the same channel, unchanged. A test instrument (the
 * guest's `vmpi-perf stream` and `loop` count what comes back), configured per device with
 * `echoChannels` (src/ops/config/).
 *
 * Owns: the binding of its channels, and backpressure without loss. When `send()` says Queued
 * (the guest's rx ring is full, the SDU waits in the device's backlog) or Full (refused: the
 * responder keeps its own copy), it stops taking frames from the guest (`device.pause()`), so
 * the guest's tx ring fills and its writers block; on the device's 'drain' it sends what it
 * holds, then resumes. What it holds is bounded in bytes; past that (only if something else
 * resumed the device meanwhile) an SDU is dropped and counted. When the guest driver goes away
 * ('down') what it holds is dropped (counted): the next driver instance never asked for it.
 *
 * It pauses the whole device (every channel, the control channel too): fine for a test
 * instrument, which is what this is.
 */
import type { Logger } from '../sys/log.js';
import { SendResult, type VmpiDevice } from './device.js';
import { badChannelMessage, isChannelId } from './port.js';
import { CodedError } from '../sys/coded-error.js';

export type EchoErrorCode = 'bad_channel' | 'channel_bound' | 'closed';

export class EchoError extends CodedError<EchoErrorCode> {
  override name = 'EchoError';
}

export interface EchoStats {
  /** SDUs handed back to the device (Sent or Queued). */
  echoed: number;
  bytes: number;
  /** send() said Queued: the guest had no rx buffer; the SDU waits in the device's backlog. */
  queued: number;
  /** send() said Full: the backlog refused; the responder kept the SDU and sent it after 'drain'. */
  refused: number;
  /** Times the responder stopped taking frames from the guest. */
  pauses: number;
  /** SDUs held for the guest that were dropped: the driver went down, or the hold bound was hit. */
  dropped: number;
}

export interface EchoOptions {
  /** Bytes of refused SDUs the responder may hold (default 4 × the device's max SDU). */
  holdMaxBytes?: number;
  logger?: Logger;
}

interface Held {
  channel: number;
  sdu: Uint8Array;
}

export class EchoResponder {
  readonly device: VmpiDevice;
  readonly channels: readonly number[];
  readonly stats: EchoStats = { echoed: 0, bytes: 0, queued: 0, refused: 0, pauses: 0, dropped: 0 };
  private readonly holdMaxBytes: number;
  private readonly log: Logger | undefined;
  /** SDUs refused by the device, oldest first, sent again on 'drain'. */
  private held: Held[] = [];
  private heldBytes = 0;
  /** The responder paused the device and waits for 'drain'. */
  private waiting = false;
  private closed = false;

  /**
   * Bind `channels` on `device` (throws EchoError: a channel that is not a u32, or one already
   * bound by someone else, e.g. the shim DIF's control channel 0).
   */
  constructor(device: VmpiDevice, channels: readonly number[], opts: EchoOptions = {}) {
    const list = [...new Set(channels)];
    for (const ch of list) {
      if (!isChannelId(ch)) throw new EchoError('bad_channel', `echo: ${badChannelMessage(ch)}`);
      if (device.isBound(ch)) throw new EchoError('channel_bound', `echo: channel ${ch} of ${device.name} is already bound (channel 0 is the shim DIF's control channel, 1..maxChannel its flows): pick a free channel`);
    }
    this.device = device;
    this.channels = list;
    this.holdMaxBytes = opts.holdMaxBytes ?? 4 * device.maxSdu;
    this.log = opts.logger?.child({ component: 'echo', vmpiId: device.vmpiId });
    for (const ch of list) device.bind(ch, this.onSdu);
    device.on('drain', this.onDrain);
    device.on('down', this.onDown);
    this.log?.info({ channels: list }, 'echo responder bound');
  }

  /** SDUs held (refused by the device, waiting for 'drain'). */
  get holding(): number {
    return this.held.length;
  }

  /** True while the responder keeps the device paused. */
  get pausing(): boolean {
    return this.waiting;
  }

  /** Unbind the channels, drop what is held (counted) and resume the device. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const ch of this.channels) this.device.unbind(ch);
    this.device.off('drain', this.onDrain);
    this.device.off('down', this.onDown);
    this.dropHeld();
    this.unpause();
  }

  private readonly onSdu = (sdu: Uint8Array, channel: number): void => {
    // Something else resumed the device while SDUs wait: keep the order, hold this one too.
    if (this.held.length > 0) {
      this.hold(channel, sdu);
      this.pause();
      return;
    }
    const r = this.device.send(channel, sdu);
    if (r === SendResult.Full) {
      this.stats.refused++;
      this.hold(channel, sdu);
      this.pause();
      return;
    }
    this.count(sdu);
    if (r === SendResult.Queued) {
      this.stats.queued++;
      this.pause();
    }
  };

  private readonly onDrain = (): void => {
    while (this.held.length > 0) {
      const h = this.held[0]!;
      const r = this.device.send(h.channel, h.sdu);
      if (r === SendResult.Full) {
        this.stats.refused++;
        return; // wait for the next 'drain'
      }
      this.held.shift();
      this.heldBytes -= h.sdu.byteLength;
      this.count(h.sdu);
      if (r === SendResult.Queued) {
        this.stats.queued++;
        return; // in the backlog: 'drain' follows when it empties
      }
    }
    this.unpause();
  };

  private readonly onDown = (): void => {
    this.dropHeld();
    // Nothing to wait for any more: the backlog was cleared or will be drained by the next driver.
    this.unpause();
  };

  private count(sdu: Uint8Array): void {
    this.stats.echoed++;
    this.stats.bytes += sdu.byteLength;
  }

  private hold(channel: number, sdu: Uint8Array): void {
    if (this.heldBytes + sdu.byteLength > this.holdMaxBytes && this.held.length > 0) {
      this.stats.dropped++;
      return;
    }
    this.held.push({ channel, sdu: Uint8Array.prototype.slice.call(sdu) });
    this.heldBytes += sdu.byteLength;
  }

  private dropHeld(): void {
    this.stats.dropped += this.held.length;
    this.held = [];
    this.heldBytes = 0;
  }

  private pause(): void {
    if (this.waiting) return;
    this.waiting = true;
    this.stats.pauses++;
    this.device.pause();
  }

  private unpause(): void {
    if (!this.waiting) return;
    this.waiting = false;
    this.device.resume();
  }
}
