// The one stale-socket rule (src/sys/unix-socket.ts), and the two servers that use it: a socket
// file is removed only when connecting is refused, never when a live server is merely busy.
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/sys/native.js';
import { removeStaleSocket } from '../src/sys/unix-socket.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { IpcDaemon } from '../src/dif/ipc/daemon.js';

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-sock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A listening socket whose backlog is full: a further connect fails with EAGAIN. */
function busyListener(t: Test, path: string): void {
  const lfd = native.listenUnix(path, 0);
  const clients: number[] = [];
  t.teardown(() => {
    for (const fd of clients) native.close(fd);
    native.close(lfd);
  });
  for (let i = 0; i < 64; i++) {
    try {
      clients.push(native.connectUnix(path));
    } catch (e) {
      t.equal((e as NodeJS.ErrnoException).code, 'EAGAIN', 'the backlog filled up');
      return;
    }
  }
  t.fail('64 connects never filled a backlog of 0');
}

t.test('a socket nobody listens on is removed, a file that is no socket is refused', async (t) => {
  const dir = tmp(t);
  const stale = join(dir, 'stale.sock');
  native.close(native.listenUnix(stale, 1));
  t.equal(removeStaleSocket(stale), true);
  t.notOk(existsSync(stale));
  t.equal(removeStaleSocket(stale), false, 'nothing there: nothing to do');
  const plain = join(dir, 'plain');
  writeFileSync(plain, 'x');
  t.throws(() => removeStaleSocket(plain), { name: 'SocketPathError', code: 'not_a_socket' });
  t.ok(existsSync(plain));
});

t.test('a live server with a full backlog keeps its socket (EAGAIN is not "stale")', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'busy.sock');
  busyListener(t, path);
  t.throws(() => removeStaleSocket(path, 'another server'), { name: 'SocketPathError', code: 'socket_in_use', message: /backlog is full/ });
  t.ok(existsSync(path), 'the busy server\'s socket is still there');

  const vhost = new VhostUserServer({ path, createDevice: () => { throw new Error('unused'); } });
  t.throws(() => vhost.listen(), { name: 'ServerError', message: /is listening on .*busy\.sock/ });
  t.ok(existsSync(path), 'vhost-user server left it alone');

  const daemon = new IpcDaemon({ socketPath: path });
  t.throws(() => daemon.listen(), { name: 'SocketPathError', code: 'socket_in_use' });
  t.ok(existsSync(path), 'IPC daemon left it alone');
  daemon.close();
});
