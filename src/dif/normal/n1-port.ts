/**
 * n1-port.ts — one N-1 flow of the normal IPC process (a Flow of a lower IPC process, reached
 * only through the IPC API) as an RMT port.
 *
 * Owns: the adapter both ways: `send(pdu)` is the lower flow's write() (false: full, the RMT keeps
 * the PDU and waits for 'drain' → `drained`); every SDU the lower flow delivers is one PDU for the
 * RMT; the lower flow's end is reported once (`lost`). A PDU the lower flow cannot take at all
 * (too large, flow gone) is dropped and counted: the RMT must not retry it forever.
 *
 * Receiving: from a lower flow that offers borrowed reads (core/budgeted-flow.ts: the shim DIFs'
 * flows) each PDU is handed to the RMT as `borrowed`, valid only during the call, with no copy
 * (the RMT copies what it keeps); from any other flow, through 'data' (a private copy). `pause()`
 * stops reading the lower flow (the RMT's relay backpressure): what arrives meanwhile waits in the
 * lower flow under its own bounds, and comes after `resume()`, in order.
 */
import type { DeallocationCause, Flow } from '../api.js';
import { canBorrow, type BorrowingFlow } from '../core/budgeted-flow.js';
import type { RmtPort } from './rmt.js';

export interface N1PortHandlers {
  /** `borrowed`: `pdu` is valid only during the call. */
  receive(portId: number, pdu: Uint8Array, borrowed: boolean): void;
  drained(portId: number): void;
  lost(portId: number, reason: string, cause: DeallocationCause): void;
}

export class N1Port implements RmtPort {
  readonly stats = { txDropped: 0, pauses: 0 };
  private ended = false;
  private paused = false;
  private readonly borrowing: BorrowingFlow | undefined;
  private readonly onData = (sdu: Uint8Array): void => this.h.receive(this.id, sdu, false);
  private readonly onBorrowed = (sdu: Uint8Array): void => this.h.receive(this.id, sdu, true);
  private readonly onDrain = (): void => this.h.drained(this.id);
  private readonly onEnd = (reason: string, cause: DeallocationCause): void => this.end(reason, cause);

  constructor(
    readonly id: number,
    readonly flow: Flow,
    private readonly h: N1PortHandlers,
  ) {
    this.borrowing = canBorrow(flow) ? flow : undefined;
    this.read(true);
    flow.on('drain', this.onDrain);
    flow.on('deallocated', this.onEnd);
  }

  /** Largest PDU the lower flow carries. */
  get maxPdu(): number {
    return this.flow.qos.maxSdu;
  }

  send(pdu: Uint8Array): boolean {
    if (this.ended || this.flow.state !== 'allocated') {
      this.stats.txDropped++;
      return true;
    }
    try {
      return this.flow.write(pdu);
    } catch {
      this.stats.txDropped++;
      return true;
    }
  }

  /** Stop reading the lower flow until resume(). */
  pause(): void {
    if (this.paused || this.ended) return;
    this.paused = true;
    this.stats.pauses++;
    this.read(false);
  }

  resume(): void {
    if (!this.paused || this.ended) return;
    this.paused = false;
    this.read(true);
  }

  /** Give the N-1 flow up (reported through `lost` like a loss). */
  close(reason: string): void {
    if (this.ended) return;
    this.flow.deallocate(reason);
    this.end(reason, 'local');
  }

  private read(on: boolean): void {
    if (this.borrowing) this.borrowing.borrowReads(on ? this.onBorrowed : null);
    else if (on) this.flow.on('data', this.onData);
    else this.flow.off('data', this.onData);
  }

  private end(reason: string, cause: DeallocationCause): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.paused) this.read(false);
    this.flow.off('drain', this.onDrain);
    this.flow.off('deallocated', this.onEnd);
    this.h.lost(this.id, reason, cause);
  }
}
