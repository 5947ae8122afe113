/**
 * ring-events.ts — what a 'ring' flow's end does when its doorbell socket is readable, and its
 * "read again on a later turn", shared by the daemon's bridge (bridge.ts) and the client's flow
 * (client-flow.ts): take the socket's doorbells and end of file (RingEnd.pollSocket), wake the
 * reader, let a blocked writer look for room, then read. The owner says what each step means
 * for it (RingEventHandlers); this piece owns the order of the steps and the due flag of the
 * deferred read (one setImmediate at a time, no closure per call).
 */
import { native } from '../../sys/native.js';
import type { RingEnd } from './ring.js';

/** What the owner of a ring flow's end does at each step (each one checks its own state). */
export interface RingEventHandlers {
  /** A record on the socket came with fds (the kernel closed them): false ends the event here. */
  fds(): boolean;
  /** A doorbell or the end of file came: a writer waiting for room looks again. */
  room(): void;
  /** Then read what was published (the ring, and `ring.ended` for the end). */
  read(): void;
  /** The deferred read of readSoon() (under the owner's own fault containment). */
  readLater(): void;
}

export class RingEvents {
  private readDue = false;
  private readonly later = (): void => {
    this.readDue = false;
    this.h.readLater();
  };

  constructor(
    private readonly ring: RingEnd,
    private readonly h: RingEventHandlers,
  ) {}

  /** The flow's socket has events (FdInterest's `ev`, ≥ 0): doorbells, room, read. */
  onEvents(ev: number): void {
    if (!(ev & native.UV_READABLE)) return;
    if (this.ring.pollSocket() === 'fds' && !this.h.fds()) return;
    this.ring.wake();
    this.h.room();
    this.h.read();
  }

  /** Read again on a later turn (a read budget ran out with records left: no doorbell comes for them). */
  readSoon(): void {
    if (this.readDue) return;
    this.readDue = true;
    setImmediate(this.later);
  }
}
