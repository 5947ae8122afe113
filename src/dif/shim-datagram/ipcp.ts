/**
 * ipcp.ts — what the shim IPC processes over datagrams (shim-udp: UDP; shim-eth: Ethernet frames)
 * share: both carry the shim DIF over UDP's flow messages (../shim-udp/wire.ts), and a flow is
 * (peer address, flow id). The shim's own ipcp.ts extends DatagramShimIpcp with what is specific
 * to it: its socket or link, how a message reaches a peer (send), name resolution, configuration,
 * requester-side allocation (allocateFlow), letting its socket or link go (shutdown), the data path
 * (sendData) and inspect().
 *
 * Owns: the flow table (local id → entry, "peer/remoteId" → local id), registrations, the
 * allocation / release state machine driven by the flow messages (handle: DATA, KEEPALIVE,
 * ALLOC_REQ, ALLOC_RESP, DEALLOC), the responder side (accept / reject), allocateFlow's argument
 * checks and abort wiring, giving up an outgoing allocation, the keepalive, the flow ids, the shared
 * counters (allocations, drops by reason), close() and detach() (the same in both shims: endAll,
 * then the shim's shutdown), and the restart: snapshot() (./snapshot.ts) and
 * resumeFrom(), which carries on the flows an IPC session of the last process held (keepFlows:
 * handed out once by reclaimFlow()) and ends every other one toward its peer.
 *
 * `Peer` is the shim's address type; peerKey() spells it as the text used in logs, inspect and the
 * flow's `peer`.
 */
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type AllocateOptions, type DeallocationCause, type Flow, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { appNameKey, formatAppName, parseAppName, type AppName } from '../naming.js';
import { intArg, nameArg, resolveQos } from '../core/args.js';
import type { IpcpCounters } from '../core/observe.js';
import { registrationHandle, type RegEntry, type Registrations } from '../core/registrations.js';
import type { Logger } from '../../sys/log.js';
import { clampUtf8, type WireMessage } from '../shim-udp/wire.js';
import { DatagramFlow, DatagramFlowRequest, type DatagramFlowOwner } from './flow.js';
import type { DatagramLimits } from './options.js';
import { DATAGRAM_SNAPSHOT_VERSION, DatagramStateError, parseDatagramSnapshot, type DatagramShimSnapshot } from './snapshot.js';

/** The reason the peer's flow ends with when this end restarted without it (nothing held it). */
export const RESTART_FLOW_LOST = 'the server at the other end restarted; its end of this flow was lost';
/** How long flows a restore kept wait to be reclaimed (then they end as lost). */
export const DEFAULT_RECLAIM_MS = 30_000;

/** What the restart options of a datagram shim give (both shims' options have these). */
export interface DatagramResumeOptions {
  /** Called after the state a snapshot holds changed (flows, ids), before the peer hears of it where that is possible. */
  onStateChange?: () => void;
  /** A snapshot (as read back) to resume from; refused with DatagramStateError. */
  resume?: unknown;
  /** Which flows of the snapshot to keep (an IPC session of the last process held them): the rest end toward the peer. */
  keepFlows?: (portId: number, difName: string) => boolean;
}

/** What a restore did. */
export interface DatagramRestoreSummary {
  flowsKept: number;
  flowsEnded: number;
  askedGivenUp: number;
  requestsRefused: number;
}

/** A flow table entry; 'resolving' (waiting for the peer's address) is shim-eth's only. */
export type DatagramEntry<Peer> =
  | { state: 'resolving'; flow: DatagramFlow; resolve: (f: Flow) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; abort: (() => void) | null }
  | { state: 'pending'; flow: DatagramFlow; peer: Peer; request: Uint8Array; resolve: (f: Flow) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; retry: NodeJS.Timeout; abort: (() => void) | null }
  | { state: 'incoming'; request: DatagramFlowRequest; peer: Peer; remoteId: number; timer: NodeJS.Timeout }
  | { state: 'allocated'; flow: DatagramFlow; peer: Peer; remoteId: number; lastHeard: number; lastSent: number };

export interface DatagramRegistration extends RegEntry<(r: DatagramFlowRequest) => void> {}

/** The counters the shared part keeps (the shim's stats object has these and its own). */
export interface DatagramShimStats {
  resolved: number;
  unresolved: number;
  allocRequested: number;
  allocAccepted: number;
  allocRejected: number;
  allocTimedOut: number;
  allocFailed: number;
  incomingAccepted: number;
  incomingRejected: number;
  flowsDeallocated: number;
  peersLost: number;
  drops: Record<'malformed' | 'oversize' | 'unknown_flow' | 'stale' | 'no_registration' | 'limit', number>;
  rxBudgetDrops: { sdus: number; flow_bytes: number; total_bytes: number };
}

interface Events {
  flowAllocated: [flow: Flow];
  flowDeallocated: [flow: Flow, reason: string, cause: DeallocationCause];
}

type SharedDropReason = keyof DatagramShimStats['drops'];

export abstract class DatagramShimIpcp<Peer, Reason extends string> extends EventEmitter<Events> implements DatagramFlowOwner {
  abstract readonly ipcpType: 'shim-udp' | 'shim-eth';
  abstract readonly difName: string;
  abstract readonly maxSdu: number;
  abstract readonly rxQueueLimit: number;
  abstract readonly rxQueueBytes: number;
  abstract readonly rxQueueTotalBytes: number;
  abstract readonly stats: DatagramShimStats & { drops: Record<Reason, number> };
  rxQueuedBytes = 0;
  protected abstract readonly log: Logger;
  protected abstract readonly registrations: Registrations<(r: DatagramFlowRequest) => void, DatagramRegistration>;
  protected readonly keepaliveMs: number;
  protected readonly keepaliveTimeoutMs: number;
  protected readonly allocateTimeoutMs: number;
  /** How often an unanswered request (ALLOC_REQ, a resolution) is sent again. */
  protected readonly retryMs: number;
  protected readonly maxFlows: number;
  protected readonly maxPendingRequests: number;
  protected readonly entries = new Map<number, DatagramEntry<Peer>>();
  /** "peer/remoteId" → local id, for incoming requests and flows (duplicate requests, DEALLOC with dst 0). */
  protected readonly byRemote = new Map<string, number>();
  /** Flows whose write() was refused: told drained() when there is room again. */
  protected readonly blocked = new Set<DatagramFlow>();
  protected nextId = 1;
  protected nextPortId = 1;
  protected keepaliveTimer: NodeJS.Timeout | null = null;
  protected closed = false;
  /** See DatagramResumeOptions.onStateChange. */
  protected onStateChange: (() => void) | undefined;
  /** What the restore did, when this IPC process was resumed from a snapshot. */
  restored: DatagramRestoreSummary | null = null;
  /** Flows the restore kept and nobody reclaimed yet, by port-id. */
  private readonly unclaimed = new Map<number, DatagramFlow>();
  private reclaimTimer: NodeJS.Timeout | null = null;
  /** Set while endAll runs: one state change for it, not one per flow. */
  private ending = false;

  constructor(
    /** The largest flow id handed out (then ids wrap to 1). */
    private readonly maxFlowId: number,
    /** Whether a datagram for flow id 0 counts as 'stale' (else 'unknown_flow'). */
    private readonly zeroIdIsStale: boolean,
    /** What one received unit is called in logs ("datagram", "frame"). */
    private readonly unit: string,
    /** The timers and limits of the flow protocol, checked (./options.ts). */
    limits: DatagramLimits,
  ) {
    super();
    ({ keepaliveMs: this.keepaliveMs, keepaliveTimeoutMs: this.keepaliveTimeoutMs, allocateTimeoutMs: this.allocateTimeoutMs, retryMs: this.retryMs, maxFlows: this.maxFlows, maxPendingRequests: this.maxPendingRequests } = limits);
  }

  /** The peer's address as text ("IPv4:port", a MAC). */
  protected abstract peerKey(peer: Peer): string;
  protected abstract samePeer(a: Peer, b: Peer): boolean;
  /** Send flow message `m` to `peer` (best effort). */
  protected abstract send(peer: Peer, m: WireMessage): void;
  /** @internal DatagramFlow.transmit() */
  abstract sendData(flow: DatagramFlow, sdu: Uint8Array): boolean;
  /** The peer `text` (as peerKey spelt it) back; throws on text this shim never wrote. */
  protected abstract parsePeer(text: string): Peer;
  /** This IPC process's own address as the snapshot records it (a restore checks it is the same). */
  protected abstract ownAddress(): string;
  /** A flow with `peer` was kept by a restore: its datagrams must be accepted (shim-udp's allow list). */
  protected admitPeer(_peer: Peer): void {}
  /** Let the socket or link go (close/detach, after every flow ended; DEALLOCs just sent should still leave). */
  protected abstract shutdown(): void;
  /** An outgoing allocation is given up (timeout, abort) after its ALLOC_REQ went out. */
  protected abandoned(_flow: DatagramFlow): void {}
  /** Outgoing flow `id`, still resolving its peer's address, no longer waits for it. */
  protected leaveResolution(_id: number, _dst: AppName): void {}

  // -------------------------------------------------------------------------------------------
  // Registration

  register(app: AppName | string, onFlowRequest: (request: DatagramFlowRequest) => void): Registration {
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

  private dropRequestsFor(entry: DatagramRegistration): void {
    for (const e of [...this.entries.values()]) {
      if (e.state === 'incoming' && e.request.state === 'waiting' && appNameKey(e.request.localApp) === entry.key) {
        this.rejectIncoming(e.request, 'application unregistered');
        e.request.cancel('application unregistered');
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, requester side (allocateFlow is the shim's)

  /** What the medium may do to SDUs, for the refusal of a reliable or ordered flow ("UDP, which may lose and reorder"). */
  protected abstract readonly medium: string;

  /** allocateFlow's argument checks, in order: open, names, QoS, timeout, not aborted yet. */
  protected allocationArgs(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest, opts: AllocateOptions): { src: AppName; dst: AppName; spec: QosSpec; timeoutMs: number } {
    this.checkOpen();
    const src = nameArg(localApp, 'local application');
    const dst = nameArg(remoteApp, 'remote application');
    const spec = resolveQos(qos, this.maxSdu, this.difName);
    if (spec.reliable || spec.inOrder) throw new DifError('invalid_qos', `${this.difName} runs over ${this.medium}: it offers unreliable, unordered flows only: ask for an unreliable flow, or use a normal DIF over it for reliability`);
    const timeoutMs = opts.timeoutMs === undefined ? this.allocateTimeoutMs : intArg('timeoutMs', opts.timeoutMs, 1, 2 ** 31 - 1);
    if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted before it started');
    return { src, dst, spec: Object.freeze(spec), timeoutMs };
  }

  /** Give outgoing allocation `id` up when `signal` aborts (entry.abort unhooks it). */
  protected watchAbort(id: number, entry: { abort: (() => void) | null }, signal: AbortSignal | undefined): void {
    if (!signal) return;
    const onAbort = (): void => this.giveUp(id, 'aborted', 'allocation aborted');
    signal.addEventListener('abort', onAbort, { once: true });
    entry.abort = () => signal.removeEventListener('abort', onAbort);
  }

  protected giveUp(id: number, code: 'timeout' | 'aborted', message: string): void {
    const e = this.entries.get(id);
    if (e?.state !== 'pending' && e?.state !== 'resolving') return;
    this.clearOutgoing(id, e);
    if (code === 'timeout') this.stats.allocTimedOut++;
    else this.stats.allocFailed++;
    if (e.state === 'resolving') this.stats.unresolved++;
    else {
      this.abandoned(e.flow);
      this.send(e.peer, { kind: 'dealloc', dst: 0, src: id, reason: code === 'timeout' ? 'allocation timed out' : 'allocation aborted' });
    }
    e.flow.terminate(message, 'local');
    e.reject(new DifError(code, `allocation of a flow to ${formatAppName(e.flow.remoteApp)}: ${message}`));
  }

  protected clearOutgoing(id: number, e: Extract<DatagramEntry<Peer>, { state: 'pending' | 'resolving' }>): void {
    clearTimeout(e.timer);
    if (e.state === 'pending') clearInterval(e.retry);
    else this.leaveResolution(id, e.flow.remoteApp);
    e.abort?.();
    this.entries.delete(id);
    this.changed();
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, responder side

  /** @internal FlowRequest.accept() */
  acceptIncoming(req: DatagramFlowRequest, _opts: AcceptOptions): DatagramFlow {
    req.checkWaiting('accept');
    const e = this.entries.get(req.localId);
    if (e?.state !== 'incoming' || e.request !== req) throw new DifError('request_settled', 'the flow request is no longer pending');
    this.checkOpen();
    clearTimeout(e.timer);
    req.state = 'accepted';
    const flow = new DatagramFlow(this, this.nextPortId++, req.localId, this.peerKey(e.peer), this.difName, req.localApp, req.remoteApp, req.qos);
    flow.markAllocated();
    const now = Date.now();
    this.entries.set(req.localId, { state: 'allocated', flow, peer: e.peer, remoteId: e.remoteId, lastHeard: now, lastSent: now });
    this.changed();
    this.send(e.peer, { kind: 'alloc_resp', dst: e.remoteId, src: req.localId, accept: true, reason: '' });
    this.stats.incomingAccepted++;
    this.emit('flowAllocated', flow);
    return flow;
  }

  /** @internal FlowRequest.reject() */
  rejectIncoming(req: DatagramFlowRequest, reason: string): void {
    req.checkWaiting('reject');
    req.state = 'rejected';
    const e = this.entries.get(req.localId);
    if (e?.state === 'incoming' && e.request === req) {
      clearTimeout(e.timer);
      this.entries.delete(req.localId);
      this.byRemote.delete(this.remoteKey(e.peer, e.remoteId));
      this.changed();
      this.send(e.peer, { kind: 'alloc_resp', dst: e.remoteId, src: 0, accept: false, reason: typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application' });
    }
    this.stats.incomingRejected++;
  }

  // -------------------------------------------------------------------------------------------
  // Deallocation

  /** @internal Flow.deallocate() */
  localDeallocate(flow: DatagramFlow, reason: string): void {
    const e = this.entries.get(flow.localId);
    if (e?.state === 'allocated' && e.flow === flow) this.send(e.peer, { kind: 'dealloc', dst: e.remoteId, src: flow.localId, reason });
    this.endFlow(flow.localId, reason, 'local');
  }

  /** End the allocated flow with local id `id` (no message sent). */
  protected endFlow(id: number, reason: string, cause: DeallocationCause): void {
    const e = this.entries.get(id);
    if (e?.state !== 'allocated') return;
    this.entries.delete(id);
    this.byRemote.delete(this.remoteKey(e.peer, e.remoteId));
    this.blocked.delete(e.flow);
    this.stats.flowsDeallocated++;
    this.unclaimed.delete(e.flow.portId);
    this.changed();
    e.flow.terminate(reason, cause);
    this.emit('flowDeallocated', e.flow, reason, cause);
  }

  protected checkOpen(): void {
    if (this.closed) throw new DifError('closed', `${this.difName}: the IPC process is closed`);
  }

  protected newId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= this.maxFlowId ? 1 : this.nextId + 1;
    this.changed();
    return id;
  }

  /** The snapshot's state changed: tell the restart code (it persists). Never throws. */
  protected changed(): void {
    if (!this.onStateChange || this.closed || this.ending) return;
    try {
      this.onStateChange();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, `${this.ipcpType}: the state change hook threw`);
    }
  }

  flows(): Flow[] {
    const out: Flow[] = [];
    for (const e of this.entries.values()) if (e.state === 'allocated') out.push(e.flow);
    return out;
  }

  protected remoteKey(peer: Peer, remoteId: number): string {
    return `${this.peerKey(peer)}/${remoteId}`;
  }

  // -------------------------------------------------------------------------------------------
  // The flow messages

  protected drop(reason: Reason | SharedDropReason, from: string, detail?: string): void {
    this.stats.drops[reason]++;
    if (this.log.isLevelEnabled('debug')) this.log.debug({ from, reason, detail }, `${this.ipcpType}: ${this.unit} dropped`);
  }

  /** The allocated flow `id` if `from` is its peer. */
  private flowOf(id: number, from: Peer): Extract<DatagramEntry<Peer>, { state: 'allocated' }> | undefined {
    const e = this.entries.get(id);
    if (e?.state !== 'allocated' || !this.samePeer(e.peer, from)) return undefined;
    return e;
  }

  private unknownId(id: number, from: string): void {
    this.drop((id !== 0 || this.zeroIdIsStale) && id < this.nextId ? 'stale' : 'unknown_flow', from, `flow id ${id}`);
  }

  /** Handle flow message `m` from `from` (spelt `fromKey`), checked by the shim: it comes from an accepted peer and fits the MTU. */
  protected handle(m: WireMessage, from: Peer, fromKey: string): void {
    switch (m.kind) {
      case 'data': {
        const e = this.flowOf(m.dst, from);
        if (!e) return this.unknownId(m.dst, fromKey);
        e.lastHeard = Date.now();
        if (m.sdu.byteLength > e.flow.qos.maxSdu) return this.drop('oversize', fromKey, `SDU of ${m.sdu.byteLength} bytes on a flow of max SDU ${e.flow.qos.maxSdu}`);
        e.flow.deliver(m.sdu);
        return;
      }
      case 'keepalive': {
        const e = this.flowOf(m.dst, from);
        if (!e || e.remoteId !== m.src) {
          this.unknownId(m.dst, fromKey);
          this.send(from, { kind: 'dealloc', dst: m.src, src: m.dst, reason: `${clampUtf8(this.difName, 128)} has no such flow (the peer restarted?)` });
          return;
        }
        e.lastHeard = Date.now();
        return;
      }
      case 'alloc_req':
        return this.onAllocRequest(m, from, fromKey);
      case 'alloc_resp': {
        const e = this.entries.get(m.dst);
        if (e?.state === 'allocated' && this.samePeer(e.peer, from) && e.remoteId === m.src && m.accept) return; // a duplicate answer
        if (e?.state !== 'pending' || !this.samePeer(e.peer, from)) {
          this.unknownId(m.dst, fromKey);
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
        this.byRemote.set(this.remoteKey(e.peer, m.src), m.dst);
        this.changed();
        e.flow.markAllocated();
        this.stats.allocAccepted++;
        this.emit('flowAllocated', e.flow);
        e.resolve(e.flow);
        return;
      }
      case 'dealloc': {
        const id = m.dst !== 0 ? m.dst : this.byRemote.get(this.remoteKey(from, m.src));
        const e = id === undefined ? undefined : this.entries.get(id);
        if (id === undefined || !e || e.state === 'resolving' || !this.samePeer(e.peer, from)) return this.unknownId(m.dst, fromKey);
        const why = `deallocated by the peer: ${m.reason}`;
        if (e.state === 'allocated') {
          if (e.remoteId !== m.src && m.src !== 0) return this.unknownId(m.dst, fromKey);
          this.endFlow(id, why, 'peer');
        } else if (e.state === 'incoming') {
          if (e.remoteId !== m.src) return this.unknownId(m.dst, fromKey);
          clearTimeout(e.timer);
          this.entries.delete(id);
          this.byRemote.delete(this.remoteKey(from, m.src));
          this.changed();
          e.request.cancel(`the requester gave up: ${m.reason}`);
        } else {
          // The peer ends a flow we still wait for (it lost the accept's state): fail the allocation.
          this.clearOutgoing(id, e);
          this.stats.allocFailed++;
          e.flow.terminate(why, 'peer');
          e.reject(new DifError('rejected', `${formatAppName(e.flow.remoteApp)}: ${why}`, { peerReason: m.reason }));
        }
        return;
      }
    }
  }

  private onAllocRequest(m: Extract<WireMessage, { kind: 'alloc_req' }>, from: Peer, fromKey: string): void {
    const dup = this.byRemote.get(this.remoteKey(from, m.src));
    if (dup !== undefined) {
      const e = this.entries.get(dup);
      // Our answer was lost: say it again. A request still waiting for its application: nothing yet.
      if (e?.state === 'allocated') this.send(from, { kind: 'alloc_resp', dst: m.src, src: dup, accept: true, reason: '' });
      return;
    }
    const refuse = (reason: string, count: SharedDropReason | null): void => {
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
      this.drop('malformed', fromKey, (e as Error).message);
      return refuse(`bad application name: ${clampUtf8((e as Error).message, 128)}`, null);
    }
    if (m.reliable || m.inOrder) return refuse(`a ${this.ipcpType} DIF offers unreliable, unordered flows only`, null);
    if (m.maxSdu > this.maxSdu) return refuse(`max SDU ${m.maxSdu} exceeds this end's ${this.maxSdu}`, null);
    const reg = this.registrations.get(dstApp);
    if (!reg) return refuse('unknown application', 'no_registration');
    let pending = 0;
    for (const e of this.entries.values()) if (e.state === 'incoming') pending++;
    if (pending >= this.maxPendingRequests || this.entries.size >= this.maxFlows) return refuse(`too many flows or requests at ${clampUtf8(this.difName, 128)}; try again later`, 'limit');
    const id = this.newId();
    const qos: QosSpec = Object.freeze({ reliable: false, inOrder: false, maxSdu: m.maxSdu === 0 ? this.maxSdu : m.maxSdu });
    const request = new DatagramFlowRequest(this, id, this.difName, dstApp, srcApp, qos);
    const timer = setTimeout(() => {
      const e = this.entries.get(id);
      if (e?.state !== 'incoming' || e.request !== request || request.state !== 'waiting') return;
      this.rejectIncoming(request, `${formatAppName(dstApp)} did not answer within ${this.allocateTimeoutMs} ms`);
      request.cancel('the application did not answer in time');
    }, this.allocateTimeoutMs);
    timer.unref();
    this.entries.set(id, { state: 'incoming', request, peer: from, remoteId: m.src, timer });
    this.byRemote.set(this.remoteKey(from, m.src), id);
    this.changed();
    try {
      reg.handler(request);
    } catch (e) {
      this.log.warn({ err: (e as Error).message, app: reg.key }, `${this.ipcpType}: the flow request handler threw; the request is refused`);
      if (request.state === 'waiting') this.rejectIncoming(request, 'the application failed');
    }
  }

  /** Every `keepaliveMs`: end flows whose peer went silent, send KEEPALIVE on idle ones. */
  protected keepaliveTick(): void {
    const now = Date.now();
    for (const [id, e] of [...this.entries]) {
      if (e.state !== 'allocated') continue;
      if (now - e.lastHeard > this.keepaliveTimeoutMs) {
        this.stats.peersLost++;
        const peer = this.peerKey(e.peer);
        this.send(e.peer, { kind: 'dealloc', dst: e.remoteId, src: id, reason: 'keepalive timeout' });
        this.endFlow(id, `the peer ${peer} sent nothing for ${this.keepaliveTimeoutMs} ms (keepalive timeout): it is gone or unreachable`, 'peer');
        this.log.info({ peer, portId: e.flow.portId }, `${this.ipcpType}: flow ended, peer silent`);
      } else if (now - e.lastSent >= this.keepaliveMs) {
        e.lastSent = now;
        this.send(e.peer, { kind: 'keepalive', dst: e.remoteId, src: id });
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Close, detach, and ending everything

  /**
   * End everything: allocated flows with `cause` (a DEALLOC to each peer when `tell`), outgoing
   * allocations rejected with `code` (given up at the peer when `tell`), requests waiting for an
   * application cancelled (refused toward the peer when `tell`, so it need not wait for its
   * timeout). Registrations stay: the IPC process may go on (shim-eth's interface down).
   */
  protected endAll(reason: string, cause: DeallocationCause, code: 'closed' | 'port_down', tell: boolean): void {
    this.ending = true;
    try {
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
          if (tell && e.request.state === 'waiting') this.rejectIncoming(e.request, reason);
          else {
            clearTimeout(e.timer);
            this.entries.delete(id);
            this.byRemote.delete(this.remoteKey(e.peer, e.remoteId));
          }
          e.request.cancel(reason);
        }
      }
    } finally {
      this.ending = false;
    }
    this.changed();
  }

  /**
   * Deallocate every flow telling the peers (cause 'closed'), give up the allocations asked for
   * at the peer, refuse the requests that wait, drop the registrations, let the socket or link
   * go. Idempotent. The same in both shims (docs/SHIM-UDP.md, "Close and detach").
   */
  close(reason = 'IPC process closed'): void {
    if (this.closed) return;
    this.endAll(reason, 'closed', 'closed', true);
    this.stop();
  }

  /**
   * What a crash does (tests): every local flow, allocation and request ends as in close(), with
   * cause 'closed', but without a word to the peers (they find out by keepalive or restart).
   */
  detach(reason = 'IPC process detached'): void {
    if (this.closed) return;
    this.endAll(reason, 'closed', 'closed', false);
    this.stop();
  }

  private stop(): void {
    this.closed = true;
    this.registrations.clear();
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (this.reclaimTimer) clearTimeout(this.reclaimTimer);
    this.reclaimTimer = null;
    this.unclaimed.clear();
    this.shutdown();
  }

  // -------------------------------------------------------------------------------------------
  // Restart (./snapshot.ts)

  /** This IPC process's state as plain JSON data (see snapshot.ts). */
  snapshot(): DatagramShimSnapshot {
    const snap: DatagramShimSnapshot = { version: DATAGRAM_SNAPSHOT_VERSION, ipcpType: this.ipcpType, difName: this.difName, address: this.ownAddress(), nextId: this.nextId, nextPortId: this.nextPortId, flows: [], asked: [], waiting: [] };
    for (const [id, e] of this.entries) {
      if (e.state === 'allocated') {
        snap.flows.push({ id, portId: e.flow.portId, peer: this.peerKey(e.peer), remoteId: e.remoteId, localApp: formatAppName(e.flow.localApp), remoteApp: formatAppName(e.flow.remoteApp), maxSdu: e.flow.qos.maxSdu });
      } else if (e.state === 'pending') snap.asked.push({ id, peer: this.peerKey(e.peer) });
      else if (e.state === 'incoming') snap.waiting.push({ peer: this.peerKey(e.peer), remoteId: e.remoteId });
    }
    return snap;
  }

  /**
   * Check `snapshot` (as read back) is one of this IPC process (type, DIF, own address). Throws
   * DatagramStateError; the shim calls this before it opens its socket or link.
   */
  static checkSnapshot(snapshot: unknown, ipcpType: string, difName: string): DatagramShimSnapshot {
    const snap = parseDatagramSnapshot(snapshot);
    if (snap.ipcpType !== ipcpType || snap.difName !== difName) {
      throw new DatagramStateError('state_invalid', `datagram shim snapshot: it is of ${snap.ipcpType} ${JSON.stringify(snap.difName)}, this IPC process is ${ipcpType} ${JSON.stringify(difName)}: the IPC process starts without its flows`);
    }
    return snap;
  }

  /**
   * The end of a shim's open(), once its socket or link is up: resume from `snap` when there is
   * one (a snapshot that does not fit closes the IPC process and throws), then report state
   * changes to `o.onStateChange` from now on.
   */
  protected finishOpen(snap: DatagramShimSnapshot | null, o: DatagramResumeOptions): void {
    if (snap) {
      try {
        this.resumeFrom(snap, o.keepFlows);
      } catch (e) {
        this.close();
        throw e;
      }
    }
    this.onStateChange = o.onStateChange;
  }

  /**
   * Carry on from `snap` (checked, its address this IPC process's): the flows `keep` names run on
   * with their ids, port-ids, peers, names and max SDU, for reclaimFlow() (those nobody reclaims
   * end after `reclaimMs`, or at endUnclaimed()); every other flow is ended toward its peer with
   * RESTART_FLOW_LOST, the allocations this end had asked for are given up (DEALLOC), the
   * requests no application had answered are refused. Flow ids and port-ids go on where they were.
   */
  protected resumeFrom(snap: DatagramShimSnapshot, keep: ((portId: number, difName: string) => boolean) | undefined, reclaimMs = DEFAULT_RECLAIM_MS): DatagramRestoreSummary {
    if (snap.address !== this.ownAddress()) {
      throw new DatagramStateError('state_invalid', `datagram shim snapshot: it is of the IPC process at ${snap.address}, this one is at ${this.ownAddress()}: the IPC process starts without its flows`);
    }
    const sum: DatagramRestoreSummary = { flowsKept: 0, flowsEnded: 0, askedGivenUp: 0, requestsRefused: 0 };
    this.nextId = Math.min(snap.nextId, 0xffffffff);
    this.nextPortId = snap.nextPortId;
    const now = Date.now();
    for (const f of snap.flows) {
      let peer: Peer;
      try {
        peer = this.parsePeer(f.peer);
      } catch {
        continue; // an address this shim cannot send to: nothing to tell
      }
      this.nextId = Math.max(this.nextId, f.id + 1);
      this.nextPortId = Math.max(this.nextPortId, f.portId + 1);
      if (keep?.(f.portId, this.difName) && f.maxSdu <= this.maxSdu) {
        const qos: QosSpec = Object.freeze({ reliable: false, inOrder: false, maxSdu: f.maxSdu });
        const flow = new DatagramFlow(this, f.portId, f.id, this.peerKey(peer), this.difName, parseAppName(f.localApp), parseAppName(f.remoteApp), qos);
        flow.markAllocated();
        // lastSent 0: a KEEPALIVE goes at the first tick, so the peer hears this end is back.
        this.entries.set(f.id, { state: 'allocated', flow, peer, remoteId: f.remoteId, lastHeard: now, lastSent: 0 });
        this.byRemote.set(this.remoteKey(peer, f.remoteId), f.id);
        this.unclaimed.set(f.portId, flow);
        this.admitPeer(peer);
        sum.flowsKept++;
      } else {
        this.send(peer, { kind: 'dealloc', dst: f.remoteId, src: f.id, reason: RESTART_FLOW_LOST });
        sum.flowsEnded++;
      }
    }
    for (const a of snap.asked) {
      try {
        this.send(this.parsePeer(a.peer), { kind: 'dealloc', dst: 0, src: a.id, reason: RESTART_FLOW_LOST });
        this.nextId = Math.max(this.nextId, a.id + 1);
        sum.askedGivenUp++;
      } catch {
        // an address this shim cannot send to
      }
    }
    for (const w of snap.waiting) {
      try {
        this.send(this.parsePeer(w.peer), { kind: 'alloc_resp', dst: w.remoteId, src: 0, accept: false, reason: 'the server restarted before the application answered: try again' });
        sum.requestsRefused++;
      } catch {
        // an address this shim cannot send to
      }
    }
    if (this.nextId > this.maxFlowId) this.nextId = 1;
    if (this.unclaimed.size > 0) {
      this.reclaimTimer = setTimeout(() => this.endUnclaimed(), reclaimMs);
      this.reclaimTimer.unref();
    }
    this.restored = sum;
    this.log.info({ ...sum }, `${this.ipcpType}: resumed from the last process's state`);
    return sum;
  }

  /** A flow the restore kept, handed out once; undefined for any other port-id. It may have ended meanwhile. */
  reclaimFlow(portId: number): DatagramFlow | undefined {
    const flow = this.unclaimed.get(portId);
    if (flow === undefined) return undefined;
    this.unclaimed.delete(portId);
    if (this.unclaimed.size === 0 && this.reclaimTimer) clearTimeout(this.reclaimTimer);
    return flow;
  }

  /** End the flows the restore kept that nobody reclaimed, toward their peers (RESTART_FLOW_LOST). */
  endUnclaimed(reason = RESTART_FLOW_LOST): void {
    if (this.reclaimTimer) clearTimeout(this.reclaimTimer);
    this.reclaimTimer = null;
    const flows = [...this.unclaimed.values()];
    this.unclaimed.clear();
    for (const f of flows) if (f.state === 'allocated') this.localDeallocate(f, reason);
    if (flows.length > 0) this.log.info({ flows: flows.length }, `${this.ipcpType}: kept flows nobody reclaimed were ended`);
  }

  // -------------------------------------------------------------------------------------------
  // Budgets and observation

  accountRx(delta: number): void {
    this.rxQueuedBytes += delta;
  }

  rxBudgetHit(which: 'sdus' | 'flow_bytes' | 'total_bytes'): void {
    this.stats.rxBudgetDrops[which]++;
  }

  /** The shim's datagram (or frame) counters, as IpcpCounters names them. */
  protected abstract datagramCounters(): NonNullable<IpcpCounters['datagrams']>;

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
      datagrams: this.datagramCounters(),
      datagramDrops: { ...s.drops },
      resolutions: { resolved: s.resolved, unresolved: s.unresolved },
    };
  }

  /** The flow table as inspect() shows it, by local id. */
  protected inspectFlows(): Record<string, unknown>[] {
    return [...this.entries].sort((a, b) => a[0] - b[0]).map(([id, e]) => {
      const apps = e.state === 'incoming' ? e.request : e.flow;
      return {
        id,
        state: e.state,
        peer: e.state === 'resolving' ? '' : this.peerKey(e.peer),
        remoteId: e.state === 'allocated' || e.state === 'incoming' ? e.remoteId : 0,
        ...(e.state !== 'incoming' ? { portId: e.flow.portId } : {}),
        localApp: formatAppName(apps.localApp),
        remoteApp: formatAppName(apps.remoteApp),
        maxSdu: apps.qos.maxSdu,
      };
    });
  }
}
