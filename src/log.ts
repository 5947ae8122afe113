/**
 * log.ts — the process logger (pino, JSON lines on stderr).
 *
 * Owns: one root logger; modules take `logger.child({...})` with their own fields. Level from
 * VMPI_LOG_LEVEL (default "info"; tests default to "warn" unless VMPI_LOG_LEVEL is set).
 * Rule: at "info" one line per connection or device event, never per SDU.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const defaultLevel = process.env.VMPI_LOG_LEVEL ?? (process.env.TAP === '1' ? 'warn' : 'info');

export const logger: Logger = pino(
  { level: defaultLevel, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
  pino.destination({ fd: 2, sync: true }),
);

export function setLogLevel(level: string): void {
  logger.level = level;
}
