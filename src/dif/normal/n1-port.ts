/**
 * n1-port.ts — one N-1 flow of the normal IPC process (a Flow of a lower IPC process, reached
 * only through the IPC API) as an RMT port.
 *
 * Owns: the adapter both ways: `send(pdu)` is the lower flow's write() (false: full, the RMT keeps
 * the PDU and waits for 'drain' → `drained`); the SDUs the lower flow delivers are PDUs for the
 * RMT; the lower flow's end is reported once (`lost`). A PDU the lower flow cannot take at all
 * (too large, flow gone) is dropped and counted: the RMT must not retry it forever.
 *
 * Receiving: in batches, through the lower flow's 'sdus' event (api.ts: every SDU of one read of
 * the lower data path in one call, as offsets into its read buffer, no copy): the whole batch goes
 * to the RMT in one call (`receiveBatch`, borrowed: valid only during the call; the RMT copies
 * what it keeps), so its EFCP connections answer a batch with one control PDU. A batch of one is
 * a batch too. `pause()` stops reading the lower flow (the RMT's relay backpressure): what arrives
 * meanwhile waits in the lower flow under its own bounds, and comes after `resume()`, in order.
 * A pause that comes in the middle of a batch (the RMT stops there and says how far it got) keeps
 * the rest of that batch here, copied (at most one batch), and hands it over first at resume.
 */
import type { DeallocationCause, Flow, SduBatch } from '../api.js';
import type { RmtPort } from './rmt.js';

export interface N1PortHandlers {
  /**
   * PDUs `batch[from, count)`, borrowed (valid only during the call). Returns the index of the
   * first one not taken (count: all; less when the port was paused meanwhile).
   */
  receiveBatch(portId: number, batch: SduBatch, from: number): number;
  /** One PDU that is the RMT's to keep (the rest of a batch held over a pause). */
  receive(portId: number, pdu: Uint8Array): void;
  drained(portId: number): void;
  lost(portId: number, reason: string, cause: DeallocationCause): void;
}

export class N1Port implements RmtPort {
  readonly stats = { txDropped: 0, pauses: 0, rxBatches: 0, rxPdus: 0, heldOverPause: 0 };
  private ended = false;
  private paused = false;
  private reading = false;
  /** The rest of a batch the RMT stopped in (paused): handed over first at resume. */
  private held: Uint8Array[] = [];
  private drainDue = false;
  private readonly onBatch = (batch: SduBatch): void => this.take(batch);
  private readonly onDrain = (): void => this.h.drained(this.id);
  private readonly onEnd = (reason: string, cause: DeallocationCause): void => this.end(reason, cause);

  constructor(
    readonly id: number,
    readonly flow: Flow,
    private readonly h: N1PortHandlers,
  ) {
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
    if (this.held.length === 0) return this.read(true);
    // Not from inside the RMT (resume comes from its drain handling): a microtask.
    if (!this.drainDue) {
      this.drainDue = true;
      queueMicrotask(() => this.drainHeld());
    }
  }

  /** Give the N-1 flow up (reported through `lost` like a loss). */
  close(reason: string): void {
    if (this.ended) return;
    this.flow.deallocate(reason);
    this.end(reason, 'local');
  }

  private take(batch: SduBatch): void {
    this.stats.rxBatches++;
    const n = batch.count;
    const at = this.h.receiveBatch(this.id, batch, 0);
    this.stats.rxPdus += at;
    if (at >= n || this.ended) return;
    // Paused in the middle: the rest waits here (the batch's buffer is the lower flow's).
    for (let i = at; i < n; i++) this.held.push(batch.sdu(i).slice());
    this.stats.heldOverPause += n - at;
  }

  private drainHeld(): void {
    this.drainDue = false;
    const held = this.held;
    let i = 0;
    while (i < held.length && !this.paused && !this.ended) {
      this.stats.rxPdus++;
      this.h.receive(this.id, held[i++]!);
    }
    this.held = i >= held.length ? [] : held.slice(i);
    if (!this.paused && !this.ended) this.read(true);
  }

  private read(on: boolean): void {
    if (on === this.reading) return;
    this.reading = on;
    if (on) this.flow.on('sdus', this.onBatch);
    else this.flow.off('sdus', this.onBatch);
  }

  private end(reason: string, cause: DeallocationCause): void {
    if (this.ended) return;
    this.ended = true;
    this.held = [];
    this.read(false);
    this.flow.off('drain', this.onDrain);
    this.flow.off('deallocated', this.onEnd);
    this.h.lost(this.id, reason, cause);
  }
}
