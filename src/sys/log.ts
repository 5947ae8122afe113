/**
 * log.ts — the process logger (pino) and how its lines are written on stderr.
 *
 * Owns: one root logger; modules take `logger.child({...})` with their own fields. Level from
 * VMPI_LOG_LEVEL (default "info"; tests default to "warn" unless VMPI_LOG_LEVEL is set); a level
 * pino does not know falls back to "info" with one line saying so (a typo must not crash every
 * command). Rule: at "info" one line per connection or device event, never per SDU.
 *
 * Formats (VMPI_LOG_FORMAT, or setLogFormat from the CLI and config):
 *   json     one JSON object per line, for log shippers (the default outside the journal);
 *   text     `LEVEL message key=value …`, for a person at a terminal;
 *   journal  text behind the sd-daemon(3) priority prefix `<N>`, so journald files each line at
 *            its priority (`journalctl -p err` finds errors). Chosen by default when stderr is the
 *            journal: $JOURNAL_STREAM names stderr's device and inode (systemd.exec(5)).
 */
import { fstatSync } from 'node:fs';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const LOG_FORMATS = ['json', 'text', 'journal'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** pino's numeric levels → sd-daemon priorities (trace/debug 7, info 6, warn 4, error 3, fatal 2). */
const JOURNAL_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const LEVEL_NAME: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has, left out of the text formats' key=value tail. */
const FRAME_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/** Whether stderr is connected to the journal ($JOURNAL_STREAM = "<dev>:<inode>" of stderr). */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The format to use: VMPI_LOG_FORMAT if valid, else journal when stderr is the journal, else json. */
export function defaultLogFormat(env: NodeJS.ProcessEnv = process.env): LogFormat {
  const f = env.VMPI_LOG_FORMAT;
  if (f !== undefined && (LOG_FORMATS as readonly string[]).includes(f)) return f as LogFormat;
  return stderrIsJournal(env) ? 'journal' : 'json';
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v !== null && typeof v === 'object') {
    const e = v as { message?: unknown };
    if (typeof e.message === 'string' && Object.keys(v).length <= 3) return JSON.stringify(e.message);
    return JSON.stringify(v);
  }
  return String(v);
}

/** One pino JSON line as text (`WARN message key=value …`), with the journal prefix if asked. */
export function formatLine(line: string, format: Exclude<LogFormat, 'json'>): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : line + '\n';
  }
  const level = typeof o.level === 'number' ? o.level : 30;
  const tail = Object.entries(o)
    .filter(([k]) => !FRAME_KEYS.has(k))
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
  const text = `${String(o.msg ?? '')}${tail ? ' ' + tail : ''}`.replaceAll('\n', '\\n');
  if (format === 'journal') return `<${JOURNAL_PRIORITY[level] ?? 6}>${text}\n`;
  const time = typeof o.time === 'string' ? o.time + ' ' : '';
  return `${time}${LEVEL_NAME[level] ?? level} ${text}\n`;
}

let format: LogFormat = defaultLogFormat();
const raw = pino.destination({ fd: 2, sync: true });
// One destination for the process; the format can change after start-up (flags, config file).
const destination: DestinationStream = {
  write(line: string): void {
    raw.write(format === 'json' ? line : formatLine(line, format));
  },
};

function safeLevel(level: string | undefined, fallback: string): { level: string; bad?: string } {
  if (level === undefined || level === '') return { level: fallback };
  return level in pino.levels.values || level === 'silent' ? { level } : { level: fallback, bad: level };
}

const initial = safeLevel(process.env.VMPI_LOG_LEVEL, process.env.TAP === '1' ? 'warn' : 'info');

export const logger: Logger = pino({ level: initial.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
if (initial.bad !== undefined) {
  logger.warn(`VMPI_LOG_LEVEL=${initial.bad} is not a log level (trace, debug, info, warn, error, fatal, silent): using ${initial.level}`);
}

export function setLogLevel(level: string): void {
  logger.level = level;
}

export function setLogFormat(f: LogFormat): void {
  format = f;
}

export function logFormat(): LogFormat {
  return format;
}

/** How often a ThrottledLog line may repeat. */
export const LOG_REPEAT_INTERVAL_MS = 10_000;

/**
 * A warning that may repeat at most once per interval (a storm of accept failures must not turn
 * into tens of thousands of lines a second); each line says how many were suppressed before it.
 */
export class ThrottledLog {
  private last = -Infinity;
  private suppressed = 0;
  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly intervalMs = LOG_REPEAT_INTERVAL_MS,
  ) {}

  warn(fields: Record<string, unknown>): void {
    const now = performance.now();
    if (now - this.last < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.log.warn({ ...fields, suppressed: this.suppressed }, this.msg);
    this.last = now;
    this.suppressed = 0;
  }
}
