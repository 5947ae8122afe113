/**
 * port-pair.ts — two in-memory VmpiPorts joined back to back, for testing the shim DIF without
 * QEMU (the real VMPI path is integration-tested elsewhere).
 *
 * Behaves like a VMPI link where it matters to the layers above:
 * - one FIFO per direction shared by all channels (what one virtqueue per direction gives);
 * - asynchronous delivery (setImmediate), never inside send();
 * - handlers get bytes valid only during the call: the buffer is overwritten right after, so a
 *   consumer that keeps a reference without copying sees garbage;
 * - SDUs for an unbound channel are dropped and counted;
 * - optional `capacity`: at most that many SDUs in flight per direction, send() returns Full
 *   beyond it, and 'drain' follows once the receiving side has taken them;
 * - `pause()`/`resume()` hold deliveries in one direction (to keep SDUs "in flight");
 * - `dropInFlight()` loses what one side sent and the other has not taken (a dead sender's backlog);
 * - `holdChannel(ch)`/`releaseChannel(ch)` delay one channel's SDUs behind the others': the
 *   reordering across channels a guest port shows (one file, one poll watcher per channel);
 * - `down()`/`up()` take the link down (in-flight SDUs are lost, counted) and back up.
 */
import { EventEmitter } from 'node:events';
import { SendResult, type SduHandler } from '../../src/vmpi/device.js';
import type { VmpiPort, VmpiPortEvents } from '../../src/vmpi/port.js';

export interface PortPairOptions {
  vmpiId?: number;
  maxSdu?: number;
  /** SDUs in flight per direction before send() returns Full; default unlimited. */
  capacity?: number;
  /** Start with the link up (default true). */
  up?: boolean;
}

export interface MemoryPortStats {
  sent: number;
  delivered: number;
  refused: number;
  unbound: number;
  lostOnDown: number;
  sentWhileDown: number;
}

interface InFlight {
  channel: number;
  sdu: Uint8Array;
}

export class MemoryPort extends EventEmitter<VmpiPortEvents> implements VmpiPort {
  readonly stats: MemoryPortStats = { sent: 0, delivered: 0, refused: 0, unbound: 0, lostOnDown: 0, sentWhileDown: 0 };
  peer!: MemoryPort;
  private readonly handlers = new Map<number, SduHandler>();
  /** SDUs sent by this port, not yet delivered to the peer. */
  private inFlight: InFlight[] = [];
  private scheduled = false;
  private paused = false;
  private refused = false;
  /** Channels whose SDUs (sent by this port) are held back, with what was held. */
  private readonly held = new Map<number, Uint8Array[]>();
  private up: boolean;

  constructor(
    readonly name: string,
    readonly vmpiId: number,
    readonly maxSdu: number,
    private readonly capacity: number,
    up: boolean,
  ) {
    super();
    this.up = up;
  }

  get isUp(): boolean {
    return this.up;
  }

  get inFlightCount(): number {
    return this.inFlight.length;
  }

  isBound(channel: number): boolean {
    return this.handlers.has(channel);
  }

  get boundChannels(): number[] {
    return [...this.handlers.keys()].sort((a, b) => a - b);
  }

  bind(channel: number, handler: SduHandler): void {
    checkChannel(channel);
    this.handlers.set(channel, handler);
  }

  unbind(channel: number): void {
    this.handlers.delete(channel);
  }

  send(channel: number, sdu: Uint8Array): SendResult {
    checkChannel(channel);
    if (sdu.byteLength > this.maxSdu) throw new Error(`SDU of ${sdu.byteLength} bytes exceeds ${this.maxSdu}`);
    if (!this.up) {
      this.stats.sentWhileDown++;
      return SendResult.Queued;
    }
    if (this.inFlight.length >= this.capacity) {
      this.stats.refused++;
      this.refused = true;
      return SendResult.Full;
    }
    this.inFlight.push({ channel, sdu: Uint8Array.prototype.slice.call(sdu) });
    this.stats.sent++;
    this.schedule();
    return SendResult.Queued;
  }

  /** Hold SDUs this port sends (they stay in flight) until resume(). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.schedule();
  }

  /** Forget what this port sent and the peer has not taken yet (lost, as in a dead sender's backlog); returns how many. */
  dropInFlight(): number {
    const n = this.inFlight.length;
    this.inFlight = [];
    return n;
  }

  /** Keep SDUs this port sends on `channel` from the peer until releaseChannel(); others pass. */
  holdChannel(channel: number): void {
    if (!this.held.has(channel)) this.held.set(channel, []);
  }

  /** Deliver what holdChannel() kept, in order, after what is already delivered. */
  releaseChannel(channel: number): void {
    const kept = this.held.get(channel) ?? [];
    this.held.delete(channel);
    for (const sdu of kept) this.inFlight.push({ channel, sdu });
    this.schedule();
  }

  /** @internal */
  setUp(up: boolean, reason: string): void {
    if (this.up === up) return;
    this.up = up;
    if (!up) {
      this.stats.lostOnDown += this.inFlight.length;
      this.inFlight = [];
      this.emit('down', reason);
    } else {
      this.emit('up');
    }
  }

  private schedule(): void {
    if (this.scheduled || this.paused || this.inFlight.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.deliver();
    });
  }

  private deliver(): void {
    const batch = this.inFlight;
    this.inFlight = [];
    let i = 0;
    for (; i < batch.length; i++) {
      if (this.paused || !this.up) break;
      const { channel, sdu } = batch[i]!;
      const held = this.held.get(channel);
      if (held) {
        held.push(sdu);
        continue;
      }
      const handler = this.peer.handlers.get(channel);
      if (!handler) {
        this.peer.stats.unbound++;
        continue;
      }
      this.stats.delivered++;
      handler(sdu, channel);
      // The bytes were only valid during the call.
      sdu.fill(0xee);
    }
    if (i < batch.length && this.up) this.inFlight = batch.slice(i).concat(this.inFlight);
    if (this.refused && this.inFlight.length === 0 && this.up) {
      this.refused = false;
      this.emit('drain');
    }
    this.schedule();
  }
}

export interface PortPair {
  host: MemoryPort;
  guest: MemoryPort;
  /** Take the link down at both ends (in-flight SDUs are lost). */
  down(reason?: string): void;
  up(): void;
}

export function createPortPair(opts: PortPairOptions = {}): PortPair {
  const vmpiId = opts.vmpiId ?? 7;
  const maxSdu = opts.maxSdu ?? 65536;
  const capacity = opts.capacity ?? Number.POSITIVE_INFINITY;
  const up = opts.up ?? true;
  const host = new MemoryPort('host', vmpiId, maxSdu, capacity, up);
  const guest = new MemoryPort('guest', vmpiId, maxSdu, capacity, up);
  host.peer = guest;
  guest.peer = host;
  return {
    host,
    guest,
    down(reason = 'link down') {
      host.setUp(false, reason);
      guest.setUp(false, reason);
    },
    up() {
      host.setUp(true, '');
      guest.setUp(true, '');
    },
  };
}

function checkChannel(channel: number): void {
  if (!Number.isInteger(channel) || channel < 0 || channel > 0xffffffff) throw new Error(`bad channel ${channel}`);
}
