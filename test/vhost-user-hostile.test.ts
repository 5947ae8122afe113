/**
 * vhost-user-hostile.test.ts — a hostile front-end (test/frontend, playing QEMU) against vhost-user
 * servers that run in a child process (test/helpers/hostile-server.ts), so that a server which
 * crashes or blocks its event loop fails the test instead of taking the runner with it. Beside
 * each attacked server the child runs a well-behaved one, whose front-end must keep working.
 *
 * Covers: memory regions that do not fit their fd or whose fd could shrink (SIGBUS policy,
 * memory.ts) or that exceed the address-space budget, kick/call/err fds that are not eventfds, blocking eventfds (a saturated call fd, a
 * blocking kick fd), memory fds closed exactly once when SET_MEM_TABLE / ADD_MEM_REG fail, a
 * throw injected into every kind of callback a connection registers (kick watcher, socket
 * watcher, deferred device work, server and connection listeners), and guest memory beyond 4 GiB
 * (rings and buffers at offsets past 4 and 32 GiB of a 64 GiB memfd).
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync, constants as fsc } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { logger } from '../src/sys/log.js';
import { native } from '../src/sys/native.js';
import { Connection, nativeMapper } from '../src/vhost-user/connection.js';
import type { Mapper } from '../src/vhost-user/memory.js';
import { encodeMemRegion, encodeMemTable, type MemRegionDesc } from '../src/vhost-user/messages.js';
import { Req } from '../src/vhost-user/protocol.js';
import { FrontendRequestError, VhostUserFrontend, type HandshakeResult } from './frontend/frontend.js';
import type { DriverQueue } from './frontend/driver-queue.js';
import { GuestMemoryImage, QEMU_MEMFD_SEALS, type RegionLayout } from './frontend/guest-memory.js';
import { LoopbackDevice } from './frontend/loopback-device.js';
import type { Inject, ServerChildEntry } from './helpers/hostile-server.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const HERE = dirname(fileURLToPath(import.meta.url));
const HELPER = join(HERE, 'helpers', 'hostile-server.ts');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-hostile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let childSeq = 0;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// The server child

class ServerChild {
  readonly proc: ChildProcess;
  readonly dir: string;
  out = '';
  err = '';
  exit: { code: number | null; signal: string | null } | null = null;

  constructor(servers: ServerChildEntry[]) {
    this.dir = join(dir, `c${childSeq++}`);
    mkdirSync(this.dir, { recursive: true });
    this.proc = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), HELPER, JSON.stringify({ dir: this.dir, servers })], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, VMPI_LOG_LEVEL: 'warn' },
    });
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    this.proc.on('exit', (code, signal) => (this.exit = { code, signal }));
  }

  static async start(tt: Test, servers: ServerChildEntry[]): Promise<ServerChild> {
    const c = new ServerChild(servers);
    tt.teardown(() => c.stop());
    await c.waitOut(/^READY$/m, 20_000);
    return c;
  }

  path(name: string): string {
    return join(this.dir, `${name}.sock`);
  }

  get alive(): boolean {
    return this.exit === null;
  }

  /** What the child's exit looked like, for assertion messages. */
  describe(): string {
    return this.exit ? `server process exited (code ${this.exit.code}, signal ${this.exit.signal}); stderr: ${this.err.slice(-800)}` : 'server process alive';
  }

  async waitOut(re: RegExp, ms = 5000): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.out);
      if (m) return m;
      if (!this.alive) throw new Error(`waiting for ${re}: ${this.describe()}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${re} on the server's stdout: ${this.out.slice(-500)}`);
      await sleep(5);
    }
  }

  async waitErr(re: RegExp, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.err)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${re} in the server log: ${this.err.slice(-800)}`);
      await sleep(5);
    }
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.proc.stdin!.end();
    const end = Date.now() + 5000;
    while (this.alive && Date.now() < end) await sleep(10);
    if (this.alive) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Front-end links and traffic

interface Link {
  fe: VhostUserFrontend;
  mem: GuestMemoryImage;
  hs: HandshakeResult;
  rx: DriverQueue;
  tx: DriverQueue;
  close(): void;
}

interface LinkOptions {
  layout?: number | RegionLayout[];
  queueSize?: number;
  /** Region for the rings (and the traffic's buffers). */
  region?: number;
  seals?: number;
}

async function connect(tt: Test, path: string, o: LinkOptions = {}): Promise<Link> {
  const mem = new GuestMemoryImage(o.layout ?? 16 * MiB, 'vmpi-hostile', { seals: o.seals });
  const fe = new VhostUserFrontend(path, { timeoutMs: 3000 });
  let hs: HandshakeResult;
  try {
    hs = await fe.handshake({ memory: mem, queues: [0, 1].map((index) => ({ index, size: o.queueSize ?? 64, region: o.region })) });
  } catch (e) {
    fe.close();
    mem.close();
    throw e;
  }
  let closed = false;
  const link: Link = {
    fe,
    mem,
    hs,
    rx: hs.queues[0]!,
    tx: hs.queues[1]!,
    close() {
      if (closed) return;
      closed = true;
      for (const q of hs.queues) q.close();
      fe.close();
      mem.close();
    },
  };
  tt.teardown(() => link.close());
  return link;
}

function pattern(seed: number, i: number, k: number): number {
  return (seed * 131 + i * 31 + k * 7) & 0xff;
}

/**
 * Send `count` buffers of `size` bytes on queue 1 and get them back on queue 0 (loopback device),
 * byte for byte, polling the used rings (so no call signal is needed). `kick` replaces the
 * queue's own kick (to kick through another fd).
 */
async function roundTrip(l: Link, o: { count?: number; size?: number; region?: number; kick?: () => void; ms?: number } = {}): Promise<void> {
  const count = o.count ?? 4;
  const size = o.size ?? 1500;
  const seed = Math.floor(Math.random() * 1000);
  const rxGpa: number[] = [];
  for (let i = 0; i < count; i++) {
    const gpa = l.mem.alloc(size, 64, o.region);
    rxGpa.push(gpa);
    if (l.rx.addBuffer(gpa, size, true, i) < 0) throw new Error('rx ring full');
  }
  l.rx.publish();
  for (let i = 0; i < count; i++) {
    const gpa = l.mem.alloc(size, 64, o.region);
    l.mem.write(gpa, Uint8Array.from({ length: size }, (_, k) => pattern(seed, i, k)));
    if (l.tx.addBuffer(gpa, size, false, i) < 0) throw new Error('tx ring full');
  }
  if (o.kick) {
    l.tx.publish();
    o.kick();
  } else if (!l.tx.publish()) {
    l.tx.kick();
  }
  const got = new Map<number, number>();
  const end = Date.now() + (o.ms ?? 3000);
  while (got.size < count) {
    l.rx.harvest((token, len) => got.set(token, len));
    l.tx.harvest(() => {});
    if (Date.now() > end) throw new Error(`only ${got.size} of ${count} buffers came back within ${o.ms ?? 3000} ms`);
    await sleep(2);
  }
  for (let i = 0; i < count; i++) {
    if (got.get(i) !== size) throw new Error(`buffer ${i}: length ${got.get(i)}, expected ${size}`);
    const back = l.mem.read(rxGpa[i]!, size);
    for (let k = 0; k < size; k++) if (back[k] !== pattern(seed, i, k)) throw new Error(`buffer ${i} byte ${k} differs`);
  }
}

/** The request must be refused with a failed REPLY_ACK. */
async function nacked(tt: Test, p: Promise<unknown>, what: string): Promise<void> {
  try {
    await p;
    tt.fail(`${what}: accepted`);
  } catch (e) {
    tt.ok(e instanceof FrontendRequestError && e.ackValue === 1n, `${what}: nacked (${(e as Error).message})`);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Make one buffer available on each queue and kick queue 1 (no waiting: the server may close). */
function postOne(l: Link): void {
  l.rx.addBuffer(l.mem.alloc(2048, 64), 2048, true, 0);
  l.rx.publish();
  const gpa = l.mem.alloc(100, 64);
  l.tx.addBuffer(gpa, 100, false, 0);
  l.tx.publish();
  l.tx.kick();
}

function unixPair(): [number, number] {
  const path = join(dir, `pair-${Math.random().toString(36).slice(2)}.sock`);
  const l = native.listenUnix(path, 1);
  const c = native.connectUnix(path);
  const s = native.accept(l);
  native.close(l);
  rmSync(path);
  return [c, s];
}

/**
 * An EFD_SEMAPHORE eventfd (each read takes 1 from the count), which Node cannot make: python3
 * creates one and passes it over a Unix socket. Null without python3.
 */
function semaphoreEventfd(): number | null {
  const path = join(dir, 'sem.sock');
  const lfd = native.listenUnix(path, 1);
  try {
    const py = `import os, socket, sys
fd = os.eventfd(5, os.EFD_SEMAPHORE | os.EFD_CLOEXEC)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
socket.send_fds(s, [b"x"], [fd])
`;
    const r = spawnSync('python3', ['-c', py, path], { timeout: 10_000 });
    if (r.status !== 0) return null;
    const cfd = native.accept(lfd);
    if (cfd < 0) return null;
    const got = native.recvMsg(cfd, new Uint8Array(1), 0, 1, 1);
    native.close(cfd);
    return got?.fds[0] ?? null;
  } finally {
    native.close(lfd);
    rmSync(path, { force: true });
  }
}

/** Drive an eventfd's counter to its maximum, 2^64 - 2 (a further write of 1 would block). */
function saturate(fd: number): void {
  for (let i = 0; i < 2100; i++) native.eventfdWrite(fd, Number.MAX_SAFE_INTEGER);
  for (let b = 52; b >= 0; b--) native.eventfdWrite(fd, 2 ** b);
}

// ---------------------------------------------------------------------------------------------
// 2. Memory regions: inside their fd, and sealed against shrinking

t.test('memory regions beyond the end of their fd, or whose fd could shrink, are refused', async (tt) => {
  const c = await ServerChild.start(tt, [{ name: 'strict' }, { name: 'trusting', allowUnsealedMemory: true }]);
  const l = await connect(tt, c.path('strict'));
  await roundTrip(l);
  const small = new GuestMemoryImage(MiB, 'vmpi-small');
  tt.teardown(() => small.close());
  const [d] = small.descs();
  const beyond: MemRegionDesc = { guestPhysAddr: 0x1000_0000, size: 2 * MiB, userAddr: 0x6000_0000_0000, mmapOffset: 0 };
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion(beyond), { fds: [small.fd] }), 'a 2 MiB region on a 1 MiB memfd');
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion({ ...beyond, size: MiB, mmapOffset: MiB }), { fds: [small.fd] }), 'a region at offset 1 MiB of a 1 MiB memfd');
  await c.waitErr(/beyond the end of its fd \(1048576 bytes/);

  const unsealed = new GuestMemoryImage(MiB, 'vmpi-unsealed', { seals: 0 });
  tt.teardown(() => unsealed.close());
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion({ ...unsealed.descs()[0]!, guestPhysAddr: 0x1000_0000, userAddr: 0x6100_0000_0000 }), { fds: [unsealed.fd] }), 'an unsealed memfd');
  await c.waitErr(/has no F_SEAL_SHRINK seal, so it could shrink under the mapping and crash the server/);

  const file = join(dir, 'file-backed-ram');
  const ffd = openSync(file, fsc.O_RDWR | fsc.O_CREAT, 0o600);
  tt.teardown(() => closeSync(ffd));
  ftruncateSync(ffd, MiB);
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion({ ...d!, guestPhysAddr: 0x1000_0000, userAddr: 0x6000_0000_0000 }), { fds: [ffd] }), 'a file-backed region (memory-backend-file)');
  await c.waitErr(new RegExp(`${escapeRe(file)}\\) (cannot be sealed|has no F_SEAL_SHRINK)`));

  tt.throws(() => ftruncateSync(l.mem.fd, 0), { code: 'EPERM' }, 'the front-end cannot shrink a sealed memfd under the server');
  await roundTrip(l);
  tt.notOk(l.fe.closed, 'the connection stayed up through the refusals');

  // A server told to trust its front-ends takes unsealed memory (and still checks the size).
  const trusting = await connect(tt, c.path('trusting'), { seals: 0 });
  await roundTrip(trusting);
  tt.pass('unsealed memfd accepted with allowUnsealedMemory');
  await nacked(tt, trusting.fe.request(Req.ADD_MEM_REG, encodeMemRegion(beyond), { fds: [small.fd] }), 'beyond the fd even when unsealed memory is allowed');
  tt.ok(c.alive, c.describe());
});

t.test('guest memory over the per-connection address-space budget (4 TiB) is refused', async (tt) => {
  const c = await ServerChild.start(tt, [{ name: 'budget' }]);
  const l = await connect(tt, c.path('budget'));
  const TiB = 2 ** 40;
  const huge = native.memfdCreateSealed('vmpi-huge', 6 * TiB, QEMU_MEMFD_SEALS); // sparse: free
  tt.teardown(() => native.close(huge));
  const region = (gpaTiB: number, sizeTiB: number, offTiB: number): MemRegionDesc => ({ guestPhysAddr: gpaTiB * TiB, size: sizeTiB * TiB, userAddr: 0x4000_0000_0000 + gpaTiB * TiB, mmapOffset: offTiB * TiB });
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion(region(1, 5, 0)), { fds: [huge] }), 'one 5 TiB region');
  await l.fe.request(Req.ADD_MEM_REG, encodeMemRegion(region(1, 3, 0)), { fds: [huge] });
  tt.pass('a 3 TiB region is mapped');
  await nacked(tt, l.fe.request(Req.ADD_MEM_REG, encodeMemRegion(region(8, 3, 3)), { fds: [huge] }), 'a second 3 TiB region');
  await c.waitErr(/over its budget of 4398046511104/);
  await roundTrip(l);
  tt.ok(c.alive, c.describe());
});

// ---------------------------------------------------------------------------------------------
// 3. Kick/call/err fds that are not eventfds

t.test('kick, call and err fds that are not eventfds are refused; the server lives', async (tt) => {
  const c = await ServerChild.start(tt, [{ name: 'victim' }, { name: 'good' }]);
  const good = await connect(tt, c.path('good'));
  const l = await connect(tt, c.path('victim'));
  await roundTrip(l);

  const fifo = join(dir, 'kick.fifo');
  spawnSync('mkfifo', [fifo]);
  const pipeFd = openSync(fifo, fsc.O_RDWR | fsc.O_NONBLOCK);
  const [sockA, sockB] = unixPair();
  const file = openSync(join(dir, 'kick.file'), fsc.O_RDWR | fsc.O_CREAT, 0o600);
  tt.teardown(() => {
    closeSync(pipeFd);
    closeSync(file);
    native.close(sockA);
    native.close(sockB);
  });
  for (const [what, fd] of [['a pipe (FIFO)', pipeFd], ['a Unix socket', sockA], ['a regular file', file]] as const) {
    await nacked(tt, l.fe.setVringFd(Req.SET_VRING_KICK, 1, fd), `SET_VRING_KICK with ${what}`);
    await nacked(tt, l.fe.setVringFd(Req.SET_VRING_CALL, 0, fd), `SET_VRING_CALL with ${what}`);
    await nacked(tt, l.fe.setVringFd(Req.SET_VRING_ERR, 0, fd), `SET_VRING_ERR with ${what}`);
  }
  const sem = semaphoreEventfd();
  if (sem === null) {
    tt.comment('python3 missing: EFD_SEMAPHORE eventfd not tried');
  } else {
    tt.teardown(() => native.close(sem));
    await nacked(tt, l.fe.setVringFd(Req.SET_VRING_KICK, 1, sem), 'SET_VRING_KICK with an EFD_SEMAPHORE eventfd');
    await c.waitErr(/is an EFD_SEMAPHORE eventfd; send a plain eventfd/);
  }
  await c.waitErr(new RegExp(`is ${escapeRe(fifo)}, not an eventfd; send an eventfd`));
  await c.waitErr(/is socket:\[\d+\], not an eventfd/);
  // Had the server taken them, these bytes would be a short read on a kick fd.
  writeSync(pipeFd, Uint8Array.of(1, 2, 3));
  native.sendMsg(sockB, Uint8Array.of(1, 2, 3), 0, 3, null);
  await sleep(100);
  tt.ok(c.alive, c.describe());
  // The refused fds replaced nothing: the queues run on their eventfds.
  await roundTrip(l);
  await roundTrip(good);
  tt.notOk(l.fe.closed, 'the connection stayed up');
});

// ---------------------------------------------------------------------------------------------
// 4. Blocking eventfds

t.test('a blocking call eventfd at its maximum count and a blocking kick eventfd never block the server', async (tt) => {
  const c = await ServerChild.start(tt, [{ name: 'victim' }, { name: 'good' }]);
  const good = await connect(tt, c.path('good'));
  const l = await connect(tt, c.path('victim'));

  const call = native.eventfd(0);
  saturate(call);
  tt.match(readFileSync(`/proc/self/fdinfo/${call}`, 'utf8'), /eventfd-count:\s+fffffffffffffffe/, 'call counter at 2^64-2');
  native.setNonblock(call, false);
  await l.fe.setVringFd(Req.SET_VRING_CALL, 0, call);
  await l.fe.setVringFd(Req.SET_VRING_CALL, 1, call);
  // Every used buffer makes the server write 1 to the call fd: that write would block forever.
  await roundTrip(l, { count: 8 });
  await roundTrip(good);
  tt.ok(c.alive, c.describe());
  tt.match(readFileSync(`/proc/self/fdinfo/${call}`, 'utf8'), /eventfd-count:\s+fffffffffffffffe/, 'the counter stayed saturated: a full counter is "already signalled"');
  // The server made the fd non-blocking; the front-end shares that flag and clears it again.
  native.setNonblock(call, false);
  l.rx.enableCalls(); // ask for a call again (event idx): the server will write the call fd
  l.tx.enableCalls();
  await roundTrip(l, { count: 8 });
  await roundTrip(good);
  tt.ok(c.alive, `O_NONBLOCK cleared behind the server's back: ${c.describe()}`);

  const kick = native.eventfd(0);
  native.setNonblock(kick, false);
  await l.fe.setVringFd(Req.SET_VRING_KICK, 1, kick);
  // The server reads the counter, then (were the fd still blocking and read twice) would wait.
  await roundTrip(l, { kick: () => native.eventfdWrite(kick, 1) });
  await roundTrip(l, { kick: () => native.eventfdWrite(kick, 1) });
  await roundTrip(good);
  tt.ok(c.alive, c.describe());
  native.close(call);
  native.close(kick);
});

// ---------------------------------------------------------------------------------------------
// 10. Memory fds closed exactly once when SET_MEM_TABLE / ADD_MEM_REG fail

t.test('memory fds are closed exactly once when SET_MEM_TABLE or ADD_MEM_REG fails', async (tt) => {
  const path = join(dir, 'count.sock');
  const lfd = native.listenUnix(path, 1);
  tt.teardown(() => native.close(lfd));
  // Received fds get reused numbers, so count closes and catch the second close of one fd as
  // the EBADF it is (between the two closes of one failed request nothing reopens the number).
  let closes = 0;
  const doubles: string[] = [];
  const counting: Mapper = {
    ...nativeMapper,
    closeFd: (fd) => {
      try {
        native.close(fd);
        closes++;
      } catch (e) {
        doubles.push(`fd ${fd}: ${(e as Error).message}`);
      }
    },
  };
  const fe = new VhostUserFrontend(path);
  tt.teardown(() => fe.close());
  const sfd = native.accept(lfd);
  const conn = new Connection(sfd, new LoopbackDevice(), logger, { mapper: counting });
  tt.teardown(() => conn.close('test over'));
  const mem = new GuestMemoryImage(4 * MiB);
  tt.teardown(() => mem.close());
  await fe.handshake({ memory: mem, queues: [] });
  tt.equal(closes, 0);

  // Three regions, the second beyond the end of its memfd: region 1 mapped, 2 refused, 3 never tried.
  const table: MemRegionDesc[] = [
    { guestPhysAddr: 0, size: MiB, userAddr: 0x7000_0000_0000, mmapOffset: 0 },
    { guestPhysAddr: 0x1000_0000, size: 8 * MiB, userAddr: 0x7100_0000_0000, mmapOffset: 0 },
    { guestPhysAddr: 0x2000_0000, size: MiB, userAddr: 0x7200_0000_0000, mmapOffset: MiB },
  ];
  await nacked(tt, fe.request(Req.SET_MEM_TABLE, encodeMemTable(table), { fds: [mem.fd, mem.fd, mem.fd] }), 'SET_MEM_TABLE with a bad second region');
  await nacked(tt, fe.request(Req.ADD_MEM_REG, encodeMemRegion({ ...table[1]! }), { fds: [mem.fd] }), 'ADD_MEM_REG beyond its fd');
  tt.equal(conn.state.memoryFds.length, 1, 'the first region of the failed table stays mapped');
  tt.same(doubles, [], 'no fd closed twice');
  tt.equal(closes, 4, "closed: the handshake's region (replaced), the refused region, the one never tried, ADD_MEM_REG's");
  conn.close('done');
  tt.same(doubles, [], 'no fd closed twice');
  tt.equal(closes, 5, 'and the mapped region by close()');
});

// ---------------------------------------------------------------------------------------------
// Process-level guard: a throw in any callback a connection registers costs that connection only

t.test('a throw injected into each kind of connection callback closes that connection only', async (tt) => {
  const victims: [string, Inject[], string][] = [
    ['kick', ['kicked', 'queueStopped', 'reset'], 'kick watcher'],
    ['socket', ['queueStopped', 'reset'], 'socket watcher'],
    ['defer', ['defer', 'reset'], 'deferred device work'],
    ['conn-listener', ['connectionListener'], "server 'connection' listener"],
    ['close-listener', ['closeListener', 'reset'], "connection 'close' listener"],
  ];
  const c = await ServerChild.start(tt, [
    ...victims.map(([name, inject]) => ({ name, inject })),
    { name: 'sdu', device: 'vmpi' as const, inject: ['sduHandler' as Inject] },
    { name: 'good' },
  ]);
  const good = await connect(tt, c.path('good'));
  await roundTrip(good);

  const afterAttack = async (name: string, what: string, l: Link | null): Promise<void> => {
    if (l) {
      const reason = await l.fe.waitClosed(5000).catch((e: Error) => `not closed: ${e.message}`);
      tt.match(reason, /closed/, `${what}: the attacked connection was closed (${reason})`);
      l.close();
    }
    tt.ok(c.alive, `${what}: ${c.describe()}`);
    await roundTrip(good);
    tt.pass(`${what}: the well-behaved connection still works`);
    if (name === 'conn-listener') return;
    // The attacked server released the connection: it serves a new front-end.
    const again = await connect(tt, c.path(name));
    tt.pass(`${what}: the attacked server accepts a new front-end`);
    again.close();
  };

  // Kick watcher: kicked() throws, and so do queueStopped() and reset() while the connection closes.
  {
    const l = await connect(tt, c.path('kick'));
    postOne(l);
    await c.waitOut(/DISCONNECT \{"server":"kick".*"cause":"internal_error"/);
    await afterAttack('kick', 'kick watcher', l);
  }
  // Socket watcher: the front-end hangs up; queueStopped() and reset() throw during the close.
  {
    const l = await connect(tt, c.path('socket'));
    await roundTrip(l); // arms the device
    l.fe.close();
    await c.waitOut(/DISCONNECT \{"server":"socket"/);
    await afterAttack('socket', 'socket watcher', null);
    l.close();
  }
  // Deferred work (ReadyQueue.defer, the device's setImmediate) throws.
  {
    const l = await connect(tt, c.path('defer'));
    postOne(l);
    await c.waitOut(/DISCONNECT \{"server":"defer".*deferred work of queue \d.*"cause":"internal_error"/);
    await afterAttack('defer', 'deferred device work', l);
  }
  // A 'connection' listener of the server throws: that front-end is closed, accepting goes on.
  {
    const fe = new VhostUserFrontend(c.path('conn-listener'));
    tt.teardown(() => fe.close());
    const reason = await fe.waitClosed(5000);
    tt.match(reason, /closed/, `front-end closed by the server (${reason})`);
    await afterAttack('conn-listener', "server 'connection' listener", null);
    const fe2 = new VhostUserFrontend(c.path('conn-listener'));
    tt.teardown(() => fe2.close());
    await fe2.waitClosed(5000);
    tt.pass('and the next front-end is handled the same way');
  }
  // A 'close' listener throws while the connection closes.
  {
    const l = await connect(tt, c.path('close-listener'));
    await roundTrip(l);
    l.fe.close();
    await c.waitOut(/DISCONNECT \{"server":"close-listener"/);
    await afterAttack('close-listener', "connection 'close' listener", null);
    l.close();
  }
  // The VMPI device's own deferred batch: its SDU handler throws at SDU 300 (the first batch is 256).
  {
    const l = await connect(tt, c.path('sdu'), { queueSize: 512 });
    for (let i = 0; i < 400; i++) {
      const gpa = l.mem.alloc(64, 16);
      l.mem.write(gpa, Uint8Array.of(1, 0, 0, 0, i & 0xff, i >> 8));
      l.tx.addBuffer(gpa, 6, false, i);
    }
    l.tx.publish();
    l.tx.kick();
    await c.waitOut(/SDUS sdu 300/);
    await c.waitOut(/DISCONNECT \{"server":"sdu".*SDU handler.*"cause":"internal_error"/);
    await afterAttack('sdu', 'VMPI device deferred batch', l);
  }
  tt.ok(c.alive, c.describe());
});

// ---------------------------------------------------------------------------------------------
// 1. Guest memory beyond 4 GiB

t.test('guest memory of 64 GiB: rings and buffers beyond 4 and 32 GiB into a region', async (tt) => {
  const c = await ServerChild.start(tt, [{ name: 'big' }]);
  // 8 GiB at guest 0, then 56 GiB at guest 64 GiB (mmap offset 8 GiB): what QEMU sends for a
  // large VM (RAM below and above the PCI hole), all from one sealed memfd. Untouched: free.
  const layout: RegionLayout[] = [
    { gpa: 0, size: 8 * GiB },
    { gpa: 64 * GiB, size: 56 * GiB },
  ];
  const mem = new GuestMemoryImage(layout, 'vmpi-64g');
  tt.teardown(() => mem.close());
  mem.regions[1]!.next = 40 * GiB; // rings and buffers 40 GiB into the region: file offset 48 GiB
  mem.regions[0]!.next = 5 * GiB; // and past 4 GiB into the first one
  const fe = new VhostUserFrontend(c.path('big'), { timeoutMs: 5000 });
  const hs = await fe.handshake({ memory: mem, queues: [0, 1].map((index) => ({ index, size: 64, region: index })) });
  const l: Link = { fe, mem, hs, rx: hs.queues[0]!, tx: hs.queues[1]!, close: () => {} };
  tt.teardown(() => {
    for (const q of hs.queues) q.close();
    fe.close();
  });
  tt.ok(l.rx.descGpa >= 5 * GiB && l.tx.descGpa > 100 * GiB, `rings at 0x${l.rx.descGpa.toString(16)} and 0x${l.tx.descGpa.toString(16)}`);
  await roundTrip(l, { count: 8, size: 65536, region: 1 });
  await roundTrip(l, { count: 8, size: 4000, region: 0 });
  // A buffer straddling the 4 GiB mark of region 0's mapping (below its rings at 5 GiB).
  mem.regions[0]!.next = 4 * GiB - 4096;
  await roundTrip(l, { count: 1, size: 8192, region: 0 });
  tt.pass('data both ways through rings and buffers beyond 4 GiB');
  tt.ok(c.alive, c.describe());
});
