/**
 * fd-interest.ts — which events (readable, writable) a non-blocking fd's uv_poll watcher waits
 * for. The watcher is restarted only when the set changes, stopped while it is empty, and left
 * alone once closed. Shared by the control connection (conn.ts), the daemon's flow bridge and
 * the client's flows (datapath.ts, client.ts).
 */
import { native, type FdEventsWatcher } from '../../sys/native.js';

export class FdInterest {
  private readonly watcher: FdEventsWatcher;
  private events = 0;
  private closed = false;

  /** Watch `fd` for `initial` (UV_READABLE, UV_WRITABLE bits); `onEvents` as native.watchFd. */
  constructor(fd: number, initial: number, onEvents: (events: number) => void) {
    this.watcher = native.watchFd(fd, initial, onEvents);
    this.set(initial);
  }

  /** Wait for exactly these events (0: none). */
  set(events: number): void {
    if (this.closed || events === this.events) return;
    this.events = events;
    if (events === 0) this.watcher.stop();
    else this.watcher.start(events);
  }

  /** Add or remove one event. */
  want(bit: number, on: boolean): void {
    this.set(on ? this.events | bit : this.events & ~bit);
  }

  /** Close the watcher (before closing the fd, as native.ts asks). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
  }
}
