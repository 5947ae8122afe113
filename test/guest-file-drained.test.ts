/**
 * guest-file-drained.test.ts — lastReadDrained() (vmpi/guest-file.ts): after a batch read of a
 * channel file, whether it took everything the file held (room left for a record of max SDU), so
 * that a reader (the IPC client's flow on a VMPI file) waits for the next readable event instead
 * of an empty read, which Node's readSync throws as EAGAIN (issue #15). Without a VM: a
 * SOCK_SEQPACKET pair stands in for the file, one message per batch read, in the driver's format.
 */
import t from 'tap';
import { native } from '../src/sys/native.js';
import { lastReadDrained, readChannelRecords, READ_EMPTY, type ChannelRecords } from '../src/vmpi/guest-file.js';

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

t.test('lastReadDrained: a short batch read took all; a full one, a one-SDU read or an empty one did not say so', async (t) => {
  const [a, b] = native.socketpairSeqpacket();
  native.setNonblock(b, true);
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  const out: ChannelRecords = { buffer: new Uint8Array(0), offsets: new Uint32Array(1024), lengths: new Uint32Array(1024), count: 0, bytes: 0 };
  const buf = new Uint8Array(8192);
  const send = (bytes: Uint8Array): void => void native.sendMsg(a, bytes, 0, bytes.byteLength, null);

  send(records([100, 0, 250]));
  t.equal(readChannelRecords(b, buf, true, out), 3);
  t.ok(lastReadDrained(1500), 'room left for a 1500-byte record: the file held no more');
  t.notOk(lastReadDrained(8000), 'not room for a record of max SDU 8000: there may be more');

  // A read that filled the buffer (almost): the next record may not have fitted.
  send(records([8000]));
  t.equal(readChannelRecords(b, buf, true, out), 1);
  t.notOk(lastReadDrained(1500), 'a nearly full read says nothing');

  // One SDU per read (no batch mode): never.
  send(new Uint8Array(10));
  t.equal(readChannelRecords(b, buf, false, out), 1);
  t.notOk(lastReadDrained(0), 'a read without batch mode says nothing');

  t.equal(readChannelRecords(b, buf, true, out), READ_EMPTY);
  t.notOk(lastReadDrained(0), 'an empty read says nothing');
});
