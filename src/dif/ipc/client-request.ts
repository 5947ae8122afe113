/**
 * client-request.ts — an incoming flow request on the client side of the IPC API (client.ts):
 * accept() or reject() it once (both asynchronous: they are requests to the daemon).
 */
import { EventEmitter } from 'node:events';
import { DifError, type FlowRequestEvents, type FlowRequestState, type QosSpec } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';

/** What a flow request needs of its client (IpcClient). */
export interface RequestOwner {
  request(msg: Record<string, unknown>): Promise<{ flow: ClientFlow | null }>;
  requestSettled(id: number): void;
  /** The client asks for the ring data path (client.ts IpcClientOptions.rings). */
  readonly rings: boolean;
}
import type { ClientFlow } from './client-flow.js';

/** An incoming flow request as the application sees it (accept/reject are asynchronous). */
export class ClientFlowRequest extends EventEmitter<FlowRequestEvents> {
  private _state: FlowRequestState = 'waiting';

  constructor(
    private readonly client: RequestOwner,
    readonly id: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
  }

  get state(): FlowRequestState {
    return this._state;
  }

  /** Accept: resolves with the flow. Rejects with 'request_settled' if already answered or cancelled. */
  async accept(): Promise<ClientFlow> {
    this.settle('accepted');
    const r = await this.client.request(this.client.rings ? { op: 'accept', request: this.id, rings: true } : { op: 'accept', request: this.id });
    return r.flow!;
  }

  /** Refuse, telling the requester why. */
  async reject(reason: string): Promise<void> {
    this.settle('rejected');
    await this.client.request({ op: 'reject', request: this.id, reason: String(reason) });
  }

  /** @internal */
  cancel(reason: string): void {
    if (this._state !== 'waiting') return;
    this._state = 'cancelled';
    this.client.requestSettled(this.id);
    this.emit('cancelled', reason);
  }

  private settle(to: FlowRequestState): void {
    if (this._state !== 'waiting') throw new DifError('request_settled', `the flow request from ${formatAppName(this.remoteApp)} is already ${this._state}`);
    this._state = to;
    this.client.requestSettled(this.id);
  }
}
