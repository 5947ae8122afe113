/**
 * flow.ts — the shim DIF's flow (a Flow on one VMPI data channel) and its incoming flow request,
 * as the IPC process (ipcp.ts) hands them out; both built on the shared IPC-process core
 * (../core/).
 *
 * Owns: the flow's data path: write() straight onto the port's channel (a Full port refuses, and
 * the flow waits for the port's drain) and the flow's data file when its data path is one
 * (takeDataFd). The receive budget is BudgetedFlow's (../core/budgeted-flow.ts).
 */
import { DifError, type AcceptOptions, type QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { SendResult } from '../../vmpi/port.js';
import type { ChannelFile, VmpiPort } from '../../vmpi/port.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BudgetedFlow, type RxBudgetBound, type RxBudgetOwner } from '../core/budgeted-flow.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';
import type { RegEntry } from '../core/registrations.js';
import type { ShimHvFlow, ShimHvFlowRequest, ShimHvFlowRequestHandler } from './types.js';

/** What a flow needs from its IPC process. */
export interface FlowOwner extends FlowEnd<FlowImpl>, RxBudgetOwner {
  readonly port: VmpiPort;
  /** A flow dropped an SDU for its budget (first time per flow: `first`). */
  rxBudgetHit(flow: FlowImpl, which: RxBudgetBound, first: boolean): void;
  waitDrain(flow: FlowImpl): void;
}

export class FlowImpl extends BudgetedFlow implements ShimHvFlow {
  /** The flow's data file, when its data path is one (see ipcp.ts). */
  file: ChannelFile | null = null;

  constructor(
    private readonly owner: FlowOwner,
    portId: number,
    readonly channel: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner, owner as FlowEnd<BaseFlow>, portId, difName, localApp, remoteApp, qos);
  }

  protected budgetHit(which: RxBudgetBound, first: boolean): void {
    this.owner.rxBudgetHit(this, which, first);
  }

  protected override checkWrite(): void {
    if (this.file) throw this.dataFileError('write');
  }

  protected transmit(sdu: Uint8Array): boolean {
    let r: SendResult;
    try {
      r = this.owner.port.send(this.channel, sdu);
    } catch (e) {
      // E.g. a guest port closed under us; the port's 'down' (if any) ends the flow.
      throw new DifError('port_down', `flow ${this.portId}: the VMPI port refused the SDU: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    if (r !== SendResult.Full) return true;
    this.owner.waitDrain(this);
    return false;
  }

  override read(): Promise<Uint8Array | null> {
    if (this.file) return Promise.reject(this.dataFileError('read'));
    return super.read();
  }

  takeDataFd(): number | null {
    if (!this.file) return null;
    if (this.state !== 'allocated') throw new DifError('flow_deallocated', `flow ${this.portId} is ${this.state}: its data file is shut`);
    return this.file.dup();
  }

  private dataFileError(what: string): DifError {
    return new DifError('data_file', `flow ${this.portId} carries its SDUs in its data file (takeDataFd): cannot ${what} through the flow object`);
  }
}

/** A registered application of the shim DIF. */
export interface ShimRegistration extends RegEntry<ShimHvFlowRequestHandler> {
  readonly difName: string;
  unregister(): void;
}

/** What an incoming request needs from its IPC process. */
export type ShimRequestOwner = RequestOwner<FlowRequestImpl, ShimHvFlow>;

export class FlowRequestImpl extends BaseFlowRequest<ShimHvFlow> implements ShimHvFlowRequest {
  constructor(
    owner: ShimRequestOwner,
    readonly channel: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
    /** The application asked for; a stand-in while the request waits for it to register again (ipcp.ts). */
    public registration: ShimRegistration,
  ) {
    super(owner as RequestOwner<BaseFlowRequest<ShimHvFlow>, ShimHvFlow>, difName, localApp, remoteApp, qos);
  }

  override accept(opts: AcceptOptions = {}): ShimHvFlow {
    return super.accept(opts);
  }
}
