/**
 * ipcp-flow-responder.ts — the responder side of flow allocation in a normal IPC process
 * (ipcp-flows.ts): a flow allocator request for an application registered here is checked
 * (registered, known QoS cube, max SDU at this member and on the route back to the requester),
 * handed to the application as a FlowRequest, and its
 * decision (accept, reject, or cancellation when the application unregisters or the IPC process
 * closes) is given back to the flow allocator, at once or later.
 *
 * Owns: the requests waiting for their application and that decision. The flows it accepts are
 * listed and ended by ipcp-flows.ts (`ResponderFlows`).
 *
 * The route back. The requester offered a max SDU its own route here carries; this member's
 * route back may be another one (unequal link costs, a view of the DIF not yet the same, an
 * older requester that checks no route) with a smaller link. Both ends use the one agreed max
 * SDU. A request whose application left the max SDU open (`maxSduOpen`: the requester offered
 * only what its own route carries) is lowered to what this member and its route back carry, and
 * the answer says the agreed value (flow-alloc.ts), so a plain allocation over an asymmetric path
 * gets min(forward, back). A max SDU the application asked for is never lowered: above what the
 * route back carries it is refused, the reason naming the member, the limit and what to ask for;
 * the requester can ask again with at most that. No route back yet (routing still converging):
 * not checked, the answer waits in the RMT's hands like any other.
 */
import { randomInt } from 'node:crypto';
import { DifError, type AcceptOptions, type DeallocationCause, type Flow, type FlowRequestHandler, type QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import type { FlowRequest as FaRequest } from './cdap-objects.js';
import { cubeById } from './efcp/index.js';
import type { FlowDecision } from './flow-alloc.js';
import { NormalFlowRequest, type NormalFlow, type NormalRequestOwner } from './ipcp-flow.js';
import { REASON_UNKNOWN_APPLICATION } from './ipcp-flow-errors.js';

/** What the responder needs from its IPC process (ipcp-flows.ts' FlowHost has it all). */
export interface ResponderHost {
  readonly difName: string;
  readonly maxSdu: number;
  readonly closed: boolean;
  /** Largest SDU the route to member `addr` carries (ipcp.ts pathMaxSdu); undefined: no route. */
  pathMaxSdu?(addr: number): number | undefined;
  registration(app: AppName): { readonly appName: AppName; readonly key: string; readonly handler: FlowRequestHandler } | undefined;
  emit(event: 'flowAllocated', flow: Flow): void;
}

/** What the responder needs from the flows of its IPC process. */
export interface ResponderFlows {
  readonly h: ResponderHost;
  readonly stats: { incomingRequests: number; incomingAccepted: number; incomingRejected: number; flowsAllocated: number };
  /** A new flow, listed under a fresh port-id. */
  newFlow(localApp: AppName, remoteApp: AppName, qos: QosSpec): NormalFlow;
  dropFlow(flow: NormalFlow, reason: string, cause: DeallocationCause): void;
}

/** The start of the reason a request above the route back's max SDU is refused with. */
export const REASON_ROUTE_BACK = 'the route back is smaller';

export class FlowResponder implements NormalRequestOwner {
  private readonly pendingRequests = new Set<NormalFlowRequest>();

  constructor(private readonly f: ResponderFlows) {}

  private get h(): ResponderHost {
    return this.f.h;
  }

  private get stats(): ResponderFlows['stats'] {
    return this.f.stats;
  }

  /** Requests waiting for the application registered as `key` are cancelled (and refused). */
  cancelRequests(key: string | null, reason: string): void {
    for (const req of [...this.pendingRequests]) if (key === null || req.registrationKey === key) this.settleRequest(req, { accept: false, reason }, reason);
  }

  /** The flow allocator's onRequest: a request for a flow to an application registered here. */
  onFlowRequest(fr: FaRequest): FlowDecision | Promise<FlowDecision> {
    this.stats.incomingRequests++;
    const reg = this.h.registration(fr.dstApp);
    const cube = cubeById(fr.qosCube);
    const back = reg && cube ? this.h.pathMaxSdu?.(fr.srcAddr) : undefined;
    let maxSdu = fr.maxSdu || this.h.maxSdu;
    // Left open by the application: what this member and the route back carry, if smaller.
    if (fr.maxSduOpen === true) maxSdu = Math.min(maxSdu, this.h.maxSdu, back ?? maxSdu);
    let refusal: string | undefined;
    if (!reg) refusal = REASON_UNKNOWN_APPLICATION;
    else if (!cube) refusal = `unknown QoS cube ${fr.qosCube}`;
    else if (maxSdu < 1) refusal = `${REASON_ROUTE_BACK}: the route from member ${fr.dstAddr} back to member ${fr.srcAddr} carries no SDU`;
    else if (maxSdu > this.h.maxSdu) refusal = `max SDU ${maxSdu} exceeds ${this.h.difName}'s max SDU of ${this.h.maxSdu} bytes at this member`;
    else if (back !== undefined && maxSdu > back) refusal = `${REASON_ROUTE_BACK}: max SDU ${maxSdu} exceeds the ${back} bytes the route from member ${fr.dstAddr} back to member ${fr.srcAddr} carries (its smallest N-1 link's max PDU, less the PCI); ask for at most ${back}`;
    if (refusal !== undefined || !reg || !cube) {
      this.stats.incomingRejected++;
      return { accept: false, reason: refusal ?? 'refused' };
    }
    const qos: QosSpec = Object.freeze({ reliable: cube.retransmission, inOrder: cube.inOrder, maxSdu });
    const req = new NormalFlowRequest(this, this.h.difName, reg.appName, fr.srcApp, qos, reg.key);
    let sync: FlowDecision | undefined;
    let later: ((d: FlowDecision) => void) | undefined;
    req.decide = (accept, x) => {
      const d: FlowDecision = accept ? { accept: true, port: (x as NormalFlow).portId, initSeq: randomInt(0, 0xffffffff), maxSdu } : { accept: false, reason: x as string };
      if (later) later(d);
      else sync = d;
    };
    this.pendingRequests.add(req);
    try {
      reg.handler(req);
    } catch (e) {
      if (req.state === 'waiting') req.reject(`application error: ${(e as Error)?.message ?? String(e)}`);
    }
    if (sync) return sync;
    return new Promise<FlowDecision>((resolve) => (later = resolve));
  }

  /** @internal FlowRequest.accept() */
  acceptIncoming(req: NormalFlowRequest, _opts: AcceptOptions): Flow {
    if (this.h.closed) throw new DifError('closed', `${this.h.difName}'s IPC process is closed`);
    const flow = this.f.newFlow(req.localApp, req.remoteApp, req.qos);
    flow.markAllocated();
    this.settleRequest(req, { accept: true, port: flow.portId }, null, flow);
    this.stats.flowsAllocated++;
    this.stats.incomingAccepted++;
    this.h.emit('flowAllocated', flow);
    // The flow allocator may have given up on the request meanwhile (its accept timeout): then no
    // data path is ever set up, and the flow ends rather than hang.
    setImmediate(() => {
      if (flow.efcp === null && flow.state === 'allocated') this.f.dropFlow(flow, 'the requester gave up before the flow was set up', 'peer');
    });
    return flow;
  }

  /** @internal FlowRequest.reject() */
  rejectIncoming(req: NormalFlowRequest, reason: string): void {
    this.stats.incomingRejected++;
    this.settleRequest(req, { accept: false, reason: typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application' }, null);
  }

  private settleRequest(req: NormalFlowRequest, d: FlowDecision, cancel: string | null, flow?: NormalFlow): void {
    this.pendingRequests.delete(req);
    if (cancel !== null) req.cancel(cancel);
    else req.state = d.accept ? 'accepted' : 'rejected';
    req.decide?.(d.accept, d.accept ? flow! : d.reason);
  }
}
