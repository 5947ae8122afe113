/**
 * flow.ts — the shim DIF over UDP's flow and incoming flow request (ipcp.ts hands them out),
 * built on the shared IPC-process core (../core/).
 *
 * Owns: the flow's data path: write() hands the SDU to the IPC process's socket (which refuses
 * while too many bytes wait to be sent, and calls drained() later). The receive budget is
 * BudgetedFlow's (../core/budgeted-flow.ts).
 */
import type { QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BudgetedFlow, type RxBudgetBound, type RxBudgetOwner } from '../core/budgeted-flow.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';

/** What a flow needs from its IPC process. */
export interface UdpFlowOwner extends FlowEnd<UdpFlow>, RxBudgetOwner {
  rxBudgetHit(which: RxBudgetBound): void;
  /** Send `sdu` on `flow`: false when the socket has too much waiting (the flow is told on drain). */
  sendData(flow: UdpFlow, sdu: Uint8Array): boolean;
}

export class UdpFlow extends BudgetedFlow {
  constructor(
    private readonly owner: UdpFlowOwner,
    portId: number,
    /** This end's flow id (the DATA header's id of the SDUs for this end). */
    readonly localId: number,
    /** The peer's address, "IPv4:port". */
    readonly peer: string,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner, owner as FlowEnd<BaseFlow>, portId, difName, localApp, remoteApp, qos);
  }

  protected budgetHit(which: RxBudgetBound): void {
    this.owner.rxBudgetHit(which);
  }

  protected transmit(sdu: Uint8Array): boolean {
    return this.owner.sendData(this, sdu);
  }
}

export class UdpFlowRequest extends BaseFlowRequest<UdpFlow> {
  constructor(
    owner: RequestOwner<UdpFlowRequest, UdpFlow>,
    /** The local flow id reserved for this request. */
    readonly localId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as unknown as RequestOwner<BaseFlowRequest<UdpFlow>, UdpFlow>, difName, localApp, remoteApp, qos);
  }
}
