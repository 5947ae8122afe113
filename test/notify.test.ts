/**
 * notify.test.ts — systemd readiness (sd_notify) as systemd sees it: the test binds the notify
 * socket itself and reads the datagrams `vmpi serve` sends. READY=1 must come only once the
 * vhost-user socket exists (a VM unit ordered after vmpi.service starts QEMU right then, and QEMU
 * does not retry), STOPPING=1 on SIGTERM. Also the addon's datagram path (file and abstract
 * names, fds) and the Node the suite runs on (the supported LTS, as package.json's engines say).
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, fstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { native } from '../src/sys/native.js';
import { NotifyError, notifySocket, sdNotify } from '../src/ops/notify.js';
import { VhostUserFrontend } from './frontend/frontend.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-notify-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Read one datagram from a bound socket, waiting at most `ms`. */
async function readDatagram(fd: number, ms = 15000): Promise<{ text: string; fds: number[] }> {
  const buf = new Uint8Array(4096);
  const end = Date.now() + ms;
  for (;;) {
    const r = native.recvMsg(fd, buf, 0, buf.length, 8);
    if (r) return { text: Buffer.from(buf.subarray(0, r.bytes)).toString('utf8'), fds: r.fds };
    if (Date.now() > end) throw new Error(`no notify datagram within ${ms} ms`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

t.test('the suite runs on the supported Node (engines in package.json)', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
  const min = Number(/>=\s*(\d+)/.exec(pkg.engines.node)?.[1]);
  t.ok(min >= 24, `engines.node asks for an LTS line that gets security fixes (${pkg.engines.node})`);
  t.ok(Number(process.versions.node.split('.')[0]) >= min, `node ${process.versions.node} satisfies ${pkg.engines.node}`);
});

t.test('sdNotify: nothing without NOTIFY_SOCKET; datagrams to a path and an abstract name, with fds', async (t) => {
  t.equal(sdNotify({ READY: '1' }, { env: {} }), false, 'no socket: nothing sent');
  t.equal(notifySocket({ NOTIFY_SOCKET: 'relative/path' }), undefined, 'a relative path is not a notify socket');
  t.throws(() => sdNotify({ STATUS: 'a\nREADY=1' }, { env: { NOTIFY_SOCKET: '/nonexistent' } }), /^sd_notify: the value of STATUS contains a newline$/);

  const path = join(dir, 'n1.sock');
  const fd = native.bindUnixDgram(path);
  t.teardown(() => native.close(fd));
  t.equal(sdNotify({ READY: '1', STATUS: 'up' }, { env: { NOTIFY_SOCKET: path } }), true);
  t.equal((await readDatagram(fd)).text, 'READY=1\nSTATUS=up\n');

  const efd = native.eventfd(7);
  t.teardown(() => native.close(efd));
  sdNotify({ FDSTORE: '1', FDNAME: 'kick-0' }, { env: { NOTIFY_SOCKET: path }, fds: [efd] });
  const withFd = await readDatagram(fd);
  t.equal(withFd.text, 'FDSTORE=1\nFDNAME=kick-0\n');
  t.equal(withFd.fds.length, 1, 'the fd came along');
  t.equal(native.eventfdRead(withFd.fds[0]!), 7, 'and it is the same eventfd');
  native.close(withFd.fds[0]!);

  const abstract = `@vmpi-notify-test-${process.pid}`;
  const afd = native.bindUnixDgram(abstract);
  t.teardown(() => native.close(afd));
  sdNotify({ READY: '1' }, { env: { NOTIFY_SOCKET: abstract } });
  t.equal((await readDatagram(afd)).text, 'READY=1\n', 'abstract namespace');

  const err = t.throws(() => sdNotify({ READY: '1' }, { env: { NOTIFY_SOCKET: join(dir, 'nobody.sock') } })) as NodeJS.ErrnoException;
  t.equal(err.code, 'ENOENT', 'a missing socket is a system error the caller logs');
});

t.test('sdNotify refuses an FDNAME systemd would not keep: typed error, nothing sent', async (t) => {
  const path = join(dir, 'fdname.sock');
  const fd = native.bindUnixDgram(path);
  t.teardown(() => native.close(fd));
  const env = { NOTIFY_SOCKET: path };
  for (const bad of ['a:b', '', 'x'.repeat(256), 'tab\there', 'caf\u00e9']) {
    const err = t.throws(() => sdNotify({ FDSTORE: '1', FDNAME: bad }, { env })) as NotifyError;
    t.equal(err.code, 'notify_fdname', `${JSON.stringify(bad.slice(0, 20))}: code notify_fdname`);
    t.ok(err instanceof NotifyError && /use 1\.\.255 printable ASCII characters without ':'/.test(err.message), 'and a message that says what a name may be');
  }
  t.throws(() => sdNotify({ FDNAME: 'a:b' }, { env: {} }), { code: 'notify_fdname' }, 'refused even without a notify socket');
  t.equal(native.recvMsg(fd, new Uint8Array(64), 0, 64, 0), null, 'nothing was sent');
  t.equal(sdNotify({ FDSTORE: '1', FDNAME: 'x'.repeat(255) }, { env }), true, '255 characters are fine');
  t.equal(sdNotify({ FDSTOREREMOVE: '1', FDNAME: 'vhost-user vm1.sock' }, { env }), true, 'spaces and dots are fine');
  t.equal((await readDatagram(fd)).text, `FDSTORE=1\nFDNAME=${'x'.repeat(255)}\n`);
});

/** Start `vmpi serve` with NOTIFY_SOCKET pointing at a socket this test bound. */
function serveNotified(t: Test, name: string, extra: string[]) {
  const notify = join(dir, `${name}-notify.sock`);
  const fd = native.bindUnixDgram(notify);
  t.teardown(() => native.close(fd));
  const sock = join(dir, `${name}.sock`);
  const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: notify, VMPI_LOG_LEVEL: 'warn' };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), 'serve', '--socket', sock, '--vmpi-id', '3', '--no-metrics', '--no-ipc', ...extra], {
    cwd: dir,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  /** Datagrams up to and including the first that contains `line`. */
  const until = async (line: string, ms = 30000): Promise<{ text: string; fds: number[] }[]> => {
    const got: { text: string; fds: number[] }[] = [];
    const end = Date.now() + ms;
    for (;;) {
      const d = await readDatagram(fd, Math.max(1, end - Date.now())).catch((e: Error) => {
        throw new Error(`${e.message} (waiting for ${line}; got ${JSON.stringify(got.map((g) => g.text))}); serve stderr:\n${stderr}`);
      });
      for (const f of d.fds) native.close(f);
      got.push(d);
      if (d.text.split('\n').includes(line)) return got;
    }
  };
  const exit = () => Promise.race([exited, new Promise<string>((res) => setTimeout(() => res('timeout'), 15000))]);
  return { sock, child, until, exit };
}

t.test('vmpi serve --restart off sends READY=1 once its socket listens, STOPPING=1 on SIGTERM', async (t) => {
  const s = serveNotified(t, 'off', ['--restart', 'off']);
  const [ready] = await s.until('READY=1');
  t.equal(ready!.text, 'READY=1\nSTATUS=serving 1 VMPI device\n', 'READY=1 with a status line, and nothing before it');
  t.ok(existsSync(s.sock), 'the vhost-user socket exists when READY=1 arrives');
  const probe = native.connectUnix(s.sock);
  t.ok(fstatSync(probe).isSocket(), 'and accepts connections');
  native.close(probe);

  s.child.kill('SIGTERM');
  t.same((await s.until('STOPPING=1')).map((d) => d.text), ['STOPPING=1\n'], 'STOPPING=1 at shutdown');
  t.equal(await s.exit(), 0, 'exits 0');
  t.notOk(existsSync(s.sock), 'a clean shutdown removes the socket file');
});

t.test('under systemd (NOTIFY_SOCKET), vmpi serve keeps its fds in the fd store before READY=1 and hands over on SIGTERM', async (t) => {
  const s = serveNotified(t, 'store', []);
  const before = await s.until('READY=1');
  const stores = before.slice(0, -1);
  t.same(
    stores.map((d) => [d.text, d.fds.length]),
    [
      ['FDSTORE=1\nFDNAME=vmpi-state\n', 1],
      ['FDSTORE=1\nFDNAME=vmpi-f1\n', 1],
    ],
    'the state memfd and the listening socket, one named fd each, before READY=1',
  );
  t.equal(before.at(-1)!.text, 'READY=1\nSTATUS=serving 1 VMPI device\n');
  // A front-end that never gets a request through (here: closes at once) is never stored.
  native.close(native.connectUnix(s.sock));
  // The device serves one front-end at a time: until serve has seen the silent one go, the next is
  // refused (closed at once); try again, a bounded number of times.
  let fe: VhostUserFrontend | undefined;
  for (let i = 0; fe === undefined; i++) {
    const attempt = new VhostUserFrontend(s.sock, { timeoutMs: 10_000 });
    try {
      await attempt.getFeatures();
      fe = attempt;
    } catch (e) {
      attempt.close();
      if (i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  t.teardown(() => fe.close());
  t.same((await s.until('FDSTORE=1')).map((d) => [d.text, d.fds.length]), [['FDSTORE=1\nFDNAME=vmpi-f2\n', 1]], 'a front-end is stored with its first request (the silent one before it was not)');
  fe.close();
  t.same((await s.until('FDSTOREREMOVE=1')).map((d) => d.text), ['FDSTOREREMOVE=1\nFDNAME=vmpi-f2\n'], 'and removed when it leaves');

  s.child.kill('SIGTERM');
  t.same((await s.until('STOPPING=1')).map((d) => d.text), ['STOPPING=1\n'], 'STOPPING=1 at the hand-over');
  t.equal(await s.exit(), 0, 'exits 0');
  t.ok(existsSync(s.sock), 'the socket file stays: the listening socket lives on in the fd store (systemd closes it on a stop)');
});
