/**
 * flow.ts — the shim DIF over Ethernet's flow and incoming flow request (ipcp.ts hands them out),
 * built on the shared IPC-process core (../core/).
 *
 * Owns: the flow's data path: write() hands the SDU to the IPC process's packet socket (which
 * refuses while the device queue is full, and calls drained() a moment later). The receive budget is
 * BudgetedFlow's (../core/budgeted-flow.ts).
 */
import type { QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BudgetedFlow, type RxBudgetBound, type RxBudgetOwner } from '../core/budgeted-flow.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';

/** What a flow needs from its IPC process. */
export interface EthFlowOwner extends FlowEnd<EthFlow>, RxBudgetOwner {
  rxBudgetHit(which: RxBudgetBound): void;
  /** Send `sdu` on `flow`: false when the device queue is full (the flow is told on drain). */
  sendData(flow: EthFlow, sdu: Uint8Array): boolean;
}

export class EthFlow extends BudgetedFlow {
  constructor(
    private readonly owner: EthFlowOwner,
    portId: number,
    /** This end's flow id (the DATA header's id of the SDUs for this end). */
    readonly localId: number,
    /** The peer's MAC address, "aa:bb:cc:dd:ee:ff". */
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

export class EthFlowRequest extends BaseFlowRequest<EthFlow> {
  constructor(
    owner: RequestOwner<EthFlowRequest, EthFlow>,
    /** The local flow id reserved for this request. */
    readonly localId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as unknown as RequestOwner<BaseFlowRequest<EthFlow>, EthFlow>, difName, localApp, remoteApp, qos);
  }
}
