/**
 * accept-backoff.ts — what a listening socket does when accept(2) fails (EMFILE, ENFILE, ENOBUFS):
 * the pending connection stays in the backlog, so a level-triggered watcher would fire again at
 * once and spin. Stop watching, retry after a pause that doubles (50 ms to 2 s), log at most once
 * per ThrottledLog interval; the first success resets the pause.
 *
 * Owns: that policy, for every listener in the process (vhost-user sockets, the IPC daemon).
 * The owner supplies how to stop and restart its watcher and what to do on retry.
 */
import type { ThrottledLog } from './log.js';

export const ACCEPT_BACKOFF_MIN_MS = 50;
export const ACCEPT_BACKOFF_MAX_MS = 2000;

export interface AcceptBackoffOptions {
  /** Stop the listening watcher (called when a failure starts a pause). */
  pause(): void;
  /** The pause is over: restart the watcher and accept what is pending. */
  retry(): void;
  log: ThrottledLog;
}

export class AcceptBackoff {
  private ms = 0;
  private timer: NodeJS.Timeout | null = null;
  /** accept(2) failures since start. */
  failures = 0;

  constructor(private readonly opts: AcceptBackoffOptions) {}

  /** The current pause (0: none since the last success). */
  get pauseMs(): number {
    return this.ms;
  }

  /** An accept succeeded: the next failure starts from the shortest pause again. */
  succeeded(): void {
    this.ms = 0;
  }

  /** An accept failed with `e`: pause the watcher and schedule a retry (once). */
  failed(e: unknown): void {
    this.failures++;
    this.ms = Math.min(Math.max(this.ms * 2, ACCEPT_BACKOFF_MIN_MS), ACCEPT_BACKOFF_MAX_MS);
    const err = e as NodeJS.ErrnoException | null;
    this.opts.log.warn({ err: err?.message ?? String(e), code: err?.code, retryMs: this.ms });
    if (this.timer) return;
    this.opts.pause();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.opts.retry();
    }, this.ms);
    this.timer.unref();
  }

  /** The listener is closing: no retry. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
