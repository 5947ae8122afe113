/**
 * SplitVirtqueue and DescChain (src/vhost-user/virtqueue.ts) over GuestMemory backed by plain
 * ArrayBuffers, with the driver side played by test/helpers/split-ring.ts: chain walking (direct,
 * indirect, across regions), scatter-gather copies, the used ring, 16-bit index wrap, every way a
 * driver can corrupt a queue, notification suppression both ways, and constructor validation.
 */
import t, { type Test } from 'tap';
import { QueueError } from '../src/vhost-user/errors.js';
import type { GuestMemory } from '../src/vhost-user/memory.js';
import type { MemRegionDesc } from '../src/vhost-user/messages.js';
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
} from '../src/vhost-user/protocol.js';
import { DescChain, MAX_CHAIN_SEGMENTS, SplitVirtqueue, copyBytes, type RingLayout } from '../src/vhost-user/virtqueue.js';
import { memoryWith } from './helpers/array-mapper.js';
import { DriverRing } from './helpers/split-ring.js';

type T = Test;

const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;

const UVA = 0x7f66_0000_0000;
/** Two adjacent regions with separate mappings, so a buffer can cross from one into the other. */
const REGION_A: MemRegionDesc = { guestPhysAddr: 0, size: 0x10000, userAddr: UVA, mmapOffset: 0 };
const REGION_B: MemRegionDesc = { guestPhysAddr: 0x10000, size: 0x10000, userAddr: UVA + 0x40000, mmapOffset: 0 };
const LAYOUT: RingLayout = { size: 8, descGpa: 0x0, availGpa: 0x1000, usedGpa: 0x2000 };

interface Setup {
  mem: GuestMemory;
  drv: DriverRing;
  vq: SplitVirtqueue;
  chain: DescChain;
}

function setup(
  opts: { eventIdx?: boolean; indirect?: boolean; lastAvailIdx?: number; layout?: RingLayout; index?: number; before?: (d: DriverRing) => void } = {},
): Setup {
  const { mem } = memoryWith([REGION_A, REGION_B]);
  const layout = opts.layout ?? LAYOUT;
  const drv = new DriverRing(mem, layout);
  opts.before?.(drv);
  const vq = new SplitVirtqueue(mem, {
    index: opts.index ?? 0,
    layout,
    lastAvailIdx: opts.lastAvailIdx ?? 0,
    eventIdx: opts.eventIdx ?? false,
    indirect: opts.indirect ?? false,
  });
  return { mem, drv, vq, chain: new DescChain() };
}

/** The chain's segments as plain data; `r` is 'A' or 'B' for the region whose bytes it points into. */
function segments(s: Setup): { r: string; off: number; len: number }[] {
  const a = s.mem.findStart(0)!.bytes;
  const b = s.mem.findStart(0x10000)!.bytes;
  const out = [];
  for (let i = 0; i < s.chain.count; i++) {
    const buf = s.chain.bufs[i];
    out.push({ r: buf === a ? 'A' : buf === b ? 'B' : '?', off: s.chain.offs[i]!, len: s.chain.lens[i]! });
  }
  return out;
}

function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 13 + seed) & 0xff);
}

/** fn must throw QueueError "queue N: detail" and leave the queue broken with that error. */
function breaks(tt: T, s: Setup, fn: () => unknown, detail: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof QueueError)) return void tt.fail(`expected QueueError "${detail}", got ${String(err)}`);
  tt.equal(err.code, 'queue_broken');
  tt.equal(err.scope, 'queue', 'breaks the queue only');
  tt.ok(err.message.startsWith(`queue ${s.vq.index}: `), 'message names the queue');
  tt.match(err.message, detail);
  tt.equal(err.queueIndex, s.vq.index);
  tt.equal(s.vq.broken, err, 'queue marked broken with that error');
  // Once broken, the queue does nothing.
  tt.equal(s.vq.pop(s.chain), false, 'pop() returns false once broken');
  tt.equal(s.vq.pending(), 0);
  const used = s.drv.usedIdx;
  s.vq.pushUsed(0, 1);
  tt.equal(s.drv.usedIdx, used, 'pushUsed does nothing once broken');
  tt.equal(s.vq.setKickWanted(true), false);
}

// ---------------------------------------------------------------------------------------------
// Chains

t.test('single readable descriptor', async (t) => {
  const s = setup();
  const data = pattern(100, 1);
  s.drv.g.write(0x4000, data);
  s.drv.setDesc(5, { addr: 0x4000, len: 100 });
  t.equal(s.vq.pending(), 0);
  t.equal(s.vq.pop(s.chain), false, 'empty ring');
  s.drv.offer(5);
  t.equal(s.vq.availIdx(), 1);
  t.equal(s.vq.pending(), 1);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.head, 5);
  t.equal(s.chain.count, 1);
  t.equal(s.chain.readableCount, 1);
  t.equal(s.chain.readableBytes, 100);
  t.equal(s.chain.writableBytes, 0);
  t.same(segments(s), [{ r: 'A', off: 0x4000, len: 100 }]);
  const out = new Uint8Array(110);
  t.equal(s.chain.read(out, 10, 0, 100), 100);
  t.same([...out.subarray(10)], [...data]);
  t.same([...out.subarray(0, 10)], new Array(10).fill(0), 'nothing before dstOff');
  t.equal(s.chain.read(out, 0, 0, 1000), 100, 'read is limited to the readable bytes');
  t.equal(s.chain.read(out, 0, 100, 10), 0, 'nothing past the end');
  t.equal(s.chain.write(data, 0, 10, 0), 0, 'no writable space');
  t.equal(s.vq.lastAvailIdx, 1);
  t.equal(s.vq.pending(), 0);
  t.equal(s.vq.pop(s.chain), false);
  t.equal(s.vq.broken, null);
});

t.test('chained readable + writable descriptors, read/write across segments, used ring', async (t) => {
  const s = setup();
  s.drv.g.write(0x4000, pattern(10, 1));
  s.drv.g.write(0x5000, pattern(20, 50));
  s.drv.setDesc(0, { addr: 0x4000, len: 10, flags: NEXT, next: 3 });
  s.drv.setDesc(3, { addr: 0x5000, len: 20, flags: NEXT, next: 5 });
  s.drv.setDesc(5, { addr: 0x6000, len: 30, flags: NEXT | WRITE, next: 1 });
  s.drv.setDesc(1, { addr: 0x7000, len: 40, flags: WRITE });
  s.drv.offer(0);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.head, 0);
  t.equal(s.chain.count, 4);
  t.equal(s.chain.readableCount, 2);
  t.equal(s.chain.readableBytes, 30);
  t.equal(s.chain.writableBytes, 70);
  t.same(segments(s), [
    { r: 'A', off: 0x4000, len: 10 },
    { r: 'A', off: 0x5000, len: 20 },
    { r: 'A', off: 0x6000, len: 30 },
    { r: 'A', off: 0x7000, len: 40 },
  ]);

  // Read 20 bytes from logical offset 5: the last 5 of the first segment, 15 of the second.
  const out = new Uint8Array(20);
  t.equal(s.chain.read(out, 0, 5, 20), 20);
  t.same([...out], [...pattern(10, 1).subarray(5), ...pattern(20, 50).subarray(0, 15)]);
  const all = new Uint8Array(40);
  t.equal(s.chain.read(all, 0, 0, 40), 30);
  t.same([...all.subarray(0, 30)], [...pattern(10, 1), ...pattern(20, 50)]);
  t.equal(s.chain.read(all, 0, 10, 5), 5, 'offset exactly at a segment boundary');
  t.same([...all.subarray(0, 5)], [...pattern(20, 50).subarray(0, 5)]);

  // Write 50 bytes at logical offset 25: 5 at the end of the first writable segment, 40 in the
  // second, and the last 5 do not fit.
  const src = pattern(64, 7);
  t.equal(s.chain.write(src, 10, 50, 25), 45);
  t.same([...s.drv.g.read(0x6000 + 25, 5)], [...src.subarray(10, 15)]);
  t.same([...s.drv.g.read(0x7000, 40)], [...src.subarray(15, 55)]);
  t.same([...s.drv.g.read(0x6000, 25)], new Array(25).fill(0), 'bytes before the offset untouched');
  t.equal(s.chain.write(src, 0, 64, 0), 64, 'a long (non-byte-loop) copy');
  t.same([...s.drv.g.read(0x6000, 30)], [...src.subarray(0, 30)]);
  t.same([...s.drv.g.read(0x7000, 34)], [...src.subarray(30, 64)]);
  t.same([...s.drv.g.read(0x4000, 10)], [...pattern(10, 1)], 'readable buffers not written');

  t.equal(s.vq.usedIdx, 0);
  s.vq.pushUsed(s.chain.head, 45);
  t.equal(s.vq.usedIdx, 1);
  t.equal(s.drv.usedIdx, 1, 'used.idx published in guest memory');
  t.same(s.drv.usedElem(0), { id: 0, len: 45 });
  s.drv.setDesc(2, { addr: 0x8000, len: 4, flags: WRITE });
  s.drv.offer(2);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.readableCount, 0);
  t.equal(s.chain.count, 1, 'chain reset between pops');
  t.equal(s.chain.readableBytes, 0);
  t.equal(s.chain.writableBytes, 4);
  s.vq.pushUsed(2, 4);
  t.same(s.drv.usedElem(1), { id: 2, len: 4 });
  t.equal(s.drv.usedIdx, 2);
});

t.test('a chain of exactly the queue size is fine', async (t) => {
  const s = setup();
  for (let i = 0; i < 8; i++) s.drv.setDesc(i, { addr: 0x4000 + i * 0x10, len: 0x10, flags: i < 7 ? NEXT : 0, next: i + 1 });
  s.drv.offer(0);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.count, 8);
  t.equal(s.chain.readableBytes, 0x80);
});

t.test('zero-length descriptors add no segment', async (t) => {
  const s = setup();
  s.drv.setDesc(0, { addr: 0x4000, len: 0, flags: NEXT, next: 1 });
  s.drv.setDesc(1, { addr: 0x4000, len: 8, flags: NEXT, next: 2 });
  s.drv.setDesc(2, { addr: 0x5000, len: 0, flags: WRITE });
  s.drv.offer(0);
  t.equal(s.vq.pop(s.chain), true);
  t.same(segments(s), [{ r: 'A', off: 0x4000, len: 8 }]);
  t.equal(s.chain.readableCount, 1);
});

t.test('a buffer spanning two adjacent regions becomes two segments', async (t) => {
  const s = setup();
  const data = pattern(0x30, 3);
  s.drv.g.write(0xffe0, data); // 0x20 bytes in A, 0x10 in B
  s.drv.setDesc(0, { addr: 0xffe0, len: 0x30, flags: NEXT, next: 1 });
  s.drv.setDesc(1, { addr: 0xfff8, len: 0x18, flags: WRITE }); // 8 in A, 0x10 in B
  s.drv.offer(0);
  t.equal(s.vq.pop(s.chain), true);
  t.same(segments(s), [
    { r: 'A', off: 0xffe0, len: 0x20 },
    { r: 'B', off: 0, len: 0x10 },
    { r: 'A', off: 0xfff8, len: 8 },
    { r: 'B', off: 0, len: 0x10 },
  ]);
  t.equal(s.chain.readableCount, 2);
  t.equal(s.chain.readableBytes, 0x30);
  t.equal(s.chain.writableBytes, 0x18);
  const out = new Uint8Array(0x30);
  t.equal(s.chain.read(out, 0, 0, 0x30), 0x30);
  t.same([...out], [...data]);
  const mid = new Uint8Array(8);
  t.equal(s.chain.read(mid, 0, 0x1c, 8), 8, 'read across the region boundary');
  t.same([...mid], [...data.subarray(0x1c, 0x24)]);
  const src = pattern(0x18, 99);
  t.equal(s.chain.write(src, 0, 0x18, 0), 0x18);
  t.same([...s.drv.g.read(0xfff8, 0x18)], [...src]);
  t.equal(s.chain.write(src, 0, 4, 6), 4, 'write across the region boundary at an offset');
  t.same([...s.drv.g.read(0xfffe, 4)], [...src.subarray(0, 4)]);
});

t.test('indirect descriptor tables', async (t) => {
  const s = setup({ indirect: true });
  const table = 0x8000;
  s.drv.setDesc(0, { addr: 0x9000, len: 16, flags: NEXT, next: 2 }, table);
  s.drv.setDesc(2, { addr: 0xa000, len: 32, flags: NEXT | WRITE, next: 1 }, table);
  s.drv.setDesc(1, { addr: 0xb000, len: 8, flags: WRITE }, table);
  // The WRITE flag on the descriptor that points to the table is ignored.
  s.drv.setDesc(6, { addr: table, len: 48, flags: INDIRECT | WRITE });
  s.drv.g.write(0x9000, pattern(16, 4));
  s.drv.offer(6);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.head, 6, 'head is the index in the ring table, not the indirect one');
  t.same(segments(s), [
    { r: 'A', off: 0x9000, len: 16 },
    { r: 'A', off: 0xa000, len: 32 },
    { r: 'A', off: 0xb000, len: 8 },
  ]);
  t.equal(s.chain.readableCount, 1);
  const out = new Uint8Array(16);
  s.chain.read(out, 0, 0, 16);
  t.same([...out], [...pattern(16, 4)]);

  // A table in the second region, and one that is longer than the queue itself.
  const big = 0x10100;
  for (let i = 0; i < 20; i++) s.drv.setDesc(i, { addr: 0x11000 + i * 4, len: 4, flags: i < 19 ? NEXT | WRITE : WRITE, next: i + 1 }, big);
  s.drv.setDesc(3, { addr: big, len: 20 * 16, flags: INDIRECT });
  s.drv.offer(3);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.chain.count, 20);
  t.equal(s.chain.writableBytes, 80);
  t.equal(segments(s)[19]!.r, 'B');
  t.equal(segments(s)[19]!.off, 0x1000 + 19 * 4);

  // Readable direct descriptors before an indirect table at the end of the chain.
  s.drv.setDesc(0, { addr: 0x9100, len: 16 }, 0x8400);
  s.drv.setDesc(4, { addr: 0x9000, len: 4, flags: NEXT, next: 5 });
  s.drv.setDesc(5, { addr: 0x8400, len: 16, flags: INDIRECT });
  s.drv.offer(4);
  t.equal(s.vq.pop(s.chain), true);
  t.same(segments(s), [
    { r: 'A', off: 0x9000, len: 4 },
    { r: 'A', off: 0x9100, len: 16 },
  ]);
});

t.test('16-bit index wrap-around', async (t) => {
  const START = 65530;
  const s = setup({
    lastAvailIdx: START,
    before: (d) => {
      d.availIdx = START;
      d.usedIdx = START;
    },
  });
  t.equal(s.vq.lastAvailIdx, START);
  t.equal(s.vq.usedIdx, START, 'used idx resumed from guest memory');
  for (let i = 0; i < 8; i++) s.drv.setDesc(i, { addr: 0x4000 + 0x100 * i, len: 0x10 + i, flags: WRITE });
  const heads: number[] = [];
  const used: number[] = [];
  // 4 rounds of 4 chains: avail and used indices go 65530 → 65534 → 2 → 6 → 10.
  let head = 0;
  for (let round = 0; round < 4; round++) {
    const offered = [];
    for (let k = 0; k < 4; k++) offered.push(head++ % 8);
    s.drv.offer(...offered);
    t.equal(s.vq.pending(), 4, `round ${round}: 4 pending across the wrap`);
    while (s.vq.pop(s.chain)) {
      heads.push(s.chain.head);
      t.equal(s.chain.writableBytes, 0x10 + s.chain.head);
      s.vq.pushUsed(s.chain.head, s.chain.writableBytes);
      used.push(s.vq.usedIdx);
    }
  }
  t.same(heads, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7]);
  t.same(used, [65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  t.equal(s.vq.lastAvailIdx, 10);
  t.equal(s.vq.usedIdx, 10);
  t.equal(s.drv.usedIdx, 10);
  t.equal(s.drv.availIdx, 10);
  // Slot = idx % size. Entry k (0..15) has idx 65530 + k and head k % 8; 65530 % 8 = 2.
  t.same(s.drv.usedElem(1), { id: 7, len: 0x17 }, 'slot 1: idx 9, the 16th entry');
  t.same(s.drv.usedElem(2), { id: 0, len: 0x10 }, 'slot 2: idx 2, the 9th entry');
  t.same(s.drv.usedElem(7), { id: 5, len: 0x15 }, 'slot 7: idx 7, the 14th entry');
  t.equal(s.drv.availRing(1), 7);
  t.equal(s.vq.pending(), 0);

  // lastAvailIdx is taken modulo 2^16.
  t.equal(setup({ lastAvailIdx: 65536 + 3, before: (d) => (d.availIdx = 3) }).vq.lastAvailIdx, 3);
});

// ---------------------------------------------------------------------------------------------
// Driver errors

t.test('avail.idx advanced by more than the queue size', async (t) => {
  const s = setup();
  s.drv.availIdx = 8;
  t.equal(s.vq.pending(), 8, 'exactly size is fine');
  s.drv.availIdx = 9;
  breaks(t, s, () => s.vq.pending(), 'driver advanced avail.idx by 9, more than the queue size 8');
  const s2 = setup({ lastAvailIdx: 100 });
  s2.drv.availIdx = 99; // moved backwards = 65535 ahead
  breaks(t, s2, () => s2.vq.pop(s2.chain), 'driver advanced avail.idx by 65535, more than the queue size 8');
  t.equal(s2.vq.lastAvailIdx, 100);
});

t.test('head out of range', async (t) => {
  const s = setup({ index: 3 });
  s.drv.offer(8);
  breaks(t, s, () => s.vq.pop(s.chain), 'available ring entry 0 names descriptor 8, outside the table of 8');
  t.equal(s.vq.lastAvailIdx, 0, 'not consumed');
  // Fixing the ring afterwards does not revive the queue.
  s.drv.setAvailRing(0, 0);
  s.drv.setDesc(0, { addr: 0x4000, len: 1 });
  t.equal(s.vq.pop(s.chain), false);
  const s2 = setup({ lastAvailIdx: 65535, before: (d) => (d.availIdx = 65535) });
  s2.drv.offer(0xffff);
  breaks(t, s2, () => s2.vq.pop(s2.chain), 'available ring entry 65535 names descriptor 65535, outside the table of 8');
});

t.test('next out of range', async (t) => {
  const s = setup();
  s.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 8 });
  s.drv.offer(0);
  breaks(t, s, () => s.vq.pop(s.chain), 'descriptor 0 links to 8, outside its table of 8');
  const s2 = setup({ indirect: true });
  s2.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 1 }, 0x8000);
  s2.drv.setDesc(1, { addr: 0x4000, len: 4, flags: NEXT, next: 2 }, 0x8000);
  s2.drv.setDesc(0, { addr: 0x8000, len: 32, flags: INDIRECT });
  s2.drv.offer(0);
  breaks(t, s2, () => s2.vq.pop(s2.chain), 'descriptor 1 links to 2, outside its table of 2');
});

t.test('descriptor loops and chains longer than the table', async (t) => {
  const s = setup();
  s.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 1 });
  s.drv.setDesc(1, { addr: 0x4010, len: 4, flags: NEXT, next: 0 });
  s.drv.offer(0);
  breaks(t, s, () => s.vq.pop(s.chain), 'descriptor chain from head 0 is longer than its table (8): loop');

  const self = setup();
  self.drv.setDesc(4, { addr: 0x4000, len: 4, flags: NEXT, next: 4 });
  self.drv.offer(4);
  breaks(t, self, () => self.vq.pop(self.chain), 'descriptor chain from head 4 is longer than its table (8): loop');

  // 0→1→…→7→0: every descriptor used once, the ninth step is one too many.
  const full = setup();
  for (let i = 0; i < 8; i++) full.drv.setDesc(i, { addr: 0x4000, len: 1, flags: NEXT, next: (i + 1) % 8 });
  full.drv.offer(0);
  breaks(t, full, () => full.vq.pop(full.chain), 'descriptor chain from head 0 is longer than its table (8): loop');

  // A loop inside an indirect table is bounded by the indirect table's size.
  const ind = setup({ indirect: true });
  for (let i = 0; i < 3; i++) ind.drv.setDesc(i, { addr: 0x4000, len: 1, flags: NEXT, next: (i + 1) % 3 }, 0x8000);
  ind.drv.setDesc(0, { addr: 0x8000, len: 48, flags: INDIRECT });
  ind.drv.offer(0);
  breaks(t, ind, () => ind.vq.pop(ind.chain), 'descriptor chain from head 0 is longer than its table (3): loop');
});

t.test('indirect table errors', async (t) => {
  const cases: [string, boolean, (d: DriverRing) => void, string][] = [
    ['not negotiated', false, (d) => d.setDesc(0, { addr: 0x8000, len: 32, flags: INDIRECT }), 'descriptor 0 is indirect but VIRTIO_RING_F_INDIRECT_DESC was not negotiated'],
    [
      'indirect inside indirect',
      true,
      (d) => {
        d.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 1 }, 0x8000);
        d.setDesc(1, { addr: 0x8100, len: 16, flags: INDIRECT }, 0x8000);
        d.setDesc(0, { addr: 0x8000, len: 32, flags: INDIRECT });
      },
      'indirect descriptor 1 inside an indirect table',
    ],
    ['INDIRECT and NEXT', true, (d) => d.setDesc(0, { addr: 0x8000, len: 32, flags: INDIRECT | NEXT, next: 1 }), 'descriptor 0 has both INDIRECT and NEXT'],
    ['length not a multiple of 16', true, (d) => d.setDesc(0, { addr: 0x8000, len: 40, flags: INDIRECT }), 'indirect table length 40 is not a non-zero multiple of 16'],
    ['length 0', true, (d) => d.setDesc(0, { addr: 0x8000, len: 0, flags: INDIRECT }), 'indirect table length 0 is not a non-zero multiple of 16'],
    ['table outside memory', true, (d) => d.setDesc(0, { addr: 0x30000, len: 32, flags: INDIRECT }), 'indirect table at 0x30000 (+32) is outside guest memory'],
    ['table running off the end', true, (d) => d.setDesc(0, { addr: 0x1fff0, len: 32, flags: INDIRECT }), 'indirect table at 0x1fff0 (+32) is outside guest memory'],
    ['table straddling two regions', true, (d) => d.setDesc(0, { addr: 0xfff0, len: 32, flags: INDIRECT }), 'indirect table at 0xfff0 (+32) is outside guest memory'],
  ];
  for (const [name, indirect, prepare, detail] of cases) {
    t.test(name, async (t) => {
      const s = setup({ indirect });
      prepare(s.drv);
      s.drv.offer(0);
      breaks(t, s, () => s.vq.pop(s.chain), detail);
    });
  }
});

t.test('buffers outside guest memory', async (t) => {
  const cases: [number | bigint, number, string][] = [
    [0x30000, 16, 'descriptor 0 buffer 0x30000 (+16) is outside guest memory'],
    [0x1fff8, 16, 'descriptor 0 buffer 0x1fff8 (+16) is outside guest memory'],
    [0x1_0000_0000, 1, 'descriptor 0 buffer 0x100000000 (+1) is outside guest memory'],
    [0x0, 0xffff_ffff, 'descriptor 0 buffer 0x0 (+4294967295) is outside guest memory'],
    [1n << 53n, 1, 'descriptor 0 address beyond 2^53'],
    [0xffff_ffff_ffff_f000n, 1, 'descriptor 0 address beyond 2^53'],
  ];
  for (const [addr, len, detail] of cases) {
    const s = setup();
    s.drv.setDesc(0, { addr, len });
    s.drv.offer(0);
    breaks(t, s, () => s.vq.pop(s.chain), detail);
  }
  // The second descriptor of a chain names its own index.
  const s = setup();
  s.drv.setDesc(2, { addr: 0x4000, len: 4, flags: NEXT, next: 6 });
  s.drv.setDesc(6, { addr: 0x40000, len: 4, flags: WRITE });
  s.drv.offer(2);
  breaks(t, s, () => s.vq.pop(s.chain), 'descriptor 6 buffer 0x40000 (+4) is outside guest memory');
});

t.test('device-readable after device-writable', async (t) => {
  const s = setup();
  s.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 1 });
  s.drv.setDesc(1, { addr: 0x5000, len: 4, flags: NEXT | WRITE, next: 2 });
  s.drv.setDesc(2, { addr: 0x6000, len: 4 });
  s.drv.offer(0);
  breaks(t, s, () => s.vq.pop(s.chain), 'descriptor 2 is device-readable after a device-writable one');
  const ind = setup({ indirect: true });
  ind.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT | WRITE, next: 1 }, 0x8000);
  ind.drv.setDesc(1, { addr: 0x4000, len: 4 }, 0x8000);
  ind.drv.setDesc(0, { addr: 0x8000, len: 32, flags: INDIRECT });
  ind.drv.offer(0);
  breaks(t, ind, () => ind.vq.pop(ind.chain), 'descriptor 1 is device-readable after a device-writable one');
});

t.test('segment limit', async (t) => {
  // An indirect table of exactly MAX_CHAIN_SEGMENTS one-byte buffers is accepted; one more is not.
  for (const n of [MAX_CHAIN_SEGMENTS, MAX_CHAIN_SEGMENTS + 1]) {
    const s = setup({ indirect: true });
    for (let i = 0; i < n; i++) s.drv.setDesc(i, { addr: 0x4000 + i, len: 1, flags: i < n - 1 ? NEXT : 0, next: i + 1 }, 0x10000);
    s.drv.setDesc(0, { addr: 0x10000, len: 16 * n, flags: INDIRECT });
    s.drv.offer(0);
    if (n === MAX_CHAIN_SEGMENTS) {
      t.equal(s.vq.pop(s.chain), true);
      t.equal(s.chain.count, MAX_CHAIN_SEGMENTS);
      t.equal(s.chain.readableBytes, MAX_CHAIN_SEGMENTS);
    } else {
      breaks(t, s, () => s.vq.pop(s.chain), `descriptor chain has more than ${MAX_CHAIN_SEGMENTS} segments`);
    }
  }
});

t.test('a broken queue stays broken', async (t) => {
  const s = setup();
  s.drv.setDesc(0, { addr: 0x4000, len: 4, flags: NEXT, next: 9 });
  s.drv.setDesc(1, { addr: 0x4000, len: 4 });
  s.drv.offer(0, 1);
  t.throws(() => s.vq.pop(s.chain));
  t.ok(s.vq.broken instanceof QueueError);
  s.drv.setDesc(0, { addr: 0x4000, len: 4 });
  t.equal(s.vq.pop(s.chain), false, 'pop() stays false after the driver repairs the chain');
  t.equal(s.vq.pop(s.chain), false);
  t.equal(s.vq.lastAvailIdx, 0);
  s.vq.pushUsed(0, 4);
  t.equal(s.drv.usedIdx, 0);
  t.equal(s.vq.usedIdx, 0);
});

// ---------------------------------------------------------------------------------------------
// Notifications

/** Pop and return every pending chain; returns how many. */
function serve(s: Setup, n: number): void {
  for (let i = 0; i < n; i++) s.vq.pushUsed(0, 0);
}

t.test('needsNotify without EVENT_IDX follows avail.flags NO_INTERRUPT', async (t) => {
  const s = setup();
  t.equal(s.vq.needsNotify(), false, 'nothing used yet');
  serve(s, 1);
  t.equal(s.vq.needsNotify(), true);
  t.equal(s.vq.needsNotify(), false, 'already signalled for that entry');
  s.drv.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
  serve(s, 2);
  t.equal(s.vq.needsNotify(), false, 'driver asked for no interrupts');
  serve(s, 1);
  s.drv.availFlags = 0;
  t.equal(s.vq.needsNotify(), true);
  s.drv.usedEvent = 100; // ignored without EVENT_IDX
  serve(s, 1);
  t.equal(s.vq.needsNotify(), true);
});

t.test('needsNotify with EVENT_IDX follows used_event', async (t) => {
  const s = setup({ eventIdx: true });
  s.drv.availFlags = VRING_AVAIL_F_NO_INTERRUPT; // must be ignored with EVENT_IDX
  s.drv.usedEvent = 0;
  t.equal(s.vq.needsNotify(), false, 'nothing new');
  serve(s, 1); // used 0 → 1, crosses used_event 0
  t.equal(s.vq.needsNotify(), true);
  s.drv.usedEvent = 5;
  serve(s, 1); // 1 → 2
  t.equal(s.vq.needsNotify(), false);
  serve(s, 3); // 2 → 5: used_event 5 not yet passed (entry 5 not written)
  t.equal(s.vq.needsNotify(), false);
  serve(s, 1); // 5 → 6: entry 5 written
  t.equal(s.vq.needsNotify(), true);
  s.drv.usedEvent = 7;
  serve(s, 3); // 6 → 9 in one batch, passes 7
  t.equal(s.vq.needsNotify(), true);
  s.drv.usedEvent = 8; // already behind: no new notification
  serve(s, 2); // 9 → 11
  t.equal(s.vq.needsNotify(), false);
  s.drv.usedEvent = 11;
  serve(s, 1);
  t.equal(s.vq.needsNotify(), true, 'exactly used_event');
});

t.test('needsNotify with EVENT_IDX across the 16-bit wrap', async (t) => {
  const s = setup({ eventIdx: true, before: (d) => (d.usedIdx = 65534) });
  t.equal(s.vq.usedIdx, 65534);
  s.drv.usedEvent = 65535;
  serve(s, 3); // 65534 → 1, passes 65535
  t.equal(s.vq.usedIdx, 1);
  t.equal(s.vq.needsNotify(), true);
  s.drv.usedEvent = 0; // behind (at 1 already)
  serve(s, 1);
  t.equal(s.vq.needsNotify(), false);

  const s2 = setup({ eventIdx: true, before: (d) => (d.usedIdx = 65534) });
  s2.drv.usedEvent = 2;
  serve(s2, 2); // 65534 → 0
  t.equal(s2.vq.needsNotify(), false, 'used_event 2 is ahead across the wrap');
  serve(s2, 2); // 0 → 2
  t.equal(s2.vq.needsNotify(), false);
  serve(s2, 1); // 2 → 3
  t.equal(s2.vq.needsNotify(), true);
});

t.test('setKickWanted with EVENT_IDX writes avail_event', async (t) => {
  const s = setup({ eventIdx: true });
  for (let i = 0; i < 8; i++) s.drv.setDesc(i, { addr: 0x4000, len: 1 });
  t.equal(s.vq.setKickWanted(true), false, 'nothing pending');
  t.equal(s.drv.availEvent, 0);
  s.drv.offer(0, 1, 2);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.vq.setKickWanted(true), true, 'buffers arrived meanwhile');
  t.equal(s.drv.availEvent, 3, 'avail_event = avail.idx the driver has published (kick on the next new buffer)');
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.vq.setKickWanted(true), false);
  t.equal(s.drv.availEvent, 3);
  t.equal(s.vq.setKickWanted(false), false, 'disable never reports pending buffers');
  t.equal(s.drv.availEvent, 3, 'disable leaves avail_event alone');
  t.equal(s.drv.usedFlags, 0, 'used.flags untouched with EVENT_IDX');
  s.drv.offer(3);
  t.equal(s.vq.setKickWanted(false), false);
  t.equal(s.vq.setKickWanted(true), true);
});

t.test('setKickWanted with EVENT_IDX across the wrap', async (t) => {
  const s = setup({ eventIdx: true, lastAvailIdx: 65535, before: (d) => (d.availIdx = 65535) });
  s.drv.setDesc(0, { addr: 0x4000, len: 1 });
  s.drv.offer(0);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.vq.lastAvailIdx, 0);
  t.equal(s.vq.setKickWanted(true), false);
  t.equal(s.drv.availEvent, 0);
});

t.test('setKickWanted without EVENT_IDX toggles used.flags NO_NOTIFY', async (t) => {
  const s = setup();
  s.drv.usedFlags = 0x8000; // an unrelated bit must survive
  t.equal(s.vq.setKickWanted(false), false);
  t.equal(s.drv.usedFlags, 0x8000 | VRING_USED_F_NO_NOTIFY);
  s.drv.setDesc(0, { addr: 0x4000, len: 1 });
  s.drv.offer(0);
  t.equal(s.vq.setKickWanted(false), false, 'disable does not report pending buffers');
  t.equal(s.drv.usedFlags, 0x8000 | VRING_USED_F_NO_NOTIFY);
  t.equal(s.vq.setKickWanted(true), true, 'buffers arrived while kicks were off');
  t.equal(s.drv.usedFlags, 0x8000);
  t.equal(s.vq.pop(s.chain), true);
  t.equal(s.vq.setKickWanted(true), false);
  t.equal(s.drv.usedFlags, 0x8000);
  t.equal(s.drv.availEvent, 0, 'avail_event not written without EVENT_IDX');
});

// ---------------------------------------------------------------------------------------------
// Construction

t.test('constructor validation', async (t) => {
  const make = (layout: RingLayout, index = 0) => {
    const { mem } = memoryWith([REGION_A, REGION_B]);
    return new SplitVirtqueue(mem, { index, layout, lastAvailIdx: 0, eventIdx: false, indirect: false });
  };
  const rejects = (layout: Partial<RingLayout>, detail: string, index = 0) => {
    let err: unknown;
    try {
      make({ ...LAYOUT, ...layout }, index);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof QueueError, detail);
    t.equal((err as Error).message, `queue ${index}: ${detail}`);
  };
  for (const size of [0, 3, 6, 1000, 65536, 0x10000 + 8]) rejects({ size }, `queue size ${size} is not a power of two in 1..32768`);
  for (const size of [1, 2, 256]) t.equal(make({ ...LAYOUT, size }).size, size);
  // 32768 is the maximum: 512 KiB of descriptors, 64 KiB + 6 of avail ring, 256 KiB + 6 of used ring.
  const { mem: bigMem } = memoryWith([{ guestPhysAddr: 0, size: 0x100000, userAddr: UVA, mmapOffset: 0 }]);
  const big = new SplitVirtqueue(bigMem, { index: 0, layout: { size: 32768, descGpa: 0, availGpa: 0x80000, usedGpa: 0x91000 }, lastAvailIdx: 0, eventIdx: true, indirect: false });
  t.equal(big.size, 32768);
  rejects({ descGpa: 0x8 }, 'descriptor table address 0x8 is not 16-byte aligned', 2);
  rejects({ availGpa: 0x1001 }, 'available ring address 0x1001 is not 2-byte aligned');
  rejects({ usedGpa: 0x2002 }, 'used ring address 0x2002 is not 4-byte aligned');
  t.equal(make({ ...LAYOUT, descGpa: 0x10, availGpa: 0x1002, usedGpa: 0x2004 }).size, 8, 'minimum alignments are enough');
  rejects({ descGpa: 0xfff0 }, 'descriptor table at guest address 0xfff0 (+128) is outside guest memory');
  rejects({ descGpa: 0x20000 }, 'descriptor table at guest address 0x20000 (+128) is outside guest memory');
  rejects({ availGpa: 0x1fff0 }, 'available ring at guest address 0x1fff0 (+22) is outside guest memory');
  rejects({ availGpa: 0xfff0 }, 'available ring at guest address 0xfff0 (+22) is outside guest memory');
  rejects({ usedGpa: 0xffc0 }, 'used ring at guest address 0xffc0 (+70) is outside guest memory');
  t.equal(make({ ...LAYOUT, usedGpa: 0x10000 - 72 }).size, 8, 'used ring ending 2 bytes before the region end');
  t.equal(make({ ...LAYOUT, usedGpa: 0x20000 - 72, availGpa: 0x20000 - 22 }).size, 8, 'rings ending exactly at the region end');
});

// ---------------------------------------------------------------------------------------------
// Hot path

t.test('pop() in a hot loop reuses the chain arrays', async (t) => {
  const s = setup({ indirect: true });
  const { bufs, offs, lens } = s.chain;
  s.drv.setDesc(0, { addr: 0x4000, len: 64, flags: NEXT, next: 1 });
  s.drv.setDesc(1, { addr: 0xfff0, len: 32, flags: WRITE | NEXT, next: 2 }); // 2 segments
  s.drv.setDesc(2, { addr: 0x5000, len: 16, flags: WRITE });
  for (let i = 0; i < 4; i++) s.drv.setDesc(i, { addr: 0x6000 + i * 16, len: 16, flags: i < 3 ? NEXT : 0, next: i + 1 }, 0x9000);
  s.drv.setDesc(3, { addr: 0x9000, len: 64, flags: INDIRECT });
  let pops = 0;
  for (let round = 0; round < 3000; round++) {
    s.drv.offer(round % 2 === 0 ? 0 : 3);
    while (s.vq.pop(s.chain)) {
      pops++;
      s.vq.pushUsed(s.chain.head, 0);
    }
  }
  t.equal(pops, 3000);
  t.equal(s.vq.usedIdx, 3000);
  t.equal(s.chain.bufs, bufs, 'same bufs array');
  t.equal(s.chain.offs, offs, 'same offs array');
  t.equal(s.chain.lens, lens, 'same lens array');
  t.equal(s.chain.bufs.length, MAX_CHAIN_SEGMENTS, 'bufs did not grow');
  t.equal(s.chain.offs.length, MAX_CHAIN_SEGMENTS);
  t.equal(s.chain.lens.length, MAX_CHAIN_SEGMENTS);
  t.equal(s.chain.count, 4, 'last chain was the indirect one');
});

t.test('DescChain.reset and copyBytes', async (t) => {
  const c = new DescChain();
  t.equal(c.head, -1);
  t.equal(c.bufs.length, MAX_CHAIN_SEGMENTS);
  c.head = 3;
  c.count = 2;
  c.readableCount = 1;
  c.readableBytes = 5;
  c.writableBytes = 6;
  c.reset();
  t.same([c.head, c.count, c.readableCount, c.readableBytes, c.writableBytes], [-1, 0, 0, 0, 0]);
  for (const n of [0, 1, 32, 33, 100]) {
    const src = pattern(n + 4, n);
    const dst = new Uint8Array(n + 8);
    copyBytes(src, 2, dst, 3, n);
    t.same([...dst.subarray(3, 3 + n)], [...src.subarray(2, 2 + n)], `copy ${n}`);
    t.equal(dst[2], 0);
    t.equal(dst[3 + n], 0, `copy ${n} stops at n`);
  }
});
