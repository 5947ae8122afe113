/**
 * frontend-gate.ts — how fast one socket's misbehaving front-ends may come back.
 *
 * A front-end that breaks the protocol costs the server a connection's setup and teardown each
 * time (accept, a device, maps, fds, log lines): ~1 ms of the one core every VM shares. Nothing
 * stops it reconnecting hundreds of times a second, and then the well-behaved VMs on the other
 * sockets pay for it. QEMU reconnects at most once a second (`reconnect=1`), so a socket whose
 * front-ends misbehave faster than that is attacked or broken, never busy.
 *
 * The policy is a token bucket per listening socket, charged only for misbehaviour: a connection
 * that had a request rejected, or that ended in a protocol error or an internal error, costs one
 * token (once, however much it did wrong). Well-behaved connections cost nothing, so a VM that
 * reboots or a server restart is never slowed. When the bucket is empty, the socket stops
 * accepting until a token is back; waiting front-ends stay in the kernel's backlog (and beyond it
 * their connect(2) fails, which QEMU retries). Connections already open are not touched.
 *
 * Owns: the bucket and its arithmetic; the server (server.ts) does the pausing.
 */

/** Misbehaving connections a socket may have per second, on average (default). */
export const DEFAULT_MISBEHAVIOUR_RATE = 20;
/** ...and in a burst: a front-end's first mistakes cost it no wait at all (default). */
export const DEFAULT_MISBEHAVIOUR_BURST = 20;

export interface FrontendGateOptions {
  /** Tokens back per second (> 0); Infinity turns the gate off. */
  rate?: number;
  /** Bucket size (≥ 1). */
  burst?: number;
  /** Milliseconds, monotonic (tests give their own clock). */
  now?: () => number;
}

export class FrontendGate {
  readonly rate: number;
  readonly burst: number;
  private tokens: number;
  private at: number;
  private readonly now: () => number;
  /** Misbehaving connections charged since start. */
  charged = 0;
  /** Times accepting was paused because the bucket was empty. */
  pauses = 0;

  constructor(opts: FrontendGateOptions = {}) {
    this.rate = opts.rate ?? DEFAULT_MISBEHAVIOUR_RATE;
    this.burst = opts.burst ?? DEFAULT_MISBEHAVIOUR_BURST;
    if (!(this.rate > 0)) throw new RangeError(`misbehaviour rate ${this.rate}: give a number of connections per second > 0`);
    if (!(this.burst >= 1)) throw new RangeError(`misbehaviour burst ${this.burst}: give a whole number of connections ≥ 1`);
    this.now = opts.now ?? (() => performance.now());
    this.tokens = this.burst;
    this.at = this.now();
  }

  private refill(): void {
    const t = this.now();
    if (this.rate === Infinity) this.tokens = this.burst;
    else this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.rate);
    this.at = t;
  }

  /** One connection misbehaved. The bucket may go below zero: a storm waits longer. */
  charge(): void {
    this.charged++;
    this.refill();
    // Never deeper than one burst in debt, so a storm that stopped is forgiven in bounded time.
    this.tokens = Math.max(-this.burst, this.tokens - 1);
  }

  /** 0 when the socket may accept now, otherwise the milliseconds until it may (counted as a pause). */
  waitMs(): number {
    this.refill();
    if (this.tokens >= 1) return 0;
    this.pauses++;
    return Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}
