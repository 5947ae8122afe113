/**
 * serve.ts — a `vmpi serve` process for integration tests (run from the sources with tsx, like
 * test/cli.test.ts), its stdout and stderr collected as one log, and a bounded poll on a
 * condition that quotes that log when it times out.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './guest.js';

export interface ServeProcess {
  child: ChildProcess;
  /** Everything serve wrote so far (pino JSON lines). */
  log: () => string;
}

/** Start `vmpi serve --config cfg --ipc-socket ipcSocket --no-metrics` at log level info. */
export function serve(cfg: string, ipcSocket: string): ServeProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS; // without tap's loader in the child
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts'), 'serve', '--config', cfg, '--ipc-socket', ipcSocket, '--no-metrics'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  return { child, log: () => log };
}

/** Poll `ok` every 50 ms until it holds; after `ms`, fail naming `what` with the end of `log`. */
export async function until(what: string, ok: () => boolean, ms: number, log: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; serve log:\n${log().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
