/**
 * flow-request.ts — the part of an incoming flow request (api.ts, `FlowRequest`) that is the same
 * in every IPC process: its names and QoS, its state (waiting → accepted | rejected | cancelled),
 * cancel() and the 'request_settled' check. accept() and reject() go to the IPC process that made
 * the request (`RequestOwner`), which settles it its own way (a control message, a flow
 * allocator decision).
 */
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type Flow, type FlowRequest, type FlowRequestEvents, type FlowRequestState, type QosSpec } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';

/** What a flow request needs from its IPC process. */
export interface RequestOwner<R, F extends Flow> {
  acceptIncoming(req: R, opts: AcceptOptions): F;
  rejectIncoming(req: R, reason: string): void;
}

export abstract class BaseFlowRequest<F extends Flow = Flow> extends EventEmitter<FlowRequestEvents> implements FlowRequest {
  state: FlowRequestState = 'waiting';
  cancelReason: string | null = null;

  constructor(
    private readonly owner: RequestOwner<BaseFlowRequest<F>, F>,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
  }

  accept(opts: AcceptOptions = {}): F {
    this.checkWaiting('accept');
    return this.owner.acceptIncoming(this, opts);
  }

  reject(reason: string): void {
    this.checkWaiting('reject');
    this.owner.rejectIncoming(this, reason);
  }

  /** Settle without answering the requester (it gave up, the lower link is gone, the application left). */
  cancel(reason: string): void {
    if (this.state !== 'waiting') return;
    this.state = 'cancelled';
    this.cancelReason = reason;
    this.emit('cancelled', reason);
  }

  /** DifError 'request_settled' unless the request still waits for its application. */
  checkWaiting(action: string): void {
    if (this.state !== 'waiting') {
      throw new DifError('request_settled', `cannot ${action}: the flow request from ${formatAppName(this.remoteApp)} is already ${this.state}${this.cancelReason ? ` (${this.cancelReason})` : ''}`);
    }
  }
}
