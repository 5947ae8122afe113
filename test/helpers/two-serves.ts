/**
 * two-serves.ts — two `vmpi serve` processes A and B on one machine with no VM, configured only
 * by config files this helper writes into a temporary directory (the shim-udp and shim-eth
 * integration tests, and the shim-udp restart test): each with its IPC socket, optionally each in
 * its own network namespace, optionally under the default keeper (restart mode) instead of
 * `--restart off`; their logs collected; killed and the directory removed in the test's teardown.
 * Also `vmpi` run to completion (cli), and a free UDP port on loopback.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { ROOT } from './guest.js';
import { until } from './serve.js';

/** `vmpi` from the sources. */
export const CLI = [process.execPath, '--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts')] as const;
export const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
delete env.NODE_OPTIONS;
delete env.NOTIFY_SOCKET;

export interface ServeProc {
  child: ChildProcess;
  log: () => string;
}

export interface ServeOptions {
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** 'off' (default): nothing survives the process; 'keeper': the default keeper holds the fds, its worker may be killed and restarted. */
  restart?: 'off' | 'keeper';
}

/** `vmpi serve --config CFG --ipc-socket SOCK --no-metrics`, its output collected. */
export function serveProc(cfg: string, ipcSocket: string, opts: ServeOptions = {}): ServeProc {
  const args = [...CLI, 'serve', '--config', cfg, '--ipc-socket', ipcSocket, '--no-metrics', ...(opts.restart === 'keeper' ? [] : ['--restart', 'off'])];
  const child = opts.netns ? spawn('ip', ['netns', 'exec', opts.netns, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(args[0], args.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  return { child, log: () => log };
}

/** Run `vmpi ARGS` to completion (bounded). */
export function cli(args: string[], timeoutMs = 60_000): { status: number | null; out: string } {
  const r = spawnSync(CLI[0], [...CLI.slice(1), ...args], { env, encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A UDP port on 127.0.0.1 free a moment ago. */
export async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

export interface TwoServes {
  dir: string;
  a: ServeProc;
  b: ServeProc;
  sockA: string;
  sockB: string;
  /** Both logs' tails, for failure messages. */
  both: () => string;
}

/**
 * Write configs `a` and `b` (objects, as JSON) and start a serve on each; resolves once both IPC
 * sockets exist. `opts` apply to [A, B].
 */
export async function twoServes(t: Test, prefix: string, a: unknown, b: unknown, opts: [ServeOptions, ServeOptions] = [{}, {}]): Promise<TwoServes> {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a.json'), JSON.stringify(a));
  writeFileSync(join(dir, 'b.json'), JSON.stringify(b));
  const sockA = join(dir, 'a.sock');
  const sockB = join(dir, 'b.sock');
  const pa = serveProc(join(dir, 'a.json'), sockA, opts[0]);
  t.teardown(() => void pa.child.kill('SIGKILL'));
  const pb = serveProc(join(dir, 'b.json'), sockB, opts[1]);
  t.teardown(() => void pb.child.kill('SIGKILL'));
  const both = (): string => `--- A ---\n${pa.log().slice(-2000)}\n--- B ---\n${pb.log().slice(-2000)}`;
  await until('both IPC sockets', () => existsSync(sockA) && existsSync(sockB), 30_000, both);
  return { dir, a: pa, b: pb, sockA, sockB, both };
}

/** Start `vmpi tgen server --dif DIF` on `ipcSocket`; resolves once it registered. Killed in teardown. */
export async function tgenServer(t: Test, dif: string, ipcSocket: string): Promise<ChildProcess> {
  const srv = spawn(CLI[0], [...CLI.slice(1), 'tgen', 'server', '--dif', dif, '--ipc-socket', ipcSocket], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  srv.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  srv.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
  t.teardown(() => void srv.kill('SIGKILL'));
  await until(`tgen server in ${dif}`, () => out.includes('registered'), 30_000, () => out);
  return srv;
}
