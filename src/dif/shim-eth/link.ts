/**
 * link.ts — what the shim DIF over Ethernet (ipcp.ts) needs from its network interface, and the
 * real one: a raw AF_PACKET socket (sys/native.ts) bound to the interface, for frames of ethertype
 * 0xD1F0, read in batches of up to 32 into one preallocated buffer when the socket is readable,
 * and sent in batches (sendmmsg) from the send queue's buffer (tx-queue.ts).
 *
 * Two ways to be on a VLAN: bind to a VLAN interface (`eth0.100`: the kernel adds and removes the
 * tag), or give `vlan` with the parent interface: each frame sent carries an 802.1Q tag this side
 * writes, and the socket receives only frames tagged with that id (a BPF filter in the kernel;
 * this works without the kernel's 802.1Q module).
 */
import { native } from '../../sys/native.js';
import type { FdWatcher } from '../../sys/native.js';
import { ETHERTYPE_RINA, ETH_HEADER_BYTES, VLAN_TAG_BYTES } from './wire.js';
import { CodedError } from '../../sys/coded-error.js';

/** Receive callbacks: a frame (a view valid only during the call) or a link error. */
export interface EthLinkHandlers {
  /** `fullBytes` above frame.byteLength: the frame was cut (oversize). `packetType`: 0 host, 1 broadcast, 2 multicast, 3 other host. */
  frame(frame: Uint8Array, fullBytes: number, packetType: number): void;
  /** The interface went down (ENETDOWN) or the socket failed; the link keeps trying. */
  error(e: NodeJS.ErrnoException): void;
}

export interface EthLink {
  readonly ifname: string;
  readonly mac: Uint8Array;
  /** The interface's MTU: the largest payload after the Ethernet header (and tag). */
  readonly mtu: number;
  /** The VLAN id this side writes into each frame (undefined: untagged, or the interface tags). */
  readonly vlan: number | undefined;
  /**
   * Send whole frames k = first..first+count-1, each buf[offsets[k], offsets[k]+lengths[k]), in
   * one call: how many were sent (>= 1), 0 when the device queue is full (nothing sent). Throws
   * on a down interface.
   */
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number;
  /** Whether the interface is up with a carrier now. */
  running(): boolean;
  start(handlers: EthLinkHandlers): void;
  close(): void;
}

export type EthLinkErrorCode = 'no_interface' | 'not_ethernet' | 'open_failed';

export class EthLinkError extends CodedError<EthLinkErrorCode> {
  override name = 'EthLinkError';
}

const BATCH = 32;
/** Socket buffers asked for (granted up to net.core.rmem_max without CAP_NET_ADMIN). */
const RX_BUFFER_BYTES = 4 << 20;
/** Batches read per readable event before yielding to the event loop (the watcher is level-triggered). */
const BATCHES_PER_TURN = 8;

export class PacketLink implements EthLink {
  readonly mac: Uint8Array;
  readonly mtu: number;
  private readonly fd: number;
  private readonly index: number;
  private readonly slot: number;
  private readonly buf: Uint8Array;
  private readonly meta = new Int32Array(2 * BATCH);
  private watcher: FdWatcher | null = null;
  private closed = false;

  /** Open interface `ifname` (of this network namespace). Throws EthLinkError. */
  static open(ifname: string, vlan?: number): PacketLink {
    return new PacketLink(ifname, vlan);
  }

  private constructor(
    readonly ifname: string,
    readonly vlan: number | undefined,
  ) {
    let info;
    try {
      info = native.packetIfInfo(ifname);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new EthLinkError('no_interface', `interface ${JSON.stringify(ifname)}: ${(e as Error).message}${code === 'ENODEV' ? ' (no such interface in this network namespace: see `ip link`)' : ''}`, { cause: e });
    }
    if (info.hwType !== 1) throw new EthLinkError('not_ethernet', `interface ${ifname} is not Ethernet (ARPHRD ${info.hwType})`);
    this.mac = info.mac;
    this.mtu = info.mtu;
    this.index = info.index;
    // Room for the largest frame this side accepts, and one byte more to see a larger one as cut.
    this.slot = ETH_HEADER_BYTES + VLAN_TAG_BYTES + info.mtu + 1;
    this.buf = new Uint8Array(this.slot * BATCH);
    try {
      this.fd = native.packetOpen(this.index, ETHERTYPE_RINA, vlan ?? -1);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new EthLinkError('open_failed', `interface ${ifname}: cannot open a packet socket: ${(e as Error).message}${code === 'EPERM' ? ' (needs CAP_NET_RAW)' : ''}`, { cause: e });
    }
    // The default receive buffer (~208 KiB) holds a dozen jumbo frames (each costs its skb's
    // truesize, not its length): a burst would be dropped by the kernel before we read it.
    try {
      native.setSocketBuffers(this.fd, RX_BUFFER_BYTES);
    } catch {
      // Kept at the default: still works, drops sooner under bursts.
    }
  }

  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, first: number, count: number): number {
    return native.packetSendBatch(this.fd, buf, offsets, lengths, first, count);
  }

  running(): boolean {
    try {
      const i = native.packetIfInfo(this.ifname);
      return i.up && i.running && i.index === this.index;
    } catch {
      return false;
    }
  }

  start(h: EthLinkHandlers): void {
    this.watcher = native.watchReadable(this.fd, (events) => {
      this.onReadable(h);
      // A socket error (ENETDOWN when the interface goes down) is a poll error, which stops the
      // watcher; the read above took the error off the socket, so watch again: the socket is
      // bound to the interface still, and frames come again once it is up.
      if (events < 0 && !this.closed) this.watcher?.start();
    });
    this.watcher.start();
  }

  private onReadable(h: EthLinkHandlers): void {
    for (let b = 0; b < BATCHES_PER_TURN && !this.closed; b++) {
      let n: number;
      try {
        n = native.packetRecvBatch(this.fd, this.buf, this.slot, BATCH, this.meta);
      } catch (e) {
        h.error(e as NodeJS.ErrnoException);
        return;
      }
      for (let i = 0; i < n && !this.closed; i++) {
        const full = this.meta[2 * i]!;
        const at = i * this.slot;
        h.frame(this.buf.subarray(at, at + Math.min(full, this.slot)), full, this.meta[2 * i + 1]!);
      }
      if (n < BATCH) return;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    native.close(this.fd);
  }
}
