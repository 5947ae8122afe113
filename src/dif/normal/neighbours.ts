/**
 * neighbours.ts — liveness of a normal IPCP's neighbours (members at the other end of an N-1 flow):
 * a keepalive to each one every interval, and a neighbour declared down when nothing at all has
 * been heard from it for `misses` intervals (detected at the first tick after that, so within
 * (misses + 1) × interval of the last message). One timer for all neighbours, on the injected Clock.
 */
import type { Clock, TimerHandle } from './clock.js';

export interface NeighboursOptions {
  clock: Clock;
  /** Keepalive period, ms (default 10 000). */
  intervalMs?: number;
  /** Silent intervals before a neighbour is down (default 3). */
  misses?: number;
  /** Send a keepalive to this neighbour. */
  sendKeepalive: (addr: number, portId: number) => void;
  /** Nothing heard for too long. The neighbour is already forgotten when this runs. */
  onDown: (addr: number, portId: number) => void;
}

export class NeighboursError extends Error {
  override name = 'NeighboursError';
  readonly code = 'ERR_ROUTING_CONFIG';
}

export interface NeighbourState {
  addr: number;
  portId: number;
  lastHeard: number;
}

export class Neighbours {
  readonly intervalMs: number;
  readonly misses: number;
  private readonly known = new Map<number, NeighbourState>();
  private timer: TimerHandle | undefined;

  constructor(private readonly opts: NeighboursOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.misses = opts.misses ?? 3;
    if (!(this.intervalMs > 0) || !Number.isInteger(this.misses) || this.misses < 1) {
      throw new NeighboursError(`keepalive interval ${this.intervalMs} ms / misses ${this.misses}: need interval > 0 and an integer misses ≥ 1`);
    }
  }

  add(addr: number, portId: number): void {
    this.known.set(addr, { addr, portId, lastHeard: this.opts.clock.now() });
    this.arm();
  }

  remove(addr: number): boolean {
    const had = this.known.delete(addr);
    if (this.known.size === 0) this.stop();
    return had;
  }

  /** Anything arrived from this neighbour. */
  heard(addr: number): void {
    const n = this.known.get(addr);
    if (n) n.lastHeard = this.opts.clock.now();
  }

  get(addr: number): NeighbourState | undefined {
    return this.known.get(addr);
  }

  list(): NeighbourState[] {
    return [...this.known.values()].map((n) => ({ ...n }));
  }

  stop(): void {
    this.opts.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.timer) return;
    this.timer = this.opts.clock.setTimer(this.intervalMs, () => {
      this.timer = undefined;
      this.tick();
      if (this.known.size > 0) this.arm();
    });
  }

  private tick(): void {
    const now = this.opts.clock.now();
    const limit = this.intervalMs * this.misses;
    const dead: NeighbourState[] = [];
    for (const n of this.known.values()) if (now - n.lastHeard > limit) dead.push(n);
    for (const n of dead) {
      this.known.delete(n.addr);
      this.opts.onDown(n.addr, n.portId);
    }
    for (const n of [...this.known.values()]) this.opts.sendKeepalive(n.addr, n.portId);
  }
}
