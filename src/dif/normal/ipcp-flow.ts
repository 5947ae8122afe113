/**
 * ipcp-flow.ts — an application's flow of the normal IPC process (the IPC API's `Flow`, api.ts)
 * and an incoming flow request (`FlowRequest`), as ipcp.ts hands them out.
 *
 * Owns: the Flow semantics shared with the shim DIF's flows (write() false + 'drain', read() /
 * async iteration / 'data' through an RxQueue, deallocation with reason and cause, stats) on top
 * of one EfcpConnection. Until the connection is attached (an accepted flow whose answer is still
 * being set up) write() returns false and 'drain' follows. Receive side: the EFCP delivers into
 * the RxQueue; once `rxQueueLimit` SDUs wait unread, delivery pauses (the EFCP's window then stops
 * the sender) and resumes when the application takes SDUs: nothing is dropped for a slow reader
 * on the flow-controlled cubes.
 */
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type DeallocationCause, type Flow, type FlowEvents, type FlowRequest, type FlowRequestEvents, type FlowRequestState, type FlowState, type FlowStats, type QosSpec } from '../api.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import { formatAppName, type AppName } from '../naming.js';
import { RxQueue } from '../rx-queue.js';
import { EfcpError, type EfcpConnection } from './efcp/index.js';

/** What a flow needs from its IPC process. */
export interface NormalFlowOwner {
  readonly rxQueueLimit: number;
  localDeallocate(flow: NormalFlow, reason: string): void;
}

export class NormalFlow extends EventEmitter<FlowEvents> implements Flow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  private _state: FlowState = 'pending';
  private _reason: string | null = null;
  private readonly rx: RxQueue;
  private blocked = false;
  private paused = false;
  /** The data path, once set up. */
  efcp: EfcpConnection | null = null;
  /** The flow allocator's name of this flow (`/fa/flows/…`), once allocated. */
  faName: string | null = null;
  /** This end's CEP-id, once allocated. */
  localCep = 0;
  /** The member at the other end. */
  remoteAddr = 0;

  constructor(
    private readonly owner: NormalFlowOwner,
    readonly portId: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
    this.rx = new RxQueue(this, () => this.taken());
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    checkSdu(this, sdu);
    const efcp = this.efcp;
    if (this.blocked || efcp === null) {
      this.stats.txRefused++;
      this.blocked = true;
      return false;
    }
    let ok: boolean;
    try {
      ok = efcp.write(sdu);
    } catch (e) {
      if (e instanceof EfcpError && e.code === 'ERR_EFCP_SDU_TOO_LARGE') throw new DifError('sdu_too_large', e.message, { cause: e });
      throw new DifError('flow_deallocated', `flow ${this.portId}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    if (!ok) {
      this.stats.txRefused++;
      this.blocked = true;
      return false;
    }
    this.stats.txSdus++;
    this.stats.txBytes += sdu.byteLength;
    return true;
  }

  send(sdu: Uint8Array): Promise<void> {
    return sendSdu(this, sdu);
  }

  read(): Promise<Uint8Array | null> {
    return this.rx.read();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return untilNull(() => this.read());
  }

  deallocate(reason = 'deallocated by the application'): void {
    if (this._state !== 'allocated') return;
    this.owner.localDeallocate(this, String(reason));
  }

  // --- called by the IPC process -------------------------------------------------------------

  markAllocated(): void {
    this._state = 'allocated';
  }

  /** The data path is ready: writes refused meanwhile may resume. */
  attach(efcp: EfcpConnection): void {
    this.efcp = efcp;
    this.drained();
  }

  /** One SDU from the EFCP (a view into a PDU nobody else holds). false: pause delivery. */
  deliver(sdu: Uint8Array): boolean {
    if (this._state === 'deallocated') {
      this.stats.rxAfterDeallocate++;
      return true;
    }
    this.stats.rxSdus++;
    this.stats.rxBytes += sdu.byteLength;
    this.rx.push(sdu);
    if (!this.rx.hasConsumer() && this.rx.length >= this.owner.rxQueueLimit) {
      this.paused = true;
      return false;
    }
    return true;
  }

  /** The EFCP can take SDUs again. */
  drained(): void {
    if (!this.blocked) return;
    this.blocked = false;
    if (this._state === 'allocated') this.emit('drain');
  }

  terminate(reason: string, cause: DeallocationCause): void {
    if (this._state === 'deallocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    this.efcp?.close();
    this.emit('deallocated', reason, cause);
    this.rx.end();
  }

  private taken(): void {
    if (!this.paused || this.rx.length >= this.owner.rxQueueLimit) return;
    this.paused = false;
    this.efcp?.resumeDelivery();
  }
}

/** What a flow request needs from its IPC process. */
export interface NormalRequestOwner {
  acceptIncoming(req: NormalFlowRequest, opts: AcceptOptions): Flow;
  rejectIncoming(req: NormalFlowRequest, reason: string): void;
}

export class NormalFlowRequest extends EventEmitter<FlowRequestEvents> implements FlowRequest {
  state: FlowRequestState = 'waiting';
  cancelReason: string | null = null;
  /** Set by the IPC process: how the flow allocator learns the decision. */
  decide: ((accept: boolean, reasonOrFlow: string | NormalFlow) => void) | null = null;

  constructor(
    private readonly owner: NormalRequestOwner,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
    readonly registrationKey: string,
  ) {
    super();
  }

  accept(opts: AcceptOptions = {}): Flow {
    this.checkWaiting('accept');
    return this.owner.acceptIncoming(this, opts);
  }

  reject(reason: string): void {
    this.checkWaiting('reject');
    this.owner.rejectIncoming(this, reason);
  }

  cancel(reason: string): void {
    if (this.state !== 'waiting') return;
    this.state = 'cancelled';
    this.cancelReason = reason;
    this.emit('cancelled', reason);
  }

  checkWaiting(action: string): void {
    if (this.state !== 'waiting') {
      throw new DifError('request_settled', `cannot ${action}: the flow request from ${formatAppName(this.remoteApp)} is already ${this.state}${this.cancelReason ? ` (${this.cancelReason})` : ''}`);
    }
  }
}
