/**
 * ipcp-flows.ts — the application flows of a normal IPC process (ipcp.ts): allocation as
 * requester and responder through the flow allocator (flow-alloc.ts), one EfcpConnection per
 * flow bound to its CEP-id in the RMT, and the end of flows (by the application, by the other
 * end, or because their member became unreachable: cause 'port_down').
 *
 * Owns: the flow allocator, the flows by port-id and by flow name, the requester side of
 * allocation, the EFCP connections waiting for room in the RMT, and lingering flows. The
 * responder side (requests waiting for their application) is ipcp-flow-responder.ts'; the
 * wording of failed allocations ipcp-flow-errors.ts'. Everything else it needs (names, the RMT,
 * the directory, registrations, sending management messages) comes from its `FlowHost`.
 *
 * Max SDU of a requested flow: if the application asked for none, the request is open
 * (flow-alloc.ts `maxSduOpen`) and the responder may answer with a smaller one (its route back);
 * the flow's QoS takes it before the EFCP is set up and is frozen before the application sees it.
 */
import { randomInt } from 'node:crypto';
import { DifError, type AllocateOptions, type DeallocationCause, type Flow, type FlowRequestHandler, type QosRequest, type QosSpec } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';
import { nameArg, resolveQos } from '../core/args.js';
import type { CdapMessage } from './cdap.js';
import { CepAllocator } from './cep-alloc.js';
import type { Clock } from './clock.js';
import { EfcpConnection, EfcpError, cubeById, cubeForQos, type CubeChoice } from './efcp/index.js';
import { FlowAllocator, type FlowInfo } from './flow-alloc.js';
import { NormalFlow, type NormalFlowOwner } from './ipcp-flow.js';
import { REASON_UNKNOWN_APPLICATION, faError } from './ipcp-flow-errors.js';
import { FlowResponder, type ResponderFlows } from './ipcp-flow-responder.js';
import type { Rmt } from './rmt.js';
import { addEfcp, newEfcpTotals } from './efcp/totals.js';
import { Linger, lingerBoundMs, needsLinger, type LingerOutcome } from './flow-linger.js';
import type { EfcpTotals } from '../core/observe.js';

export { REASON_UNKNOWN_APPLICATION } from './ipcp-flow-errors.js';

/** A requested flow's QoS until the answer settles it (its maxSdu may still be lowered). */
type UnsettledQos = { reliable: boolean; inOrder: boolean; maxSdu: number };

/** What the flows need from their IPC process. */
export interface FlowHost {
  readonly difName: string;
  readonly name: AppName;
  readonly clock: Clock;
  readonly rmt: Rmt;
  readonly rxQueueLimit: number;
  /** 0 while not enrolled. */
  readonly address: number;
  readonly maxSdu: number;
  /** Largest SDU the route to member `addr` carries; undefined: no route (the responder checks its route back). */
  pathMaxSdu?(addr: number): number | undefined;
  readonly allocateTimeoutMs: number;
  readonly cube: CubeChoice | undefined;
  readonly closed: boolean;
  checkOpen(): void;
  lookup(app: AppName): number | undefined;
  /** The unreachable member a name was forgotten with (Directory.lostAt), for the error's words. */
  lostAt(app: AppName): number | undefined;
  registration(app: AppName): { readonly appName: AppName; readonly key: string; readonly handler: FlowRequestHandler } | undefined;
  sendMgmt(dst: number, msg: CdapMessage): void;
  emit(event: 'flowAllocated', flow: Flow): void;
  emit(event: 'flowDeallocated', flow: Flow, reason: string, cause: DeallocationCause): void;
}

export class IpcpFlows implements NormalFlowOwner, ResponderFlows {
  readonly stats = {
    flowsAllocated: 0, flowsDeallocated: 0, incomingRequests: 0, incomingAccepted: 0, incomingRejected: 0, dataNoRoute: 0,
    /** Outgoing allocations: asked (past the local checks), allocated, refused by the other end, timed out. */
    allocRequested: 0, allocSucceeded: 0, allocRejected: 0, allocTimedOut: 0,
    /** Reliable flows deallocated with SDUs unacknowledged (flow-linger.ts), and how their lingers ended. */
    lingered: 0, lingerAcked: 0, lingerExpired: 0, lingerFailed: 0, lingerCancelled: 0,
  };
  readonly fa: FlowAllocator;
  readonly rxQueueLimit: number;
  /** EFCP counters of the flows that have ended (the live ones are added in efcpTotals()). */
  private readonly endedEfcp = newEfcpTotals();
  private readonly byPort = new Map<number, NormalFlow>();
  private readonly byFaName = new Map<string, NormalFlow>();
  private readonly waitingLower = new Set<EfcpConnection>();
  /** The QoS of requested flows not yet answered, by port-id. */
  private readonly unsettled = new Map<number, UnsettledQos>();
  private readonly responder: FlowResponder = new FlowResponder(this);
  /** Deallocated reliable flows whose EFCP still delivers what it holds, by flow name. */
  private readonly lingering = new Map<string, { flow: NormalFlow; efcp: EfcpConnection; linger: Linger }>();
  private nextPortId = 1;
  /** Inside memberLost: deletions are losses ('port_down'), not the peer's doing. */
  private losing = false;

  constructor(readonly h: FlowHost) {
    this.rxQueueLimit = h.rxQueueLimit;
    this.fa = new FlowAllocator({
      clock: h.clock,
      ceps: new CepAllocator({ clock: h.clock }),
      localAddress: () => h.address,
      lookup: (app) => h.lookup(app),
      send: (dst, msg) => h.sendMgmt(dst, msg),
      onRequest: (fr) => this.responder.onFlowRequest(fr),
      onEstablished: (info) => this.establish(info),
      onDeleted: (info, reason) => this.flowDeleted(info, reason),
    });
  }

  /** The member at `addr` is unreachable: its flows end with cause 'port_down' and `why`. */
  memberLost(addr: number, why: string): void {
    const outer = this.losing;
    this.losing = true;
    try {
      this.fa.memberLost(addr, why);
    } finally {
      this.losing = outer;
    }
  }

  /** Requests waiting for the application registered as `key` are cancelled (and refused). */
  cancelRequests(key: string | null, reason: string): void {
    this.responder.cancelRequests(key, reason);
  }

  /** Deallocate every flow (telling the other ends) with cause 'closed'. */
  closeAll(reason: string): void {
    this.cancelRequests(null, reason);
    for (const [name, l] of [...this.lingering]) {
      this.fa.deallocate(name, reason);
      this.lingerEnded(name, l.linger, 'cancelled');
    }
    for (const f of [...this.byPort.values()]) {
      if (f.faName) this.fa.deallocate(f.faName, reason);
      this.dropFlow(f, reason, 'closed');
    }
  }

  /** The RMT has room again: EFCP connections it refused may send. */
  lowerWritable(): void {
    const list = [...this.waitingLower];
    this.waitingLower.clear();
    for (const e of list) e.lowerReady();
  }

  // ---- allocation, requester side -------------------------------------------------------------

  /**
   * `maxSduOpen`: the application asked for no max SDU (default: `qos` has none), so the responder
   * may lower the one offered (ipcp.ts offers the route's limit in `qos`).
   */
  allocate(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}, maxSduOpen?: boolean): Promise<Flow> {
    try {
      this.h.checkOpen();
      const src = nameArg(localApp, 'local application');
      const dst = nameArg(remoteApp, 'remote application');
      const spec = this.resolveQos(qos);
      if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted before it started');
      if (this.h.address === 0) throw new DifError('port_down', `${formatAppName(this.h.name)} is not enrolled in ${this.h.difName} yet`);
      // A name forgotten with its unreachable member is still placed there, so the reachability
      // check below says which member is gone instead of "unknown application".
      const where = this.h.lookup(dst) ?? this.h.lostAt(dst);
      if (where === undefined) throw new DifError('rejected', `${formatAppName(dst)} is not registered in ${this.h.difName}: ${REASON_UNKNOWN_APPLICATION}`, { peerReason: REASON_UNKNOWN_APPLICATION });
      if (where !== this.h.address && !this.h.rmt.forwardingTable().has(where)) throw new DifError('port_down', `member ${where} of ${this.h.difName}, where ${formatAppName(dst)} is registered, is unreachable`);
      if (where === this.h.address) throw new DifError('invalid_argument', `${formatAppName(dst)} is registered at this same IPC process; flows within one member of ${this.h.difName} are not supported yet`);
      const timeoutMs = opts.timeoutMs ?? this.h.allocateTimeoutMs ?? 15_000;
      if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new DifError('invalid_argument', `timeoutMs must be a positive integer, not ${String(timeoutMs)}`);
      const cube = cubeForQos(spec, this.h.cube);
      const open = maxSduOpen ?? !qos.maxSdu;
      const granted: UnsettledQos = { reliable: cube.retransmission, inOrder: cube.inOrder, maxSdu: spec.maxSdu };
      const flow = new NormalFlow(this, this.nextPortId++, this.h.difName, src, dst, granted);
      this.byPort.set(flow.portId, flow);
      if (open) this.unsettled.set(flow.portId, granted);
      else Object.freeze(granted);
      this.stats.allocRequested++;
      const faPromise = this.fa.allocate({ srcApp: src, dstApp: dst, srcPort: flow.portId, qosCube: cube.id, initSeq: randomInt(0, 0xffffffff), maxSdu: spec.maxSdu, maxSduOpen: open });
      return new Promise<Flow>((resolve, reject) => {
        let settled = false;
        const finish = (err: DifError | null): void => {
          if (settled) return;
          settled = true;
          if (this.unsettled.get(flow.portId) === granted) this.unsettled.delete(flow.portId);
          Object.freeze(granted);
          this.h.clock.clearTimer(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          if (err) {
            if (err.code === 'rejected') this.stats.allocRejected++;
            else if (err.code === 'timeout') this.stats.allocTimedOut++;
            this.dropFlow(flow, err.message, 'local');
            reject(err);
            return;
          }
          flow.markAllocated();
          this.stats.flowsAllocated++;
          this.stats.allocSucceeded++;
          this.h.emit('flowAllocated', flow);
          resolve(flow);
        };
        const timer = this.h.clock.setTimer(timeoutMs, () => finish(new DifError('timeout', `no answer for the flow to ${formatAppName(dst)} within ${timeoutMs} ms`)));
        const onAbort = (): void => finish(new DifError('aborted', 'allocation aborted'));
        opts.signal?.addEventListener('abort', onAbort, { once: true });
        faPromise.then(
          () => finish(null),
          (e: unknown) => finish(faError(e, dst)),
        );
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private resolveQos(q: QosRequest): QosSpec {
    return resolveQos(q, this.h.maxSdu, this.h.difName);
  }

  /** The flow allocator made the flow (either end): set up its EFCP before any data PDU can arrive. */
  private establish(info: FlowInfo): void {
    const flow = this.byPort.get(info.localPort);
    const cube = cubeById(info.qosCube);
    if (!flow || flow.state === 'deallocated' || !cube) {
      this.fa.deallocate(info.name, 'the local end of the flow is gone');
      return;
    }
    // An open request the responder answered with a smaller max SDU (its route back): agreed.
    const open = info.initiator ? this.unsettled.get(info.localPort) : undefined;
    if (open && info.maxSdu > 0 && info.maxSdu < open.maxSdu) open.maxSdu = info.maxSdu;
    const efcp: EfcpConnection = new EfcpConnection({
      cube,
      clock: this.h.clock,
      localAddr: info.localAddr,
      remoteAddr: info.remoteAddr,
      localCep: info.localCep,
      remoteCep: info.remoteCep,
      initialSeq: info.localInitSeq,
      peerInitialSeq: info.remoteInitSeq,
      maxSdu: flow.qos.maxSdu,
      sendPdu: (pdu) => this.sendData(efcp, pdu),
      sendPduCopies: true, // the RMT copies a borrowed PDU it keeps (sendData)
      deliver: (sdu, borrowed) => flow.deliver(sdu, borrowed),
      deliverLends: true, // NormalFlow.deliver copies a borrowed SDU it keeps
      onDrain: () => flow.drained(),
      onFail: (err: EfcpError) => this.localDeallocate(flow, `the flow failed: ${err.message}`, 'port_down'),
    });
    flow.faName = info.name;
    flow.localCep = info.localCep;
    flow.remoteAddr = info.remoteAddr;
    this.byFaName.set(info.name, flow);
    this.h.rmt.bindCep(info.localCep, {
      receivePdu: (p, pdu, _hlen, borrowed) => efcp.receive(pdu, p, borrowed),
      beginBatch: () => efcp.beginBatch(),
      endBatch: () => efcp.endBatch(),
    });
    flow.attach(efcp);
  }

  private sendData(efcp: EfcpConnection, pdu: Uint8Array): boolean {
    try {
      if (this.h.rmt.send(pdu, true)) return true;
      this.waitingLower.add(efcp);
      return false;
    } catch {
      // No route (the member is going away; its flows end when routing says so): dropped.
      this.stats.dataNoRoute++;
      return true;
    }
  }


  // ---- deallocation ---------------------------------------------------------------------------

  /** @internal Flow.deallocate() (and a failed EFCP) */
  localDeallocate(flow: NormalFlow, reason: string, cause: DeallocationCause = 'local'): void {
    const l = flow.faName ? this.lingering.get(flow.faName) : undefined;
    if (l) {
      // Its EFCP failed while lingering (retransmissions exhausted): the end comes now.
      this.lingerEnded(flow.faName!, l.linger, 'failed');
      return;
    }
    if (cause === 'local' && flow.faName && flow.efcp && !this.h.closed && needsLinger(flow.efcp)) {
      this.startLinger(flow, flow.efcp, reason);
      return;
    }
    if (flow.faName) this.fa.deallocate(flow.faName, reason);
    this.dropFlow(flow, reason, cause);
  }

  /**
   * The application's flow ends now, its EFCP stays bound to its CEP-id until what it holds is
   * acknowledged (or the bound passes); only then the peer is told (M_DELETE), so its end stays
   * up to receive the last SDUs.
   */
  private startLinger(flow: NormalFlow, efcp: EfcpConnection, reason: string): void {
    const name = flow.faName!;
    this.stats.lingered++;
    flow.efcp = null; // so the flow's end does not close the connection
    const linger = new Linger(this.h.clock, efcp, lingerBoundMs(efcp), (outcome) => this.lingerEnded(name, linger, outcome, reason));
    this.lingering.set(name, { flow, efcp, linger });
    this.dropFlow(flow, reason, 'local', true);
  }

  /** A linger is over: the connection closes, its CEP-id is unbound, and (unless the flow is gone already) the peer is told. */
  private lingerEnded(name: string, linger: Linger, outcome: LingerOutcome, reason?: string): void {
    const l = this.lingering.get(name);
    if (!l || l.linger !== linger) return;
    this.lingering.delete(name);
    if (outcome === 'acked') this.stats.lingerAcked++;
    else if (outcome === 'expired') this.stats.lingerExpired++;
    else if (outcome === 'failed') this.stats.lingerFailed++;
    else this.stats.lingerCancelled++;
    if (!linger.ended) linger.cancel(); // clears its timer; re-enters here and returns (no longer listed)
    l.efcp.close();
    this.waitingLower.delete(l.efcp);
    addEfcp(this.endedEfcp, l.efcp.stats);
    if (this.byFaName.get(name) === l.flow) {
      this.byFaName.delete(name);
      this.h.rmt.unbindCep(l.flow.localCep);
    }
    if (reason !== undefined) this.fa.deallocate(name, reason);
  }

  private flowDeleted(info: FlowInfo, reason: string): void {
    const l = this.lingering.get(info.name);
    if (l) {
      // The peer deleted it too, or its member became unreachable: nothing more can be delivered.
      this.lingerEnded(info.name, l.linger, 'cancelled');
      return;
    }
    const flow = this.byFaName.get(info.name);
    if (!flow) return;
    if (this.losing) this.dropFlow(flow, reason, 'port_down');
    else this.dropFlow(flow, reason === 'deleted by the other end' ? 'deallocated by the peer' : reason, 'peer');
  }

  /** A flow (either end) listed under a fresh port-id. */
  newFlow(localApp: AppName, remoteApp: AppName, qos: QosSpec): NormalFlow {
    const flow = new NormalFlow(this, this.nextPortId++, this.h.difName, localApp, remoteApp, qos);
    this.byPort.set(flow.portId, flow);
    return flow;
  }

  /** @internal The flow ends here (listed no more, its CEP-id unbound unless it lingers). */
  dropFlow(flow: NormalFlow, reason: string, cause: DeallocationCause, lingering = false): void {
    // Counted once, as it leaves byPort (efcpTotals() counts the flows still in it).
    const listed = this.byPort.get(flow.portId) === flow;
    if (listed) this.byPort.delete(flow.portId);
    if (!lingering && flow.faName && this.byFaName.get(flow.faName) === flow) {
      this.byFaName.delete(flow.faName);
      this.h.rmt.unbindCep(flow.localCep);
    }
    if (flow.efcp) {
      this.waitingLower.delete(flow.efcp);
      if (listed) addEfcp(this.endedEfcp, flow.efcp.stats);
    }
    const wasAllocated = flow.state === 'allocated';
    flow.terminate(reason, cause);
    if (wasAllocated) {
      this.stats.flowsDeallocated++;
      this.h.emit('flowDeallocated', flow, reason, cause);
    }
  }

  /** EFCP counters over every flow this IPC process has had. */
  efcpTotals(): EfcpTotals {
    const t = { ...this.endedEfcp };
    for (const f of this.byPort.values()) if (f.efcp) addEfcp(t, f.efcp.stats);
    for (const l of this.lingering.values()) addEfcp(t, l.efcp.stats);
    return t;
  }

  flows(): Flow[] {
    return [...this.byPort.values()].filter((f) => f.state === 'allocated');
  }

  /** Flows lingering after their deallocation (flow-linger.ts). */
  get lingeringCount(): number {
    return this.lingering.size;
  }

  /** PDUs waiting in the EFCP queues of every flow (lingering ones too), by queue. Read at scrape time. */
  efcpQueues(): { rtx: number; closed_window: number; reassembly: number } {
    const q = { rtx: 0, closed_window: 0, reassembly: 0 };
    const add = (e: EfcpConnection): void => {
      const s = e.snapshot();
      q.rtx += s.sender.rtxPdus;
      q.closed_window += s.sender.cwqPdus;
      q.reassembly += s.receiver.bufferedPdus;
    };
    for (const f of this.byPort.values()) if (f.efcp) add(f.efcp);
    for (const l of this.lingering.values()) add(l.efcp);
    return q;
  }
}

