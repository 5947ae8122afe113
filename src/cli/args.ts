/**
 * cli/args.ts — what every `vmpi` subcommand shares: node:util parseArgs with a UsageError for
 * bad usage (exit 2), typed option readers (integers, numbers, log level and format), printing a
 * ConfigError (exit 1), waiting for SIGINT/SIGTERM, and the package version.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { LOG_FORMATS, type LogFormat } from '../sys/log.js';
import { LOG_LEVELS, type ConfigError, type LogLevel } from '../ops/config.js';

export const EXIT_INVALID = 1;
export const EXIT_USAGE = 2;

/** Bad usage of the command line: main() prints the message and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly code = 'ERR_USAGE';
}

/** The package version, from the package.json above this file (src/cli/ or dist/src/cli/). */
export function version(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'vmpi') return pkg.version;
    } catch {
      // try the next level up
    }
  }
  return 'unknown';
}

export type ArgValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export function parse(command: string, args: string[], options: NonNullable<ParseArgsConfig['options']>, allowPositionals = false): { values: ArgValues; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, ...options }, strict: true, allowPositionals });
    return { values: values as ArgValues, positionals };
  } catch (e) {
    throw new UsageError(`vmpi ${command}: ${(e as Error).message}`);
  }
}

export function intArg(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new UsageError(`--${name} ${value}: expected an integer ${min}..${max}`);
  return n;
}

export function str(v: ArgValues[string]): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function strs(v: ArgValues[string]): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

export function logFormatArg(v: string | undefined): LogFormat | undefined {
  if (v === undefined) return undefined;
  if (!(LOG_FORMATS as readonly string[]).includes(v)) throw new UsageError(`--log-format ${v}: expected one of ${LOG_FORMATS.join(', ')}`);
  return v as LogFormat;
}

export function logLevelArg(v: string | undefined): LogLevel | undefined {
  if (v === undefined) return undefined;
  if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new UsageError(`--log-level ${v}: expected one of ${LOG_LEVELS.join(', ')}`);
  return v as LogLevel;
}

export function numArg(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} ${value}: expected a number ${min}..${max}`);
  return n;
}

/** Print a ConfigError's problems, one per line, and return the exit code for them. */
export function reportInvalid(prefix: string, e: ConfigError): number {
  for (const line of e.message.split('\n')) process.stderr.write(`${prefix}${line}\n`);
  return EXIT_INVALID;
}

/**
 * The first SIGINT or SIGTERM from now on (its name). The handlers are installed at once, so a
 * signal that arrives during start-up is kept until the caller is ready for it.
 */
export function signalled(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
