/**
 * ipcp.ts — the shim IPC process over Ethernet (IEEE 802.1Q): a shim DIF whose members share one
 * L2 segment or VLAN (like rlite's shim-eth and IRATI's shim-eth-vlan), offering the same IPC API
 * (api.ts) as the other IPC processes, so applications and the normal DIF use it alike.
 *
 * Owns: one link (link.ts: a raw packet socket on one interface, or a fake one in unit tests),
 * the resolution of application names to MAC addresses by ARP-style requests and replies
 * (wire.ts) with a bounded cache, the configuration, allocateFlow (resolution, then ALLOC_REQ),
 * the interface going down, letting the link go, the data path (sendData into a slot of the send queue,
 * tx-queue.ts: the frames of one tick leave in one sendmmsg) and the frame counters. The flow table, the allocation / release state machine, the keepalive and the
 * shared counters are the datagram shims' (../shim-datagram/ipcp.ts), shared with shim-udp.
 *
 * Design (wire format in wire.ts and ../shim-udp/wire.ts):
 * - Frames of ethertype 0xD1F0 only. A flow is (peer MAC, flow id): the flow messages are the
 *   shim DIF over UDP's (DATA carries the receiver's flow id), so many flows may join the same two
 *   MACs (rlite and IRATI key a flow by the peer MAC alone: one flow per pair of hosts).
 * - Names: allocateFlow looks the destination application up in the cache (name → MAC, at most
 *   `resolveCacheSize` entries, each kept `resolveCacheMs`); a miss broadcasts a request (resent
 *   every `retryMs`) and the IPC process where the application is registered answers with its
 *   MAC, unicast. Only answers to a request this side has outstanding are taken ('unsolicited'
 *   otherwise; a late second answer to a resent request, the MAC the cache holds for the name,
 *   is counted in arpRepliesDuplicate, not dropped), so what a peer sends cannot fill the cache; outstanding requests are bounded
 *   (`maxPendingResolutions`). A request whose sender hardware address is not the frame's
 *   source is dropped ('malformed'). A failed allocation forgets the cached entry.
 * - Peers: any MAC of the segment, or only those in `allow` when it is given ('unknown_peer').
 * - Allocation, release, liveness and bounds as in the shim DIF over UDP (ALLOC_REQ resent every
 *   `retryMs` until `allocateTimeoutMs`; KEEPALIVE every `keepaliveMs` on an idle flow; a flow
 *   whose peer is silent `keepaliveTimeoutMs` ends with cause 'peer'; `maxFlows`,
 *   `maxPendingRequests`). The interface going down (ENETDOWN on the socket) ends every flow
 *   with cause 'port_down'; allocations fail with 'port_down' while it is down; when it is up
 *   again, new flows work (the socket stays bound).
 * - QoS: Ethernet may lose frames; flows are unreliable and unordered ('invalid_qos' otherwise).
 *   Max SDU = interface MTU − 7 (2-byte length, 5-byte data header); jumbo MTUs give jumbo SDUs.
 * - Drops, by reason: unknown_peer, malformed (header, length, resolution or flow message),
 *   oversize (frame above MTU, SDU above its flow's max), not_for_us (another host's unicast, a
 *   tag no VLAN device took), unknown_flow, stale, unsolicited, no_registration, limit.
 */
import { DifError, type AllocateOptions, type Flow, type IpcProcess, type QosRequest } from '../api.js';
import { appNameKey, formatAppName, type AppName } from '../naming.js';
import { nameArg } from '../core/args.js';
import type { IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations } from '../core/registrations.js';
import { logger as rootLogger, type Logger } from '../../sys/log.js';
import { DATA_HEADER_BYTES, WireError, decodeMessage, encodeMessage, type WireMessage } from '../shim-udp/wire.js';
import {
  BROADCAST_MAC,
  ETHERTYPE_RINA,
  EthWireError,
  LENGTH_BYTES,
  MacNames,
  arpBytes,
  decodeArp,
  encodeArp,
  formatMac,
  headerBytes,
  isArpPayload,
  isMulticastMac,
  parseMac,
  readEthHeader,
  readMessage,
  sameMac,
  writeEthHeader,
  writeLength,
} from './wire.js';
import { EthFlow, type EthFlowRequest } from './flow.js';
import { DatagramShimIpcp, type DatagramEntry, type DatagramRegistration, type DatagramResumeOptions } from '../shim-datagram/ipcp.js';
import { PacketLink, type EthLink } from './link.js';
import { datagramLimits, datagramRxQueues, intOption, type DatagramLimitOptions } from '../shim-datagram/options.js';
import { TxQueue } from './tx-queue.js';
import { CodedError } from '../../sys/coded-error.js';

export const DEFAULT_RESOLVE_CACHE_SIZE = 256;
export const DEFAULT_RESOLVE_CACHE_MS = 60_000;
/** Frames per send call (sendmmsg): what one turn of the event loop writes leaves together. */
export const DEFAULT_TX_BATCH = 64;
/** Bytes a flow message costs beyond its SDU: the length prefix and the data header. */
export const FRAME_OVERHEAD = LENGTH_BYTES + DATA_HEADER_BYTES;

export const ETH_DROP_REASONS = ['unknown_peer', 'malformed', 'oversize', 'not_for_us', 'unknown_flow', 'stale', 'unsolicited', 'no_registration', 'limit'] as const;
export type EthDropReason = (typeof ETH_DROP_REASONS)[number];

export interface ShimEthOptions extends DatagramResumeOptions, DatagramLimitOptions {
  difName: string;
  /** This IPC process's name (default `<difName>.<interface>`). */
  name?: string;
  /** The network interface (a VLAN interface such as `eth0.100`, or the parent with `vlan`). */
  interface: string;
  /** Tag every frame with this VLAN id and receive only frames tagged with it (on a parent interface). */
  vlan?: number;
  /** Accept frames only from these MACs (default: any MAC of the segment). */
  allow?: string[];
  /** Largest payload after the Ethernet header (default and maximum: the interface's MTU). */
  mtu?: number;
  resolveCacheSize?: number;
  resolveCacheMs?: number;
  maxPendingResolutions?: number;
  /** Frames sent per system call, 1..256 (default 64; 1: one call per frame, at once). */
  txBatch?: number;
  logger?: Logger;
  /** Tests: the link to use instead of a packet socket on `interface`. */
  link?: EthLink;
}

export type ShimEthErrorCode = 'invalid_config' | 'no_interface' | 'open_failed';

/** Building the IPC process failed (bad option, no such interface, no packet socket). */
export class ShimEthError extends CodedError<ShimEthErrorCode> {
  override name = 'ShimEthError';
}

type Entry = DatagramEntry<string>;

/** An outstanding resolution: the flows (local ids) that wait for it. */
interface Resolution {
  name: string;
  ids: Set<number>;
  retry: NodeJS.Timeout;
  frame: Uint8Array;
}

export class ShimEthIpcp extends DatagramShimIpcp<string, EthDropReason> implements IpcProcess, ObservableIpcp {
  readonly ipcpType = 'shim-eth' as const;
  readonly difName: string;
  readonly ipcpName: string;
  readonly maxSdu: number;
  readonly mtu: number;
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  protected readonly medium = 'Ethernet, which may lose frames';
  readonly stats = {
    txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0, txErrors: 0, txFull: 0,
    /** Send system calls (each carries up to txBatch frames). */
    txCalls: 0,
    resolved: 0, unresolved: 0, cacheHits: 0, arpRequestsSent: 0, arpRequestsAnswered: 0, arpRequestsIgnored: 0, arpRepliesDuplicate: 0,
    allocRequested: 0, allocAccepted: 0, allocRejected: 0, allocTimedOut: 0, allocFailed: 0,
    incomingAccepted: 0, incomingRejected: 0, flowsDeallocated: 0, peersLost: 0, linkDown: 0,
    /** Frames whose handling threw (a bug: contained, logged). */
    faults: 0,
    drops: Object.fromEntries(ETH_DROP_REASONS.map((r) => [r, 0])) as Record<EthDropReason, number>,
    rxBudgetDrops: { sdus: 0, flow_bytes: 0, total_bytes: 0 },
  };
  private readonly link: EthLink;
  protected readonly log: Logger;
  private readonly macKey: string;
  private readonly hdr: number;
  private readonly tx: TxQueue;
  private readonly allowed: Set<string> | null;
  protected readonly registrations: Registrations<(r: EthFlowRequest) => void, DatagramRegistration>;
  /** Application name key → MAC and expiry; Map order is least recently used first. */
  private readonly cache = new Map<string, { mac: string; expires: number }>();
  /** The text of received frames' source addresses, made once per address (not per frame). */
  private readonly macNames = new MacNames();
  private readonly resolutions = new Map<string, Resolution>();
  private readonly resolveCacheSize: number;
  private readonly resolveCacheMs: number;
  private readonly maxPendingResolutions: number;
  private linkUp = true;

  /** Open the interface and start. Throws ShimEthError. */
  static open(opts: ShimEthOptions): ShimEthIpcp {
    // A snapshot is checked first: one of another IPC process is refused before the link opens.
    const snap = opts.resume === undefined ? null : DatagramShimIpcp.checkSnapshot(opts.resume, 'shim-eth', opts.difName);
    const ipcp = new ShimEthIpcp(opts);
    ipcp.finishOpen(snap, opts);
    return ipcp;
  }

  private constructor(opts: ShimEthOptions) {
    const bad = (m: string): ShimEthError => new ShimEthError('invalid_config', `shim-eth ${opts.difName}: ${m}`);
    const int = intOption(bad);
    super(0xfffffffe, false, 'frame', datagramLimits(opts, int));
    this.difName = opts.difName;
    if (opts.vlan !== undefined) int('vlan', opts.vlan, 0, 1, 4094);
    this.allowed = opts.allow === undefined ? null : new Set();
    for (const m of opts.allow ?? []) {
      try {
        this.allowed!.add(formatMac(parseMac(m)));
      } catch (e) {
        throw bad(`allow: ${JSON.stringify(m)} ${(e as Error).message}`);
      }
    }
    this.resolveCacheSize = int('resolveCacheSize', opts.resolveCacheSize, DEFAULT_RESOLVE_CACHE_SIZE, 1, 1 << 16);
    this.resolveCacheMs = int('resolveCacheMs', opts.resolveCacheMs, DEFAULT_RESOLVE_CACHE_MS, 1, 86_400_000);
    this.maxPendingResolutions = int('maxPendingResolutions', opts.maxPendingResolutions, 64, 1, 1 << 12);
    const txBatch = int('txBatch', opts.txBatch, DEFAULT_TX_BATCH, 1, 256);
    // Last before the link: nothing to undo if a check above fails.
    if (opts.link) this.link = opts.link;
    else {
      try {
        this.link = PacketLink.open(opts.interface, opts.vlan);
      } catch (e) {
        const code = (e as { code?: string }).code === 'no_interface' || (e as { code?: string }).code === 'not_ethernet' ? 'no_interface' : 'open_failed';
        throw new ShimEthError(code, `shim-eth ${opts.difName}: ${(e as Error).message}`, { cause: e });
      }
    }
    // The checks that need the link's MTU: a bad value closes the link again.
    try {
      this.mtu = int('mtu', opts.mtu, this.link.mtu, 64, this.link.mtu);
      this.maxSdu = this.mtu - FRAME_OVERHEAD;
      ({ rxQueueLimit: this.rxQueueLimit, rxQueueBytes: this.rxQueueBytes, rxQueueTotalBytes: this.rxQueueTotalBytes } = datagramRxQueues(opts, int, this.maxSdu));
    } catch (e) {
      this.link.close();
      throw e;
    }
    this.ipcpName = opts.name ?? `${opts.difName}.${opts.interface}`;
    this.macKey = formatMac(this.link.mac);
    this.hdr = headerBytes(this.link.vlan);
    this.tx = new TxQueue(this.link, this.hdr + this.mtu, txBatch, {
      sent: (frames, bytes) => {
        this.stats.txFrames += frames;
        this.stats.txBytes += bytes;
        this.stats.txCalls++;
      },
      full: () => this.stats.txFull++,
      failed: (e, frames) => {
        this.stats.txErrors += frames;
        if (this.log.isLevelEnabled('debug')) this.log.debug({ err: (e as Error).message, frames }, 'shim-eth: send failed');
      },
      drained: () => {
        const flows = [...this.blocked];
        this.blocked.clear();
        for (const f of flows) f.drained();
      },
    });
    this.registrations = new Registrations(this.difName);
    this.log = (opts.logger ?? rootLogger).child({ component: 'shim-eth', dif: this.difName });
    this.link.start({ frame: (f, full, type) => this.onFrame(f, full, type), error: (e) => this.onLinkError(e) });
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(), this.keepaliveMs);
    this.keepaliveTimer.unref();
    this.log.info({ interface: this.link.ifname, mac: this.macKey, vlan: this.link.vlan, mtu: this.mtu, maxSdu: this.maxSdu }, 'shim-eth: IPC process started');
  }

  /** This IPC process's address in the DIF: the low 32 bits of its MAC. */
  get address(): number {
    const m = this.link.mac;
    return ((m[2]! << 24) | (m[3]! << 16) | (m[4]! << 8) | m[5]!) >>> 0;
  }

  get mac(): string {
    return this.macKey;
  }

  // -------------------------------------------------------------------------------------------
  // Name resolution

  /** The cached MAC of `app` (its key), if fresh; refreshes its place in the LRU order. */
  cached(app: AppName): string | undefined {
    const key = appNameKey(app);
    const c = this.cache.get(key);
    if (!c) return undefined;
    this.cache.delete(key);
    if (c.expires <= Date.now()) return undefined;
    this.cache.set(key, c);
    return c.mac;
  }

  private remember(key: string, mac: string): void {
    this.cache.delete(key);
    this.cache.set(key, { mac, expires: Date.now() + this.resolveCacheMs });
    while (this.cache.size > this.resolveCacheSize) this.cache.delete(this.cache.keys().next().value!);
  }

  /** A failed allocation forgets the cached MAC of its destination. */
  protected override abandoned(flow: EthFlow): void {
    this.forget(flow.remoteApp);
  }

  /** Forget the cached MAC of `app` (an allocation to it failed). */
  forget(app: AppName): void {
    this.cache.delete(appNameKey(app));
  }

  private startResolution(id: number, src: AppName, dst: AppName): void {
    const key = appNameKey(dst);
    const r = this.resolutions.get(key);
    if (r) {
      r.ids.add(id);
      return;
    }
    const frame = this.frame(BROADCAST_MAC, encodeArp({ op: 'request', senderMac: this.link.mac, senderName: formatAppName(src), targetMac: new Uint8Array(6), targetName: formatAppName(dst) }));
    const res: Resolution = { name: formatAppName(dst), ids: new Set([id]), frame, retry: setInterval(() => this.sendArpRequest(res), this.retryMs) };
    this.resolutions.set(key, res);
    this.sendArpRequest(res);
  }

  private sendArpRequest(r: Resolution): void {
    this.stats.arpRequestsSent++;
    this.sendFrame(r.frame, r.frame.byteLength);
  }

  /** Flow `id` no longer waits for the resolution of `dst`. */
  protected override leaveResolution(id: number, dst: AppName): void {
    const key = appNameKey(dst);
    const r = this.resolutions.get(key);
    if (!r) return;
    r.ids.delete(id);
    if (r.ids.size === 0) {
      clearInterval(r.retry);
      this.resolutions.delete(key);
    }
  }

  private onArp(buf: Uint8Array, from: string, src: Uint8Array): void {
    let m;
    try {
      m = decodeArp(buf);
    } catch (e) {
      if (e instanceof EthWireError) return this.drop('malformed', from, `resolution: ${e.message}`);
      throw e;
    }
    if (formatMac(m.senderMac) !== from) return this.drop('malformed', from, `resolution: sender hardware address ${formatMac(m.senderMac)} is not the frame's source`);
    let target: AppName;
    let sender: AppName;
    try {
      target = nameArg(m.targetName, 'target');
      sender = nameArg(m.senderName, 'sender');
    } catch (e) {
      return this.drop('malformed', from, `resolution: ${(e as Error).message}`);
    }
    if (m.op === 'request') {
      if (!this.registrations.get(target)) {
        this.stats.arpRequestsIgnored++;
        return;
      }
      this.stats.arpRequestsAnswered++;
      const reply = this.frame(src, encodeArp({ op: 'reply', senderMac: this.link.mac, senderName: m.targetName, targetMac: m.senderMac, targetName: m.senderName }));
      this.sendFrame(reply, reply.byteLength);
      return;
    }
    const key = appNameKey(sender);
    const r = this.resolutions.get(key);
    if (!r && formatMac(m.targetMac) === this.macKey && this.cache.get(key)?.mac === from) {
      // A late answer to a request of ours that was resent (retryMs) before the first answer came:
      // it says what the cache holds already. Not unsolicited; nothing to take (the entry is left
      // as it is: a peer cannot keep it alive by repeating it).
      this.stats.arpRepliesDuplicate++;
      return;
    }
    if (!r || formatMac(m.targetMac) !== this.macKey) return this.drop('unsolicited', from, `a reply for ${m.senderName}`);
    clearInterval(r.retry);
    this.resolutions.delete(key);
    this.remember(key, from);
    for (const id of r.ids) {
      const e = this.entries.get(id);
      if (e?.state === 'resolving') this.resolved(id, e, from);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, requester side

  async allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}): Promise<Flow> {
    const { src, dst, spec, timeoutMs } = this.allocationArgs(localApp, remoteApp, qos, opts);
    if (!this.linkUp || !this.link.running()) throw new DifError('port_down', `${this.difName}: interface ${this.link.ifname} is down (no carrier): try again when it is up`);
    const srcName = formatAppName(src);
    const dstName = formatAppName(dst);
    const longest = Math.max(new TextEncoder().encode(srcName).byteLength, new TextEncoder().encode(dstName).byteLength);
    if (longest > 255 || LENGTH_BYTES + arpBytes(longest, longest) > this.mtu) throw new DifError('invalid_name', `${srcName} → ${dstName}: a name longer than 255 bytes cannot be resolved on Ethernet: shorten it`);
    const request = encodeMessage({ kind: 'alloc_req', src: 0xffffffff, reliable: false, inOrder: false, maxSdu: spec.maxSdu, difName: this.difName, srcApp: srcName, dstApp: dstName });
    if (LENGTH_BYTES + request.byteLength > this.mtu) throw new DifError('invalid_name', `the allocation request (${request.byteLength} bytes) does not fit the MTU of ${this.mtu}: shorten the names`);
    if (this.entries.size >= this.maxFlows) throw new DifError('limit_exceeded', `${this.difName} has ${this.entries.size} flows and requests, its maxFlows`);
    const cachedMac = this.cached(dst);
    if (cachedMac === undefined && !this.resolutions.has(appNameKey(dst)) && this.resolutions.size >= this.maxPendingResolutions) {
      throw new DifError('limit_exceeded', `${this.difName} is resolving ${this.resolutions.size} names, its maxPendingResolutions: try again later`);
    }
    const id = this.newId();
    const flow = new EthFlow(this, this.nextPortId++, id, cachedMac ?? '', this.difName, src, dst, spec);
    this.stats.allocRequested++;
    return new Promise<Flow>((resolve, reject) => {
      const entry: Entry = {
        state: 'resolving',
        flow,
        resolve,
        reject,
        timer: setTimeout(() => this.giveUp(id, 'timeout', `no IPC process of ${this.difName} on ${this.link.ifname} answered for ${dstName} within ${timeoutMs} ms (is it registered there?)`), timeoutMs),
        abort: null,
      };
      this.watchAbort(id, entry, opts.signal);
      this.entries.set(id, entry);
      if (cachedMac !== undefined) {
        this.stats.cacheHits++;
        this.resolved(id, entry, cachedMac);
      } else this.startResolution(id, src, dst);
    });
  }

  /** Resolution done for flow `id`: send its ALLOC_REQ (and resend it until answered). */
  private resolved(id: number, e: Extract<Entry, { state: 'resolving' }>, mac: string): void {
    this.stats.resolved++;
    const f = e.flow;
    const flow = new EthFlow(this, f.portId, id, mac, this.difName, f.localApp, f.remoteApp, f.qos);
    const msg = encodeMessage({ kind: 'alloc_req', src: id, reliable: false, inOrder: false, maxSdu: f.qos.maxSdu, difName: this.difName, srcApp: formatAppName(f.localApp), dstApp: formatAppName(f.remoteApp) });
    const request = this.frame(parseMac(mac), msg);
    this.entries.set(id, { state: 'pending', flow, peer: mac, request, resolve: e.resolve, reject: e.reject, timer: e.timer, abort: e.abort, retry: setInterval(() => this.sendFrame(request, request.byteLength), this.retryMs) });
    this.sendFrame(request, request.byteLength);
  }

  // -------------------------------------------------------------------------------------------
  // Close

  /** close()/detach() (../shim-datagram/ipcp.ts): the resolutions stop, the queued frames leave, the link goes. */
  protected shutdown(): void {
    for (const r of this.resolutions.values()) clearInterval(r.retry);
    this.resolutions.clear();
    this.tx.close(); // the DEALLOCs just queued leave first
    this.link.close();
  }

  // -------------------------------------------------------------------------------------------
  // The link

  /** A new frame to `dst` carrying `message` (control and resolution: they are kept for resending). */
  private frame(dst: Uint8Array, message: Uint8Array): Uint8Array {
    const out = new Uint8Array(this.hdr + LENGTH_BYTES + message.byteLength);
    writeEthHeader(out, dst, this.link.mac, ETHERTYPE_RINA, this.link.vlan);
    writeLength(out, this.hdr, message.byteLength);
    out.set(message, this.hdr + LENGTH_BYTES);
    return out;
  }

  protected peerKey(peer: string): string {
    return peer;
  }

  protected parsePeer(text: string): string {
    return formatMac(parseMac(text));
  }

  protected ownAddress(): string {
    return this.macKey;
  }

  protected samePeer(a: string, b: string): boolean {
    return a === b;
  }

  protected send(peer: string, m: WireMessage): void {
    const f = this.frame(parseMac(peer), encodeMessage(m));
    this.sendFrame(f, f.byteLength);
  }

  /** Queue a frame (it leaves at the end of this tick, in order); false when the send queue is full. */
  private sendFrame(frame: Uint8Array, length: number): boolean {
    if (this.closed) return false;
    if (this.tx.push(frame, length)) return true;
    this.stats.txFull++;
    return false;
  }

  /** @internal EthFlow.transmit(): the frame is built in a slot of the send queue (no copy, no allocation). */
  sendData(flow: EthFlow, sdu: Uint8Array): boolean {
    const e = this.entries.get(flow.localId);
    if (e?.state !== 'allocated' || e.flow !== flow) throw new DifError('flow_deallocated', `flow ${flow.portId} is gone`);
    const tx = this.closed ? null : this.tx.reserve();
    if (!tx) {
      // Every slot waits for a full device queue: the flow is told when they are free.
      this.stats.txFull++;
      this.blocked.add(flow);
      return false;
    }
    const h = this.hdr;
    writeEthHeader(tx, parseMacCached(e.peer), this.link.mac, ETHERTYPE_RINA, this.link.vlan);
    writeLength(tx, h, DATA_HEADER_BYTES + sdu.byteLength);
    tx[h + 2] = 0x01;
    tx[h + 3] = e.remoteId >>> 24;
    tx[h + 4] = (e.remoteId >>> 16) & 0xff;
    tx[h + 5] = (e.remoteId >>> 8) & 0xff;
    tx[h + 6] = e.remoteId & 0xff;
    tx.set(sdu, h + FRAME_OVERHEAD);
    this.tx.commit(h + FRAME_OVERHEAD + sdu.byteLength);
    e.lastSent = Date.now();
    return true;
  }

  private onLinkError(e: NodeJS.ErrnoException): void {
    if (this.closed) return;
    if (e.code === 'ENETDOWN' || e.code === 'ENXIO' || e.code === 'ENODEV') {
      this.stats.linkDown++;
      this.linkUp = false;
      this.log.warn({ interface: this.link.ifname, err: e.message }, 'shim-eth: interface down; every flow ends');
      this.endAll(`interface ${this.link.ifname} went down`, 'port_down', 'port_down', false);
      return;
    }
    this.log.warn({ err: e.message }, 'shim-eth: socket error');
  }

  private onFrame(frame: Uint8Array, full: number, packetType: number): void {
    if (this.closed) return;
    this.stats.rxFrames++;
    this.stats.rxBytes += full;
    let from = '?';
    try {
      let h;
      try {
        h = readEthHeader(frame);
      } catch (e) {
        if (e instanceof EthWireError) return this.drop('malformed', from, e.message);
        throw e;
      }
      from = this.macNames.name(h.src);
      // OTHERHOST: unicast to another MAC (promiscuous), or a VLAN tag no VLAN device took.
      if (packetType === 3 || packetType === 4) return this.drop('not_for_us', from);
      if (!isMulticastMac(h.dst) && !sameMac(h.dst, this.link.mac)) return this.drop('not_for_us', from, `to ${formatMac(h.dst)}`);
      if (h.ethertype !== ETHERTYPE_RINA) return this.drop('not_for_us', from, `ethertype 0x${h.ethertype.toString(16)}`);
      if (h.vlan !== undefined && this.link.vlan !== undefined && h.vlan !== this.link.vlan) return this.drop('not_for_us', from, `VLAN ${h.vlan}`);
      if (isMulticastMac(h.src)) return this.drop('malformed', from, 'a multicast source address');
      if (this.allowed && !this.allowed.has(from)) return this.drop('unknown_peer', from);
      if (full - h.headerBytes > this.mtu || full > frame.byteLength) return this.drop('oversize', from, `${full} bytes, MTU ${this.mtu}`);
      let msg: Uint8Array;
      try {
        msg = readMessage(frame.subarray(h.headerBytes), full);
      } catch (e) {
        if (e instanceof EthWireError) return this.drop('malformed', from, e.message);
        throw e;
      }
      if (isArpPayload(msg)) return this.onArp(msg, from, h.src);
      let m: WireMessage;
      try {
        m = decodeMessage(msg);
      } catch (e) {
        if (e instanceof WireError) return this.drop('malformed', from, e.message);
        throw e;
      }
      this.handle(m, from, from);
    } catch (e) {
      // Contained: one bad frame never ends the process.
      this.stats.faults++;
      this.log.error({ err: (e as Error).message, from }, 'shim-eth: fault handling a frame');
    }
  }

  protected override keepaliveTick(): void {
    super.keepaliveTick();
    // The interface is up again after a down: allocations may go on.
    if (!this.linkUp && this.link.running()) this.linkUp = true;
  }

  // -------------------------------------------------------------------------------------------
  // Budgets and observation

  protected datagramCounters(): NonNullable<IpcpCounters['datagrams']> {
    const s = this.stats;
    return { txDatagrams: s.txFrames, txBytes: s.txBytes, rxDatagrams: s.rxFrames, rxBytes: s.rxBytes, txErrors: s.txErrors };
  }

  inspect(): Record<string, unknown> {
    const now = Date.now();
    const flows = this.inspectFlows();
    return {
      difName: this.difName,
      name: this.ipcpName,
      interface: this.link.ifname,
      mac: this.macKey,
      ...(this.link.vlan !== undefined ? { vlan: this.link.vlan } : {}),
      mtu: this.mtu,
      maxSdu: this.maxSdu,
      linkUp: this.linkUp && this.link.running(),
      keepaliveMs: this.keepaliveMs,
      keepaliveTimeoutMs: this.keepaliveTimeoutMs,
      ...(this.allowed ? { allow: [...this.allowed] } : {}),
      cache: [...this.cache].filter(([, c]) => c.expires > now).map(([name, c]) => ({ name, mac: c.mac, expiresInMs: c.expires - now })),
      resolving: [...this.resolutions.values()].map((r) => ({ name: r.name, waiting: r.ids.size })),
      registered: [...this.registrations.values()].map((r) => formatAppName(r.appName)),
      flows,
      rxQueuedBytes: this.rxQueuedBytes,
      stats: this.stats,
    };
  }
}

/** parseMac for the data path: the few peers' MACs parsed once. */
const macCache = new Map<string, Uint8Array>();
function parseMacCached(mac: string): Uint8Array {
  let m = macCache.get(mac);
  if (!m) {
    if (macCache.size >= 4096) macCache.clear();
    m = parseMac(mac);
    macCache.set(mac, m);
  }
  return m;
}
