/**
 * parent.ts — starts one child process per fuzz target (child.ts) with a watchdog, and turns
 * what it printed, or how it died, into a FuzzResult. Used by `npm run fuzz` (run.ts) and by
 * test/fuzz.test.ts.
 *
 * A child that exits without a result line (a signal such as SIGBUS or SIGABRT, a fatal native
 * exception) or that outlives its budget (a hang: a loop that never yields) is a failure of its
 * target; the result then says how it ended, the seed to replay with, and the end of its stderr.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FuzzResult } from './runner.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

export interface ChildOptions {
  seconds: number;
  seed: number;
  runs?: number;
  /** Extra seconds before the watchdog kills the child (start-up, shrinking). Default 30. */
  graceSeconds?: number;
  env?: NodeJS.ProcessEnv;
}

export function runChild(target: string, opts: ChildOptions): Promise<FuzzResult> {
  const args = ['--no-warnings', '--import', 'tsx', join(here, 'child.ts'), target, '--seconds', String(opts.seconds), '--seed', String(opts.seed)];
  if (opts.runs !== undefined) args.push('--runs', String(opts.runs));
  const child = spawn(process.execPath, args, {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VMPI_LOG_LEVEL: 'silent', ...opts.env },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => {
    err += b.toString();
    if (err.length > 64 * 1024) err = err.slice(-32 * 1024);
  });
  const budgetMs = (opts.seconds + (opts.graceSeconds ?? 30)) * 1000;
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, budgetMs);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(last) as FuzzResult;
        if (typeof r.target === 'string') return resolve(r);
      } catch {
        // no result line: fall through
      }
      const how = killed ? `hung: killed after ${budgetMs / 1000} s` : signal ? `died of ${signal}` : `exited with code ${code} and no result`;
      resolve({
        target,
        seed: opts.seed,
        executions: -1,
        seconds: -1,
        failures: 1,
        rejected: -1,
        maxRssMb: -1,
        failure: {
          seed: opts.seed,
          path: null,
          error: `child ${how}`,
          stack: err.trim().split('\n').slice(-25).join('\n'),
          input: `replay: tsx test/fuzz/child.ts ${target} --seed ${opts.seed} --trace`,
        },
      });
    });
  });
}

/** The table `npm run fuzz` prints. */
export function formatTable(results: readonly FuzzResult[]): string {
  const rows = [['target', 'executions', 'seconds', 'failures', 'rejected', 'max RSS MiB', 'seed'], ...results.map((r) => [r.target, String(r.executions), String(r.seconds), String(r.failures), String(r.rejected), String(r.maxRssMb), String(r.seed)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}
