// A listening socket's file is never at its path before the socket listens (addon listenUnix):
// whoever polls for the file and then connects (a test, a provisioning script starting QEMU) is
// never refused. The instant between bind(2) and listen(2) is held open for 400 ms with strace's
// syscall delay injection, the way a loaded machine can hold it: with bind on the path itself, a
// poller finds the file in that time and its connect gets ECONNREFUSED.
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/sys/native.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { PermissionConfigError } from '../src/ops/socket-perms.js';

const haveStrace = spawnSync('strace', ['-V'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
if (!haveStrace && process.env.CI) t.fail('strace is not installed (VMPI_TEST_TOOLS=1 scripts/setup-system.sh installs it)');

/** A directory of this test's own, removed at its end. */
function tmpDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-listen-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const nativeModule = fileURLToPath(new URL('../src/sys/native.ts', import.meta.url));

t.test('the socket file appears only once it listens: a poller that sees it connects', { skip: haveStrace ? false : 'strace not installed', timeout: 60_000 }, async (t) => {
  const dir = tmpDir(t);
  const path = join(dir, 'vm.sock');
  // The child listens and then waits for its stdin to close; listen(2) is delayed 400 ms on entry.
  const script = `import { native } from ${JSON.stringify(nativeModule)};
const fd = native.listenUnix(${JSON.stringify(path)}, 8);
process.stdout.write('LISTENING\\n');
process.stdin.on('data', () => {}).on('end', () => { native.close(fd); process.exit(0); });`;
  const child = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=listen', '-e', 'inject=listen:delay_enter=400000',
    process.execPath, '--import', import.meta.resolve('tsx'), '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));

  // Poll for the file as a provisioning script would, then connect at once.
  const end = Date.now() + 30_000;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`no socket file after 30 s; child said: ${out}`);
    await new Promise((r) => setTimeout(r, 1));
  }
  let fd = -1;
  try {
    fd = native.connectUnix(path);
  } catch (e) {
    t.fail(`connecting as soon as the file appeared: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (fd >= 0) {
    t.pass('connected as soon as the file appeared');
    native.close(fd);
  }
  t.same(readdirSync(dir), ['vm.sock'], 'no temporary name left beside it');
  child.stdin.end();
  const rc = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(rc, 0, 'the listener exited cleanly');
  t.match(out, /LISTENING/);
});

t.test('an existing path is still EADDRINUSE from bind, and nothing is left beside it', async (t) => {
  const dir = tmpDir(t);
  const path = join(dir, 'vm.sock');
  const lfd = native.listenUnix(path, 8);
  t.teardown(() => native.close(lfd));
  const err = t.throws(() => native.listenUnix(path, 8)) as NodeJS.ErrnoException;
  t.equal(err.code, 'EADDRINUSE');
  t.equal(err.syscall, 'bind');
  t.same(readdirSync(dir), ['vm.sock'], 'the failed listen left no temporary name');
  const c = native.connectUnix(path);
  t.ok(native.accept(lfd) >= 0, 'the first socket still answers at the path');
  native.close(c);
});

t.test('a directory that is not there: ENOENT from bind, as before', async (t) => {
  const err = t.throws(() => native.listenUnix(join(tmpdir(), `vmpi-no-dir-${process.pid}`, 'vm.sock'), 8)) as NodeJS.ErrnoException;
  t.equal(err.code, 'ENOENT');
  t.equal(err.syscall, 'bind');
});

t.test('a path with no room for a temporary name beside it still listens (bound directly)', async (t) => {
  const top = tmpDir(t);
  // sun_path holds 107 bytes and a NUL: a directory of 100 leaves room for "/a" but not for the
  // temporary name (".vmpi-listen-<pid>-<n>").
  const dir = join(top, 'd'.repeat(100 - top.length - 1));
  mkdirSync(dir);
  const path = join(dir, 'a');
  const lfd = native.listenUnix(path, 8);
  t.teardown(() => native.close(lfd));
  const c = native.connectUnix(path);
  t.ok(native.accept(lfd) >= 0, 'accepted at the long path');
  native.close(c);
  t.same(readdirSync(dir), ['a']);
});

t.test('prepare: runs once it listens, before the file takes the path; the file appears with what it set', async (t) => {
  const dir = tmpDir(t);
  const path = join(dir, 'vm.sock');
  const seen: { name: string; pathThere: boolean; connects: boolean }[] = [];
  const lfd = native.listenUnix(path, 8, (name) => {
    let connects = false;
    try {
      native.close(native.connectUnix(name));
      connects = true;
    } catch {
      // refused: not listening yet
    }
    seen.push({ name, pathThere: existsSync(path), connects });
    chmodSync(name, 0o600);
  });
  t.teardown(() => native.close(lfd));
  t.equal(seen.length, 1, 'called once');
  t.not(seen[0]!.name, path, 'with the temporary name');
  t.notOk(seen[0]!.pathThere, 'before the file is at the path');
  t.ok(seen[0]!.connects, 'after the socket listens');
  t.equal(statSync(path).mode & 0o777, 0o600, 'the file appears with the mode prepare set');
  t.same(readdirSync(dir), ['vm.sock']);

  const bad = join(dir, 'bad.sock');
  t.throws(() => native.listenUnix(bad, 8, () => { throw new Error('no such group'); }), /no such group/, "prepare's error goes on");
  t.same(readdirSync(dir), ['vm.sock'], 'and leaves no file, at the path or beside it');
});

t.test('VhostUserServer prepareSocket: its error fails listen() as it said it, nothing left behind', async (t) => {
  const dir = tmpDir(t);
  const path = join(dir, 'vm.sock');
  const s = new VhostUserServer({ path, createDevice: () => { throw new Error('unused'); }, prepareSocket: () => { throw new PermissionConfigError('group "nope" does not exist on this host'); } });
  t.throws(() => s.listen(), { name: 'PermissionConfigError', message: /group "nope"/ });
  t.same(readdirSync(dir), []);
  const ok = new VhostUserServer({ path, createDevice: () => { throw new Error('unused'); }, prepareSocket: (name) => chmodSync(name, 0o660) });
  ok.listen();
  t.teardown(() => ok.close());
  t.equal(statSync(path).mode & 0o777, 0o660, 'the socket file has its mode from the start');
});
