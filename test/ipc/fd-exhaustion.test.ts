/**
 * fd-exhaustion.test.ts — the IPC daemon and the metrics endpoint when the process has no file
 * descriptor left (issue: hardening, fd exhaustion). The server runs in a child process whose
 * RLIMIT_NOFILE is lowered with prlimit, so the machine's own limits are never touched; the child
 * fills its fd table with eventfds on command. Out of fds: a flow allocation is a 'no_resources'
 * answer (not an unhandled rejection), accept backs off instead of spinning and logging tens of
 * thousands of lines a second, the metrics endpoint logs a bounded number of lines, and once fds
 * are free again the waiting connections are served.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DifError } from '../../src/dif/api.js';
import { IpcClient } from '../../src/dif/ipc/client.js';
import { havePrlimit, startLimitedChild } from '../helpers/limited-child.js';
import { within } from './helpers.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'fd-exhaustion-child.ts');
const DIF = 'hv.vmpi-7';
const NOFILE = 256;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


t.test('out of fds: negative answers, accept backs off, then service resumes', { skip: havePrlimit ? false : 'prlimit (util-linux) not installed' }, async (t) => {
  t.setTimeout(120_000); // the bound on every request below (the child's start has its own)
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-fdx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'ipc.sock');
  const child = startLimitedChild(t, CHILD, [sock], NOFILE);
  const { next, command } = child;
  const stats = async () => (await command('stats', 'daemon')) as { daemon: { acceptErrors: number; flowFdFailures: number; faults: number }; metrics: { errors: number; dropped: number }; flows: number };
  const logLines = (re: RegExp) => child.stderr().split('\n').filter((l) => re.test(l)).length;

  const ready = await next('ready', 60_000);
  const metricsPort = ready.metricsPort as number;
  const app = await IpcClient.connect(sock);
  t.teardown(() => app.close());
  t.same(await app.listDifs(), [{ name: DIF, address: 7 }], 'served before');

  const filled = await command('fill', 'filled');
  t.ok((filled.filled as number) > 0, `the child filled its fd table (${String(filled.filled)} eventfds)`);

  // A flow needs a socketpair: a typed negative answer, the session and the process live on.
  const e = await app.allocate(DIF, 'srv', { src: 'app/1' }).catch((err: unknown) => err);
  t.ok(e instanceof DifError && e.code === 'no_resources', `allocation answered no_resources (${(e as Error).message})`);
  t.match((e as Error).message, /EMFILE/);
  t.equal((await stats()).flows, 0, 'the flow was deallocated, no channel kept');

  // New IPC connections and metrics connections while out of fds.
  const waiting: Promise<IpcClient>[] = [];
  for (let i = 0; i < 20; i++) waiting.push(IpcClient.connect(sock));
  const clients = await within(Promise.all(waiting), '20 connections to complete in the backlog', 10_000); // connect() completes in the kernel's backlog
  t.teardown(() => clients.forEach((c) => c.close()));
  const pendingAnswer = clients[0]!.listDifs();
  for (let i = 0; i < 50; i++) {
    const s = connect(metricsPort, '127.0.0.1');
    s.on('error', () => undefined);
    s.on('connect', () => s.end('GET /metrics HTTP/1.0\r\n\r\n'));
    t.teardown(() => s.destroy());
  }
  await sleep(1500);
  const st = await stats();
  t.equal(child.exit(), null, 'the server is still running');
  t.ok(st.daemon.acceptErrors > 0 && st.daemon.acceptErrors < 100, `accept backed off: ${st.daemon.acceptErrors} failures in 1.5 s`);
  t.ok(logLines(/ipc: accept failed/) <= 2, `accept failures logged ${logLines(/ipc: accept failed/)} time(s)`);
  t.ok(logLines(/metrics server error/) <= 2, `metrics errors (${st.metrics.errors}) logged ${logLines(/metrics server error/)} time(s)`);
  t.same(await within(app.listDifs(), 'the existing session answering', 5000), [{ name: DIF, address: 7 }], 'the existing session is still served');

  await command('free', 'freed');
  t.same(await Promise.race([pendingAnswer, new Promise<string>((r) => setTimeout(() => r('no answer'), 5000).unref())]), [{ name: DIF, address: 7 }], 'a connection that waited in the backlog is served once fds are free');
  const f = await within(app.allocate(DIF, 'srv', { src: 'app/2' }), 'an allocation once fds are free', 10_000);
  t.equal(f.state, 'allocated', 'and flows can be allocated again');
  f.deallocate();
  t.equal(child.exit(), null);
  t.notMatch(child.stderr(), /UNHANDLED|uncaught/i);
});
