/**
 * queued-request.test.ts — a vhost-user request the front-end sends while no worker runs (QEMU
 * does on a guest config read or a VM stop, blocking its vCPU until the answer) waits in the
 * kept socket and is answered by the next worker, on the same connection: `vmpi serve` in its
 * default keeper mode, this process as the front-end (memory table, two queues), the worker
 * killed with SIGKILL and GET_CONFIG sent at once, before a new worker exists.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GuestMemoryImage } from '../frontend/guest-memory.js';
import { VhostUserFrontend } from '../frontend/frontend.js';
import { until } from '../helpers/serve.js';
import { workerPid } from '../helpers/restart.js';

const ROOT = resolve(import.meta.dirname, '..', '..');

t.test('a request sent while no worker runs is answered by the next one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-queued-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), 'serve', '--socket', sock, '--vmpi-id', '12', '--no-ipc', '--no-metrics'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until('serving', () => existsSync(sock) && log.includes('device configured'), 30_000, () => log);
  const fe = new VhostUserFrontend(sock, { timeoutMs: 30_000 });
  t.teardown(() => fe.close());
  const mem = new GuestMemoryImage(1024 * 1024);
  t.teardown(() => mem.close());
  await fe.handshake({ memory: mem, queues: [{ size: 64 }, { size: 64 }] });
  t.equal(Buffer.from(await fe.getConfig(0, 8)).readUInt16LE(6), 12, 'the first worker answers GET_CONFIG');
  await new Promise((r) => setTimeout(r, 300)); // its state saved after the last request

  const worker = workerPid(child.pid!);
  process.kill(worker, 'SIGKILL');
  const t0 = Date.now();
  const cfg = await fe.getConfig(0, 8); // sent now: nobody reads the socket until the next worker
  const ms = Date.now() - t0;
  t.equal(Buffer.from(cfg).readUInt16LE(6), 12, `the next worker answers it on the same connection, ${ms} ms after the kill`);
  t.notOk(fe.closed, 'the front-end never saw a close');
  t.match(log, /front-end connection resumed/, 'the connection was resumed, not made anew');
});
