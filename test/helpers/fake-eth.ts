/**
 * fake-eth.ts — an in-memory Ethernet segment for unit tests of the shim DIF over Ethernet's
 * state machines (src/dif/shim-eth/ipcp.ts): links with MACs on one hub; a frame goes (copied, on
 * a later turn of the event loop, like a socket) to the link of its destination MAC or, for a
 * broadcast, to every other link. Tests can inject raw frames, lose frames, and take a link down.
 */
import type { EthLink, EthLinkHandlers } from '../../src/dif/shim-eth/link.js';

export class FakeHub {
  readonly links: FakeLink[] = [];
  /** Lose every frame while true. */
  lossy = false;
  private seq = 1;

  link(opts: { mtu?: number; vlan?: number; name?: string } = {}): FakeLink {
    const n = this.seq++;
    const l = new FakeLink(this, new Uint8Array([0x02, 0, 0, 0, 0, n]), opts.mtu ?? 1500, opts.vlan, opts.name ?? `fake${n}`);
    this.links.push(l);
    return l;
  }

  carry(from: FakeLink, frame: Uint8Array): void {
    if (this.lossy) return;
    const bcast = (frame[0]! & 1) !== 0;
    for (const l of this.links) {
      if (l === from || l.isClosed || !l.isUp) continue;
      if (!bcast && !l.mac.every((b, i) => b === frame[i])) continue;
      setImmediate(() => l.deliver(frame, frame.byteLength, bcast ? 1 : 0));
    }
  }
}

export class FakeLink implements EthLink {
  private handlers: EthLinkHandlers | null = null;
  isClosed = false;
  isUp = true;
  sent: Uint8Array[] = [];
  /** The count of each sendBatch call (the last 1000). */
  batches: number[] = [];
  /** send() returns false (device queue full) while > 0, counting down. */
  refuse = 0;

  constructor(
    private readonly hub: FakeHub,
    readonly mac: Uint8Array,
    readonly mtu: number,
    readonly vlan: number | undefined,
    readonly ifname: string,
  ) {}

  /** One frame (what sendBatch does for each): false while `refuse` counts down. */
  send(frame: Uint8Array, length: number): boolean {
    if (!this.isUp) throw Object.assign(new Error('send failed: ENETDOWN'), { code: 'ENETDOWN' });
    if (this.refuse > 0) {
      this.refuse--;
      return false;
    }
    const copy = frame.slice(0, length);
    this.sent.push(copy);
    if (this.sent.length > 1000) this.sent.shift();
    this.hub.carry(this, copy);
    return true;
  }

  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number {
    this.batches.push(count);
    if (this.batches.length > 1000) this.batches.shift();
    let n = 0;
    for (let k = first; k < first + count; k++) {
      if (!this.send(buf.subarray(offsets[k]!), lengths[k]!)) break;
      n++;
    }
    return n;
  }

  running(): boolean {
    return this.isUp;
  }

  start(h: EthLinkHandlers): void {
    this.handlers = h;
  }

  /** A frame arrives (tests: raw, hostile). */
  deliver(frame: Uint8Array, full = frame.byteLength, type = 0): void {
    if (!this.isClosed) this.handlers?.frame(frame, full, type);
  }

  down(): void {
    this.isUp = false;
    this.handlers?.error(Object.assign(new Error('recvmmsg failed: ENETDOWN'), { code: 'ENETDOWN' }));
  }

  up(): void {
    this.isUp = true;
  }

  close(): void {
    this.isClosed = true;
  }
}
