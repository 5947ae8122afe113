/**
 * restart.ts — a `vmpi serve` process in its default keeper mode, run from the built code
 * (dist/) as a service would, its log collected (JSON lines, queried by msg), and the pid of
 * the keeper's worker (the one process a restart test kills), for the restart tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface Serve {
  child: ChildProcess;
  log: () => string;
  /** Log lines (JSON) with this msg. */
  lines: (msg: string) => Record<string, unknown>[];
}

/** `node cli serve ARGS --log-format json` at log level info, outside any systemd unit. */
export function startServe(cli: string, args: string[]): Serve {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  const child = spawn(process.execPath, [cli, 'serve', ...args, '--log-format', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  const lines = (msg: string) =>
    log
      .split('\n')
      .filter((l) => l.includes(msg))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      })
      .filter((j) => j.msg === msg);
  return { child, log: () => log, lines };
}

/** The keeper's worker: its only child (sh exec'd into node). */
export function workerPid(keeper: number): number {
  const out = readFileSync(`/proc/${keeper}/task/${keeper}/children`, 'utf8').trim();
  const pids = out.split(/\s+/).filter(Boolean).map(Number);
  if (pids.length !== 1) throw new Error(`keeper ${keeper} has children [${out}], expected one worker`);
  return pids[0]!;
}
