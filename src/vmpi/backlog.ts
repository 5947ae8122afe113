/**
 * backlog.ts — SDUs a VMPI port accepted but could not write yet, waiting for room in the ring.
 *
 * Owns: BacklogGate, the bounds in SDUs and bytes and the 'drain' rule both ports' backlogs
 * follow (after a drain moved SDUs, senders hear 'drain' when the backlog is empty, or when it
 * fell to half of both bounds after a refusal), and SendBacklog, the bounded FIFO of entries the
 * guest port puts in front of the driver's tx ring. The host device keeps its backlog (in front
 * of the guest's rx ring) in reused chunks instead, with no allocation per SDU: byte-backlog.ts,
 * same rule. The port owns what "write one" means and emits the event.
 *
 * The counts live in the port's stats object (backlogSdus, backlogBytes), so its counters stay
 * one plain object.
 */
import { Fifo } from '../sys/fifo.js';

/** The port's counters the backlog keeps up to date. */
export interface BacklogCounters {
  backlogSdus: number;
  backlogBytes: number;
}

export interface BacklogLimits {
  maxSdus: number;
  maxBytes: number;
  /**
   * An empty backlog takes any SDU whatever the bounds (so every Full is followed by a 'drain').
   * Without it a bound smaller than one SDU refuses that SDU even when nothing is queued.
   */
  emptyTakesAny: boolean;
}

/**
 * The bounds and the 'drain' rule of a backlog over the port's counters (which the backlog keeps
 * up to date), shared by SendBacklog and byte-backlog.ts.
 */
export class BacklogGate {
  private refused = false;

  constructor(
    readonly counters: BacklogCounters,
    readonly limits: BacklogLimits,
  ) {}

  /** Whether one more SDU of `bytes` fits; a refusal is remembered, so that 'drain' follows. */
  takes(bytes: number): boolean {
    const c = this.counters;
    const { maxSdus, maxBytes, emptyTakesAny } = this.limits;
    if ((emptyTakesAny && c.backlogSdus === 0) || (c.backlogSdus < maxSdus && c.backlogBytes + bytes <= maxBytes)) return true;
    this.refused = true;
    return false;
  }

  /**
   * Call after a drain that moved SDUs: true when the port should emit 'drain' now (the backlog
   * is empty, or it refused an SDU and is now under half of both bounds).
   */
  drainDue(): boolean {
    const c = this.counters;
    if (c.backlogSdus !== 0 && !(this.refused && c.backlogSdus < this.limits.maxSdus / 2 && c.backlogBytes < this.limits.maxBytes / 2)) return false;
    this.refused = false;
    return true;
  }
}

export class SendBacklog<T extends { readonly sdu: Uint8Array }> {
  private readonly items = new Fifo<T>();
  private readonly gate: BacklogGate;
  private readonly counters: BacklogCounters;

  constructor(counters: BacklogCounters, limits: BacklogLimits) {
    this.gate = new BacklogGate(counters, limits);
    this.counters = counters;
  }

  get isEmpty(): boolean {
    return this.items.length === 0;
  }

  /** The next entry to write; undefined when empty. */
  peek(): T | undefined {
    return this.items.peek();
  }

  /**
   * Keep `entry` (whose sdu must be the backlog's own copy) at the tail; false when the bounds
   * refuse it (nothing kept; the refusal is remembered so that 'drain' follows).
   */
  add(entry: T): boolean {
    const c = this.counters;
    if (!this.gate.takes(entry.sdu.byteLength)) return false;
    this.items.push(entry);
    c.backlogSdus++;
    c.backlogBytes += entry.sdu.byteLength;
    return true;
  }

  /**
   * Write entries from the head with `write` until it returns false: the entry could not leave
   * (the ring is full: it stays at the head; or the port tore down and cleared the backlog from
   * inside `write`). Returns how many left.
   */
  drain(write: (entry: T) => boolean): number {
    let sent = 0;
    for (let b = this.items.peek(); b !== undefined; b = this.items.peek()) {
      if (!write(b)) break;
      this.items.shift();
      this.counters.backlogSdus--;
      this.counters.backlogBytes -= b.sdu.byteLength;
      sent++;
    }
    return sent;
  }

  /** After a drain() that moved SDUs: true when the port should emit 'drain' now (BacklogGate). */
  drainDue(): boolean {
    return this.gate.drainDue();
  }

  /** Forget every entry (the peer reset or went away); returns how many were dropped. */
  clear(): number {
    const dropped = this.counters.backlogSdus;
    this.items.clear();
    this.counters.backlogSdus = 0;
    this.counters.backlogBytes = 0;
    return dropped;
  }
}
