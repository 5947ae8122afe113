/**
 * n1-port.ts — one N-1 flow of the normal IPC process (a Flow of a lower IPC process, reached
 * only through the IPC API) as an RMT port.
 *
 * Owns: the adapter both ways: `send(pdu)` is the lower flow's write() (false: full, the RMT keeps
 * the PDU and waits for 'drain' → `drained`); every SDU the lower flow delivers is one PDU for the
 * RMT; the lower flow's end is reported once (`lost`). A PDU the lower flow cannot take at all
 * (too large, flow gone) is dropped and counted: the RMT must not retry it forever.
 */
import type { DeallocationCause, Flow } from '../api.js';
import type { RmtPort } from './rmt.js';

export interface N1PortHandlers {
  receive(portId: number, pdu: Uint8Array): void;
  drained(portId: number): void;
  lost(portId: number, reason: string, cause: DeallocationCause): void;
}

export class N1Port implements RmtPort {
  readonly stats = { txDropped: 0 };
  private ended = false;
  private readonly onData = (sdu: Uint8Array): void => this.h.receive(this.id, sdu);
  private readonly onDrain = (): void => this.h.drained(this.id);
  private readonly onEnd = (reason: string, cause: DeallocationCause): void => this.end(reason, cause);

  constructor(
    readonly id: number,
    readonly flow: Flow,
    private readonly h: N1PortHandlers,
  ) {
    flow.on('data', this.onData);
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

  /** Give the N-1 flow up (reported through `lost` like a loss). */
  close(reason: string): void {
    if (this.ended) return;
    this.flow.deallocate(reason);
    this.end(reason, 'local');
  }

  private end(reason: string, cause: DeallocationCause): void {
    if (this.ended) return;
    this.ended = true;
    this.flow.off('data', this.onData);
    this.flow.off('drain', this.onDrain);
    this.flow.off('deallocated', this.onEnd);
    this.h.lost(this.id, reason, cause);
  }
}
