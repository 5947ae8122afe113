/**
 * guard.ts — the process-level last resort of long-running commands (`vmpi serve`, `vmpi guest`).
 *
 * Each layer contains its own failures first: a connection, device, flow or IPC session that
 * throws is closed with a log line and everything else carries on. What still reaches the process
 * ('uncaughtException', 'unhandledRejection') is a bug in that containment: it is logged with its
 * stack at error level and counted, and the process keeps serving, because one VM's or one
 * application's trouble must never take away every other VM's device (QEMU 10 cannot reconnect).
 *
 * Owns: installing the two handlers once per process, and the count (`uncaughtCount`), exported as
 * the metric vmpi_uncaught_errors_total so an operator can alert on it.
 */
import type { Logger } from '../sys/log.js';

let installed = false;
let count = 0;

/** How many exceptions and rejections reached the process since start. */
export function uncaughtCount(): number {
  return count;
}

export function installProcessGuard(log: Logger): void {
  if (installed) return;
  installed = true;
  const report = (kind: string, e: unknown): void => {
    count++;
    const err = e instanceof Error ? { message: e.message, code: (e as { code?: unknown }).code, stack: e.stack } : { value: String(e) };
    try {
      log.error({ err, kind, total: count }, `${kind} contained by the process guard: this is a bug, please report it; the server keeps running`);
    } catch {
      // A logger that throws must not turn the guard into a crash.
    }
  };
  process.on('uncaughtException', (e) => report('uncaught exception', e));
  process.on('unhandledRejection', (e) => report('unhandled rejection', e));
}
