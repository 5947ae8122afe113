/**
 * socket-file.test.ts — a kept listening socket whose file was removed while no worker ran (by
 * hand, or a service manager cleaning its runtime directory): the new worker says so and listens
 * on a new socket at that path, instead of failing to start (which would loop on every restart).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { native } from '../../src/sys/native.js';
import { until } from '../helpers/serve.js';
import { workerPid } from '../helpers/restart.js';

const ROOT = resolve(import.meta.dirname, '..', '..');

t.test('a kept socket whose file is gone is replaced by a new one at the same path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-sockfile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const ipc = join(dir, 'ipc.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), 'serve', '--socket', sock, '--ipc-socket', ipc, '--no-metrics'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('serving', () => existsSync(sock) && existsSync(ipc) && log.includes('device configured'), 30_000, () => log);
  unlinkSync(sock);
  unlinkSync(ipc);
  const worker = workerPid(child.pid!);
  process.kill(worker, 'SIGKILL');
  const warnings = () => (log.match(/the socket file of a kept listening socket is gone; listening on a new one at that path/g) ?? []).length;
  await until('the new worker and its two warnings', () => (log.match(/device configured/g) ?? []).length >= 2 && warnings() >= 2, 30_000, () => log);
  t.equal(warnings(), 2, 'one warning per socket (the device, the IPC daemon)');
  for (const path of [sock, ipc]) {
    await until(`${path} back`, () => existsSync(path), 10_000, () => log);
    const fd = native.connectUnix(path);
    t.ok(fd >= 0, `${path} accepts connections again`);
    native.close(fd);
  }
  t.equal(child.exitCode, null, 'the keeper goes on');
  t.notMatch(log, /"why":"exit status/, 'the new worker did not fail');
});
