/**
 * virtqueue-torn.test.ts — the ring indices are read whole while the driver writes them
 * (src/vhost-user/virtqueue.ts, avail16/used16). A worker thread plays a driver that moves
 * avail.idx back and forth across a multiple of 256 (0x00ff ↔ 0x0100, both bytes change) in
 * memory shared with the queue, as a guest vCPU does under a running back-end. A read
 * that takes the two bytes separately sees 0x0000 or 0x01ff now and then: DataView's getUint16
 * did (a CI run's queue broke on "driver advanced avail.idx by 65281"). Every read here must be
 * one of the two values the driver wrote.
 */
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { GuestMemory } from '../src/vhost-user/memory.js';
import type { MemRegionDesc } from '../src/vhost-user/messages.js';
import { SplitVirtqueue } from '../src/vhost-user/virtqueue.js';
import { ArrayMapper } from './helpers/array-mapper.js';

/** Guest memory whose mappings are SharedArrayBuffers, so another thread can be the driver. */
class SharedMapper extends ArrayMapper {
  override map(fd: number, offset: number, length: number): ArrayBuffer {
    const buffer = new SharedArrayBuffer(length) as unknown as ArrayBuffer;
    this.maps.push({ fd, offset, length, buffer });
    return buffer;
  }
}

const REGION: MemRegionDesc = { guestPhysAddr: 0, size: 0x10000, userAddr: 0x7f66_0000_0000, mmapOffset: 0 };
const SIZE = 8;
const AVAIL = 0x1000;

t.test('avail.idx is never read torn while the driver moves it across 0x00ff/0x0100', { timeout: 60_000 }, async (t) => {
  const mapper = new SharedMapper();
  const mem = new GuestMemory(mapper, 4);
  mem.add('TEST', REGION, 100);
  const sab = mapper.maps[0]!.buffer as unknown as SharedArrayBuffer;
  const w16 = new Uint16Array(sab);
  w16[(AVAIL + 2) / 2] = 0x00ff;
  // lastAvailIdx 0x00ff: pending() is 0 or 1 for the two values, and fails the queue on a torn one.
  const vq = new SplitVirtqueue(mem, { index: 0, layout: { size: SIZE, descGpa: 0, availGpa: AVAIL, usedGpa: 0x2000 }, lastAvailIdx: 0x00ff, eventIdx: true, indirect: false });

  const stopBuf = new SharedArrayBuffer(4);
  const driver = new Worker(
    `const { workerData } = require('node:worker_threads');
     const w = new Uint16Array(workerData.sab);
     const flag = new Int32Array(workerData.stop);
     const idx = workerData.idx;
     while (Atomics.load(flag, 0) === 0) {
       for (let i = 0; i < 1000; i++) { w[idx] = 0x0100; w[idx] = 0x00ff; }
     }`,
    { eval: true, workerData: { sab, stop: stopBuf, idx: (AVAIL + 2) / 2 } },
  );
  await new Promise((r) => driver.once('online', r));

  let reads = 0;
  let torn = 0;
  let tornEvent = 0;
  let moved = 0;
  const seen = new Set<number>();
  const end = Date.now() + 2000;
  let last = vq.availIdx();
  while (Date.now() < end) {
    for (let i = 0; i < 20_000; i++) {
      const v = vq.availIdx();
      if (v !== 0x00ff && v !== 0x0100) {
        torn++;
        seen.add(v);
      }
      if (v !== last) moved++;
      last = v;
      reads++;
    }
    // pending() reads it once more and breaks the queue past the size: it must never.
    try {
      vq.pending();
    } catch {
      tornEvent++;
      break;
    }
  }
  Atomics.store(new Int32Array(stopBuf), 0, 1);
  await driver.terminate();
  t.ok(moved > 100, `the driver really moved avail.idx under the reads (${moved} changes seen in ${reads} reads)`);
  t.equal(torn, 0, `no torn avail.idx in ${reads} reads${seen.size ? ` (saw ${[...seen].map((v) => '0x' + v.toString(16)).join(', ')})` : ''}`);
  t.equal(tornEvent, 0, 'pending() never saw the driver run past the queue size');
  t.notOk(vq.broken, 'the queue is not broken');
});
