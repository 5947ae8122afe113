/**
 * serve-signals.test.ts — `vmpi serve` in its default keeper mode as a person at a terminal runs
 * it: Ctrl-C sends SIGINT to the whole foreground process group, and the server must still shut
 * down cleanly (exit 0, socket file removed) — the worker runs in a session of its own, so only
 * the keeper's single forwarded SIGINT reaches it, not two (a second SIGINT during the clean
 * shutdown would kill it).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { until } from '../helpers/serve.js';
import { workerPid } from '../helpers/restart.js';

const ROOT = resolve(import.meta.dirname, '..', '..');

t.test('Ctrl-C (SIGINT to the process group) shuts keeper and worker down cleanly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-sigint-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), 'serve', '--socket', sock, '--no-ipc', '--no-metrics', '--pid-file', join(dir, 'vmpi.pid')], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  await until('the socket', () => existsSync(sock) && log.includes('device configured'), 30_000, () => log);
  t.equal(readFileSync(join(dir, 'vmpi.pid'), 'utf8'), `${child.pid}\n`, "--pid-file holds the keeper's pid (the one to signal)");
  const worker = workerPid(child.pid!);
  const session = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3]);
  t.not(session(worker), session(child.pid!), "the worker is not in the keeper's session (a terminal's signals reach the keeper only)");
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  process.kill(-child.pid!, 'SIGINT'); // what the terminal does on Ctrl-C
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 20_000))]);
  t.equal(code, 0, 'exit status 0');
  t.notOk(existsSync(sock), 'the socket file is removed');
  t.notOk(existsSync(join(dir, 'vmpi.pid')), 'and the pid file');
  t.match(log, /shutting down/, 'the worker shut down cleanly');
});
