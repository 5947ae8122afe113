/**
 * addon.test.ts — tests of the native addon (addon/vmpi_native.cc) through its typed face
 * src/sys/native.ts: Unix sockets with SCM_RIGHTS, mmap/munmap, eventfd/memfd, uv_poll watchers.
 * GC- and uncaught-exception behaviour is tested in child processes (they need --expose-gc or
 * would take down the tap runner).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/sys/native.js';

const ADDON = join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'Release', 'vmpi_native.node');
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

let sockSeq = 0;
function sockPath(): string {
  return join(tmpdir(), `vmpi-addon-${process.pid}-${sockSeq++}.sock`);
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!m) throw new Error(`no flags for fd ${fd}`);
  return parseInt(m[1]!, 8);
}

function isOpen(fd: number): boolean {
  try {
    readFileSync(`/proc/self/fdinfo/${fd}`);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(pred: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

interface Pair {
  listen: number;
  server: number;
  client: number;
  path: string;
}

/** A connected Unix stream socket pair (socketpair is not in the API). Closed at test end. */
function pair(t: { teardown(fn: () => void): void }): Pair {
  const path = sockPath();
  const listen = native.listenUnix(path, 4);
  const client = native.connectUnix(path);
  const server = native.accept(listen);
  const p = { listen, server, client, path };
  t.teardown(() => {
    for (const fd of [p.listen, p.server, p.client]) if (fd >= 0 && isOpen(fd)) native.close(fd);
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  });
  return p;
}

function runChild(code: string, flags: string[] = []): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', code], {
    env: { ...process.env, VMPI_ADDON: ADDON },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const CHILD_PRELUDE = `
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const n = createRequire(import.meta.url)(process.env.VMPI_ADDON);
const tick = () => new Promise((r) => setImmediate(r));
`;

t.test('constants and pageSize', async (t) => {
  t.equal(native.UV_READABLE, 1);
  t.equal(native.UV_WRITABLE, 2);
  t.equal(native.UV_DISCONNECT, 4);
  const ps = native.pageSize();
  t.ok(ps >= 4096 && (ps & (ps - 1)) === 0, `page size ${ps} is a power of two >= 4096`);
});

t.test('listenUnix / connectUnix / accept', async (t) => {
  const path = sockPath();
  t.teardown(() => unlinkSync(path));
  const lfd = native.listenUnix(path, 8);
  t.equal(native.accept(lfd), -1, 'no pending connection: -1');
  t.ok(fdFlags(lfd) & O_NONBLOCK, 'listening fd is non-blocking');
  t.ok(fdFlags(lfd) & O_CLOEXEC, 'listening fd is close-on-exec');

  const err = t.throws(() => native.listenUnix(path, 8)) as NodeJS.ErrnoException;
  t.equal(err.code, 'EADDRINUSE');
  t.equal(err.syscall, 'bind');

  const c = native.connectUnix(path);
  const s = native.accept(lfd);
  t.ok(s >= 0, 'accepted');
  for (const fd of [c, s]) {
    t.ok(fdFlags(fd) & O_NONBLOCK, `fd ${fd} non-blocking`);
    t.ok(fdFlags(fd) & O_CLOEXEC, `fd ${fd} close-on-exec`);
  }
  t.equal(native.accept(lfd), -1, 'queue drained');
  native.close(c);
  native.close(s);
  native.close(lfd);

  const enoent = t.throws(() => native.connectUnix(join(tmpdir(), `vmpi-nonexistent-${process.pid}.sock`))) as NodeJS.ErrnoException;
  t.equal(enoent.code, 'ENOENT');
  t.equal(enoent.syscall, 'connect');
  // The socket file is left behind (nobody unlinks) and nobody listens: connecting is refused.
  const refused = t.throws(() => native.connectUnix(path)) as NodeJS.ErrnoException;
  t.equal(refused.code, 'ECONNREFUSED');
});

t.test('recvMsg returns null on EAGAIN and bytes 0 on peer close', async (t) => {
  const p = pair(t);
  const buf = new Uint8Array(16);
  t.equal(native.recvMsg(p.server, buf, 0, 16, 4), null);
  native.close(p.client);
  p.client = -1;
  t.same(native.recvMsg(p.server, buf, 0, 16, 4), { bytes: 0, fds: [] });
});

t.test('sendMsg / recvMsg honour offset and length', async (t) => {
  const p = pair(t);
  const out = Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  t.equal(native.sendMsg(p.client, out, 2, 3, null), 3);
  const sub = out.subarray(5); // a view with a byteOffset: [5, 6, 7]
  t.equal(native.sendMsg(p.client, sub, 1, 2, []), 2);
  const inb = new Uint8Array(12).fill(0xee);
  const r = native.recvMsg(p.server, inb, 4, 8, 0);
  t.same(r, { bytes: 5, fds: [] });
  t.same([...inb], [0xee, 0xee, 0xee, 0xee, 2, 3, 4, 6, 7, 0xee, 0xee, 0xee]);

  // A short receive buffer leaves the rest queued.
  native.sendMsg(p.client, Buffer.from('abcdef'), 0, 6, null);
  const small = Buffer.alloc(4);
  t.equal(native.recvMsg(p.server, small, 0, 4, 0)?.bytes, 4);
  t.equal(small.toString(), 'abcd');
  t.equal(native.recvMsg(p.server, small, 1, 3, 0)?.bytes, 2);
  t.equal(small.toString('latin1', 1, 3), 'ef');

  t.equal(native.sendMsg(p.client, out, 8, 0, null), 0, 'empty send without fds is a no-op');
});

t.test('sendMsg returns -1 when the socket buffer is full', async (t) => {
  const p = pair(t);
  const chunk = new Uint8Array(65536);
  let total = 0;
  let n = 0;
  for (let i = 0; i < 10_000 && (n = native.sendMsg(p.client, chunk, 0, chunk.length, null)) > 0; i++) total += n;
  t.equal(n, -1, `EAGAIN after ${total} bytes`);
  t.ok(total > 0);
});

t.test('several fds in one message refer to the same files', async (t) => {
  const p = pair(t);
  const ps = native.pageSize();
  const memA = native.memfdCreate('vmpi-test-a', ps);
  const memB = native.memfdCreate('vmpi-test-b', 2 * ps);
  const efd = native.eventfd(0);
  const before = fdCount();

  t.equal(native.sendMsg(p.client, Uint8Array.of(0x42), 0, 1, [memA, memB, efd]), 1);
  const r = native.recvMsg(p.server, new Uint8Array(4), 0, 4, 8);
  t.ok(r);
  if (!r) return;
  t.equal(r.bytes, 1);
  t.equal(r.fds.length, 3);
  t.equal(fdCount(), before + 3, 'three new fds installed');
  const [ra, rb, re] = r.fds as [number, number, number];
  t.notOk([memA, memB, efd].includes(ra) || [memA, memB, efd].includes(rb), 'new fd numbers');
  for (const fd of r.fds) t.ok(fdFlags(fd) & O_CLOEXEC, `received fd ${fd} is close-on-exec (MSG_CMSG_CLOEXEC)`);

  // memfd A: written through the sender's mapping, read through the receiver's, and back.
  const mapA = new Uint8Array(native.mmap(memA, 0, ps));
  const recvA = new Uint8Array(native.mmap(ra, 0, ps));
  mapA.set([1, 2, 3], 100);
  t.same([...recvA.subarray(100, 103)], [1, 2, 3]);
  recvA[ps - 1] = 0x99;
  t.equal(mapA[ps - 1], 0x99);
  // memfd B: the second page, mapped at an offset on the receiving side.
  const mapB = new Uint8Array(native.mmap(memB, 0, 2 * ps));
  mapB[ps + 7] = 0x77;
  t.equal(new Uint8Array(native.mmap(rb, ps, ps))[7], 0x77);
  // eventfd: signalled on one fd, read on the other.
  native.eventfdWrite(efd, 5);
  t.equal(native.eventfdRead(re), 5);

  for (const fd of [memA, memB, efd, ra, rb, re]) native.close(fd);
});

t.test('too many fds: EMSGSIZE and every received fd closed', async (t) => {
  const p = pair(t);
  const sent = [native.eventfd(0), native.eventfd(0), native.eventfd(0)];
  t.teardown(() => sent.forEach((fd) => native.close(fd)));
  const buf = new Uint8Array(8);

  const cases: Array<[number, number, string]> = [
    [3, 1, 'MSG_CTRUNC (room for 2 after CMSG_SPACE rounding)'],
    [3, 0, 'MSG_CTRUNC (no control buffer at all)'],
    [2, 1, 'no MSG_CTRUNC but more fds than maxFds'],
  ];
  for (const [count, maxFds, what] of cases) {
    const before = fdCount();
    t.equal(native.sendMsg(p.client, Uint8Array.of(count), 0, 1, sent.slice(0, count)), 1);
    const err = t.throws(() => native.recvMsg(p.server, buf, 0, 8, maxFds), what) as NodeJS.ErrnoException;
    t.equal(err.code, 'EMSGSIZE', what);
    t.equal(err.syscall, 'recvmsg');
    t.match(err.message, /^recvmsg failed: EMSGSIZE \(Message too long\)/);
    t.equal(fdCount(), before, `no fd leaked: ${what}`);
  }
  t.equal(native.recvMsg(p.server, buf, 0, 8, 4), null, 'the failed messages were consumed');

  // And an exactly-fitting receive still works.
  native.sendMsg(p.client, Uint8Array.of(9), 0, 1, sent);
  const r = native.recvMsg(p.server, buf, 0, 8, 3);
  t.equal(r?.fds.length, 3);
  r?.fds.forEach((fd) => native.close(fd));
});

t.test('recvBytes: recvMsg without fds, as a number: -1 on EAGAIN, 0 on close, offset and length, fds refused and closed', async (t) => {
  const p = pair(t);
  const buf = new Uint8Array(12).fill(0xee);
  t.equal(native.recvBytes(p.server, buf, 0, 12), -1, 'nothing queued: -1');
  t.equal(native.sendMsg(p.client, Uint8Array.from([1, 2, 3, 4, 5]), 0, 5, null), 5);
  t.equal(native.recvBytes(p.server, buf, 4, 8), 5);
  t.same([...buf], [0xee, 0xee, 0xee, 0xee, 1, 2, 3, 4, 5, 0xee, 0xee, 0xee], 'written at the offset');
  t.throws(() => native.recvBytes(p.server, buf, 0, 0), 'length 0 is refused (0 means the peer closed)');

  const sent = native.eventfd(0);
  t.teardown(() => native.close(sent));
  const before = fdCount();
  t.equal(native.sendMsg(p.client, Uint8Array.of(7), 0, 1, [sent]), 1);
  const err = t.throws(() => native.recvBytes(p.server, buf, 0, 8)) as NodeJS.ErrnoException;
  t.equal(err.code, 'EMSGSIZE', 'an fd with the message: EMSGSIZE');
  t.equal(err.syscall, 'recvmsg');
  t.equal(fdCount(), before, 'the fd the kernel would have passed was closed');
  t.equal(native.recvBytes(p.server, buf, 0, 8), -1, 'the message went with it');

  native.close(p.client);
  p.client = -1;
  t.equal(native.recvBytes(p.server, buf, 0, 8), 0, 'peer closed: 0');
});

t.test('close, dup and system error shape', async (t) => {
  const efd = native.eventfd(0);
  const d = native.dup(efd);
  t.not(d, efd);
  t.ok(fdFlags(d) & O_CLOEXEC, 'dup is close-on-exec');
  native.eventfdWrite(d, 2);
  t.equal(native.eventfdRead(efd), 2, 'dup refers to the same eventfd');
  native.close(d);
  native.close(efd);

  const err = t.throws(() => native.close(efd)) as NodeJS.ErrnoException;
  t.type(err, Error);
  t.equal(err.code, 'EBADF');
  t.equal(err.errno, -9);
  t.equal(err.syscall, 'close');
  t.equal(err.message, 'close failed: EBADF (Bad file descriptor)');
  t.equal((t.throws(() => native.dup(efd)) as NodeJS.ErrnoException).code, 'EBADF');
  const recvErr = t.throws(() => native.recvMsg(efd, new Uint8Array(1), 0, 1, 0)) as NodeJS.ErrnoException;
  t.equal(recvErr.code, 'EBADF');
  t.equal(recvErr.syscall, 'recvmsg');
  const notSock = native.eventfd(0);
  t.equal((t.throws(() => native.sendMsg(notSock, new Uint8Array(1), 0, 1, null)) as NodeJS.ErrnoException).code, 'ENOTSOCK');
  native.close(notSock);
});

t.test('mmap / munmap', async (t) => {
  const ps = native.pageSize();
  const mfd = native.memfdCreate('vmpi-test-mmap', 4 * ps);
  t.teardown(() => native.close(mfd));
  const whole = native.mmap(mfd, 0, 4 * ps);
  t.type(whole, ArrayBuffer);
  t.equal(whole.byteLength, 4 * ps);
  const w = new Uint8Array(whole);
  for (let i = 0; i < 4; i++) w[i * ps] = 10 + i;
  w[2 * ps - 1] = 0xab; // last byte of page 1

  const part = native.mmap(mfd, 2 * ps, ps + 1);
  const pv = new Uint8Array(part);
  t.equal(part.byteLength, ps + 1);
  t.equal(pv[0], 12, 'offset 2 pages sees page 2');
  t.equal(pv[ps], 13, 'and the first byte of page 3');
  const before = new Uint8Array(native.mmap(mfd, ps, ps));
  t.equal(before[ps - 1], 0xab);

  const view = new DataView(part, 8);
  native.munmap(part);
  t.equal(part.byteLength, 0, 'detached');
  t.equal(pv.length, 0, 'views become zero-length');
  t.throws(() => view.getUint8(0), TypeError, 'DataView on a detached buffer throws');
  t.doesNotThrow(() => native.munmap(part), 'idempotent');
  t.equal(w[2 * ps], 12, 'other mappings of the same file unaffected');

  t.throws(() => native.mmap(mfd, 1, ps), { name: 'TypeError', message: 'mmap: offset must be page-aligned' });
  t.throws(() => native.mmap(mfd, ps / 2, ps), TypeError);
  t.throws(() => native.mmap(mfd, 0, 0), { name: 'TypeError', message: /length must be an integer in \[1,/ });
  t.throws(() => native.munmap(new ArrayBuffer(8)), { name: 'TypeError', message: /returned by mmap/ });
  t.throws(() => native.munmap(new ArrayBuffer(0)), { name: 'TypeError', message: /returned by mmap/ }, 'even empty');
  const foreign = new ArrayBuffer(8);
  structuredClone(foreign, { transfer: [foreign] }); // detaches it
  t.throws(() => native.munmap(foreign), { name: 'TypeError', message: /returned by mmap/ }, 'even detached');
  t.throws(() => native.munmap(new Uint8Array(8) as unknown as ArrayBuffer), TypeError);
  const bad = t.throws(() => native.mmap(999_999, 0, ps)) as NodeJS.ErrnoException;
  t.equal(bad.code, 'EBADF');
  t.equal(bad.syscall, 'mmap');
  const efd = native.eventfd(0);
  t.equal((t.throws(() => native.mmap(efd, 0, ps)) as NodeJS.ErrnoException).code, 'ENODEV');
  native.close(efd);
  native.munmap(whole);
});

t.test('memfdCreate', async (t) => {
  const fd = native.memfdCreate('vmpi-test-memfd', 12345);
  t.ok(fdFlags(fd) & O_CLOEXEC);
  t.match(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'), /flags/);
  t.equal(readFileSync(`/proc/self/fd/${fd}`).length, 12345, 'sized by ftruncate');
  native.close(fd);
  t.throws(() => native.memfdCreate('', 1), TypeError);
  t.throws(() => native.memfdCreate('x'.repeat(250), 1), TypeError);
  t.throws(() => native.memfdCreate('a\0b', 1), TypeError);
  t.throws(() => native.memfdCreate('ok', -1), TypeError);
});

t.test('eventfd counter semantics', async (t) => {
  const fd = native.eventfd(5);
  t.ok(fdFlags(fd) & O_NONBLOCK);
  t.ok(fdFlags(fd) & O_CLOEXEC);
  t.equal(native.eventfdRead(fd), 5, 'initval');
  t.equal(native.eventfdRead(fd), 0, 'reset by read; EAGAIN is 0');
  native.eventfdWrite(fd, 2);
  native.eventfdWrite(fd, 3);
  t.equal(native.eventfdRead(fd), 5, 'writes add up');
  // Saturate the counter (max 2^64-2): the write that would overflow gets EAGAIN, swallowed.
  for (let i = 0; i < 2048; i++) native.eventfdWrite(fd, Number.MAX_SAFE_INTEGER);
  t.doesNotThrow(() => native.eventfdWrite(fd, Number.MAX_SAFE_INTEGER), 'EAGAIN swallowed');
  t.equal(native.eventfdRead(fd), 2048 * Number.MAX_SAFE_INTEGER);
  t.equal(native.eventfdRead(fd), 0);
  for (const v of [0, -1, 1.5, NaN, Infinity, '1']) {
    t.throws(() => native.eventfdWrite(fd, v as number), TypeError, `value ${String(v)} rejected`);
  }
  native.close(fd);
  t.equal((t.throws(() => native.eventfdRead(fd)) as NodeJS.ErrnoException).code, 'EBADF');
  t.equal((t.throws(() => native.eventfdWrite(fd, 1)) as NodeJS.ErrnoException).code, 'EBADF');
  t.throws(() => native.eventfd(-1), TypeError);
  t.throws(() => native.eventfd(2 ** 32), TypeError);
});

t.test('watchEventfd: wakes JS with the count, no busy loop, stop/start', async (t) => {
  const fd = native.eventfd(0);
  const counts: number[] = [];
  const w = native.watchEventfd(fd, (c) => counts.push(c));
  t.teardown(() => {
    w.close();
    native.close(fd);
  });
  await sleep(20);
  t.same(counts, [], 'created stopped');
  native.eventfdWrite(fd, 3);
  w.start();
  native.eventfdWrite(fd, 4);
  t.ok(await waitFor(() => counts.length > 0), 'callback ran');
  t.same(counts, [7], 'both writes coalesced into one wake-up with the sum');
  t.equal(native.eventfdRead(fd), 0, 'the addon reset the counter');

  const cpu0 = process.cpuUsage();
  await sleep(200);
  const cpu = process.cpuUsage(cpu0);
  t.same(counts, [7], 'no further callbacks while not signalled');
  t.ok(cpu.user + cpu.system < 100_000, `idle watcher is not spinning (${(cpu.user + cpu.system) / 1000} ms CPU in 200 ms)`);

  native.eventfdWrite(fd, 1);
  t.ok(await waitFor(() => counts.length === 2));
  t.same(counts, [7, 1]);

  w.stop();
  native.eventfdWrite(fd, 9);
  await sleep(50);
  t.same(counts, [7, 1], 'stopped: no callback');
  w.start();
  t.ok(await waitFor(() => counts.length === 3), 'restart delivers the pending signal');
  t.same(counts, [7, 1, 9]);
  w.start(); // restart while started is fine
  w.close();
  native.eventfdWrite(fd, 2);
  await sleep(50);
  t.same(counts, [7, 1, 9], 'closed: no callback');
  t.equal(native.eventfdRead(fd), 2, 'closing the watcher does not close or drain the fd');
  t.doesNotThrow(() => w.close(), 'close is idempotent');
  t.doesNotThrow(() => w.stop(), 'stop after close is a no-op');
  t.throws(() => w.start(), /closed/);
});

t.test('one started watcher per fd', async (t) => {
  const fd = native.eventfd(0);
  const early = native.watchEventfd(fd, () => {});
  const w = native.watchEventfd(fd, () => {});
  w.start();
  t.equal((t.throws(() => native.watchReadable(fd, () => {})) as NodeJS.ErrnoException).code, 'EEXIST', 'create');
  const err = t.throws(() => early.start()) as NodeJS.ErrnoException;
  t.equal(err.code, 'EEXIST', 'start');
  t.equal(err.syscall, 'uv_poll_start');
  w.close();
  early.close();
  native.close(fd);
});

t.test('watchReadable fires on socket data and on hangup', async (t) => {
  const p = pair(t);
  const events: number[] = [];
  const got: number[] = [];
  let eof = false;
  const buf = new Uint8Array(64);
  const w = native.watchReadable(p.server, (ev) => {
    events.push(ev);
    const r = native.recvMsg(p.server, buf, 0, buf.length, 0);
    if (r && r.bytes > 0) got.push(...buf.subarray(0, r.bytes));
    if (r && r.bytes === 0) {
      eof = true;
      w.stop(); // level-triggered: EOF stays readable
    }
  });
  t.teardown(() => w.close());
  w.start();
  await sleep(20);
  t.same(events, [], 'nothing to read yet');
  native.sendMsg(p.client, Uint8Array.of(1, 2, 3), 0, 3, null);
  t.ok(await waitFor(() => got.length === 3));
  t.same(got, [1, 2, 3]);
  t.equal(events[0], native.UV_READABLE, 'readable, not disconnected');
  const n = events.length;

  native.close(p.client);
  p.client = -1;
  t.ok(await waitFor(() => eof), 'hangup seen');
  const last = events[events.length - 1]!;
  t.ok(events.length > n);
  t.ok(last & native.UV_DISCONNECT, `UV_DISCONNECT set (events ${last})`);
  t.ok(last & native.UV_READABLE, 'and readable (EOF)');
  await sleep(30);
  t.equal(events[events.length - 1], last, 'stopped inside the callback: no more calls');
});

t.test('watchReadable reports a poll error as -1, once', async (t) => {
  const p = pair(t);
  // Closing a Unix stream socket with unread data resets the peer: EPOLLERR on the server side.
  native.sendMsg(p.server, Uint8Array.of(1), 0, 1, null);
  native.sendMsg(p.client, Uint8Array.of(2), 0, 1, null);
  native.close(p.client);
  p.client = -1;
  const events: number[] = [];
  const w = native.watchReadable(p.server, (ev) => events.push(ev));
  t.teardown(() => w.close());
  w.start();
  t.ok(await waitFor(() => events.length > 0));
  await sleep(50);
  t.same(events, [-1], 'libuv stopped the handle after the error');
  t.equal(native.recvMsg(p.server, new Uint8Array(4), 0, 4, 0)?.bytes, 1, 'queued data first');
  const err = t.throws(() => native.recvMsg(p.server, new Uint8Array(4), 0, 4, 0)) as NodeJS.ErrnoException;
  t.equal(err.code, 'ECONNRESET', 'then the pending socket error');
});

t.test('watchFd: writable only when there is room, re-armed between directions', async (t) => {
  const p = pair(t);
  const events: number[] = [];
  const w = native.watchFd(p.client, native.UV_WRITABLE, (ev) => {
    events.push(ev);
    w.stop(); // level-triggered: a writable socket would call back on every turn
  });
  t.teardown(() => w.close());
  await sleep(20);
  t.same(events, [], 'created stopped');
  w.start();
  t.ok(await waitFor(() => events.length === 1), 'an empty socket is writable');
  t.equal(events[0], native.UV_WRITABLE);

  const chunk = new Uint8Array(65536);
  let sent = 0;
  let n = 0;
  while ((n = native.sendMsg(p.client, chunk, 0, chunk.length, null)) > 0) sent += n;
  w.start();
  const cpu0 = process.cpuUsage();
  await sleep(200);
  const cpu = process.cpuUsage(cpu0);
  t.same(events, [native.UV_WRITABLE], 'full socket: no callback');
  t.ok(cpu.user + cpu.system < 100_000, `waiting for room is not spinning (${(cpu.user + cpu.system) / 1000} ms CPU in 200 ms)`);
  const buf = new Uint8Array(65536);
  let got = 0;
  for (let r; (r = native.recvMsg(p.server, buf, 0, buf.length, 0)) && r.bytes > 0; ) got += r.bytes;
  t.equal(got, sent, `peer drained all ${sent} bytes`);
  t.ok(await waitFor(() => events.length === 2), 'room again: writable');
  t.equal(events[1], native.UV_WRITABLE);

  // Same watcher, other direction: start(events) re-arms it, also while started.
  w.start(native.UV_WRITABLE);
  w.start(native.UV_READABLE);
  await sleep(50);
  t.equal(events.length, 2, 're-armed for readable only: the writable socket no longer calls back');
  native.sendMsg(p.server, Uint8Array.of(9), 0, 1, null);
  t.ok(await waitFor(() => events.length === 3));
  t.equal(events[2], native.UV_READABLE, 'readable, not writable');
  t.equal(native.recvMsg(p.client, buf, 0, 1, 0)?.bytes, 1);
  w.start(); // restarts with the last events (readable)
  await sleep(30);
  t.equal(events.length, 3, 'nothing more to read');
  w.start(native.UV_READABLE | native.UV_WRITABLE);
  t.ok(await waitFor(() => events.length === 4));
  t.equal(events[3], native.UV_WRITABLE, 'both watched: writable reported');
  for (const ev of [0, 8, -1, 1.5, 16]) {
    t.throws(() => w.start(ev), { name: 'TypeError', message: /^FdWatcher\.start: events must be/ }, `start(${ev}) rejected`);
  }
  w.start(native.UV_READABLE);
  t.equal((t.throws(() => native.watchFd(p.client, native.UV_READABLE, () => {})) as NodeJS.ErrnoException).code, 'EEXIST', 'still one watcher per fd');
});

t.test('ioctl with a size-encoded buffer argument', async (t) => {
  // _IOR/_IOW('T', 0x30/0x31, int): TIOCGPTN and TIOCSPTLCK on a pty master.
  const TIOCGPTN = 0x80045430;
  const TIOCSPTLCK = 0x40045431;
  const FIONREAD = 0x541b; // legacy number: no size encoded
  const ev = native.eventfd(0);
  t.teardown(() => native.close(ev));
  const buf = new Uint8Array(4).fill(0xff);
  t.equal((t.throws(() => native.ioctl(ev, TIOCGPTN, buf)) as NodeJS.ErrnoException).code, 'ENOTTY', 'errors are system errors');
  t.same([...buf], [0xff, 0xff, 0xff, 0xff], 'untouched on error');
  t.equal((t.throws(() => native.ioctl(999_999, TIOCGPTN, buf)) as NodeJS.ErrnoException).syscall, 'ioctl');
  t.throws(() => native.ioctl(ev, FIONREAD, buf), { name: 'TypeError', message: /^ioctl: request must encode a direction and an argument size/ });
  t.throws(() => native.ioctl(ev, 0x00005430, buf), TypeError, '_IO: no argument');
  t.throws(() => native.ioctl(ev, TIOCGPTN, new Uint8Array(3)), { name: 'TypeError', message: /^ioctl: buf must hold at least 4 bytes/ });
  t.throws(() => native.ioctl(ev, 2 ** 32, buf), { name: 'TypeError', message: /^ioctl: request must be an integer in \[0, 4294967295\]/ });
  t.throws(() => native.ioctl(ev, TIOCGPTN, null as unknown as Uint8Array), { name: 'TypeError', message: /^ioctl: buf must be a Uint8Array/ });
  // _IO requests go through ioctlNoArg, with a NULL argument; sized ones are refused there.
  t.throws(() => native.ioctlNoArg(ev, TIOCGPTN), { name: 'TypeError', message: /^ioctlNoArg: request must be an _IO request/ });
  t.equal((t.throws(() => native.ioctlNoArg(ev, 0x0000b704)) as NodeJS.ErrnoException).code, 'ENOTTY', 'an _IO request the fd does not know: ENOTTY');
  t.equal((t.throws(() => native.ioctlNoArg(ev, FIONREAD)) as NodeJS.ErrnoException).code, 'ENOTTY', 'legacy number on an eventfd: ENOTTY, nothing written');

  let pty = -1;
  try {
    if (existsSync('/dev/ptmx')) pty = openSync('/dev/ptmx', fsc.O_RDWR | fsc.O_NOCTTY);
  } catch (e) {
    t.comment(`cannot open /dev/ptmx: ${(e as Error).message}`);
  }
  if (pty < 0) return t.comment('skipping the real ioctl: no pty master');
  t.teardown(() => closeSync(pty));
  const out = new Uint8Array(8).fill(0xff);
  t.equal(native.ioctl(pty, TIOCGPTN, out), 0, 'out: returns the ioctl result');
  const ptn = new DataView(out.buffer).getUint32(0, true);
  t.ok(ptn < 0x10000, `the kernel wrote the pty number (${ptn}) into the first 4 bytes`);
  t.same([...out.subarray(4)], [0xff, 0xff, 0xff, 0xff], 'and nothing beyond the encoded size');
  t.equal(native.ioctl(pty, TIOCSPTLCK, new Uint8Array(4)), 0, 'in: unlock the pty');
});

t.test('argument validation', async (t) => {
  const u8 = new Uint8Array(8);
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['listenUnix path type', () => native.listenUnix(1 as unknown as string, 1), /^listenUnix: path must be a string/],
    ['listenUnix long path', () => native.listenUnix('/tmp/' + 'x'.repeat(200), 1), /^listenUnix: path must be 1\.\.107 bytes/],
    ['listenUnix empty path', () => native.listenUnix('', 1), /path/],
    ['listenUnix backlog', () => native.listenUnix(sockPath(), -1), /^listenUnix: backlog must be an integer/],
    ['connectUnix path', () => native.connectUnix(undefined as unknown as string), /^connectUnix: path must be a string/],
    ['accept fd', () => native.accept(-1), /^accept: listenFd must be an integer in \[0, 2147483647\]/],
    ['recvMsg fd', () => native.recvMsg(1.5, u8, 0, 1, 0), /^recvMsg: fd must be an integer/],
    ['recvMsg buf', () => native.recvMsg(0, new Uint16Array(4) as unknown as Uint8Array, 0, 1, 0), /buf must be a Uint8Array/],
    ['recvMsg buf array', () => native.recvMsg(0, [1, 2] as unknown as Uint8Array, 0, 1, 0), /buf must be a Uint8Array/],
    ['recvMsg offset', () => native.recvMsg(0, u8, 9, 1, 0), /offset must be an integer in \[0, 8\]/],
    ['recvMsg length', () => native.recvMsg(0, u8, 4, 5, 0), /length must be an integer in \[1, 4\]/],
    ['recvMsg zero length', () => native.recvMsg(0, u8, 0, 0, 0), /length must be an integer in \[1, 8\]/],
    ['recvMsg maxFds', () => native.recvMsg(0, u8, 0, 1, 254), /maxFds must be an integer in \[0, 253\]/],
    ['sendMsg fds type', () => native.sendMsg(0, u8, 0, 1, 5 as unknown as number[]), /fds must be an array/],
    ['sendMsg too many fds', () => native.sendMsg(0, u8, 0, 1, new Array<number>(33).fill(0)), /at most 32 fds/],
    ['sendMsg bad fd entry', () => native.sendMsg(0, u8, 0, 1, [0, -3]), /fds\[1\] is not an fd/],
    ['sendMsg fds need data', () => native.sendMsg(0, u8, 0, 0, [0]), /length must be >= 1 when sending fds/],
    ['close', () => native.close('3' as unknown as number), /^close: fd must be an integer/],
    ['dup', () => native.dup(2 ** 31), /^dup: fd must be an integer/],
    ['mmap fd', () => native.mmap(-1, 0, 1), /^mmap: fd must be/],
    ['munmap', () => native.munmap(undefined as unknown as ArrayBuffer), /^munmap: buffer must be an ArrayBuffer/],
    ['eventfdRead', () => native.eventfdRead(NaN), /^eventfdRead: fd must be/],
    ['watchReadable cb', () => native.watchReadable(0, null as unknown as () => void), /^watchReadable: callback must be a function/],
    ['watchEventfd fd', () => native.watchEventfd(-2, () => {}), /^watchEventfd: fd must be/],
    ['watchEventfd missing', () => (native.watchEventfd as unknown as () => unknown)(), /^watchEventfd: fd must be/],
    ['watchFd cb', () => native.watchFd(0, 1, 'x' as unknown as () => void), /^watchFd: callback must be a function/],
    ['watchFd no events', () => native.watchFd(0, 0, () => {}), /^watchFd: events must be an integer in \[1, 7\]/],
    ['watchFd bad events', () => native.watchFd(0, 9, () => {}), /^watchFd: events must be/],
    ['ioctl fd', () => native.ioctl(-1, 0x80045430, u8), /^ioctl: fd must be/],
  ];
  for (const [name, fn, msg] of cases) t.throws(fn, { name: 'TypeError', message: msg }, name);
  t.equal((t.throws(() => native.watchReadable(999_999, () => {})) as NodeJS.ErrnoException).code, 'EBADF', 'uv_poll_init of a closed fd');
});

t.test('an exception thrown by a watcher callback is an uncaught exception', async (t) => {
  const handled = runChild(`${CHILD_PRELUDE}
    process.on('uncaughtException', (e) => { console.log('caught:' + e.message); process.exit(0); });
    const fd = n.eventfd(0);
    n.watchEventfd(fd, (c) => { throw new Error('boom ' + c); }).start();
    n.eventfdWrite(fd, 3);
    setTimeout(() => { console.log('not caught'); process.exit(2); }, 2000);
  `);
  t.equal(handled.status, 0, handled.stderr);
  t.equal(handled.stdout.trim(), 'caught:boom 3');

  const unhandled = runChild(`${CHILD_PRELUDE}
    const fd = n.eventfd(0);
    n.watchEventfd(fd, () => { throw new Error('kaboom'); }).start();
    n.eventfdWrite(fd, 1);
    setTimeout(() => process.exit(0), 2000);
  `);
  t.equal(unhandled.status, 1, 'process dies like on any uncaught exception');
  t.match(unhandled.stderr, /Error: kaboom/);
});

t.test('GC: watchers and mappings', async (t) => {
  const r = runChild(
    `${CHILD_PRELUDE}
    const out = {};
    const collect = async (flag) => { for (let i = 0; i < 50 && !flag(); i++) { globalThis.gc(); await tick(); } };

    // A started watcher that JS dropped keeps working and is not collected.
    const fd = n.eventfd(0);
    let fired = 0, droppedGone = false, closedGone = false;
    const reg = new FinalizationRegistry((what) => { if (what === 'dropped') droppedGone = true; else closedGone = true; });
    (() => { const w = n.watchEventfd(fd, (c) => { fired += c; }); w.start(); reg.register(w, 'dropped'); })();
    for (let i = 0; i < 10; i++) { globalThis.gc(); await tick(); }
    n.eventfdWrite(fd, 5);
    for (let i = 0; i < 100 && fired === 0; i++) await tick();
    out.droppedFired = fired;
    out.droppedCollected = droppedGone;

    // A closed watcher is collected.
    (() => { const w = n.watchEventfd(n.eventfd(0), () => {}); w.start(); w.close(); reg.register(w, 'closed'); })();
    await collect(() => closedGone);
    out.closedCollected = closedGone;

    // An mmap'd buffer that is dropped is unmapped by its finalizer.
    const ps = n.pageSize();
    const maps = (name) => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes(name)).length;
    const m1 = n.memfdCreate('vmpi-gc-one', 16 * ps);
    (() => { new Uint8Array(n.mmap(m1, 0, 16 * ps))[0] = 1; })();
    out.mappedBefore = maps('vmpi-gc-one');
    await collect(() => maps('vmpi-gc-one') === 0);
    out.mappedAfterGc = maps('vmpi-gc-one');

    // munmap then GC must not unmap again (a new mapping may take the same address).
    const m2 = n.memfdCreate('vmpi-gc-two', 16 * ps);
    let ab = n.mmap(m1, 0, 16 * ps);
    n.munmap(ab);
    const ab2 = n.mmap(m2, 0, 16 * ps);
    const v2 = new Uint8Array(ab2);
    v2[16 * ps - 1] = 7;
    ab = null;
    for (let i = 0; i < 10; i++) { globalThis.gc(); await tick(); }
    out.secondStillMapped = maps('vmpi-gc-two');
    out.secondByte = v2[16 * ps - 1];
    n.munmap(ab2);
    out.secondAfterMunmap = maps('vmpi-gc-two');
    console.log(JSON.stringify(out));
    process.exit(0);
  `,
    ['--expose-gc'],
  );
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  t.equal(out.droppedFired, 5, 'dropped started watcher still fires');
  t.equal(out.droppedCollected, false, 'and is kept alive');
  t.equal(out.closedCollected, true, 'closed watcher is collected');
  t.ok((out.mappedBefore as number) >= 1, 'mapping visible in /proc/self/maps');
  t.equal(out.mappedAfterGc, 0, 'GC finalizer unmapped it');
  t.ok((out.secondStillMapped as number) >= 1, 'finalizer of a munmapped buffer did not unmap a newer mapping');
  t.equal(out.secondByte, 7);
  t.equal(out.secondAfterMunmap, 0);
});

t.test('worker teardown with open watchers and mappings', async (t) => {
  // Node dlcloses the addon when the worker's environment is gone; a uv_close callback still
  // pending then would jump into unmapped code. The addon's async cleanup hook prevents that.
  // The main thread must not load the addon first, or dlclose would not really unmap it.
  const r = runChild(`
    import { Worker } from 'node:worker_threads';
    import { createRequire } from 'node:module';
    const body = \`
      import { createRequire } from 'node:module';
      import { parentPort } from 'node:worker_threads';
      const n = createRequire(process.env.VMPI_ADDON)(process.env.VMPI_ADDON);
      const fd = n.eventfd(0);
      n.watchEventfd(fd, (c) => parentPort.postMessage(c)).start();   // started, dropped
      const idle = n.watchReadable(n.eventfd(0), () => {});           // stopped, never closed
      const closing = n.watchReadable(n.eventfd(0), () => {});
      closing.start(); closing.close();                               // close pending at exit
      globalThis.keep = [idle, n.mmap(n.memfdCreate('w', 4096), 0, 4096)];
      n.eventfdWrite(fd, 4);
    \`;
    for (const how of ['terminate', 'exit']) {
      const w = new Worker(body + (how === 'exit' ? 'setTimeout(() => process.exit(0), 50);' : ''), { eval: true });
      const got = await new Promise((resolve) => w.once('message', resolve));
      if (how === 'terminate') await w.terminate(); else await new Promise((resolve) => w.once('exit', resolve));
      console.log(how + ':' + got);
    }
    const n = createRequire(process.env.VMPI_ADDON)(process.env.VMPI_ADDON);
    n.close(n.eventfd(0)); // loading it again after the workers still works
    console.log('done');
  `);
  t.equal(r.signal ?? null, null, 'no crash signal');
  t.equal(r.status, 0, r.stderr);
  t.same(r.stdout.trim().split('\n'), ['terminate:4', 'exit:4', 'done']);
});

t.test('no fd leaks across a whole send/receive cycle', async (t) => {
  const before = fdCount();
  const path = sockPath();
  const l = native.listenUnix(path, 1);
  const c = native.connectUnix(path);
  const s = native.accept(l);
  const m = native.memfdCreate('vmpi-leak', 4096);
  native.sendMsg(c, Uint8Array.of(1), 0, 1, [m, m]);
  const r = native.recvMsg(s, new Uint8Array(1), 0, 1, 2);
  t.equal(r?.fds.length, 2, 'the same fd twice arrives as two fds');
  r?.fds.forEach((fd) => native.close(fd));
  for (const fd of [m, s, c, l]) native.close(fd);
  unlinkSync(path);
  t.equal(fdCount(), before);
  writeFileSync(path, 'not a socket');
  t.equal((t.throws(() => native.listenUnix(path, 1)) as NodeJS.ErrnoException).code, 'EADDRINUSE', 'an existing file is not unlinked');
  t.equal(readFileSync(path, 'utf8'), 'not a socket');
  unlinkSync(path);
  t.equal(fdCount(), before, 'failed listen leaked nothing');
});

// ---- hardening: mappings of any size, fds a peer sent ----------------------------------------

const GiB = 2 ** 30;

/** An installed Node older than 22 (they refuse external ArrayBuffers over 4 GiB), or null. */
function oldNode(): string | null {
  for (const bin of ['/usr/bin/node', '/usr/local/bin/node']) {
    if (!existsSync(bin)) continue;
    const r = spawnSync(bin, ['-p', 'process.versions.node'], { encoding: 'utf8', timeout: 10_000 });
    const major = Number(/^(\d+)\./.exec(r.stdout ?? '')?.[1]);
    if (r.status === 0 && major < 22) return bin;
  }
  return null;
}

const OLD_NODE = oldNode();
t.test('mmap beyond what this Node can hold: a clean error, no double free (Node < 22, 5 GiB)', { skip: OLD_NODE ? false : 'no Node < 22 installed (they refuse ArrayBuffers over 4 GiB; newer ones map any size)' }, async (t) => {
  const r = spawnSync(OLD_NODE!, ['--expose-gc', '-e', `
    const n = require(process.env.VMPI_ADDON);
    const fd = n.memfdCreate('vmpi-big', 5 * 2 ** 30);
    for (let i = 0; i < 3; i++) {
      try { n.mmap(fd, 0, 5 * 2 ** 30); console.log('mapped'); }
      catch (e) { console.log('refused ' + e.code + ' ' + /released/.test(e.message)); }
    }
    const small = n.mmap(fd, 0, 4096);             // the address space is usable again
    new Uint8Array(small)[0] = 1;
    n.munmap(small);
    global.gc();
    setTimeout(() => { global.gc(); n.close(fd); console.log('done'); }, 50);
  `], { env: { ...process.env, VMPI_ADDON: ADDON }, encoding: 'utf8', timeout: 30_000 });
  t.equal(r.signal, null, `no crash signal (stderr: ${r.stderr.slice(-300)})`);
  t.equal(r.status, 0);
  t.same(r.stdout.trim().split('\n'), [...Array(3).fill('refused ERR_VMPI_MMAP_TOO_LARGE true'), 'done']);
});

t.test('mmap of regions of 16 GiB, 64 GiB and 1 TiB: offsets beyond 4 GiB read and write through', async (t) => {
  for (const size of [16 * GiB, 64 * GiB, 1024 * GiB]) {
    const fd = native.memfdCreate('vmpi-huge', size); // untouched: costs nothing
    const ab = native.mmap(fd, 0, size);
    t.equal(ab.byteLength, size, `${size / GiB} GiB mapped whole`);
    const dv = new DataView(ab);
    const u8 = new Uint8Array(ab);
    for (const off of [0, 4 * GiB - 4, 4 * GiB, 4 * GiB + 4097, size - 8]) {
      dv.setUint32(off, 0xdeadbeef ^ off, true);
      t.equal(dv.getUint32(off, true), (0xdeadbeef ^ off) >>> 0, `DataView at ${off}`);
    }
    u8.set(Uint8Array.of(1, 2, 3, 4), size - 4);
    t.same([...u8.subarray(size - 4)], [1, 2, 3, 4], 'Uint8Array at the last bytes');
    // A second, offset mapping of the same file sees the same bytes (mmapOffset > 4 GiB).
    const tail = native.mmap(fd, size - 4096, 4096);
    t.same([...new Uint8Array(tail, 4092)], [1, 2, 3, 4], 'mmap at a file offset beyond 4 GiB');
    native.munmap(tail);
    native.munmap(ab);
    native.close(fd);
  }
});

t.test('watchEventfd on an fd that is not an eventfd: the callback gets -EIO, the process lives', async (t) => {
  const r = runChild(`${CHILD_PRELUDE}
    process.on('uncaughtException', (e) => { console.log('uncaught:' + e.message); process.exit(3); });
    // A Unix socket pair stands in for a pipe: a read of 8 bytes gets 3.
    const { unlinkSync } = await import('node:fs');
    const path = '/tmp/vmpi-addon-pipe-' + process.pid + '.sock';
    const l = n.listenUnix(path, 1), c = n.connectUnix(path), s = n.accept(l);
    unlinkSync(path);
    const got = [];
    const w = n.watchEventfd(s, (v) => got.push(v));
    w.start();
    n.sendMsg(c, Uint8Array.of(1, 2, 3), 0, 3, null);
    await new Promise((r) => setTimeout(r, 200));
    console.log(JSON.stringify(got));
    w.close();
    process.exit(0);
  `);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.same(JSON.parse(r.stdout.trim()), [-5], 'once, with -EIO; the watcher then stopped');
});

t.test('setNonblock, fdSeals, memfdCreateSealed', async (t) => {
  const efd = native.eventfd(0);
  native.setNonblock(efd, false);
  t.equal(fdFlags(efd) & O_NONBLOCK, 0, 'cleared');
  native.setNonblock(efd);
  t.ok(fdFlags(efd) & O_NONBLOCK, 'set');
  native.setNonblock(efd);
  t.ok(fdFlags(efd) & O_NONBLOCK, 'idempotent');
  t.equal(native.fdSeals(efd), -1, 'an eventfd cannot be sealed');
  native.close(efd);
  t.equal((t.throws(() => native.setNonblock(999_999)) as NodeJS.ErrnoException).code, 'EBADF');

  const plain = native.memfdCreate('vmpi-plain', 4096);
  t.equal(native.fdSeals(plain), native.F_SEAL_SEAL, 'a memfd created without MFD_ALLOW_SEALING is sealed against sealing');
  native.close(plain);
  const all = native.F_SEAL_GROW | native.F_SEAL_SHRINK | native.F_SEAL_SEAL;
  const sealed = native.memfdCreateSealed('vmpi-sealed', 8192, all);
  t.equal(native.fdSeals(sealed), all);
  t.equal(readFileSync(`/proc/self/fd/${sealed}`).length, 8192, 'sized before sealing');
  t.ok(fdFlags(sealed) & O_CLOEXEC);
  t.throws(() => writeFileSync(`/proc/self/fd/${sealed}`, 'x'), { code: 'EPERM' }, 'cannot shrink');
  native.close(sealed);
  const open = native.memfdCreateSealed('vmpi-unsealed', 4096, 0);
  t.equal(native.fdSeals(open), 0, 'no seals: can shrink and grow');
  native.close(open);
  const file = openSync(join(tmpdir(), `vmpi-seal-${process.pid}`), fsc.O_RDWR | fsc.O_CREAT);
  unlinkSync(join(tmpdir(), `vmpi-seal-${process.pid}`));
  const seals = native.fdSeals(file);
  t.ok(seals === -1 || (seals & native.F_SEAL_SHRINK) === 0, 'a regular file has no shrink seal');
  closeSync(file);
  t.throws(() => native.memfdCreateSealed('x', 1, -1), TypeError);
});

t.test('eventfd reads never block, even when the fd has lost O_NONBLOCK', async (t) => {
  // In a child: a read that blocked would hang it, not the runner (spawnSync has a timeout).
  const r = runChild(`${CHILD_PRELUDE}
    const fd = n.eventfd(0);
    n.setNonblock(fd, false);           // what a peer sharing the file description can do
    const empty = n.eventfdRead(fd);
    n.eventfdWrite(fd, 3);
    const three = n.eventfdRead(fd);
    const got = [];
    const w = n.watchEventfd(fd, (c) => got.push(c));
    w.start();
    n.eventfdWrite(fd, 2);
    await new Promise((r) => setTimeout(r, 100));
    w.close();
    console.log(JSON.stringify([empty, three, got]));
  `);
  t.equal(r.signal, null, 'not killed by the timeout');
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout.trim()), [0, 3, [2]]);
});

// ---- IPC daemon block: peerCred, setSocketBuffers ----------------------------------------------

t.test('peerCred: the uid, gid and pid of the connecting process', async (t) => {
  const p = pair(t);
  const c = native.peerCred(p.server);
  t.same(c, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }, 'both ends are this process');
  t.same(native.peerCred(p.client).uid, process.getuid!(), 'also on the connecting end');
  const efd = native.eventfd(0);
  t.teardown(() => native.close(efd));
  t.equal((t.throws(() => native.peerCred(efd)) as NodeJS.ErrnoException).code, 'ENOTSOCK', 'not a socket: typed error');
  t.throws(() => native.peerCred(-1), TypeError);
});

t.test('setSocketBuffers: a SEQPACKET record larger than the send buffer passes once it is raised', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  const big = new Uint8Array(1 << 20);
  t.equal((t.throws(() => native.sendMsg(a, big, 0, big.byteLength, null)) as NodeJS.ErrnoException).code, 'EMSGSIZE', 'default buffer: EMSGSIZE');
  const got = native.setSocketBuffers(a, (1 << 20) + 4096);
  if (process.getuid!() === 0) {
    t.ok(got >= (1 << 20) + 4096, `granted ${got}`);
    t.equal(native.sendMsg(a, big, 0, big.byteLength, null), big.byteLength, 'the record went');
    native.setSocketBuffers(b, (1 << 20) + 4096);
    const r = native.recvMsg(b, new Uint8Array(big.byteLength + 1), 0, big.byteLength + 1, 0);
    t.equal(r?.bytes, big.byteLength);
  } else {
    t.ok(got > 0, `unprivileged: capped by net.core.wmem_max (${got})`);
  }
  t.throws(() => native.setSocketBuffers(a, 0), TypeError);
});

t.test('fence: a full memory fence, callable and cheap (the ring handshake calls it once per batch)', async (t) => {
  t.equal(typeof native.fence, 'function', 'the addon exports fence()');
  t.equal(native.fence(), undefined);
  // Ordering around it on a shared mapping: a store before the fence is visible to a second
  // mapping of the same memfd read after it (one process, but the same path the rings take).
  const fd = native.memfdCreateSealed('fence-test', 4096, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
  const a = new Uint32Array(native.mmap(fd, 0, 4096));
  const b = new Uint32Array(native.mmap(fd, 0, 4096));
  a[0] = 0x12345678;
  native.fence();
  t.equal(b[0], 0x12345678, 'a store before the fence is seen through the other mapping');
  native.munmap(a.buffer as ArrayBuffer);
  native.munmap(b.buffer as ArrayBuffer);
  native.close(fd);
  const start = process.hrtime.bigint();
  for (let i = 0; i < 100_000; i++) native.fence();
  const ns = Number(process.hrtime.bigint() - start) / 100_000;
  t.ok(ns < 5000, `about ${ns.toFixed(0)} ns per call`);
});
