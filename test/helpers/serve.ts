/**
 * serve.ts — a `vmpi serve` process for integration tests (run from the sources with tsx, like
 * test/cli.test.ts), its stdout and stderr collected as one log, a bounded poll on a condition
 * that quotes that log when it times out, and the normal-DIF tests' setup: one serve with two
 * VMPI devices and `normal: { dif }`, two Node guests each running `vmpi guest --normal-dif` and
 * a script of the test's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { Guest, ROOT, nodeScript } from './guest.js';

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

/** Shell lines that start `vmpi guest --normal-dif DIF` in a Node guest and wait for its socket. */
export function startMemberDaemon(dif: string): string {
  return `mkdir -p /run/vmpi
node /opt/vmpi/dist/src/cli.js guest --normal-dif ${dif} --log-level warn &
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`;
}

export interface TwoVmDif {
  srv: ServeProcess;
  ipcSocket: string;
  vm1: Guest;
  vm2: Guest;
}

/**
 * One `vmpi serve` with two devices (VMPI-ids `ids`) and `normal: { dif }`, then two Node guests
 * running `vmpi guest --normal-dif` and `vm1Js` / `vm2Js` (VM2 booted first). Everything is
 * killed and removed at the end of `t`; guests run at most `timeoutMs`.
 */
export async function twoVmDif(t: Test, o: { name: string; dif: string; ids: [number, number]; vm1Js: string; vm2Js: string; timeoutMs: number }): Promise<TwoVmDif> {
  const dir = mkdtempSync(join(tmpdir(), `${o.name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'vmpi.json');
  writeFileSync(cfg, JSON.stringify({ devices: [{ socket: 'vm1.sock', vmpiId: o.ids[0] }, { socket: 'vm2.sock', vmpiId: o.ids[1] }], normal: { dif: o.dif } }));
  const ipcSocket = join(dir, 'ipc.sock');
  const srv = serve(cfg, ipcSocket);
  t.teardown(() => {
    srv.child.kill('SIGKILL');
  });
  await until('serve sockets', () => existsSync(join(dir, 'vm1.sock')) && existsSync(join(dir, 'vm2.sock')) && existsSync(ipcSocket), 30_000, srv.log);
  const start = startMemberDaemon(o.dif);
  const vm2 = new Guest({ sockets: [join(dir, 'vm2.sock')], node: true, script: nodeScript(o.vm2Js, start), memMb: 640, timeoutMs: o.timeoutMs, name: `${o.name}-vm2` });
  t.teardown(() => vm2.kill());
  const vm1 = new Guest({ sockets: [join(dir, 'vm1.sock')], node: true, script: nodeScript(o.vm1Js, start), memMb: 640, timeoutMs: o.timeoutMs, name: `${o.name}-vm1` });
  t.teardown(() => vm1.kill());
  return { srv, ipcSocket, vm1, vm2 };
}
