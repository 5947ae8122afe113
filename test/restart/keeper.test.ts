/**
 * keeper.test.ts — the keeper (src/ops/restart/keeper.ts) as a real process, its worker a
 * stand-in (test/helpers/keeper-worker.ts) that stores an eventfd and a memfd with the real
 * sd_notify code: the fds come back, intact and by name, to each worker after SIGKILL, with
 * LISTEN_PID its own; a worker that crashes again right after each restart is given up on after
 * MAX_QUICK_CRASHES, with one clear log line, while the keeper goes on holding the fds; SIGHUP
 * then tries again; a first worker that fails before READY ends the keeper with its status;
 * SIGTERM ends both, cleanly.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_QUICK_CRASHES } from '../../src/ops/restart/keeper.js';
import { until } from '../helpers/serve.js';
import { workerPid } from '../helpers/restart.js';

const MAIN = new URL('../helpers/keeper-main.ts', import.meta.url).pathname;

function keeper(t: Test, control: string) {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-keeper-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'out');
  const ctl = join(dir, 'control');
  writeFileSync(out, '');
  writeFileSync(ctl, control);
  const env: NodeJS.ProcessEnv = { ...process.env, KW_OUT: out, KW_CONTROL: ctl, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), MAIN], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const starts = () =>
    readFileSync(out, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { pid: number; listenPid: number; names: string; evt: number | null; mem: string | null });
  const worker = () => workerPid(child.pid!);
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const exit = () => Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 20_000))]);
  const heldMemfd = () => readdirSync(`/proc/${child.pid}/fd`).some((fd) => readlinkSync(`/proc/${child.pid}/fd/${fd}`, { encoding: 'utf8' }).startsWith('/memfd:kw'));
  return { child, ctl, starts, worker, exit, heldMemfd, log: () => log };
}

t.test('the kept fds come back to each new worker, by name and intact', async (t) => {
  const k = keeper(t, 'ok');
  await until('the first worker', () => k.starts().length === 1 && k.log().length >= 0, 30_000, k.log);
  await new Promise((r) => setTimeout(r, 500)); // its FDSTOREs and READY
  for (let i = 2; i <= 3; i++) {
    process.kill(k.worker(), 'SIGKILL');
    await until(`worker ${i}`, () => k.starts().length === i, 30_000, k.log);
    const s = k.starts().at(-1)!;
    t.equal(s.listenPid, s.pid, `worker ${i}: LISTEN_PID is its own pid`);
    t.equal(s.names, 'evt:mem', `worker ${i}: both names`);
    t.equal(s.evt, 7, `worker ${i}: the eventfd's counter survived`);
    t.equal(s.mem, 'hello', `worker ${i}: the memfd's bytes survived`);
    await new Promise((r) => setTimeout(r, 300));
  }
  k.child.kill('SIGTERM');
  t.equal(await k.exit(), 0, 'SIGTERM: the worker shuts down cleanly, then the keeper ends with 0');
});

t.test('a crash loop is given up on; the fds stay held; SIGHUP tries again', async (t) => {
  const k = keeper(t, 'ok');
  await until('the first worker ready', () => k.starts().length === 1, 30_000, k.log);
  await new Promise((r) => setTimeout(r, 500));
  writeFileSync(k.ctl, 'crash');
  process.kill(k.worker(), 'SIGKILL');
  await until('the give-up line', () => k.log().includes('not restarting it again'), 60_000, k.log);
  t.equal(k.starts().length, 1 + MAX_QUICK_CRASHES, `${MAX_QUICK_CRASHES} restarts, each crashing, then no more`);
  const line = k.log().split('\n').find((l) => l.includes('not restarting it again'))!;
  t.match(line, /crashed \d+ times in a row right after resuming; not restarting it again\. The VMs' devices are kept as they are \(paused\)\. Fix the cause, then send SIGHUP/);
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(k.starts().length, 1 + MAX_QUICK_CRASHES, 'nothing spins');
  t.equal(k.child.exitCode, null, 'the keeper stays');
  t.ok(k.heldMemfd(), 'and still holds the memfd');
  writeFileSync(k.ctl, 'ok');
  process.kill(k.child.pid!, 'SIGHUP');
  await until('a worker after SIGHUP', () => k.starts().length === 2 + MAX_QUICK_CRASHES, 30_000, k.log);
  t.same([k.starts().at(-1)!.evt, k.starts().at(-1)!.mem], [7, 'hello'], 'it gets the fds, intact');
  k.child.kill('SIGTERM');
  t.equal(await k.exit(), 0);
});

t.test('a first worker that fails before READY ends the keeper with its status', async (t) => {
  const k = keeper(t, 'usage');
  t.equal(await k.exit(), 2, 'exit status 2, as the worker');
  t.equal(k.starts().length, 1, 'no restart');
});

t.test('a first worker killed before READY (still starting) is restarted, not taken for a bad config', async (t) => {
  const k = keeper(t, 'slow');
  await until('the first worker', () => k.starts().length === 1, 30_000, k.log);
  writeFileSync(k.ctl, 'ok');
  process.kill(k.worker(), 'SIGKILL');
  await until('a second worker', () => k.starts().length === 2, 30_000, k.log);
  t.equal(k.child.exitCode, null, 'the keeper goes on');
  k.child.kill('SIGTERM');
  t.equal(await k.exit(), 0);
});
