/**
 * rtx.ts — retransmission control's timing: the RTT estimator and the retransmission timeout
 * (RFC 6298 style), and the entry the retransmission queue holds per unacknowledged PDU.
 *
 * Owns: srtt/rttvar, RTO = clamp(srtt + max(4·rttvar, 1 ms) + A, minRto, maxRto) — the peer's
 * A-timer is added because its ACKs may legitimately be that late (rlite uses 2·A as the floor;
 * IRATI #910/#1128 were RTT/backoff bugs with A > 0) — and exponential backoff on timeouts,
 * reset by the next new ACK. Karn's rule is the caller's: it samples only ACKs that cover no
 * retransmitted PDU.
 */

/** One sent, unacknowledged DT PDU. */
export interface RtxEntry {
  seq: number;
  pdu: Uint8Array;
  /** Last (re)transmission time. */
  sentAt: number;
  /** Retransmissions so far. */
  retries: number;
}

export class RttEstimator {
  srtt = 0;
  rttvar = 0;
  samples = 0;
  /** Multiplier from consecutive timeouts (1, 2, 4, …). */
  backoff = 1;

  constructor(
    private readonly initialRtoMs: number,
    private readonly minRtoMs: number,
    private readonly maxRtoMs: number,
    /** Extra delay the peer may add to an ACK (its A-timer). */
    private readonly ackDelayMs: number,
  ) {}

  /** One measured round trip, ms. */
  sample(r: number): void {
    const m = Math.max(0, r);
    if (this.samples === 0) {
      this.srtt = m;
      this.rttvar = m / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - m);
      this.srtt = 0.875 * this.srtt + 0.125 * m;
    }
    this.samples++;
  }

  /** The RTO before backoff. */
  get baseRto(): number {
    const raw = this.samples === 0 ? this.initialRtoMs : this.srtt + Math.max(4 * this.rttvar, 1) + this.ackDelayMs;
    return Math.min(this.maxRtoMs, Math.max(this.minRtoMs, Math.ceil(raw)));
  }

  /** The RTO in force (with backoff), ms. */
  get rto(): number {
    return Math.min(this.maxRtoMs, this.baseRto * this.backoff);
  }

  /** A timeout happened: double the RTO (up to maxRto). */
  backOff(): void {
    if (this.baseRto * this.backoff < this.maxRtoMs) this.backoff *= 2;
  }

  resetBackoff(): void {
    this.backoff = 1;
  }
}
