/**
 * guest-file-drained.test.ts — ChannelReadState.drained() (vmpi/guest-file.ts): after a batch read
 * of a channel file, whether it took everything the file held (room left for a record of max SDU), so
 * that a reader (the IPC client's flow on a VMPI file) waits for the next readable event instead
 * of an empty read, which Node's readSync throws as EAGAIN (issue #15). Without a VM: a
 * SOCK_SEQPACKET pair stands in for the file, one message per batch read, in the driver's format.
 * Each file keeps its own answer: two files read alternately, then asked (guest-flow-file.ts keeps
 * one state per flow's file).
 */
import t from 'tap';
import { native } from '../src/sys/native.js';
import { ChannelReadState, readChannelFile, readChannelRecords, READ_EMPTY, type ChannelRecords } from '../src/vmpi/guest-file.js';

/** Batch-read records (le32 length + SDU, 4-aligned) of `sizes`. */
function records(sizes: number[]): Uint8Array {
  const total = sizes.reduce((a, n) => a + 4 + ((n + 3) & ~3), 0);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  let p = 0;
  for (const n of sizes) {
    v.setUint32(p, n, true);
    out.fill(0x5a, p + 4, p + 4 + n);
    p += 4 + ((n + 3) & ~3);
  }
  return out;
}

t.test('drained: a short batch read took all; a full one, a one-SDU read or an empty one did not say so', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  native.setNonblock(b, true);
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  const out: ChannelRecords = { buffer: new Uint8Array(0), offsets: new Uint32Array(1024), lengths: new Uint32Array(1024), count: 0, bytes: 0 };
  const buf = new Uint8Array(8192);
  const send = (bytes: Uint8Array): void => void native.sendMsg(a, bytes, 0, bytes.byteLength, null);
  const file = new ChannelReadState();

  send(records([100, 0, 250]));
  t.equal(readChannelRecords(b, buf, true, out, file), 3);
  t.ok(file.drained(1500), 'room left for a 1500-byte record: the file held no more');
  t.notOk(file.drained(8000), 'not room for a record of max SDU 8000: there may be more');

  // A read that filled the buffer (almost): the next record may not have fitted.
  send(records([8000]));
  t.equal(readChannelRecords(b, buf, true, out, file), 1);
  t.notOk(file.drained(1500), 'a nearly full read says nothing');

  // One SDU per read (no batch mode): never.
  send(new Uint8Array(10));
  t.equal(readChannelRecords(b, buf, false, out, file), 1);
  t.notOk(file.drained(0), 'a read without batch mode says nothing');

  t.equal(readChannelRecords(b, buf, true, out, file), READ_EMPTY);
  t.notOk(file.drained(0), 'an empty read says nothing');
});

t.test('drained: two files read alternately each keep the answer of their own last read', async (t) => {
  const pairs = [native.socketpairSeqpacket(), native.socketpairSeqpacket()];
  t.teardown(() => {
    for (const [a, b] of pairs) {
      native.close(a);
      native.close(b);
    }
  });
  for (const [, b] of pairs) native.setNonblock(b, true);
  const [x, y] = pairs as [[number, number], [number, number]];
  const out: ChannelRecords = { buffer: new Uint8Array(0), offsets: new Uint32Array(1024), lengths: new Uint32Array(1024), count: 0, bytes: 0 };
  const buf = new Uint8Array(8192);
  const send = (fd: number, bytes: Uint8Array): void => void native.sendMsg(fd, bytes, 0, bytes.byteLength, null);
  const fx = new ChannelReadState();
  const fy = new ChannelReadState();

  // x: a short read (drained); then y: a nearly full one (not drained). Asked after both.
  send(x[0], records([100]));
  send(y[0], records([8000]));
  t.equal(readChannelRecords(x[1], buf, true, out, fx), 1);
  t.equal(readChannelRecords(y[1], buf, true, out, fy), 1);
  t.ok(fx.drained(1500), "x's short read took all, whatever y's read said after it");
  t.notOk(fy.drained(1500), "y's full read says nothing");

  // The other way round, through the per-SDU reader: y short, then x full.
  send(y[0], records([10, 20]));
  send(x[0], records([8100]));
  let sdus = 0;
  t.equal(readChannelFile(y[1], buf, true, () => sdus++, fy), 2);
  t.equal(readChannelFile(x[1], buf, true, () => sdus++, fx), 1);
  t.equal(sdus, 3);
  t.ok(fy.drained(1500), "y's short read took all, whatever x's read said after it");
  t.notOk(fx.drained(1500), "x's full read says nothing");
  // An empty read of x leaves y's answer alone.
  t.equal(readChannelRecords(x[1], buf, true, out, fx), READ_EMPTY);
  t.notOk(fx.drained(0), 'an empty read says nothing');
  t.ok(fy.drained(1500), "y's answer unchanged by x's empty read");
});
