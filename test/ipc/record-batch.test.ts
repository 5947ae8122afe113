/**
 * record-batch.test.ts — record.ts's batched codec on a real SOCK_SEQPACKET socketpair: an
 * Outbox sends one record per SDU until the peer says it reads packed records, then packs small
 * SDUs (fewer records, same SDUs, same order, 0-byte ones kept, large ones still alone and in
 * place); readRecords unpacks them, reports a malformed packed record as bad after the SDUs
 * before it, and a hello only to a sink that knows it.
 */
import t from 'tap';
import { native } from '../../src/sys/native.js';
import { Outbox, PACK_RECORD_MAX, readRecords, RECORD_HELLO, RECORD_SDU, RECORD_SDUS, RECORDS_EMPTY, sizeFlowSocket, writeRecord, type RecordSink } from '../../src/dif/ipc/record.js';

/** A pair whose buffers hold a whole test's records (a full socket is tested on its own). */
function pair(t: { teardown(fn: () => void): void }): [number, number] {
  const [a, b] = native.socketpairSeqpacket();
  native.setSocketBuffers(a, 4 << 20);
  native.setSocketBuffers(b, 4 << 20);
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  return [a, b];
}

/** SDU i: sizes around the packing limits, 0-byte ones, and some too large to pack; byte 0 = i. */
function sduOf(i: number): Uint8Array {
  const sizes = [0, 1, 64, 20_000, 3, 1500, PACK_RECORD_MAX - 5, PACK_RECORD_MAX - 4, 0, 7];
  const b = new Uint8Array(sizes[i % sizes.length]!).fill(i & 0xff);
  return b;
}

function collect(fd: number, maxSdu: number): { sdus: Uint8Array[]; bad: string[]; packs: number } {
  const out = { sdus: [] as Uint8Array[], bad: [] as string[], packs: 0 };
  const sink: RecordSink = { copies: true, sdu: (s) => void out.sdus.push(s), bad: (w) => void out.bad.push(w), fds: () => void out.bad.push('fds'), packs: () => void out.packs++ };
  while (readRecords(fd, maxSdu, 64, sink) !== RECORDS_EMPTY);
  return out;
}

/** Raw records as they are on the socket: [tag, length]. */
function rawRecords(fd: number): Array<[number, number]> {
  const buf = new Uint8Array(70_000);
  const out: Array<[number, number]> = [];
  for (;;) {
    const n = native.recvBytes(fd, buf, 0, buf.byteLength);
    if (n <= 0) return out;
    out.push([buf[0]!, n]);
  }
}

const N = 90;
const hooks = (): { sent: number; tooLarge: number; onSent(n: number): void; onTooLarge(): void } => ({
  sent: 0,
  tooLarge: 0,
  onSent(n: number) {
    this.sent += n;
  },
  onTooLarge() {
    this.tooLarge++;
  },
});

t.test('without pack(): one RECORD_SDU per SDU (what a peer that never said hello gets)', async (t) => {
  const [a, b] = pair(t);
  const h = hooks();
  const ob = new Outbox(a, h);
  for (let i = 0; i < N; i++) t.equal(ob.offer(sduOf(i)), 'queued');
  t.equal(ob.flush(), 'done');
  const raw = rawRecords(b);
  t.equal(raw.length, N, 'one record per SDU');
  t.ok(raw.every(([tag], i) => tag === RECORD_SDU && raw[i]![1] === sduOf(i).byteLength + 1), 'each a plain record of its SDU');
  t.equal(h.sent, N);
});

t.test('with pack(): small SDUs share records; all arrive whole, in order, 0-byte ones too; large ones alone in place', async (t) => {
  const [a, b] = pair(t);
  const h = hooks();
  const ob = new Outbox(a, h);
  ob.pack();
  for (let i = 0; i < N; i++) t.equal(ob.offer(sduOf(i)), 'queued');
  t.ok(ob.length < N, `${N} SDUs in ${ob.length} records`);
  t.ok(ob.length <= 256);
  t.equal(ob.flush(), 'done');
  t.equal(h.sent, N, 'onSent counts SDUs, not records');
  const got = collect(b, 65536);
  t.same(got.bad, []);
  t.equal(got.sdus.length, N);
  t.ok(
    got.sdus.every((s, i) => s.byteLength === sduOf(i).byteLength && s.every((x) => x === (i & 0xff))),
    'every SDU whole and in order',
  );
  t.ok(got.packs > 0, 'the reader learned that the writer packs');
});

t.test('with pack() and a full socket: the rest stays queued in order, and goes later', async (t) => {
  const [a, b] = pair(t);
  native.setSocketBuffers(a, 8192);
  native.setSocketBuffers(b, 8192); // smaller again: the socket fills
  const ob = new Outbox(a, hooks());
  ob.pack();
  const got: Uint8Array[] = [];
  const sink: RecordSink = { copies: true, sdu: (s) => void got.push(s), bad: () => t.fail('bad'), fds: () => t.fail('fds'), packs: () => undefined };
  let i = 0;
  for (let turn = 0; turn < 10_000 && got.length < 2000; turn++) {
    while (i < 2000) {
      const r = ob.offer(new Uint8Array(100 + (i % 50)).fill(i & 0xff));
      if (r === 'full') break;
      t.ok(r === 'queued' || r === 'sent');
      i++;
    }
    ob.flush();
    t.ok(ob.bytes <= 256 * 1024);
    while (readRecords(b, 4000, 64, sink) !== RECORDS_EMPTY);
  }
  t.equal(got.length, 2000);
  t.ok(got.every((s, k) => s.byteLength === 100 + (k % 50) && s[0] === (k & 0xff)), 'in order across partial flushes');
});

t.test('readRecords: a malformed packed record is bad after the SDUs before it; a hello only for a sink that knows it', async (t) => {
  const [a, b] = pair(t);
  // [tag][len 2][xx][len 9 but only 3 bytes]
  const bad = Uint8Array.of(RECORD_SDUS, 2, 0, 0, 0, 7, 7, 9, 0, 0, 0, 1, 2, 3);
  native.sendMsg(a, bad, 0, bad.byteLength, null);
  const big = Uint8Array.of(RECORD_SDUS, 0xff, 0xff, 0, 0); // 65535 > max SDU 100
  native.sendMsg(a, big, 0, big.byteLength, null);
  native.sendMsg(a, Uint8Array.of(RECORD_HELLO), 0, 1, null);
  const got = collect(b, 100);
  t.equal(got.sdus.length, 1);
  t.same([...got.sdus[0]!], [7, 7]);
  t.equal(got.bad.length, 2);
  t.match(got.bad[0], /cut inside an SDU/);
  t.match(got.bad[1], /larger than the flow's max SDU/);
  t.equal(got.packs, 3, 'both packed records and the hello say the writer packs');

  native.sendMsg(a, Uint8Array.of(RECORD_HELLO), 0, 1, null);
  const bads: string[] = [];
  while (readRecords(b, 100, 8, { sdu: () => t.fail('no SDU'), bad: (w) => void bads.push(w), fds: () => t.fail('fds') }) !== RECORDS_EMPTY);
  t.match(bads, [/unknown record tag 2/], 'a sink without packs(): a hello is a bad record (as in an older reader)');
});

t.test('sizeFlowSocket: a flow of 64 KiB SDUs holds 12 or more max-SDU records, not the 4 of the default buffer (no wait for writable every few SDUs)', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  t.ok(sizeFlowSocket(a, 65536) && sizeFlowSocket(b, 65536), 'sized');
  const sdu = new Uint8Array(65536).fill(7);
  let sent = 0;
  while (sent < 64 && writeRecord(a, sdu) === 'sent') sent++;
  t.ok(sent >= 12, `${sent} records of 64 KiB in the socket before it is full`);
});
