/**
 * flow.ts — the flow and incoming flow request of the shim DIFs that carry the shim DIF over UDP's
 * flow messages in datagrams (shim-udp: UDP datagrams; shim-eth: Ethernet frames); their IPC
 * process (./ipcp.ts and the shim's own ipcp.ts) hands them out. Built on the shared IPC-process
 * core (../core/).
 *
 * Owns: the flow's data path: write() hands the SDU to the IPC process (sendData), which refuses
 * while its socket or device queue is full and calls drained() later. The receive budget is
 * BudgetedFlow's (../core/budgeted-flow.ts).
 */
import type { QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BudgetedFlow, type RxBudgetBound, type RxBudgetOwner } from '../core/budgeted-flow.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';

/** What a flow needs from its IPC process. */
export interface DatagramFlowOwner extends FlowEnd<DatagramFlow>, RxBudgetOwner {
  rxBudgetHit(which: RxBudgetBound): void;
  /** Send `sdu` on `flow`: false when the socket or device queue is full (the flow is told on drain). */
  sendData(flow: DatagramFlow, sdu: Uint8Array): boolean;
}

export class DatagramFlow extends BudgetedFlow {
  constructor(
    private readonly owner: DatagramFlowOwner,
    portId: number,
    /** This end's flow id (the DATA header's id of the SDUs for this end). */
    readonly localId: number,
    /** The peer's address as text: "IPv4:port" (shim-udp) or "aa:bb:cc:dd:ee:ff" (shim-eth). */
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

export class DatagramFlowRequest extends BaseFlowRequest<DatagramFlow> {
  constructor(
    owner: RequestOwner<DatagramFlowRequest, DatagramFlow>,
    /** The local flow id reserved for this request. */
    readonly localId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as unknown as RequestOwner<BaseFlowRequest<DatagramFlow>, DatagramFlow>, difName, localApp, remoteApp, qos);
  }
}
