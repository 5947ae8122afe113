/**
 * flow.ts — the part of a flow (api.ts, `Flow`) that is the same in every IPC process: identity
 * and QoS, state (pending → allocated → deallocated) with the deallocation reason, stats,
 * send() and async iteration over write()/read(), the refused-write latch that 'drain' clears,
 * and the bookkeeping of the flow's end (state, reason, 'deallocated', the receive queue ended).
 *
 * A subclass brings its data path: transmit() under write(), the receive queue (`rx`, an RxQueue it builds with
 * its own budget rule), and `released()`, run once when the flow ends, before 'deallocated'.
 * deallocate() goes to the IPC process (`FlowEnd`), which tells the other end and calls
 * terminate().
 */
import { EventEmitter } from 'node:events';
import type { DeallocationCause, Flow, FlowEvents, FlowState, FlowStats, QosSpec } from '../api.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import type { AppName } from '../naming.js';
import type { RxQueue } from '../rx-queue.js';

/** What a flow's deallocate() needs from its IPC process. */
export interface FlowEnd<F> {
  localDeallocate(flow: F, reason: string): void;
}

export abstract class BaseFlow extends EventEmitter<FlowEvents> implements Flow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  private _state: FlowState = 'pending';
  private _reason: string | null = null;
  /** A write was refused; refuse the next ones too until 'drain' (keeps SDUs in order). */
  blocked = false;
  protected abstract readonly rx: RxQueue;

  constructor(
    private readonly end: FlowEnd<BaseFlow>,
    readonly portId: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  /**
   * Send one SDU (api.ts): checked, then handed to the data path unless a refused write still
   * waits for 'drain' (so SDUs stay in order); a refusal latches until drained().
   */
  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    this.checkWrite();
    checkSdu(this, sdu);
    if (this.blocked || !this.transmit(sdu)) {
      this.stats.txRefused++;
      this.blocked = true;
      return false;
    }
    this.stats.txSdus++;
    this.stats.txBytes += sdu.byteLength;
    return true;
  }

  /** Throws when this flow cannot be written at all (beyond state and size). */
  protected checkWrite(): void {}

  /** Hand `sdu` to the data path: false when it has no room now (nothing was sent). */
  protected abstract transmit(sdu: Uint8Array): boolean;

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
    this.end.localDeallocate(this, String(reason));
  }

  // --- called by the IPC process -------------------------------------------------------------

  markAllocated(): void {
    this._state = 'allocated';
  }

  /** The data path can take SDUs again: a refused writer hears 'drain'. */
  drained(): void {
    if (!this.blocked) return;
    this.blocked = false;
    if (this._state === 'allocated') this.emit('drain');
  }

  /** The flow ends (idempotent): what is queued stays readable, then read() gives null. */
  terminate(reason: string, cause: DeallocationCause): void {
    if (this._state === 'deallocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    this.released();
    this.emit('deallocated', reason, cause);
    this.rx.end();
  }

  /** The data path lets go, once, as the flow ends. */
  protected abstract released(): void;
}
