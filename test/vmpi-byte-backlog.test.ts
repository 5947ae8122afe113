/**
 * vmpi-byte-backlog.test.ts — the VMPI device's host → guest backlog (src/vmpi/byte-backlog.ts):
 * SDUs leave in order with their bytes and channels across chunk boundaries, entry-ring growth
 * and SDUs larger than a chunk; the bounds and 'drain' rule are backlog.ts's; a writer that
 * refuses keeps the head; a steady flow through it reuses its chunks (allocates none).
 */
import t from 'tap';
import { ByteBacklog, CHUNK_BYTES, TRIM_MS } from '../src/vmpi/byte-backlog.js';
import { SendBacklog, type BacklogLimits } from '../src/vmpi/backlog.js';

const sduOf = (k: number, n: number): Uint8Array => {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + k * 7) & 0xff;
  return b;
};

interface Out {
  channel: number;
  bytes: Uint8Array;
}

/** A writer that takes up to `room` SDUs, copying each out (the source is the backlog's, valid only during the call). */
function taker(out: Out[], room = Infinity) {
  let left = room;
  return {
    write: (channel: number, src: Uint8Array, off: number, len: number): boolean => {
      if (left <= 0) return false;
      left--;
      out.push({ channel, bytes: src.slice(off, off + len) });
      return true;
    },
    more: (n: number) => {
      left = n;
    },
  };
}

t.test('SDUs leave in order, with their channel and bytes, across chunks and entry growth', async (t) => {
  const c = { backlogSdus: 0, backlogBytes: 0 };
  const b = new ByteBacklog(c, { maxSdus: 100_000, maxBytes: 64 << 20, emptyTakesAny: false });
  // Sizes that straddle chunk ends, empty SDUs and one larger than a chunk.
  const sizes = [0, 1, 4000, 65536, 7, CHUNK_BYTES - 3, CHUNK_BYTES + 5000, 100, 0, 4000];
  const sent: Out[] = [];
  for (let k = 0; k < 300; k++) {
    const n = sizes[k % sizes.length]!;
    const sdu = sduOf(k, n);
    t.equal(b.add(k % 5, sdu), true);
    sent.push({ channel: k % 5, bytes: sdu });
    sdu.fill(0xee); // the backlog keeps its own copy
  }
  t.equal(c.backlogSdus, 300, 'counted SDUs');
  t.equal(c.backlogBytes, sent.reduce((a, s) => a + s.bytes.byteLength, 0), 'counted bytes');
  const out: Out[] = [];
  const w = taker(out, 77);
  t.equal(b.drain(w.write), 77, 'a writer that takes 77 gets 77');
  t.equal(c.backlogSdus, 223, 'the rest stays');
  // Interleave adds with drains so the entry ring wraps.
  for (let k = 300; k < 400; k++) {
    const sdu = sduOf(k, (k * 97) % 9000);
    b.add(k % 5, sdu);
    sent.push({ channel: k % 5, bytes: sdu.slice() });
  }
  w.more(Infinity);
  t.equal(b.drain(w.write), 323, 'then all the rest');
  t.equal(b.isEmpty, true);
  t.same([c.backlogSdus, c.backlogBytes], [0, 0], 'counters back to 0');
  let bad = -1;
  for (let k = 0; k < sent.length && bad < 0; k++) {
    if (out[k]!.channel !== sent[k]!.channel || Buffer.compare(out[k]!.bytes, k < 300 ? sduOf(k, sent[k]!.bytes.byteLength) : sent[k]!.bytes) !== 0) bad = k;
  }
  t.equal(out.length, 400, 'every SDU out once');
  t.equal(bad, -1, 'each in order, on its channel, with its bytes');
});

t.test('the bounds and the drain rule are SendBacklog\'s', async (t) => {
  const limits: BacklogLimits = { maxSdus: 10, maxBytes: 10_000, emptyTakesAny: false };
  const cb = { backlogSdus: 0, backlogBytes: 0 };
  const cs = { backlogSdus: 0, backlogBytes: 0 };
  const b = new ByteBacklog(cb, limits);
  const s = new SendBacklog<{ sdu: Uint8Array }>(cs, limits);
  const script: Array<['add', number] | ['drain', number]> = [
    ['add', 3000], ['add', 3000], ['add', 3000], ['add', 3000], ['drain', 1], ['add', 1000], ['add', 1], ['drain', 2],
    ['add', 100], ['add', 100], ['add', 100], ['add', 100], ['add', 100], ['add', 100], ['add', 100], ['drain', 3], ['drain', 9], ['add', 20_000],
  ];
  const trace: string[] = [];
  for (const [op, n] of script) {
    if (op === 'add') {
      const x = b.add(1, new Uint8Array(n));
      const y = s.add({ sdu: new Uint8Array(n) });
      trace.push(`add ${n}: ${x}/${y}`);
      t.equal(x, y, `add ${n}: the same answer`);
    } else {
      const bx = taker([], n);
      const by = taker([], n);
      const x = b.drain(bx.write);
      const y = s.drain((e) => by.write(1, e.sdu, 0, e.sdu.byteLength));
      const dx = x > 0 && b.drainDue();
      const dy = y > 0 && s.drainDue();
      t.same([x, dx], [y, dy], `drain ${n}: the same count and 'drain'`);
    }
    t.same(cb, cs, 'the same counters');
  }
  t.ok(trace.some((l) => l.endsWith('false/false')), 'the script hit the bounds');
  t.equal(b.add(1, new Uint8Array(0)), true, 'room again after the drains');
  const empty = new ByteBacklog({ backlogSdus: 0, backlogBytes: 0 }, { maxSdus: 1, maxBytes: 10, emptyTakesAny: true });
  t.equal(empty.add(0, new Uint8Array(100)), true, 'emptyTakesAny: an empty backlog takes an SDU over the byte bound');
  t.equal(empty.add(0, new Uint8Array(1)), false, 'and nothing after it');
});

t.test('a writer that clears the backlog from inside stops the drain', async (t) => {
  const c = { backlogSdus: 0, backlogBytes: 0 };
  const b = new ByteBacklog(c, { maxSdus: 100, maxBytes: 1 << 20, emptyTakesAny: false });
  for (let k = 0; k < 5; k++) b.add(0, sduOf(k, 10));
  let calls = 0;
  const n = b.drain(() => {
    calls++;
    b.clear();
    return true;
  });
  t.same([calls, n, c.backlogSdus, c.backlogBytes, b.isEmpty], [1, 0, 0, 0, true], 'one call, nothing counted as sent, empty');
  t.equal(b.add(3, sduOf(9, 10)), true, 'usable afterwards');
  const out: Out[] = [];
  b.drain(taker(out).write);
  t.same(out.map((o) => o.channel), [3]);
  t.same(out[0]!.bytes, sduOf(9, 10));
});

t.test('a backlog swinging between its bound and half of it, or emptied and filled again, reuses its chunks; left empty, it lets them go', async (t) => {
  const c = { backlogSdus: 0, backlogBytes: 0 };
  const b = new ByteBacklog(c, { maxSdus: 4096, maxBytes: 4 << 20, emptyTakesAny: false });
  const sdu = sduOf(1, 4000);
  // Fill to the byte bound, drain to half: as the device does under an application that outruns the guest.
  const swing = () => {
    while (b.add(1, sdu));
    let left = c.backlogSdus / 2;
    b.drain(() => left-- > 0);
  };
  // Swings first: where the head sits in its chunk at the bound decides whether 17 or 18 chunks
  // are live; the 18th comes after ~15 swings of 4000 B SDUs, then none.
  for (let i = 0; i < 20; i++) swing();
  const after = b.chunksAllocated;
  t.ok(after <= Math.ceil((4 << 20) / CHUNK_BYTES) + 2, `${after} chunks for a 4 MiB bound`);
  for (let i = 0; i < 50; i++) swing();
  t.equal(b.chunksAllocated, after, 'fifty more swings allocate no chunk');
  t.ok(b.pooled > 1, `spares pooled while it swings (${b.pooled})`);
  // Emptied and filled again at once (an application in bursts): still no chunk allocated.
  b.drain(() => true);
  t.equal(b.isEmpty, true);
  swing();
  t.equal(b.chunksAllocated, after, 'emptied and filled again at once: no chunk allocated');
  b.drain(() => true);
  t.ok(b.pooled > 1, `just emptied, the spares stay (${b.pooled})`);
  await new Promise((r) => setTimeout(r, TRIM_MS + 200));
  t.ok(b.pooled <= 1, `empty for ${TRIM_MS} ms, it keeps at most one spare (${b.pooled}) beside its tail chunk`);
  swing();
  t.ok(b.chunksAllocated - after <= Math.ceil((4 << 20) / CHUNK_BYTES) + 1, 'a fill after that allocates at most a bound of chunks, not one per SDU');
});
