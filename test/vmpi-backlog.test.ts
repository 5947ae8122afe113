/**
 * vmpi-backlog.test.ts — the send backlog both VMPI ports put in front of their ring
 * (src/vmpi/backlog.ts) and the FIFO under it (src/sys/fifo.ts): bounds in SDUs and bytes, the
 * empty-backlog rule, order, the 'drain' rule (empty, or half of both bounds after a refusal),
 * a drain the port ends by clearing the backlog from inside its write, and clear(). Then the host device's use of it
 * without a guest: every SDU waits in the backlog, Full at the bounds, reset() drops them all.
 */
import t from 'tap';
import { Fifo } from '../src/sys/fifo.js';
import { SendBacklog, type BacklogCounters } from '../src/vmpi/backlog.js';
import { SendResult, VmpiDevice } from '../src/vmpi/device.js';

interface Entry {
  id: number;
  sdu: Uint8Array;
}
const entry = (id: number, size: number): Entry => ({ id, sdu: new Uint8Array(size) });

t.test('Fifo: order, peek, shift on empty, compaction keeps order', async (t) => {
  const q = new Fifo<number>();
  t.equal(q.shift(), undefined);
  t.equal(q.peek(), undefined);
  for (let i = 0; i < 3000; i++) q.push(i);
  const out: number[] = [];
  for (let i = 0; i < 2000; i++) out.push(q.shift()!);
  t.equal(q.length, 1000);
  t.equal(q.peek(), 2000);
  for (let i = 3000; i < 3010; i++) q.push(i);
  while (q.length > 0) out.push(q.shift()!);
  t.same(out, Array.from({ length: 3010 }, (_, i) => i), 'every item once, in order, across compactions');
  q.push(7);
  q.clear();
  t.equal(q.length, 0);
  t.equal(q.shift(), undefined);
});

t.test('SendBacklog: bounds, order, drain rule, stop, clear', async (t) => {
  const c: BacklogCounters = { backlogSdus: 0, backlogBytes: 0 };
  const b = new SendBacklog<Entry>(c, { maxSdus: 4, maxBytes: 100, emptyTakesAny: true });
  t.equal(b.isEmpty, true);
  t.equal(b.add(entry(1, 30)), true);
  t.equal(b.add(entry(2, 30)), true);
  t.equal(b.add(entry(3, 30)), true);
  t.equal(b.add(entry(4, 11)), false, '30+30+30+11 > 100 bytes: refused');
  t.equal(b.add(entry(5, 10)), true, 'exactly 100 bytes fit');
  t.equal(b.add(entry(6, 0)), false, '4 SDUs: refused even at 0 bytes');
  t.same(c, { backlogSdus: 4, backlogBytes: 100 });
  t.equal(b.peek()!.id, 1);

  // Blocked after two: 2 SDUs / 40 bytes left, at half of the SDU bound, not under it.
  const seen: number[] = [];
  let room = 2;
  const write = (e: Entry): boolean => {
    if (room === 0) return false;
    room--;
    seen.push(e.id);
    return true;
  };
  t.equal(b.drain(write), 2);
  t.same(seen, [1, 2]);
  t.same(c, { backlogSdus: 2, backlogBytes: 40 });
  t.equal(b.drainDue(), false, 'refused earlier, but 2 SDUs is not under half of 4');
  room = 1;
  t.equal(b.drain(write), 1);
  t.same(c, { backlogSdus: 1, backlogBytes: 10 });
  t.equal(b.drainDue(), true, 'refused earlier and now under half of both bounds');
  t.equal(b.drainDue(), false, 'the refusal is answered once');
  room = 5;
  t.equal(b.drain(write), 1);
  t.same(seen, [1, 2, 3, 5], 'in order; refused entries were never kept');
  t.equal(b.isEmpty, true);
  t.equal(b.drainDue(), true, 'empty: always due');

  // A write that tears the port down (clears the backlog) stops the drain at once.
  b.add(entry(7, 1));
  b.add(entry(8, 1));
  t.equal(
    b.drain(() => {
      b.clear();
      return false;
    }),
    0,
  );
  t.same(c, { backlogSdus: 0, backlogBytes: 0 });
  t.equal(b.isEmpty, true);

  b.add(entry(9, 5));
  b.add(entry(10, 6));
  t.equal(b.clear(), 2, 'clear() says how many it dropped');
  t.same(c, { backlogSdus: 0, backlogBytes: 0 });
});

t.test('SendBacklog: an SDU over the byte bound, empty backlog', async (t) => {
  const c: BacklogCounters = { backlogSdus: 0, backlogBytes: 0 };
  const any = new SendBacklog<Entry>(c, { maxSdus: 4, maxBytes: 10, emptyTakesAny: true });
  t.equal(any.add(entry(1, 50)), true, 'emptyTakesAny: an empty backlog takes it');
  t.equal(any.add(entry(2, 1)), false, 'and then refuses more');
  const c2: BacklogCounters = { backlogSdus: 0, backlogBytes: 0 };
  const strict = new SendBacklog<Entry>(c2, { maxSdus: 4, maxBytes: 10, emptyTakesAny: false });
  t.equal(strict.add(entry(1, 50)), false, 'without it the bound holds also when empty');
  t.same(c2, { backlogSdus: 0, backlogBytes: 0 });
});

t.test('VmpiDevice without a guest: SDUs wait in the backlog, Full at its bounds, reset drops them', async (t) => {
  const dev = new VmpiDevice({ vmpiId: 5, backlogMaxSdus: 3, backlogMaxBytes: 1000 });
  const drains: number[] = [];
  dev.on('drain', () => drains.push(1));
  t.equal(dev.send(1, new Uint8Array(400)), SendResult.Queued);
  t.equal(dev.send(2, new Uint8Array(400)), SendResult.Queued);
  t.equal(dev.send(1, new Uint8Array(201)), SendResult.Full, '1001 bytes > 1000');
  t.equal(dev.send(1, new Uint8Array(200)), SendResult.Queued);
  t.equal(dev.send(1, new Uint8Array(0)), SendResult.Full, '3 SDUs');
  t.equal(dev.stats.backlogSdus, 3);
  t.equal(dev.stats.backlogBytes, 1000);
  t.equal(dev.stats.drops.backlog_full, 2);
  t.equal(dev.stats.rxQueueFull, 0, 'no rx queue at all: not counted as a full ring');
  dev.reset('test');
  t.equal(dev.stats.drops.device_reset, 3);
  t.equal(dev.stats.backlogSdus, 0);
  t.equal(dev.stats.backlogBytes, 0);
  t.same(drains, [], "reset emits no 'drain'");
  const small = new VmpiDevice({ vmpiId: 6, backlogMaxBytes: 100 });
  t.equal(small.send(1, new Uint8Array(101)), SendResult.Full, 'the host device keeps its byte bound also when its backlog is empty');
  t.throws(() => dev.send(-1, new Uint8Array(1)), { name: 'VmpiDeviceError', message: 'channel -1 is not a u32 channel id' });
  t.throws(() => dev.send(2 ** 32, new Uint8Array(1)), { name: 'VmpiDeviceError', message: `channel ${2 ** 32} is not a u32 channel id` });
});
