/**
 * limited-child.ts — a server in a child process whose RLIMIT_NOFILE is lowered with prlimit (the
 * machine's own limits are never touched), driven by one-line commands on stdin and answering
 * with JSON lines on stdout (logs on stderr), for the fd-exhaustion tests. `fillCommands` is the
 * child side: `fill` opens eventfds until EMFILE, `free` closes them, anything else goes to the
 * child's own handler.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';
import { native } from '../../src/sys/native.js';

export const havePrlimit = spawnSync('prlimit', ['--version'], { stdio: 'ignore' }).status === 0;

export interface LimitedChild {
  /** The next stdout line that has `key` (waits at most `ms`). */
  next(key: string, ms?: number): Promise<Record<string, unknown>>;
  /** Send `cmd`, wait for the answer that has `key`. */
  command(cmd: string, key: string): Promise<Record<string, unknown>>;
  stderr(): string;
  /** Exit code or signal once it exited, else null. */
  exit(): number | string | null;
}

export function startLimitedChild(t: Test, script: string, args: string[], nofile: number): LimitedChild {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'warn' };
  delete env.NODE_OPTIONS; // not tap's loaders in the child
  const child = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, '--import', import.meta.resolve('tsx'), script, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let exit: number | string | null = null;
  child.on('exit', (code, signal) => (exit = code ?? signal));
  t.teardown(() => {
    if (exit === null) child.kill('SIGKILL');
  });
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
  const next = async (key: string, ms = 30_000): Promise<Record<string, unknown>> => {
    const end = Date.now() + ms;
    for (;;) {
      const i = lines.findIndex((l) => key in l);
      if (i >= 0) return lines.splice(i, 1)[0]!;
      if (exit !== null) throw new Error(`the child exited (${exit}): ${stderr}`);
      if (Date.now() > end) throw new Error(`no "${key}" from the child; stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return {
    next,
    command: (cmd, key) => {
      child.stdin.write(cmd + '\n');
      return next(key);
    },
    stderr: () => stderr,
    exit: () => exit,
  };
}

/** Child side: print `o` as one JSON line. */
export function say(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

/** Child side: serve `fill` / `free` on stdin; other lines go to `other`. */
export function fillCommands(other: (line: string) => void): void {
  const filler: number[] = [];
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'fill') {
      for (;;) {
        try {
          filler.push(native.eventfd(0));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EMFILE') throw e;
          break;
        }
      }
      say({ filled: filler.length });
    } else if (line === 'free') {
      for (const fd of filler.splice(0)) native.close(fd);
      say({ freed: true });
    } else other(line);
  });
}
