/**
 * flow-linger.ts — the end of a reliable (retransmitting) flow deallocated by its application
 * while its EFCP connection still holds SDUs the peer has not acknowledged: the connection stays
 * (retransmitting, taking ACKs and window updates) until everything it holds is acknowledged, it
 * fails, or a bound passes; then `onEnd` runs (the caller closes it, unbinds its CEP-id and tells
 * the peer). So the last SDUs written before close are not lost. Flow-control-only and
 * unreliable flows do not linger (nothing would be retransmitted anyway).
 *
 * Owns: when a connection needs to linger, the bound (4 × RTO, at least `minMs`, at most `maxMs`),
 * the check timer, and the outcome. The check polls the sender's queues on the injected Clock
 * (every `pollMs`): no hook into the EFCP's per-PDU path.
 */
import type { Clock, TimerHandle } from './clock.js';
import type { EfcpConnection } from './efcp/index.js';

export const DEFAULT_LINGER_MIN_MS = 4000;
export const DEFAULT_LINGER_MAX_MS = 30_000;
export const LINGER_POLL_MS = 10;

export type LingerOutcome = 'acked' | 'expired' | 'failed' | 'cancelled';

/** SDUs the connection's sender still holds (unacknowledged, or not yet sent for the window). */
export function efcpPending(efcp: EfcpConnection): number {
  const s = efcp.snapshot().sender;
  return s.rtxPdus + s.cwqPdus;
}

/** True when deallocating this connection now would lose SDUs a linger could still deliver. */
export function needsLinger(efcp: EfcpConnection): boolean {
  return efcp.state === 'open' && efcp.cube.retransmission && efcpPending(efcp) > 0;
}

export function lingerBoundMs(efcp: EfcpConnection, minMs = DEFAULT_LINGER_MIN_MS, maxMs = DEFAULT_LINGER_MAX_MS): number {
  return Math.min(maxMs, Math.max(minMs, 4 * efcp.snapshot().sender.rto));
}

export class Linger {
  readonly startedAt: number;
  readonly deadline: number;
  private timer: TimerHandle | undefined;
  private over = false;

  constructor(
    private readonly clock: Clock,
    readonly efcp: EfcpConnection,
    boundMs: number,
    private readonly onEnd: (outcome: LingerOutcome) => void,
  ) {
    this.startedAt = clock.now();
    this.deadline = this.startedAt + boundMs;
    this.timer = clock.setTimer(Math.min(LINGER_POLL_MS, boundMs), () => this.check());
  }

  get ended(): boolean {
    return this.over;
  }

  /** End now (the peer deleted the flow, it became unreachable, the IPC process closes). */
  cancel(): void {
    this.finish('cancelled');
  }

  private check(): void {
    this.timer = undefined;
    if (this.over) return;
    if (this.efcp.state !== 'open') return this.finish('failed');
    if (efcpPending(this.efcp) === 0) return this.finish('acked');
    const left = this.deadline - this.clock.now();
    if (left <= 0) return this.finish('expired');
    this.timer = this.clock.setTimer(Math.min(LINGER_POLL_MS, left), () => this.check());
  }

  private finish(outcome: LingerOutcome): void {
    if (this.over) return;
    this.over = true;
    this.clock.clearTimer(this.timer);
    this.timer = undefined;
    this.onEnd(outcome);
  }
}
