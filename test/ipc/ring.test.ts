/**
 * ring.test.ts — the 'ring' data path's codec and indices (src/dif/ipc/ring.ts) with both ends in
 * one process on one real sealed memfd and socketpair: wrap, full, empty, 0-byte and max-SDU
 * records, the doorbell handshake; a hostile writer (every bad index and length) against the
 * reader and a hostile reader (consumer index) against the writer: each ends the ring with a
 * cause, never an exception; and the checks an application makes before it maps a ring.
 */
import t, { type Test } from 'tap';
import { native } from '../../src/sys/native.js';
import { safeClose } from '../../src/sys/fd.js';
import { createRing, HEADER_BYTES, mapRing, RING_BROKEN, RING_EMPTY, RING_WRAP, RingEnd, RingError, ringBytesFor, ringFileBytes, type RingMap } from '../../src/dif/ipc/ring.js';
import { RECORD_BELL, type RecordSink } from '../../src/dif/ipc/record.js';
import { SduBatchBuffer } from '../../src/dif/sdu-batch.js';

const MAX_SDU = 1500;

interface Pair {
  daemon: RingEnd;
  app: RingEnd;
  map: RingMap;
  appMap: RingMap;
  /** The daemon's and the application's socket ends. */
  fds: [number, number];
}

function ringPair(t: Test, maxSdu = MAX_SDU): Pair {
  const { fd, map } = createRing(maxSdu);
  const appMap = mapRing(fd, map.dataBytes, maxSdu);
  safeClose(fd);
  const fds = native.socketpairSeqpacket();
  const daemon = new RingEnd(map, fds[0], 'daemon');
  const app = new RingEnd(appMap, fds[1], 'app');
  t.teardown(() => {
    map.unmap();
    appMap.unmap();
    safeClose(fds[0]);
    safeClose(fds[1]);
  });
  return { daemon, app, map, appMap, fds };
}

/**
 * A sink that keeps what it gets; `shared`: it takes views of the ring's memory (RecordSink.shared)
 * and copies them; 'lent': a batch that points into the ring (RecordSink.lends), copied out by
 * `take()` after the read (as a Flow's 'sdus' listener would use it) and then released.
 */
function collector(shared: boolean | 'lent' = false): { sink: RecordSink; got: Uint8Array[]; bad: string[]; take: (end: RingEnd) => void } {
  const got: Uint8Array[] = [];
  const bad: string[] = [];
  const batch = new SduBatchBuffer(4096);
  const sink: RecordSink =
    shared === 'lent'
      ? { lends: true, into: batch, sdu: () => t.fail('a lending read hands no SDU to sdu()'), bad: (w) => bad.push(w), fds: () => bad.push('fds') }
      : shared
        ? { shared: true, sdu: (b) => void got.push(b.slice()), bad: (w) => bad.push(w), fds: () => bad.push('fds') }
        : { copies: true, sdu: (b) => void got.push(b), bad: (w) => bad.push(w), fds: () => bad.push('fds') };
  const take = (end: RingEnd): void => {
    if (shared !== 'lent') return;
    for (let i = 0; i < batch.count; i++) got.push(batch.sdu(i).slice());
    batch.reset(new Uint8Array(0));
    end.releaseLent();
  };
  return { got, bad, sink, take };
}

/** Doorbells waiting on socket `fd` (read and counted). */
function bells(fd: number): number {
  const b = new Uint8Array(16);
  let n = 0;
  for (;;) {
    const r = native.recvBytes(fd, b, 0, 16);
    if (r < 0) return n;
    if (r === 1 && b[0] === RECORD_BELL) n++;
  }
}

function sdu(i: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = (i + k) & 0xff;
  return b;
}

/** Application → daemon direction's words (the app writes P, the daemon C). */
const W = { P: (256 + 1024) >> 2, C: (256 + 1024 + 256) >> 2, sleeping: (256 + 1024 + 512) >> 2, waiting: (256 + 1024 + 768) >> 2 };
/** Daemon → application direction's words. */
const R = { P: 256 >> 2, C: (256 + 256) >> 2 };
const dataTo = (m: RingMap): number => HEADER_BYTES + m.dataBytes; // application → daemon data area

t.test('sizes: 8 max-SDU records or 4 MiB, a power of two; too large a max SDU takes no ring', async (t) => {
  t.equal(ringBytesFor(1500), 4 << 20);
  t.equal(ringBytesFor(65536), 4 << 20);
  t.equal(ringBytesFor(600_000), 8 << 20);
  t.equal(ringBytesFor(4 << 20), 0, 'beyond the cap: the socket');
  t.equal(ringFileBytes(1 << 20), 4096 + (2 << 20));
});

for (const shared of [false, true, 'lent'] as const) t.test(`round trip across many wraps: order, bytes, 0-byte and max-SDU records${shared === 'lent' ? ' (lent into a batch)' : shared ? ' (read in place)' : ''}`, async (t) => {
  const p = ringPair(t);
  const c = collector(shared);
  const sent: Uint8Array[] = [];
  let i = 0;
  let refused = 0;
  // ~24 MiB through a 4 MiB ring: many wraps, at every alignment.
  while (i < 32000) {
    for (let k = 0; k < 100; k++, i++) {
      const len = i % 11 === 0 ? 0 : i % 13 === 0 ? MAX_SDU : (i * 37) % 1501;
      const s = sdu(i, len);
      if (p.app.offer(s) !== 'queued') refused++;
      sent.push(s);
    }
    t.equal(p.app.flush(), 'done');
    while (p.daemon.read(c.sink, 64) > 0) c.take(p.daemon);
  }
  t.equal(refused, 0, 'every offer taken');
  t.equal(c.got.length, sent.length, 'every SDU');
  let same = true;
  for (let k = 0; k < sent.length; k++) if (Buffer.compare(c.got[k]!, sent[k]!) !== 0) same = false;
  t.ok(same, 'in order, each whole');
  t.same(c.bad, []);
  t.equal(p.daemon.read(c.sink, 64), RING_EMPTY, 'empty at the end');
  t.equal(p.daemon.broken, null);
});

t.test('full: offer says full once the reader lags, nothing lost; the writer waits and a doorbell brings room', async (t) => {
  const p = ringPair(t);
  const c = collector();
  let n = 0;
  while (p.app.offer(sdu(n, 1000)) === 'queued') n++;
  t.ok(n > 3900 && n < 4300, `about 4 MiB taken (${n} SDUs of 1000 bytes)`);
  t.equal(p.app.offer(sdu(n, 1000)), 'full', 'still full');
  t.notOk(p.app.waitRoom(), 'no room: waits (flag set)');
  t.equal(p.appMap.u32[W.waiting], 1, 'writer-waiting flag set');
  bells(p.fds[1]);
  t.ok(p.daemon.read(c.sink, 10) === 10, 'the reader takes 10');
  t.equal(bells(p.fds[1]), 0, 'no doorbell yet: the writer is woken to a quarter of the ring, not to room for one record');
  t.equal(p.appMap.u32[W.waiting], 1, 'the writer still waits');
  let taken = 10;
  while (p.appMap.u32[W.waiting] === 1 && taken < n) taken += p.daemon.read(c.sink, 10);
  const quarter = n / 4;
  t.ok(taken >= quarter - 10 && taken <= quarter + 20, `the doorbell came once about a quarter was read (${taken} of ${n})`);
  t.equal(bells(p.fds[1]), 1, 'one doorbell for the waiting writer');
  t.equal(p.appMap.u32[W.waiting], 0, 'its flag cleared by the reader as it rang');
  t.ok(p.daemon.read(c.sink, 10) === 10, 'the reader takes 10 more');
  t.equal(bells(p.fds[1]), 0, 'no second doorbell for the same wait');
  t.ok(p.app.waitRoom(), 'room now');
  while (p.daemon.read(c.sink, 256) > 0);
  t.equal(c.got.length, n, 'every SDU that was taken arrived');
  t.equal(c.got.every((b, i) => Buffer.compare(b, sdu(i, 1000)) === 0), true, 'in order');
});

t.test('a sink that can take no more (sdu() returns false) stops the read there: the rest stays in the ring, in order', async (t) => {
  for (const shared of [false, true]) {
    const p = ringPair(t);
    const got: Uint8Array[] = [];
    let room = 5;
    // Takes SDUs while it has room; the one that finds none it keeps too, then says stop.
    const sink: RecordSink = { ...(shared ? { shared: true } : { copies: true }), sdu: (b) => (got.push(b.slice()), --room > 0), bad: () => t.fail('bad'), fds: () => t.fail('fds') };
    for (let i = 0; i < 100; i++) t.equal(p.app.offer(sdu(i, 1000)), 'queued');
    p.app.flush();
    const mode = shared ? 'in place' : 'copied out';
    t.equal(p.daemon.read(sink, 256), 5, `${mode}: the read stopped at the SDU that found no room (5 of 100 published)`);
    t.equal(got.length, 5, `${mode}: the sink was handed 5, not every published record`);
    room = 1000;
    t.equal(p.daemon.read(sink, 256), 95, `${mode}: the next read takes the other 95 from the ring`);
    t.ok(got.length === 100 && got.every((b, i) => Buffer.compare(b, sdu(i, 1000)) === 0), `${mode}: all 100 in order, none twice`);
  }
});

t.test('empty and the sleep handshake: a doorbell only while the reader sleeps', async (t) => {
  const p = ringPair(t);
  const c = collector();
  t.equal(p.daemon.read(c.sink, 64), RING_EMPTY);
  t.ok(p.daemon.sleep(), 'nothing published: the reader may sleep');
  bells(p.fds[0]);
  p.app.offer(sdu(1, 10));
  p.app.flush();
  t.equal(bells(p.fds[0]), 1, 'the writer rang the sleeping reader');
  t.equal(p.map.u32[W.sleeping], 0, 'and cleared its flag as it rang');
  p.app.offer(sdu(11, 10));
  p.app.flush();
  t.equal(bells(p.fds[0]), 0, 'one doorbell per sleep: a second publish before the reader runs does not ring again');
  p.daemon.wake();
  p.app.offer(sdu(2, 10));
  p.app.flush();
  t.equal(bells(p.fds[0]), 0, 'no doorbell for an awake reader');
  t.equal(p.daemon.read(c.sink, 64), 3);
  p.app.offer(sdu(3, 10));
  p.app.flush();
  t.notOk(p.daemon.sleep(), 'something came: sleep() says read again');
  t.equal(p.map.u32[W.sleeping], 0, 'and the flag is clear');
  t.equal(p.daemon.read(c.sink, 64), 1);
  t.equal(p.app.offer(new Uint8Array(MAX_SDU + 4)), 'too_large', 'over the max SDU: refused');
});

t.test('a wrap marker and a record that ends exactly at the end of the data area', async (t) => {
  const p = ringPair(t);
  const c = collector();
  const D = p.map.dataBytes;
  // Fill to 8 bytes before the end with records of 1000 bytes then one that ends at D - 8.
  let sent = 0;
  let used = 0;
  while (D - 8 - used - 4 > MAX_SDU) {
    p.app.offer(sdu(sent++, 1000));
    used += 1004;
  }
  const last = D - 8 - used - 4;
  p.app.offer(sdu(sent++, last));
  p.app.offer(sdu(sent++, 0)); // 4 bytes
  p.app.offer(sdu(sent++, 0)); // 4 bytes: exactly at the end
  p.app.flush();
  t.equal(p.app.offer(sdu(sent, 500)), 'full', 'the ring is exactly full');
  while (p.daemon.read(c.sink, 256) > 0);
  t.equal(p.app.offer(sdu(sent++, 500)), 'queued', 'then from position 0');
  p.app.flush();
  while (p.daemon.read(c.sink, 256) > 0);
  t.equal(c.got.length, sent);
  t.equal(p.daemon.broken, null);
  // Now one that needs a wrap marker: consume to 4 bytes before the end.
  const c2 = collector();
  const q = ringPair(t);
  let u = 0;
  let k = 0;
  while (u + 1004 <= D - 1004) {
    q.app.offer(sdu(k++, 1000));
    u += 1004;
  }
  q.app.flush();
  while (q.daemon.read(c2.sink, 256) > 0);
  q.app.offer(sdu(k++, 1500)); // does not fit before the end: a wrap marker, then at 0
  q.app.flush();
  t.equal(q.daemon.read(c2.sink, 256), 1, 'the record after the wrap marker');
  t.equal(c2.got.at(-1)!.byteLength, 1500);
  t.equal(q.daemon.broken, null);
});

t.test('read in place: a shared sink gets views of the ring itself; the consumer index moves only after the last', async (t) => {
  const p = ringPair(t);
  for (let i = 0; i < 5; i++) p.app.offer(sdu(i, 1000));
  p.app.flush();
  const seen: { inRing: boolean; cAt: number; ok: boolean }[] = [];
  const sink: RecordSink = {
    shared: true,
    sdu: (b) => void seen.push({ inRing: b.buffer === p.map.buffer, cAt: p.map.u32[W.C]!, ok: Buffer.compare(b, sdu(seen.length, 1000)) === 0 }),
    bad: () => t.fail('bad'),
    fds: () => t.fail('fds'),
  };
  t.equal(p.daemon.read(sink, 64), 5);
  t.ok(seen.every((s) => s.inRing), 'each SDU a view of the shared memory (no copy)');
  t.ok(seen.every((s) => s.cAt === 0), 'nothing consumed while the views are lent');
  t.ok(seen.every((s) => s.ok), 'each SDU whole');
  t.equal(p.map.u32[W.C], 5 * 1004, 'all consumed after');
});

t.test('lent into a batch: views of the ring itself, the room kept until releaseLent() or the next read', async (t) => {
  const p = ringPair(t);
  for (let i = 0; i < 5; i++) p.app.offer(sdu(i, 1000));
  p.app.flush();
  const batch = new SduBatchBuffer(4096);
  const sink: RecordSink = { lends: true, into: batch, sdu: () => t.fail('sdu()'), bad: () => t.fail('bad'), fds: () => t.fail('fds') };
  t.equal(p.daemon.read(sink, 3), 3, 'three of five (max)');
  t.equal(batch.count, 3);
  t.ok([0, 1, 2].every((i) => batch.sdu(i).buffer === p.map.buffer), 'each SDU a view of the shared memory (no copy)');
  t.ok([0, 1, 2].every((i) => Buffer.compare(batch.sdu(i), sdu(i, 1000)) === 0), 'each SDU whole');
  t.equal(p.map.u32[W.C], 0, 'nothing consumed while lent: the writer cannot reuse those bytes');
  p.daemon.releaseLent();
  t.equal(p.map.u32[W.C], 3 * 1004, 'consumed once released');
  p.daemon.releaseLent();
  t.equal(p.map.u32[W.C], 3 * 1004, 'a second release gives back nothing more');
  t.equal(p.daemon.read(sink, 64), 2, 'the other two');
  t.ok(Buffer.compare(batch.sdu(0), sdu(3, 1000)) === 0 && Buffer.compare(batch.sdu(1), sdu(4, 1000)) === 0, 'in order after the first three');
  t.equal(p.daemon.read(sink, 64), RING_EMPTY, 'a read releases what the last one lent, then finds nothing');
  t.equal(p.map.u32[W.C], 5 * 1004, 'all consumed');
  // A batch that is full stops the read there: the rest waits in the ring, nothing skipped.
  for (let i = 5; i < 10; i++) p.app.offer(sdu(i, 100));
  p.app.flush();
  const small = new SduBatchBuffer(2);
  const smallSink: RecordSink = { ...sink, into: small };
  t.equal(p.daemon.read(smallSink, 64), 2, 'two fit the batch');
  t.equal(p.daemon.read(smallSink, 64), 2, 'the next two');
  t.ok(Buffer.compare(small.sdu(0), sdu(7, 100)) === 0, 'none skipped');
  // Unmapped while lent (the flow ended inside its listener): releasing is a no-op, no throw.
  p.map.unmap();
  t.doesNotThrow(() => p.daemon.releaseLent(), 'release after unmap');
});

/** A daemon reader over a ring whose application side the test writes by hand (`shared`: it reads in place). */
function hostile(t: Test, shared: boolean | 'lent' = false): { p: Pair; put: (pos: number, len: number) => void; publish: (P: number) => void; read: () => { r: number; got: number; why: string | null } } {
  const p = ringPair(t);
  const u8 = p.appMap.u8;
  const base = dataTo(p.appMap);
  return {
    p,
    put: (pos, len) => new DataView(u8.buffer).setUint32(base + pos, len >>> 0, true),
    publish: (P) => {
      p.appMap.u32[W.P] = P >>> 0;
    },
    read: () => {
      const c = collector(shared);
      let r: number;
      try {
        r = p.daemon.read(c.sink, 64);
      } catch (e) {
        t.fail(`read threw: ${(e as Error).message}`);
        r = 0;
      }
      c.take(p.daemon);
      return { r, got: c.got.length, why: p.daemon.broken };
    },
  };
}

for (const shared of [false, true, 'lent'] as const) t.test(`a hostile writer: every bad index and length ends the ring with a cause, never a throw${shared === 'lent' ? ' (lent into a batch)' : shared ? ' (read in place)' : ''}`, async (t) => {
  const D = ringBytesFor(MAX_SDU);
  const cases: [string, (h: ReturnType<typeof hostile>) => void, RegExp][] = [
    ['producer index more than the ring ahead', (h) => h.publish(D + 4), /producer index .* out of range/],
    ['producer index behind the consumer', (h) => h.publish(-4), /producer index .* out of range/],
    ['producer index not 4-aligned', (h) => (h.put(0, 0), h.publish(6)), /producer index .* out of range/],
    ['a length over the max SDU', (h) => (h.put(0, MAX_SDU + 1), h.publish(8 + MAX_SDU)), /exceeds the flow's max SDU/],
    ['a length past the published data', (h) => (h.put(0, 100), h.publish(8)), /runs past the published data/],
    ['a length of 2^31', (h) => (h.put(0, 0x80000000), h.publish(64)), /exceeds the flow's max SDU/],
    [
      'a record across the end of the data area',
      (h) => {
        // Move both indices to 8 bytes before the end, then a record of 100 bytes there.
        h.p.map.u32[W.C] = D - 8;
        (h.p.daemon as unknown as { c: number }).c = D - 8;
        h.put(D - 8, 100);
        h.publish(D - 8 + 104);
      },
      /runs past the published data or the ring's end/,
    ],
    [
      'a wrap marker in the part after the wrap',
      (h) => {
        h.p.map.u32[W.C] = D - 8;
        (h.p.daemon as unknown as { c: number }).c = D - 8;
        h.put(D - 8, RING_WRAP);
        h.put(0, RING_WRAP);
        h.publish(D - 8 + 8 + 16);
      },
      /wrap marker that skips past/,
    ],
  ];
  for (const [what, setup, why] of cases) {
    const h = hostile(t, shared);
    setup(h);
    const r = h.read();
    t.equal(r.r, RING_BROKEN, `${what}: broken`);
    t.match(r.why ?? '', why, `${what}: says why`);
    t.equal(h.read().r, RING_BROKEN, `${what}: stays broken`);
  }
  // Good records before a bad one still arrive (then the ring is broken).
  const h = hostile(t, shared);
  h.put(0, 4);
  h.put(8, MAX_SDU + 100);
  h.publish(8 + 4 + MAX_SDU + 100);
  const r = h.read();
  t.equal(r.got, 1, 'the good record before the bad one arrived');
  t.equal(r.r, RING_BROKEN);
});

t.test('a hostile reader: a consumer index moving backwards or past the published data ends the writer', async (t) => {
  for (const [what, C] of [
    ['backwards', -4],
    ['past the published data', 0x7ffffff0],
    ['unaligned', 2],
  ] as const) {
    const p = ringPair(t);
    for (let i = 0; i < 10; i++) p.daemon.offer(sdu(i, 100));
    p.daemon.flush();
    p.appMap.u32[R.C] = C >>> 0;
    // Fill until the writer looks at the index.
    let r: string = 'queued';
    for (let i = 0; i < 20000 && r === 'queued'; i++) r = p.daemon.offer(sdu(i, 1000));
    t.equal(r, 'closed', `${what}: the writer stops`);
    t.match(p.daemon.broken ?? '', /consumer index .* moved backwards or past/, `${what}: says why`);
    t.equal(p.daemon.flush(), 'closed');
  }
  // A reader that never consumes: the writer stops ('full'), nothing more taken, nothing thrown.
  const p = ringPair(t);
  let n = 0;
  while (p.daemon.offer(sdu(n, 1000)) === 'queued') n++;
  t.equal(p.daemon.offer(sdu(n, 1000)), 'full', 'a stalled reader: full (backpressure)');
  t.equal(p.daemon.broken, null, 'not broken: just full');
});

t.test('mapRing refuses an unsealed memfd, a wrong size and a foreign header', async (t) => {
  const D = ringBytesFor(MAX_SDU);
  const size = ringFileBytes(D);
  const unsealed = native.memfdCreateSealed('x', size, 0);
  t.throws(() => mapRing(unsealed, D, MAX_SDU), RingError, 'unsealed: refused (it could shrink under us: SIGBUS)');
  safeClose(unsealed);
  const small = native.memfdCreateSealed('x', size - 4096, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
  t.throws(() => mapRing(small, D, MAX_SDU), /is \d+ bytes, not/, 'too small: refused');
  safeClose(small);
  const blank = native.memfdCreateSealed('x', size, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
  t.throws(() => mapRing(blank, D, MAX_SDU), /header/, 'no header: refused');
  safeClose(blank);
  const { fd, map } = createRing(MAX_SDU);
  t.throws(() => mapRing(fd, D, MAX_SDU + 1), /header/, 'another max SDU: refused');
  t.throws(() => mapRing(fd, 3000, MAX_SDU), /power of two/, 'a bad size: refused');
  t.ok((native.fdSeals(fd) & (native.F_SEAL_SHRINK | native.F_SEAL_GROW | native.F_SEAL_SEAL)) !== 0, 'the daemon sealed it');
  map.unmap();
  safeClose(fd);
});

t.test("the protocol: a request's rings flag, and a 'ring' answer must say its size", async (t) => {
  const { parseClientRequest, parseDaemonMessage } = await import('../../src/dif/ipc/protocol.js');
  t.match(parseClientRequest({ op: 'accept', id: 1, request: 2, rings: true }), { rings: true });
  t.notOk('rings' in parseClientRequest({ op: 'accept', id: 1, request: 2 }), 'absent: an older client');
  t.notOk('rings' in parseClientRequest({ op: 'allocate', id: 1, dif: 'd', src: 'a', dst: 'b', rings: 'yes' }), 'only true counts');
  const flow = { flow: 1, portId: 1, dif: 'd', localApp: 'a', remoteApp: 'b', qos: { reliable: false, inOrder: false, maxSdu: 1500 } };
  t.match(parseDaemonMessage({ op: 'result', id: 1, flow: { ...flow, datapath: 'ring', ring: { bytes: 1 << 20 } } }), { flow: { datapath: 'ring', ring: { bytes: 1 << 20 } } });
  t.throws(() => parseDaemonMessage({ op: 'result', id: 1, flow: { ...flow, datapath: 'ring' } }), /flow ring/, "'ring' without its size: refused");
  t.match(parseDaemonMessage({ op: 'result', id: 1, flow }), { flow: { datapath: 'socket' } }, 'an older daemon: socket');
});
