/**
 * ipcp-flow.ts — an application's flow of the normal IPC process (the IPC API's `Flow`, api.ts)
 * and an incoming flow request (`FlowRequest`), as ipcp.ts hands them out.
 *
 * Owns: the data path of the Flow (the shared part — state, stats, send(), read() / async
 * iteration / 'data' through an RxQueue, deallocation with reason and cause — is ../core/flow.ts)
 * on one EfcpConnection. Until the connection is attached (an accepted flow whose answer is still
 * being set up) write() returns false and 'drain' follows. Receive side: the EFCP delivers into
 * the RxQueue; once `rxQueueLimit` SDUs wait unread, delivery pauses (the EFCP's window then stops
 * the sender) and resumes when the application takes SDUs: nothing is dropped for a slow reader
 * on the flow-controlled cubes.
 *
 * Lending: the EFCP hands over SDUs of borrowed PDUs as views valid only during the call
 * (`deliver(sdu, true)`); they go without a copy to a borrowing reader (`borrowReads`, the IPC
 * daemon's bridge, which copies into its outbox) or an 'sdus' listener when nothing is queued, and
 * are copied only when they must wait in the queue or go to 'data'.
 */
import { DifError, type Flow, type QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { RxQueue } from '../rx-queue.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BorrowPump, type BorrowedReader, type BorrowingFlow } from '../core/borrow-pump.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';
import { EfcpError, type EfcpConnection } from './efcp/index.js';

/** What a flow needs from its IPC process. */
export interface NormalFlowOwner extends FlowEnd<NormalFlow> {
  readonly rxQueueLimit: number;
}

export class NormalFlow extends BaseFlow implements BorrowingFlow {
  protected readonly rx: RxQueue = new RxQueue(this, () => this.taken());
  private paused = false;
  private readonly borrow = new BorrowPump(this.rx);
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
    portId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as FlowEnd<BaseFlow>, portId, difName, localApp, remoteApp, qos);
  }

  protected transmit(sdu: Uint8Array): boolean {
    const efcp = this.efcp;
    if (efcp === null) return false;
    try {
      return efcp.write(sdu);
    } catch (e) {
      if (e instanceof EfcpError && e.code === 'ERR_EFCP_SDU_TOO_LARGE') throw new DifError('sdu_too_large', e.message, { cause: e });
      throw new DifError('flow_deallocated', `flow ${this.portId}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
  }

  // --- called by the IPC process -------------------------------------------------------------

  /** The data path is ready: writes refused meanwhile may resume. */
  attach(efcp: EfcpConnection): void {
    this.efcp = efcp;
    this.drained();
  }

  /**
   * Hand SDUs to `reader` as views valid only during the call (null: stop; SDUs queue meanwhile,
   * and delivery pauses at rxQueueLimit, closing the EFCP window).
   */
  borrowReads(reader: BorrowedReader | null): void {
    this.borrow.set(reader);
  }

  /**
   * One SDU from the EFCP. `borrowed`: a view valid only during the call (copied if it must
   * wait); else a view into a PDU nobody else holds. false: pause delivery.
   */
  deliver(sdu: Uint8Array, borrowed = false): boolean {
    if (this.state === 'deallocated') {
      this.stats.rxAfterDeallocate++;
      return true;
    }
    this.stats.rxSdus++;
    this.stats.rxBytes += sdu.byteLength;
    if (this.rx.length === 0) {
      const reader = this.borrow.reader;
      if (reader !== null) {
        reader(sdu);
        return true;
      }
      if (this.rx.passOne(sdu)) return true;
    }
    this.rx.push(borrowed ? sdu.slice() : sdu);
    if (!this.rx.hasConsumer() && this.rx.length >= this.owner.rxQueueLimit) {
      this.paused = true;
      return false;
    }
    return true;
  }

  protected released(): void {
    this.efcp?.close();
  }

  private taken(): void {
    if (!this.paused || this.rx.length >= this.owner.rxQueueLimit) return;
    this.paused = false;
    this.efcp?.resumeDelivery();
  }
}

/** What a flow request needs from its IPC process. */
export type NormalRequestOwner = RequestOwner<NormalFlowRequest, Flow>;

export class NormalFlowRequest extends BaseFlowRequest {
  /** Set by the IPC process: how the flow allocator learns the decision. */
  decide: ((accept: boolean, reasonOrFlow: string | NormalFlow) => void) | null = null;

  constructor(
    owner: NormalRequestOwner,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
    readonly registrationKey: string,
  ) {
    super(owner as RequestOwner<BaseFlowRequest, Flow>, difName, localApp, remoteApp, qos);
  }
}
