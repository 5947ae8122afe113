/**
 * sdu-batch.test.ts — the batching that cuts per-SDU costs in the guest (issue #15), without a VM:
 *  - TxRecords (vmpi/guest-tx-batch.ts): SDUs as the driver's batch-write records (le32 length,
 *    SDU, 4-aligned), bounds, what a write's return value means (whole records from the head, a
 *    prefix when the ring fills, the rest kept in order), one write per SDU without batch writes;
 *  - parseChannelRecords (vmpi/guest-file.ts): a batch read's records as offsets and lengths;
 *  - RxQueue (dif/rx-queue.ts) and the 'sdus' event: a batch goes to 'sdus' listeners as it is
 *    (no copy) when nothing is queued and no read() waits; otherwise SDUs keep their order;
 *    'data' listeners are unchanged;
 *  - readRecords into a batch (dif/ipc/record.ts): packed and single records of one recvmmsg
 *    as one batch of offsets into the read buffer;
 *  - the IPC client's flows (host socket data path): an 'sdus' listener gets every SDU, in order,
 *    in fewer calls than SDUs; vmpi tgen's server counts from batches.
 */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { native } from '../src/sys/native.js';
import { TxRecords, recordSize, type TxWriter } from '../src/vmpi/guest-tx-batch.js';
import { parseChannelRecords, type ChannelRecords } from '../src/vmpi/guest-file.js';
import { RxQueue } from '../src/dif/rx-queue.js';
import { SduBatchBuffer } from '../src/dif/sdu-batch.js';
import { batchOf } from './helpers/sdu-batch.js';
import type { FlowEvents, SduBatch } from '../src/dif/api.js';
import { Outbox, readRecords, type RecordSink } from '../src/dif/ipc/record.js';
import type { ClientFlow } from '../src/dif/ipc/client-flow.js';
import { serveTgenFlow, encodeControl, decodeControl, type ServerRunEvent } from '../src/dif/tgen.js';
import { DIF, ipcSetup, until } from './ipc/helpers.js';

const sdu = (len: number, seed: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (i + seed * 7) & 0xff);

/** Decode a batch-write buffer back into SDUs (the driver's side of the format). */
function decode(buf: Uint8Array, off: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const v = new DataView(buf.buffer, buf.byteOffset);
  for (let p = off; p < off + len; ) {
    const l = v.getUint32(p, true);
    out.push(buf.slice(p + 4, p + 4 + l));
    p += (4 + l + 3) & ~3;
  }
  return out;
}

t.test('TxRecords: records, bounds, whole-record prefixes, order across flushes', async (t) => {
  t.equal(recordSize(0), 4);
  t.equal(recordSize(1), 8);
  t.equal(recordSize(4), 8);
  t.equal(recordSize(5), 12);
  const recs = new TxRecords(4, 64);
  t.ok(recs.fits(1000), 'an empty buffer takes any SDU');
  const sizes = [0, 1, 2, 3];
  for (const [i, n] of sizes.entries()) recs.add(sdu(n, i));
  t.equal(recs.sdus, 4);
  t.equal(recs.bytes, 6);
  t.notOk(recs.fits(0), 'at most maxSdus');
  const small = new TxRecords(10, 20);
  small.add(sdu(8, 0));
  t.notOk(small.fits(5), 'at most maxBytes of records (12 + 12 > 20)');
  t.ok(small.fits(4), '12 + 8 <= 20');

  // One write takes the whole buffer in batch mode; each record as the driver reads it.
  const writes: Uint8Array[][] = [];
  const all: TxWriter = (buf, off, len) => {
    writes.push(decode(buf, off, len));
    return len;
  };
  t.equal(recs.flush(all, true), 'done');
  t.equal(writes.length, 1, 'one write(2) for 4 SDUs');
  t.same(writes[0]!.map((b) => b.byteLength), sizes);
  t.same(writes[0]![3], sdu(3, 3), 'bytes intact');
  t.equal(recs.sentSdus, 4);
  t.equal(recs.sentBytes, 6);
  t.ok(recs.isEmpty);

  // The ring fills: a prefix of whole records, then EAGAIN; the rest stays, in order.
  const r2 = new TxRecords(100, 1 << 20);
  for (let i = 0; i < 10; i++) r2.add(sdu(10, i)); // 16 bytes per record
  const got: Uint8Array[] = [];
  let room = 3;
  let ringWrites = 0;
  const ring: TxWriter = (buf, off, len) => {
    ringWrites++;
    if (room === 0) return 'again';
    const take = Math.min(room, len / 16);
    room -= take;
    got.push(...decode(buf, off, take * 16));
    return take * 16;
  };
  t.equal(r2.flush(ring, true), 'full', 'ring full: the rest is kept');
  t.equal(r2.sentSdus, 3);
  t.equal(r2.sdus, 7);
  t.equal(ringWrites, 1, 'a prefix means the ring is full: no second write(2) only to meet EAGAIN');
  r2.add(sdu(10, 10));
  room = 100;
  t.equal(r2.flush(ring, true), 'done');
  t.same(got.map((b) => b[0]), Array.from({ length: 11 }, (_, i) => sdu(10, i)[0]), 'every SDU once, in order, across the partial write');

  // A return inside a record is a driver mismatch.
  const r3 = new TxRecords();
  r3.add(sdu(10, 0));
  r3.add(sdu(10, 1));
  t.throws(() => r3.flush(() => 5, true), /inside a record/);

  // Without batch writes: one write per SDU, of the SDU's bytes only.
  const r4 = new TxRecords();
  for (const [i, n] of [0, 5, 9].entries()) r4.add(sdu(n, i));
  const single: Uint8Array[] = [];
  t.equal(r4.flush((buf, off, len) => (single.push(buf.slice(off, off + len)), len), false), 'done');
  t.same(single, [sdu(0, 0), sdu(5, 1), sdu(9, 2)], 'one write(2) per SDU, raw bytes');
  const r5 = new TxRecords();
  r5.add(sdu(3, 0));
  t.equal(r5.flush(() => 'closed', true), 'closed');
  t.equal(r5.clear(), 1, 'what the ended file did not take can be dropped');
});

t.test('parseChannelRecords: a batch read as offsets and lengths', async (t) => {
  const lens = [0, 1, 2, 3, 5, 1000];
  const buf = new Uint8Array(4096);
  const v = new DataView(buf.buffer);
  let off = 0;
  for (const [i, l] of lens.entries()) {
    v.setUint32(off, l, true);
    buf.set(sdu(l, i), off + 4);
    off = (off + 4 + l + 3) & ~3;
  }
  const out: ChannelRecords = { buffer: new Uint8Array(0), offsets: new Uint32Array(16), lengths: new Uint32Array(16), count: 0, bytes: 0 };
  parseChannelRecords(buf, off, out);
  t.equal(out.count, lens.length);
  t.equal(out.bytes, 1011);
  t.same([...out.lengths.subarray(0, out.count)], lens);
  t.same(out.buffer.subarray(out.offsets[5]!, out.offsets[5]! + 1000), sdu(1000, 5), 'offsets point at the SDUs');
  t.throws(() => parseChannelRecords(buf, off - 1, out), /overruns/);
});

/** A flow-like emitter with an RxQueue. */
function queue(): { flow: EventEmitter<FlowEvents>; rx: RxQueue } {
  const flow = new EventEmitter<FlowEvents>();
  return { flow, rx: new RxQueue(flow) };
}

t.test("RxQueue: 'sdus' listeners get batches as they are; order kept with reads and queued SDUs; 'data' unchanged", async (t) => {
  {
    const { flow, rx } = queue();
    t.notOk(rx.takesBatch(), 'no listener: no batches');
    const seen: SduBatch[] = [];
    flow.on('sdus', (b) => void seen.push(b));
    t.ok(rx.takesBatch());
    t.ok(rx.hasConsumer());
    const b = batchOf([sdu(3, 1), sdu(0, 2), sdu(5, 3)]);
    rx.pushBatch(b);
    t.equal(seen.length, 1, 'one call for three SDUs');
    t.equal(seen[0], b, 'the batch itself: no copy');
    t.same(seen[0]!.sdu(2), sdu(5, 3));
  }
  {
    // SDUs queued before the listener come first, as batches of one, then later batches.
    const { flow, rx } = queue();
    rx.push(sdu(4, 1));
    rx.push(sdu(4, 2));
    const order: number[] = [];
    flow.on('sdus', (b) => {
      for (let i = 0; i < b.count; i++) order.push(b.sdu(i)[0]!);
    });
    t.notOk(rx.takesBatch(), 'queued SDUs go first');
    await new Promise((r) => setImmediate(r));
    t.same(order, [sdu(4, 1)[0], sdu(4, 2)[0]], 'queued SDUs delivered once the listener came');
    t.ok(rx.takesBatch());
    rx.pushBatch(batchOf([sdu(4, 3)]));
    t.same(order, [1 * 7, 2 * 7, 3 * 7].map((x) => x & 0xff));
  }
  {
    // A waiting read() is served first; the rest of the batch is copied into the queue.
    const { flow, rx } = queue();
    const r = rx.read();
    flow.on('sdus', () => undefined);
    t.notOk(rx.takesBatch(), 'a read() waits');
    const b = batchOf([sdu(2, 1), sdu(2, 2)]);
    rx.pushBatch(b);
    t.same(await r, sdu(2, 1));
    b.buffer.fill(0); // the reader's buffer is reused: what was queued is a copy
    t.equal(rx.length, 0, 'the second went to the listener (batch of one)');
  }
  {
    // No 'sdus' listener: 'data' listeners get each SDU as before.
    const { flow, rx } = queue();
    const got: Uint8Array[] = [];
    flow.on('data', (s) => void got.push(s));
    rx.pushBatch(batchOf([sdu(1, 1), sdu(2, 2)]));
    t.same(got, [sdu(1, 1), sdu(2, 2)]);
  }
});

t.test('readRecords into a batch: single and packed records of one recvmmsg as offsets into the read buffer', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  const out = new Outbox(a, { onSent: () => undefined, onTooLarge: () => undefined });
  const sizes = [0, 10, 3000, 1, 0, 70];
  for (const [i, n] of sizes.entries()) out.offer(sdu(n, i));
  out.flush();
  out.pack();
  for (const [i, n] of sizes.entries()) out.offer(sdu(n, i + 10));
  t.equal(out.flush(), 'done');
  const batch = new SduBatchBuffer(64);
  const perSdu: Uint8Array[] = [];
  const sink: RecordSink = { into: batch, sdu: (s) => void perSdu.push(s), bad: () => undefined, fds: () => undefined };
  const n = readRecords(b, 65536, 64, sink);
  t.equal(n, sizes.length * 2);
  t.equal(perSdu.length, 0, 'no call per SDU');
  t.equal(batch.count, sizes.length * 2, 'all SDUs of the call in the batch');
  t.same(Array.from({ length: batch.count }, (_, i) => batch.length(i)), [...sizes, ...sizes]);
  t.same(batch.sdu(8), sdu(3000, 12), 'packed SDUs point into the read buffer');
  t.same(batch.sdu(2), sdu(3000, 2));
});

t.test("IPC client flows: an 'sdus' listener gets every SDU in order, in fewer calls; tgen's server counts from batches", async (t) => {
  const s = ipcSetup(t);
  const client = await s.hostClient();
  const reg = await client.register(DIF, 'batches');
  const flows: ClientFlow[] = [];
  reg.on('request', (req) => void req.accept().then((f) => flows.push(f), () => undefined));
  const g = await s.guestIpcp.allocateFlow('peer/1', 'batches');
  await until(() => flows.length > 0, 'the application got the flow');
  const h = flows[0]!;
  const got: number[] = [];
  let calls = 0;
  h.on('sdus', (b) => {
    calls++;
    for (let i = 0; i < b.count; i++) got.push(b.length(i) === 0 ? -1 : b.sdu(i)[0]!);
  });
  const N = 2000;
  const want: number[] = [];
  for (let i = 0; i < N; i++) {
    const x = sdu(i % 5 === 0 ? 0 : 1 + (i % 300), i);
    want.push(x.byteLength === 0 ? -1 : x[0]!);
    while (!g.write(x)) await new Promise<void>((r) => g.once('drain', () => r()));
  }
  await until(() => got.length >= N, `${N} SDUs`, 20_000);
  t.same(got, want, 'every SDU once, in order, 0-byte ones kept');
  t.ok(calls < N / 4, `in batches: ${calls} calls for ${N} SDUs`);
  t.equal(h.stats.rxSdus, N, 'counted in the flow stats');

  // vmpi tgen's server on a flow whose SDUs come as batches.
  const fake = new EventEmitter<FlowEvents>() as EventEmitter<FlowEvents> & { state: string; remoteApp: { processName: string }; written: Uint8Array[]; write(s: Uint8Array): boolean };
  fake.state = 'allocated';
  fake.remoteApp = { processName: 'c' };
  fake.written = [];
  fake.write = (x) => (fake.written.push(x.slice()), true);
  const runs: ServerRunEvent[] = [];
  const done = serveTgenFlow(fake as never, 1, { onRun: (r) => void runs.push(r) });
  const data = Array.from({ length: 50 }, () => new Uint8Array(100).fill(0xa5));
  fake.emit('sdus', batchOf([encodeControl({ t: 'start', run: 1, size: 100 }, 100), ...data.slice(0, 20)]));
  fake.emit('sdus', batchOf(data.slice(20)));
  fake.emit('sdus', batchOf([encodeControl({ t: 'stop', run: 1, sent: 50, sentBytes: 5000 }, 100)]));
  t.equal(runs.length, 1, 'the run ended');
  t.equal(runs[0]?.sdus, 50, 'every data SDU counted');
  t.equal(runs[0]?.bytes, 5000);
  const report = decodeControl(fake.written[0]!);
  t.equal(report?.t === 'report' ? report.sdus : -1, 50, 'and reported to the client');
  fake.state = 'deallocated';
  fake.emit('deallocated', 'done', 'local');
  await done;
});
