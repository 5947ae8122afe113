/**
 * addon-mmsg.test.ts — the addon's batched record calls (native.ts `records`: sendRecords /
 * recvRecords, i.e. sendmmsg/recvmmsg) on real SOCK_SEQPACKET socketpairs: whole and partial
 * batches, EAGAIN both ways, 0-byte records, a record longer than its slot (reported, never
 * taken as whole), records with fds, end of file, and argument checks.
 */
import t from 'tap';
import { readdirSync } from 'node:fs';
import { native, records } from '../src/sys/native.js';

function seqpair(t: { teardown(fn: () => void): void }): [number, number] {
  const [a, b] = native.socketpairSeqpacket();
  const open = { a: true, b: true };
  t.teardown(() => {
    if (open.a) native.close(a);
    if (open.b) native.close(b);
  });
  return [a, b];
}

const fdCount = (): number => readdirSync('/proc/self/fd').length;

/** One buffer with `sizes` records laid out one after the other, record k filled with k. */
function layout(sizes: number[]): { buf: Uint8Array; offsets: Uint32Array; lengths: Uint32Array } {
  const total = sizes.reduce((a, b) => a + b, 0);
  const buf = new Uint8Array(Math.max(1, total));
  const offsets = new Uint32Array(sizes.length);
  const lengths = new Uint32Array(sizes.length);
  let at = 0;
  sizes.forEach((n, k) => {
    offsets[k] = at;
    lengths[k] = n;
    buf.fill(k & 0xff, at, at + n);
    at += n;
  });
  return { buf, offsets, lengths };
}

t.test('sendRecords + recvRecords: many records per call, boundaries and 0-byte records kept', async (t) => {
  const [a, b] = seqpair(t);
  const sizes = [1, 0, 5, 300, 0, 2];
  const { buf, offsets, lengths } = layout(sizes);
  t.equal(records.sendRecords(a, buf, offsets, lengths, 0, sizes.length), sizes.length, 'one call sent all six');

  const slot = 512;
  const rbuf = new Uint8Array(slot * 8);
  const rlen = new Int32Array(8);
  const n = records.recvRecords(b, rbuf, slot, 8, rlen);
  t.equal(n, sizes.length, 'one call read all six');
  t.same([...rlen.subarray(0, n)], sizes, 'each its own length, 0-byte records as 0');
  t.ok(sizes.every((len, k) => rbuf.subarray(k * slot, k * slot + len).every((x) => x === k)), 'each record in its own slot, whole');
  t.equal(records.recvRecords(b, rbuf, slot, 8, rlen), -1, 'nothing queued: -1 (EAGAIN)');
});

t.test('a partial batch: first/count pick records; max bounds a read; the rest stays queued', async (t) => {
  const [a, b] = seqpair(t);
  const sizes = [10, 11, 12, 13, 14];
  const { buf, offsets, lengths } = layout(sizes);
  t.equal(records.sendRecords(a, buf, offsets, lengths, 1, 3), 3, 'records 1..3 only');
  const rbuf = new Uint8Array(64 * 4);
  const rlen = new Int32Array(4);
  t.equal(records.recvRecords(b, rbuf, 64, 2, rlen), 2, 'max 2');
  t.same([...rlen.subarray(0, 2)], [11, 12]);
  t.equal(rbuf[64], 2, 'record 2 in the second slot');
  t.equal(records.recvRecords(b, rbuf, 64, 4, rlen), 1);
  t.equal(rlen[0], 13);
});

t.test('EAGAIN: a full socket takes part of a batch, then -1; the rest sent later in order', async (t) => {
  const [a, b] = seqpair(t);
  native.setSocketBuffers(a, 4096);
  native.setSocketBuffers(b, 4096);
  const count = 200;
  const { buf, offsets, lengths } = layout(Array.from({ length: count }, () => 1000));
  const first = records.sendRecords(a, buf, offsets, lengths, 0, count);
  t.ok(first >= 1 && first < count, `the socket took part of the batch (${first} of ${count})`);
  t.equal(records.sendRecords(a, buf, offsets, lengths, first, count - first), -1, 'then nothing: -1');
  const rbuf = new Uint8Array(1024 * 64);
  const rlen = new Int32Array(64);
  const got: number[] = [];
  let sentUpTo = first;
  for (let i = 0; i < 10_000 && got.length < count; i++) {
    const n = records.recvRecords(b, rbuf, 1024, 64, rlen);
    for (let k = 0; k < n; k++) {
      t.equal(rlen[k], 1000);
      got.push(rbuf[k * 1024]!);
    }
    if (sentUpTo < count) {
      const m = records.sendRecords(a, buf, offsets, lengths, sentUpTo, Math.min(256, count - sentUpTo));
      if (m > 0) sentUpTo += m;
    }
  }
  t.equal(got.length, count, 'every record arrived');
  t.same(got, Array.from({ length: count }, (_, k) => k & 0xff), 'in order');
});

t.test('a record longer than its slot is reported (length > slot), never taken as whole', async (t) => {
  const [a, b] = seqpair(t);
  const { buf, offsets, lengths } = layout([8, 100, 8]);
  t.equal(records.sendRecords(a, buf, offsets, lengths, 0, 3), 3);
  const slot = 16;
  const rbuf = new Uint8Array(slot * 3);
  const rlen = new Int32Array(3);
  t.equal(records.recvRecords(b, rbuf, slot, 3, rlen), 3);
  t.equal(rlen[0], 8);
  t.ok(rlen[1]! > slot, `the long record says ${rlen[1]} (> slot ${slot}): MSG_TRUNC detected`);
  t.equal(rlen[1], 100, 'with its real length');
  t.equal(rlen[2], 8, 'the next record is whole, in its slot');
  t.equal(rbuf[2 * slot], 2);
});

t.test('a record sent with fds: -1 in lengths, the fds closed; EOF: length 0', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  const efd = native.eventfd(0);
  t.teardown(() => native.close(efd));
  const before = fdCount();
  native.sendMsg(a, Uint8Array.of(1, 2), 0, 2, [efd]);
  native.sendMsg(a, Uint8Array.of(3), 0, 1, null);
  const rbuf = new Uint8Array(32 * 4);
  const rlen = new Int32Array(4);
  t.equal(records.recvRecords(b, rbuf, 32, 4, rlen), 2);
  t.equal(rlen[0], -1, 'the record with an fd: -1');
  t.equal(rlen[1], 1, 'the next one as usual');
  t.equal(fdCount(), before, 'the fd the kernel would have passed was closed');
  native.close(a);
  const n = records.recvRecords(b, rbuf, 32, 4, rlen);
  t.ok(n >= 1, 'end of file: records of length 0');
  t.same([...rlen.subarray(0, n)], new Array(n).fill(0));
  native.close(b);
  t.throws(() => records.recvRecords(b, rbuf, 32, 4, rlen), { code: 'EBADF' }, 'errors are thrown');
});

t.test('sendRecords: errors on the first record are thrown; EMSGSIZE for a record the buffer can never carry', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  native.setSocketBuffers(a, 4096);
  const big = layout([64 * 1024, 1]);
  const err = t.throws(() => records.sendRecords(a, big.buf, big.offsets, big.lengths, 0, 2)) as NodeJS.ErrnoException;
  t.equal(err.code, 'EMSGSIZE');
  t.equal(err.syscall, 'sendmmsg');
  t.equal(records.sendRecords(a, big.buf, big.offsets, big.lengths, 1, 1), 1, 'the next record goes');
  native.close(b);
  const err2 = t.throws(() => records.sendRecords(a, big.buf, big.offsets, big.lengths, 1, 1)) as NodeJS.ErrnoException;
  t.ok(err2.code === 'EPIPE' || err2.code === 'ECONNRESET', `peer closed: ${err2.code} (no SIGPIPE)`);
  native.close(a);
});

t.test('argument checks: TypeError, nothing outside the buffers', async (t) => {
  const [a, b] = seqpair(t);
  const { buf, offsets, lengths } = layout([4, 4]);
  t.throws(() => records.sendRecords(a, buf, offsets, lengths, 0, 0), TypeError, 'count 0');
  t.throws(() => records.sendRecords(a, buf, offsets, lengths, 0, 257), TypeError, 'count over 256');
  t.throws(() => records.sendRecords(a, buf, offsets, lengths, 1, 2), TypeError, 'past the end of offsets');
  t.throws(() => records.sendRecords(a, buf, Uint32Array.of(6, 0), lengths, 0, 1), TypeError, 'a record outside buf');
  t.throws(() => records.sendRecords(a, buf, new Int32Array(2) as unknown as Uint32Array, lengths, 0, 1), TypeError, 'offsets must be a Uint32Array');
  const rlen = new Int32Array(4);
  t.throws(() => records.recvRecords(b, new Uint8Array(10), 4, 3, rlen), TypeError, 'buf smaller than max * slot');
  t.throws(() => records.recvRecords(b, new Uint8Array(16), 4, 4, new Int32Array(3)), TypeError, 'lengths shorter than max');
  t.throws(() => records.recvRecords(b, new Uint8Array(16), 0, 4, rlen), TypeError, 'slot 0');
  t.throws(() => records.recvRecords(b, new Uint8Array(16), 4, 4, new Uint32Array(4) as unknown as Int32Array), TypeError, 'lengths must be an Int32Array');
});
