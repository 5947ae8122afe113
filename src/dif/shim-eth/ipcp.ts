/**
 * ipcp.ts — the shim IPC process over Ethernet (IEEE 802.1Q): a shim DIF whose members share one
 * L2 segment or VLAN (like rlite's shim-eth and IRATI's shim-eth-vlan), offering the same IPC API
 * (api.ts) as the other IPC processes, so applications and the normal DIF use it alike.
 *
 * Owns: one link (link.ts: a raw packet socket on one interface, or a fake one in unit tests),
 * the resolution of application names to MAC addresses by ARP-style requests and replies
 * (wire.ts) with a bounded cache, the flows and their allocation / release state machine, the
 * keepalive that ends flows of a peer that went silent, and the counters (frames, bytes, drops by
 * reason, resolutions).
 *
 * Design (wire format in wire.ts and ../shim-udp/wire.ts):
 * - Frames of ethertype 0xD1F0 only. A flow is (peer MAC, flow id): the flow messages are the
 *   shim DIF over UDP's (DATA carries the receiver's flow id), so many flows may join the same two
 *   MACs (rlite and IRATI key a flow by the peer MAC alone: one flow per pair of hosts).
 * - Names: allocateFlow looks the destination application up in the cache (name → MAC, at most
 *   `resolveCacheSize` entries, each kept `resolveCacheMs`); a miss broadcasts a request (resent
 *   every `retryMs`) and the IPC process where the application is registered answers with its
 *   MAC, unicast. Only answers to a request this side has outstanding are taken ('unsolicited'
 *   otherwise), so what a peer sends cannot fill the cache; outstanding requests are bounded
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
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type AllocateOptions, type DeallocationCause, type Flow, type IpcProcess, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { appNameKey, formatAppName, type AppName } from '../naming.js';
import { intArg, nameArg, resolveQos } from '../core/args.js';
import type { IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations, registrationHandle, type RegEntry } from '../core/registrations.js';
import { logger as rootLogger, type Logger } from '../../sys/log.js';
import { DATA_HEADER_BYTES, WireError, clampUtf8, decodeMessage, encodeMessage, type WireMessage } from '../shim-udp/wire.js';
import {
  BROADCAST_MAC,
  ETHERTYPE_RINA,
  EthWireError,
  LENGTH_BYTES,
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
  writeEthHeader,
  writeLength,
} from './wire.js';
import { EthFlow, EthFlowRequest, type EthFlowOwner } from './flow.js';
import { PacketLink, type EthLink } from './link.js';

export const DEFAULT_KEEPALIVE_MS = 1000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5000;
export const DEFAULT_ALLOCATE_TIMEOUT_MS = 10_000;
export const DEFAULT_RETRY_MS = 1000;
export const DEFAULT_RESOLVE_CACHE_SIZE = 256;
export const DEFAULT_RESOLVE_CACHE_MS = 60_000;
/** Bytes a flow message costs beyond its SDU: the length prefix and the data header. */
export const FRAME_OVERHEAD = LENGTH_BYTES + DATA_HEADER_BYTES;

export const ETH_DROP_REASONS = ['unknown_peer', 'malformed', 'oversize', 'not_for_us', 'unknown_flow', 'stale', 'unsolicited', 'no_registration', 'limit'] as const;
export type EthDropReason = (typeof ETH_DROP_REASONS)[number];

export interface ShimEthOptions {
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
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  allocateTimeoutMs?: number;
  retryMs?: number;
  resolveCacheSize?: number;
  resolveCacheMs?: number;
  maxPendingResolutions?: number;
  maxFlows?: number;
  maxPendingRequests?: number;
  rxQueueLimit?: number;
  rxQueueBytes?: number;
  rxQueueTotalBytes?: number;
  logger?: Logger;
  /** Tests: the link to use instead of a packet socket on `interface`. */
  link?: EthLink;
}

export type ShimEthErrorCode = 'invalid_config' | 'no_interface' | 'open_failed';

/** Building the IPC process failed (bad option, no such interface, no packet socket). */
export class ShimEthError extends Error {
  override name = 'ShimEthError';
  constructor(
    readonly code: ShimEthErrorCode,
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
  }
}

type Entry =
  | { state: 'resolving'; flow: EthFlow; resolve: (f: Flow) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; abort: (() => void) | null }
  | { state: 'pending'; flow: EthFlow; peer: string; request: Uint8Array; resolve: (f: Flow) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; retry: NodeJS.Timeout; abort: (() => void) | null }
  | { state: 'incoming'; request: EthFlowRequest; peer: string; remoteId: number; timer: NodeJS.Timeout }
  | { state: 'allocated'; flow: EthFlow; peer: string; remoteId: number; lastHeard: number; lastSent: number };

interface EthRegistration extends RegEntry<(r: EthFlowRequest) => void> {}

/** An outstanding resolution: the flows (local ids) that wait for it. */
interface Resolution {
  name: string;
  ids: Set<number>;
  retry: NodeJS.Timeout;
  frame: Uint8Array;
}

interface Events {
  flowAllocated: [flow: Flow];
  flowDeallocated: [flow: Flow, reason: string, cause: DeallocationCause];
}

export class ShimEthIpcp extends EventEmitter<Events> implements IpcProcess, ObservableIpcp, EthFlowOwner {
  readonly ipcpType = 'shim-eth' as const;
  readonly difName: string;
  readonly ipcpName: string;
  readonly maxSdu: number;
  readonly mtu: number;
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  rxQueuedBytes = 0;
  readonly stats = {
    txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0, txErrors: 0, txFull: 0,
    resolved: 0, unresolved: 0, cacheHits: 0, arpRequestsSent: 0, arpRequestsAnswered: 0, arpRequestsIgnored: 0,
    allocRequested: 0, allocAccepted: 0, allocRejected: 0, allocTimedOut: 0, allocFailed: 0,
    incomingAccepted: 0, incomingRejected: 0, flowsDeallocated: 0, peersLost: 0, linkDown: 0,
    /** Frames whose handling threw (a bug: contained, logged). */
    faults: 0,
    drops: Object.fromEntries(ETH_DROP_REASONS.map((r) => [r, 0])) as Record<EthDropReason, number>,
    rxBudgetDrops: { sdus: 0, flow_bytes: 0, total_bytes: 0 },
  };
  private readonly link: EthLink;
  private readonly log: Logger;
  private readonly macKey: string;
  private readonly hdr: number;
  private readonly tx: Uint8Array;
  private readonly allowed: Set<string> | null;
  private readonly registrations: Registrations<(r: EthFlowRequest) => void, EthRegistration>;
  private readonly entries = new Map<number, Entry>();
  /** "mac/remoteId" → local id, for incoming requests and flows (duplicate requests, DEALLOC with dst 0). */
  private readonly byRemote = new Map<string, number>();
  /** Application name key → MAC and expiry; Map order is least recently used first. */
  private readonly cache = new Map<string, { mac: string; expires: number }>();
  private readonly resolutions = new Map<string, Resolution>();
  private nextId = 1;
  private nextPortId = 1;
  private readonly keepaliveMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly allocateTimeoutMs: number;
  private readonly retryMs: number;
  private readonly resolveCacheSize: number;
  private readonly resolveCacheMs: number;
  private readonly maxPendingResolutions: number;
  private readonly maxFlows: number;
  private readonly maxPendingRequests: number;
  private readonly blocked = new Set<EthFlow>();
  private drainTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private linkUp = true;
  private closed = false;

  /** Open the interface and start. Throws ShimEthError. */
  static open(opts: ShimEthOptions): ShimEthIpcp {
    return new ShimEthIpcp(opts);
  }

  private constructor(opts: ShimEthOptions) {
    super();
    const bad = (m: string): ShimEthError => new ShimEthError('invalid_config', `shim-eth ${opts.difName}: ${m}`);
    const int = (name: string, v: number | undefined, dflt: number, min: number, max: number): number => {
      const x = v ?? dflt;
      if (!Number.isInteger(x) || x < min || x > max) throw bad(`${name} must be an integer ${min}..${max}, not ${String(x)}`);
      return x;
    };
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
    this.keepaliveMs = int('keepaliveMs', opts.keepaliveMs, DEFAULT_KEEPALIVE_MS, 10, 600_000);
    this.keepaliveTimeoutMs = int('keepaliveTimeoutMs', opts.keepaliveTimeoutMs, Math.max(DEFAULT_KEEPALIVE_TIMEOUT_MS, 3 * this.keepaliveMs), 2 * this.keepaliveMs, 3_600_000);
    this.allocateTimeoutMs = int('allocateTimeoutMs', opts.allocateTimeoutMs, DEFAULT_ALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1);
    this.retryMs = int('retryMs', opts.retryMs, DEFAULT_RETRY_MS, 10, 2 ** 31 - 1);
    this.resolveCacheSize = int('resolveCacheSize', opts.resolveCacheSize, DEFAULT_RESOLVE_CACHE_SIZE, 1, 1 << 16);
    this.resolveCacheMs = int('resolveCacheMs', opts.resolveCacheMs, DEFAULT_RESOLVE_CACHE_MS, 1, 86_400_000);
    this.maxPendingResolutions = int('maxPendingResolutions', opts.maxPendingResolutions, 64, 1, 1 << 12);
    this.maxFlows = int('maxFlows', opts.maxFlows, 1024, 1, 1 << 20);
    this.maxPendingRequests = int('maxPendingRequests', opts.maxPendingRequests, 64, 1, 1 << 16);
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
    try {
      this.mtu = int('mtu', opts.mtu, this.link.mtu, 64, this.link.mtu);
    } catch (e) {
      this.link.close();
      throw e;
    }
    this.maxSdu = this.mtu - FRAME_OVERHEAD;
    this.rxQueueLimit = int('rxQueueLimit', opts.rxQueueLimit, 1024, 1, 1 << 20);
    this.rxQueueBytes = int('rxQueueBytes', opts.rxQueueBytes, Math.max(4 << 20, 2 * this.maxSdu), 2 * this.maxSdu, 2 ** 31 - 1);
    this.rxQueueTotalBytes = int('rxQueueTotalBytes', opts.rxQueueTotalBytes, Math.max(64 << 20, 4 * this.maxSdu), 4 * this.maxSdu, 2 ** 31 - 1);
    this.ipcpName = opts.name ?? `${opts.difName}.${opts.interface}`;
    this.macKey = formatMac(this.link.mac);
    this.hdr = headerBytes(this.link.vlan);
    this.tx = new Uint8Array(this.hdr + this.mtu);
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
  // Registration

  register(app: AppName | string, onFlowRequest: (request: EthFlowRequest) => void): Registration {
    this.checkOpen();
    const entry = this.registrations.add(app, onFlowRequest, (appName, key) => ({ appName, key, handler: onFlowRequest }));
    return registrationHandle(entry.appName, this.difName, () => {
      if (!this.registrations.remove(entry)) return;
      this.dropRequestsFor(entry);
    });
  }

  unregister(app: AppName | string): void {
    const entry = this.registrations.find(app);
    this.registrations.remove(entry);
    this.dropRequestsFor(entry);
  }

  isRegistered(app: AppName | string): boolean {
    return this.registrations.has(app);
  }

  private dropRequestsFor(entry: EthRegistration): void {
    for (const e of [...this.entries.values()]) {
      if (e.state === 'incoming' && e.request.state === 'waiting' && appNameKey(e.request.localApp) === entry.key) {
        this.rejectIncoming(e.request, 'application unregistered');
        e.request.cancel('application unregistered');
      }
    }
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
  private leaveResolution(id: number, dst: AppName): void {
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
    this.checkOpen();
    const src = nameArg(localApp, 'local application');
    const dst = nameArg(remoteApp, 'remote application');
    const spec = this.resolveQos(qos);
    const timeoutMs = opts.timeoutMs === undefined ? this.allocateTimeoutMs : intArg('timeoutMs', opts.timeoutMs, 1, 2 ** 31 - 1);
    if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted before it started');
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
      if (opts.signal) {
        const signal = opts.signal;
        const onAbort = (): void => this.giveUp(id, 'aborted', 'allocation aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        entry.abort = () => signal.removeEventListener('abort', onAbort);
      }
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

  private resolveQos(q: QosRequest): QosSpec {
    const spec = resolveQos(q, this.maxSdu, this.difName);
    if (spec.reliable || spec.inOrder) throw new DifError('invalid_qos', `${this.difName} runs over Ethernet, which may lose frames: it offers unreliable, unordered flows only: ask for an unreliable flow, or use a normal DIF over it for reliability`);
    return Object.freeze(spec);
  }

  private giveUp(id: number, code: 'timeout' | 'aborted', message: string): void {
    const e = this.entries.get(id);
    if (e?.state !== 'pending' && e?.state !== 'resolving') return;
    this.clearOutgoing(id, e);
    if (code === 'timeout') this.stats.allocTimedOut++;
    else this.stats.allocFailed++;
    if (e.state === 'resolving') this.stats.unresolved++;
    else {
      this.forget(e.flow.remoteApp);
      this.send(e.peer, { kind: 'dealloc', dst: 0, src: id, reason: code === 'timeout' ? 'allocation timed out' : 'allocation aborted' });
    }
    e.flow.terminate(message, 'local');
    e.reject(new DifError(code, `allocation of a flow to ${formatAppName(e.flow.remoteApp)}: ${message}`));
  }

  private clearOutgoing(id: number, e: Extract<Entry, { state: 'pending' | 'resolving' }>): void {
    clearTimeout(e.timer);
    if (e.state === 'pending') clearInterval(e.retry);
    else this.leaveResolution(id, e.flow.remoteApp);
    e.abort?.();
    this.entries.delete(id);
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, responder side

  /** @internal FlowRequest.accept() */
  acceptIncoming(req: EthFlowRequest, _opts: AcceptOptions): EthFlow {
    req.checkWaiting('accept');
    const e = this.entries.get(req.localId);
    if (e?.state !== 'incoming' || e.request !== req) throw new DifError('request_settled', 'the flow request is no longer pending');
    this.checkOpen();
    clearTimeout(e.timer);
    req.state = 'accepted';
    const flow = new EthFlow(this, this.nextPortId++, req.localId, e.peer, this.difName, req.localApp, req.remoteApp, req.qos);
    flow.markAllocated();
    const now = Date.now();
    this.entries.set(req.localId, { state: 'allocated', flow, peer: e.peer, remoteId: e.remoteId, lastHeard: now, lastSent: now });
    this.send(e.peer, { kind: 'alloc_resp', dst: e.remoteId, src: req.localId, accept: true, reason: '' });
    this.stats.incomingAccepted++;
    this.emit('flowAllocated', flow);
    return flow;
  }

  /** @internal FlowRequest.reject() */
  rejectIncoming(req: EthFlowRequest, reason: string): void {
    req.checkWaiting('reject');
    req.state = 'rejected';
    const e = this.entries.get(req.localId);
    if (e?.state === 'incoming' && e.request === req) {
      clearTimeout(e.timer);
      this.entries.delete(req.localId);
      this.byRemote.delete(remoteKey(e.peer, e.remoteId));
      this.send(e.peer, { kind: 'alloc_resp', dst: e.remoteId, src: 0, accept: false, reason: typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application' });
    }
    this.stats.incomingRejected++;
  }

  // -------------------------------------------------------------------------------------------
  // Deallocation and close

  /** @internal Flow.deallocate() */
  localDeallocate(flow: EthFlow, reason: string): void {
    const e = this.entries.get(flow.localId);
    if (e?.state === 'allocated' && e.flow === flow) this.send(e.peer, { kind: 'dealloc', dst: e.remoteId, src: flow.localId, reason });
    this.endFlow(flow.localId, reason, 'local');
  }

  private endFlow(id: number, reason: string, cause: DeallocationCause): void {
    const e = this.entries.get(id);
    if (e?.state !== 'allocated') return;
    this.entries.delete(id);
    this.byRemote.delete(remoteKey(e.peer, e.remoteId));
    this.blocked.delete(e.flow);
    this.stats.flowsDeallocated++;
    e.flow.terminate(reason, cause);
    this.emit('flowDeallocated', e.flow, reason, cause);
  }

  /** End everything: allocated flows with `cause` (telling the peers when `tell`), outgoing allocations rejected with `code`, incoming requests cancelled. */
  private endAll(reason: string, cause: DeallocationCause, code: 'closed' | 'port_down', tell: boolean): void {
    for (const [id, e] of [...this.entries]) {
      if (e.state === 'allocated') {
        if (tell) this.send(e.peer, { kind: 'dealloc', dst: e.remoteId, src: id, reason });
        this.endFlow(id, reason, cause);
      } else if (e.state === 'pending' || e.state === 'resolving') {
        this.clearOutgoing(id, e);
        if (tell && e.state === 'pending') this.send(e.peer, { kind: 'dealloc', dst: 0, src: id, reason });
        this.stats.allocFailed++;
        e.flow.terminate(reason, cause);
        e.reject(new DifError(code, `${this.difName}: ${reason}`));
      } else {
        clearTimeout(e.timer);
        this.entries.delete(id);
        this.byRemote.delete(remoteKey(e.peer, e.remoteId));
        e.request.cancel(reason);
      }
    }
  }

  /** Deallocate every flow (telling the peers), refuse what waits, close the socket. Idempotent. */
  close(reason = 'IPC process closed'): void {
    if (this.closed) return;
    this.endAll(reason, 'closed', 'closed', true);
    this.closed = true;
    this.shutdown();
  }

  /** Drop the link without a word to the peers: what a crash does (tests). */
  detach(reason = 'IPC process detached'): void {
    if (this.closed) return;
    this.endAll(reason, 'closed', 'closed', false);
    this.closed = true;
    this.shutdown();
  }

  private shutdown(): void {
    this.registrations.clear();
    for (const r of this.resolutions.values()) clearInterval(r.retry);
    this.resolutions.clear();
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.link.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new DifError('closed', `${this.difName}: the IPC process is closed`);
  }

  private newId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffffe ? 1 : this.nextId + 1;
    return id;
  }

  flows(): Flow[] {
    const out: Flow[] = [];
    for (const e of this.entries.values()) if (e.state === 'allocated') out.push(e.flow);
    return out;
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

  private send(peer: string, m: WireMessage): void {
    const f = this.frame(parseMac(peer), encodeMessage(m));
    this.sendFrame(f, f.byteLength);
  }

  /** Send; false when the device queue is full. A down interface counts as an error (and false). */
  private sendFrame(frame: Uint8Array, length: number): boolean {
    if (this.closed) return false;
    try {
      if (!this.link.send(frame, length)) {
        this.stats.txFull++;
        return false;
      }
    } catch (e) {
      this.stats.txErrors++;
      if (this.log.isLevelEnabled('debug')) this.log.debug({ err: (e as Error).message }, 'shim-eth: send failed');
      return false;
    }
    this.stats.txFrames++;
    this.stats.txBytes += length;
    return true;
  }

  /** @internal EthFlow.transmit(): the frame is built in one reused buffer (the send copies it). */
  sendData(flow: EthFlow, sdu: Uint8Array): boolean {
    const e = this.entries.get(flow.localId);
    if (e?.state !== 'allocated' || e.flow !== flow) throw new DifError('flow_deallocated', `flow ${flow.portId} is gone`);
    const tx = this.tx;
    const h = this.hdr;
    writeEthHeader(tx, parseMacCached(e.peer), this.link.mac, ETHERTYPE_RINA, this.link.vlan);
    writeLength(tx, h, DATA_HEADER_BYTES + sdu.byteLength);
    tx[h + 2] = 0x01;
    tx[h + 3] = e.remoteId >>> 24;
    tx[h + 4] = (e.remoteId >>> 16) & 0xff;
    tx[h + 5] = (e.remoteId >>> 8) & 0xff;
    tx[h + 6] = e.remoteId & 0xff;
    tx.set(sdu, h + FRAME_OVERHEAD);
    if (!this.sendFrame(tx, h + FRAME_OVERHEAD + sdu.byteLength)) {
      // The device queue is full (or the interface is down): try again shortly.
      this.blocked.add(flow);
      this.drainTimer ??= setTimeout(() => {
        this.drainTimer = null;
        const flows = [...this.blocked];
        this.blocked.clear();
        for (const f of flows) f.drained();
      }, 2);
      return false;
    }
    e.lastSent = Date.now();
    return true;
  }

  private drop(reason: EthDropReason, from: string, detail?: string): void {
    this.stats.drops[reason]++;
    if (this.log.isLevelEnabled('debug')) this.log.debug({ from, reason, detail }, 'shim-eth: frame dropped');
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
      from = formatMac(h.src);
      // OTHERHOST: unicast to another MAC (promiscuous), or a VLAN tag no VLAN device took.
      if (packetType === 3 || packetType === 4) return this.drop('not_for_us', from);
      if (!isMulticastMac(h.dst) && formatMac(h.dst) !== this.macKey) return this.drop('not_for_us', from, `to ${formatMac(h.dst)}`);
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
      this.handle(m, from);
    } catch (e) {
      // Contained: one bad frame never ends the process.
      this.stats.faults++;
      this.log.error({ err: (e as Error).message, from }, 'shim-eth: fault handling a frame');
    }
  }

  private flowOf(id: number, from: string): Extract<Entry, { state: 'allocated' }> | undefined {
    const e = this.entries.get(id);
    if (e?.state !== 'allocated' || e.peer !== from) return undefined;
    return e;
  }

  private unknownId(id: number, from: string): void {
    this.drop(id !== 0 && id < this.nextId ? 'stale' : 'unknown_flow', from, `flow id ${id}`);
  }

  private handle(m: WireMessage, from: string): void {
    switch (m.kind) {
      case 'data': {
        const e = this.flowOf(m.dst, from);
        if (!e) return this.unknownId(m.dst, from);
        e.lastHeard = Date.now();
        if (m.sdu.byteLength > e.flow.qos.maxSdu) return this.drop('oversize', from, `SDU of ${m.sdu.byteLength} bytes on a flow of max SDU ${e.flow.qos.maxSdu}`);
        e.flow.deliver(m.sdu);
        return;
      }
      case 'keepalive': {
        const e = this.flowOf(m.dst, from);
        if (!e || e.remoteId !== m.src) {
          this.unknownId(m.dst, from);
          this.send(from, { kind: 'dealloc', dst: m.src, src: m.dst, reason: `${clampUtf8(this.difName, 128)} has no such flow (the peer restarted?)` });
          return;
        }
        e.lastHeard = Date.now();
        return;
      }
      case 'alloc_req':
        return this.onAllocRequest(m, from);
      case 'alloc_resp': {
        const e = this.entries.get(m.dst);
        if (e?.state === 'allocated' && e.peer === from && e.remoteId === m.src && m.accept) return; // a duplicate answer
        if (e?.state !== 'pending' || e.peer !== from) {
          this.unknownId(m.dst, from);
          if (m.accept) this.send(from, { kind: 'dealloc', dst: m.src, src: m.dst, reason: 'the allocation was given up' });
          return;
        }
        this.clearOutgoing(m.dst, e);
        if (!m.accept) {
          this.stats.allocRejected++;
          e.flow.terminate(`rejected: ${m.reason}`, 'peer');
          e.reject(new DifError('rejected', `${formatAppName(e.flow.remoteApp)} refused the flow: ${m.reason}`, { peerReason: m.reason }));
          return;
        }
        const now = Date.now();
        this.entries.set(m.dst, { state: 'allocated', flow: e.flow, peer: e.peer, remoteId: m.src, lastHeard: now, lastSent: now });
        this.byRemote.set(remoteKey(e.peer, m.src), m.dst);
        e.flow.markAllocated();
        this.stats.allocAccepted++;
        this.emit('flowAllocated', e.flow);
        e.resolve(e.flow);
        return;
      }
      case 'dealloc': {
        const id = m.dst !== 0 ? m.dst : this.byRemote.get(remoteKey(from, m.src));
        const e = id === undefined ? undefined : this.entries.get(id);
        if (id === undefined || !e || e.state === 'resolving' || e.peer !== from) return this.unknownId(m.dst, from);
        const why = `deallocated by the peer: ${m.reason}`;
        if (e.state === 'allocated') {
          if (e.remoteId !== m.src && m.src !== 0) return this.unknownId(m.dst, from);
          this.endFlow(id, why, 'peer');
        } else if (e.state === 'incoming') {
          if (e.remoteId !== m.src) return this.unknownId(m.dst, from);
          clearTimeout(e.timer);
          this.entries.delete(id);
          this.byRemote.delete(remoteKey(from, m.src));
          e.request.cancel(`the requester gave up: ${m.reason}`);
        } else {
          this.clearOutgoing(id, e);
          this.stats.allocFailed++;
          e.flow.terminate(why, 'peer');
          e.reject(new DifError('rejected', `${formatAppName(e.flow.remoteApp)}: ${why}`, { peerReason: m.reason }));
        }
        return;
      }
    }
  }

  private onAllocRequest(m: Extract<WireMessage, { kind: 'alloc_req' }>, from: string): void {
    const dup = this.byRemote.get(remoteKey(from, m.src));
    if (dup !== undefined) {
      const e = this.entries.get(dup);
      if (e?.state === 'allocated') this.send(from, { kind: 'alloc_resp', dst: m.src, src: dup, accept: true, reason: '' });
      return;
    }
    const refuse = (reason: string, count: EthDropReason | null): void => {
      if (count) this.stats.drops[count]++;
      this.stats.incomingRejected++;
      this.send(from, { kind: 'alloc_resp', dst: m.src, src: 0, accept: false, reason });
    };
    if (m.difName !== this.difName) return refuse(`this is DIF ${clampUtf8(this.difName, 128)}, not ${clampUtf8(m.difName, 128)}`, null);
    let srcApp: AppName;
    let dstApp: AppName;
    try {
      srcApp = nameArg(m.srcApp, 'source application');
      dstApp = nameArg(m.dstApp, 'destination application');
    } catch (e) {
      this.drop('malformed', from, (e as Error).message);
      return refuse(`bad application name: ${clampUtf8((e as Error).message, 128)}`, null);
    }
    if (m.reliable || m.inOrder) return refuse('a shim-eth DIF offers unreliable, unordered flows only', null);
    if (m.maxSdu > this.maxSdu) return refuse(`max SDU ${m.maxSdu} exceeds this end's ${this.maxSdu}`, null);
    const reg = this.registrations.get(dstApp);
    if (!reg) return refuse('unknown application', 'no_registration');
    let pending = 0;
    for (const e of this.entries.values()) if (e.state === 'incoming') pending++;
    if (pending >= this.maxPendingRequests || this.entries.size >= this.maxFlows) return refuse(`too many flows or requests at ${clampUtf8(this.difName, 128)}; try again later`, 'limit');
    const id = this.newId();
    const qos: QosSpec = Object.freeze({ reliable: false, inOrder: false, maxSdu: m.maxSdu === 0 ? this.maxSdu : m.maxSdu });
    const request = new EthFlowRequest(this, id, this.difName, dstApp, srcApp, qos);
    const timer = setTimeout(() => {
      const e = this.entries.get(id);
      if (e?.state !== 'incoming' || e.request !== request || request.state !== 'waiting') return;
      this.rejectIncoming(request, `${formatAppName(dstApp)} did not answer within ${this.allocateTimeoutMs} ms`);
      request.cancel('the application did not answer in time');
    }, this.allocateTimeoutMs);
    timer.unref();
    this.entries.set(id, { state: 'incoming', request, peer: from, remoteId: m.src, timer });
    this.byRemote.set(remoteKey(from, m.src), id);
    try {
      reg.handler(request);
    } catch (e) {
      this.log.warn({ err: (e as Error).message, app: reg.key }, 'shim-eth: the flow request handler threw; the request is refused');
      if (request.state === 'waiting') this.rejectIncoming(request, 'the application failed');
    }
  }

  private keepaliveTick(): void {
    const now = Date.now();
    for (const [id, e] of [...this.entries]) {
      if (e.state !== 'allocated') continue;
      if (now - e.lastHeard > this.keepaliveTimeoutMs) {
        this.stats.peersLost++;
        this.send(e.peer, { kind: 'dealloc', dst: e.remoteId, src: id, reason: 'keepalive timeout' });
        this.endFlow(id, `the peer ${e.peer} sent nothing for ${this.keepaliveTimeoutMs} ms (keepalive timeout): it is gone or unreachable`, 'peer');
        this.log.info({ peer: e.peer, portId: e.flow.portId }, 'shim-eth: flow ended, peer silent');
      } else if (now - e.lastSent >= this.keepaliveMs) {
        e.lastSent = now;
        this.send(e.peer, { kind: 'keepalive', dst: e.remoteId, src: id });
      }
    }
    // The interface is up again after a down: allocations may go on.
    if (!this.linkUp && this.link.running()) this.linkUp = true;
  }

  // -------------------------------------------------------------------------------------------
  // Budgets and observation

  accountRx(delta: number): void {
    this.rxQueuedBytes += delta;
  }

  rxBudgetHit(which: 'sdus' | 'flow_bytes' | 'total_bytes'): void {
    this.stats.rxBudgetDrops[which]++;
  }

  counters(): IpcpCounters {
    const s = this.stats;
    return {
      allocations: {
        outgoing: { allocated: s.allocAccepted, rejected: s.allocRejected, timeout: s.allocTimedOut, failed: s.allocFailed },
        incoming: { allocated: s.incomingAccepted, rejected: s.incomingRejected },
      },
      flowsDeallocated: s.flowsDeallocated,
      drops: { stale: s.drops.stale + s.drops.unknown_flow, malformed_control: s.drops.malformed },
      rxQueuedBytes: this.rxQueuedBytes,
      rxBudgetDrops: { ...s.rxBudgetDrops },
      datagrams: { txDatagrams: s.txFrames, txBytes: s.txBytes, rxDatagrams: s.rxFrames, rxBytes: s.rxBytes, txErrors: s.txErrors },
      datagramDrops: { ...s.drops },
      resolutions: { resolved: s.resolved, unresolved: s.unresolved },
    };
  }

  inspect(): Record<string, unknown> {
    const now = Date.now();
    const flows = [...this.entries].sort((a, b) => a[0] - b[0]).map(([id, e]) => {
      const apps = e.state === 'incoming' ? e.request : e.flow;
      return {
        id,
        state: e.state,
        peer: e.state === 'resolving' ? '' : e.peer,
        remoteId: e.state === 'allocated' || e.state === 'incoming' ? e.remoteId : 0,
        ...(e.state !== 'incoming' ? { portId: e.flow.portId } : {}),
        localApp: formatAppName(apps.localApp),
        remoteApp: formatAppName(apps.remoteApp),
        maxSdu: apps.qos.maxSdu,
      };
    });
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

function remoteKey(peer: string, remoteId: number): string {
  return `${peer}/${remoteId}`;
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
