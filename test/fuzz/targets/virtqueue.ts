/**
 * virtqueue.ts — fuzz target: split virtqueues (src/vhost-user/virtqueue.ts) over guest memory a
 * hostile driver wrote.
 *
 * Each case lays out one or two guest memory regions (adjacent, or with a hole between them),
 * picks a ring size, ring addresses (sane, misaligned, straddling a region's end), features and
 * a starting avail index, writes descriptors (direct and indirect, with addresses into, across
 * and outside memory), available-ring entries and indices, then plays pops, used returns,
 * notification decisions and further driver writes (the driver racing the device). Only
 * QueueError may escape, a broken queue stays inert, and every chain popped points inside
 * guest memory (a DataView access out of bounds would surface as a RangeError and fail).
 */
import fc from 'fast-check';
import { QueueError } from '../../../src/vhost-user/errors.js';
import type { GuestMemory } from '../../../src/vhost-user/memory.js';
import type { MemRegionDesc } from '../../../src/vhost-user/messages.js';
import { DescChain, MAX_CHAIN_SEGMENTS, SplitVirtqueue } from '../../../src/vhost-user/virtqueue.js';
import { memoryWith } from '../../helpers/array-mapper.js';
import { InvariantError, type FuzzTarget } from '../runner.js';

const REGION = 0x10000;
const MEMORY_LAYOUTS: readonly MemRegionDesc[][] = [
  [{ guestPhysAddr: 0, size: REGION, userAddr: 0x7f00_0000_0000, mmapOffset: 0 }],
  [
    { guestPhysAddr: 0, size: REGION, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
    { guestPhysAddr: REGION, size: REGION, userAddr: 0x7f00_1000_0000, mmapOffset: 0 },
  ],
  [
    { guestPhysAddr: 0, size: REGION, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
    { guestPhysAddr: 3 * REGION, size: REGION, userAddr: 0x7f00_1000_0000, mmapOffset: 0 },
  ],
];

/** Guest-physical addresses worth trying: inside, at the edges of regions, in holes, far out. */
const gpa: fc.Arbitrary<number> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 2 * REGION - 1 }) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(REGION, 2 * REGION, 3 * REGION, 4 * REGION), fc.integer({ min: -64, max: 64 })).map(([b, d]) => Math.max(0, b + d)) },
  { weight: 1, arbitrary: fc.constantFrom(0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53 - 16, Number.MAX_SAFE_INTEGER) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 8 * REGION }) },
);
const addr64: fc.Arbitrary<bigint> = fc.oneof({ weight: 9, arbitrary: gpa.map(BigInt) }, { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) });
const len32: fc.Arbitrary<number> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 4096 }) },
  { weight: 2, arbitrary: fc.constantFrom(0, 1, 15, 16, 17, 32, 4096, REGION, REGION + 1, 2 * REGION, 16 * 1025, 0xffff_fff0, 0xffff_ffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
);

type Write =
  /** Descriptor i of the ring's table (or of a table at `table`). */
  | { kind: 'desc'; table: number | null; i: number; addr: bigint; len: number; flags: number; next: number }
  | { kind: 'avail'; slot: number; head: number }
  /** avail.idx = lastAvailIdx + delta (absolute: a random index). */
  | { kind: 'availIdx'; delta: number; absolute: boolean }
  | { kind: 'availFlags'; flags: number }
  | { kind: 'usedIdx'; idx: number }
  | { kind: 'bytes'; at: number; bytes: Uint8Array };

type Op = { kind: 'pop'; usedLen: number; consume: boolean } | { kind: 'pending' } | { kind: 'notify' } | { kind: 'kickWanted'; enable: boolean } | { kind: 'write'; w: Write };

export interface VqCase {
  layout: number;
  size: number;
  descGpa: number;
  availGpa: number;
  usedGpa: number;
  eventIdx: boolean;
  indirect: boolean;
  lastAvailIdx: number;
  /** Chains made available before the writes: heads 0, 1, … in the next slots. */
  offered: number;
  writes: Write[];
  ops: Op[];
}

const flags16 = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 7 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) });
const write = (size: number): fc.Arbitrary<Write> =>
  fc.oneof(
    {
      weight: 8,
      arbitrary: fc.record({
        kind: fc.constant('desc' as const),
        table: fc.option(fc.integer({ min: 0, max: 2 * REGION - 16 }).map((a) => a & ~15), { freq: 4 }),
        i: fc.nat({ max: Math.max(0, size - 1) }),
        addr: addr64,
        len: len32,
        flags: flags16,
        next: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: Math.max(0, size - 1) }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
      }),
    },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('avail' as const), slot: fc.nat({ max: size }), head: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: Math.max(0, size - 1) }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('availIdx' as const), delta: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: size + 1 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }), absolute: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('availFlags' as const), flags: fc.nat({ max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('usedIdx' as const), idx: fc.nat({ max: 0xffff }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), at: fc.nat({ max: 2 * REGION - 1 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }) },
  );

const ringAddr = (align: number, sane: number): fc.Arbitrary<number> =>
  fc.oneof({ weight: 20, arbitrary: fc.constant(sane) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 2 * REGION }).map((a) => a - (a % align)) }, { weight: 1, arbitrary: gpa });

const vqCase: fc.Arbitrary<VqCase> = fc
  .oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 8 }).map((k) => 2 ** k) }, { weight: 1, arbitrary: fc.constantFrom(0, 3, 1024, 2048, 4096, 32768, 65536) })
  .chain((size) =>
    fc.record({
      layout: fc.nat({ max: MEMORY_LAYOUTS.length - 1 }),
      size: fc.constant(size),
      descGpa: ringAddr(16, 0),
      availGpa: ringAddr(2, 0x8000),
      usedGpa: ringAddr(4, 0xa000),
      eventIdx: fc.boolean(),
      indirect: fc.boolean(),
      lastAvailIdx: fc.oneof(fc.constant(0), fc.constant(0xffff - size), fc.nat({ max: 0xffff })),
      offered: fc.nat({ max: Math.min(size, 16) }),
      writes: fc.array(write(size), { maxLength: 40 }),
      ops: fc.array(
        fc.oneof(
          { weight: 6, arbitrary: fc.record({ kind: fc.constant('pop' as const), usedLen: fc.oneof(fc.nat({ max: 100 }), fc.nat({ max: 0xffffffff })), consume: fc.boolean() }) },
          { weight: 1, arbitrary: fc.constant({ kind: 'pending' as const }) },
          { weight: 1, arbitrary: fc.constant({ kind: 'notify' as const }) },
          { weight: 1, arbitrary: fc.record({ kind: fc.constant('kickWanted' as const), enable: fc.boolean() }) },
          { weight: 2, arbitrary: write(size).map((w) => ({ kind: 'write' as const, w })) },
        ),
        { maxLength: 30 },
      ),
    }),
  );

/** The driver's writes, through the regions' DataViews; writes outside memory are skipped. */
function apply(mem: GuestMemory, c: VqCase, w: Write): void {
  const put = (at: number, n: number, f: (v: DataView, off: number) => void): void => {
    const r = mem.find(at, n);
    if (r) f(r.view, at - r.desc.guestPhysAddr);
  };
  switch (w.kind) {
    case 'desc': {
      const a = (w.table ?? c.descGpa) + 16 * w.i;
      put(a, 16, (v, o) => {
        v.setBigUint64(o, w.addr, true);
        v.setUint32(o + 8, w.len, true);
        v.setUint16(o + 12, w.flags, true);
        v.setUint16(o + 14, w.next, true);
      });
      break;
    }
    case 'avail':
      put(c.availGpa + 4 + 2 * w.slot, 2, (v, o) => v.setUint16(o, w.head, true));
      break;
    case 'availIdx':
      put(c.availGpa + 2, 2, (v, o) => v.setUint16(o, (w.absolute ? w.delta : c.lastAvailIdx + w.delta) & 0xffff, true));
      break;
    case 'availFlags':
      put(c.availGpa, 2, (v, o) => v.setUint16(o, w.flags, true));
      break;
    case 'usedIdx':
      put(c.usedGpa + 2, 2, (v, o) => v.setUint16(o, w.idx, true));
      break;
    case 'bytes':
      for (let k = 0; k < w.bytes.length; k++) put(w.at + k, 1, (v, o) => v.setUint8(o, w.bytes[k]!));
      break;
  }
}

function checkChain(chain: DescChain, regions: Uint8Array[]): void {
  if (chain.count < 0 || chain.count > MAX_CHAIN_SEGMENTS) throw new InvariantError(`chain has ${chain.count} segments`);
  if (chain.readableCount > chain.count) throw new InvariantError('more readable segments than segments');
  let r = 0;
  let w = 0;
  for (let i = 0; i < chain.count; i++) {
    const buf = chain.bufs[i]!;
    if (!regions.includes(buf)) throw new InvariantError(`segment ${i} does not point into a guest region`);
    const off = chain.offs[i]!;
    const len = chain.lens[i]!;
    if (!Number.isInteger(off) || off < 0 || off + len > buf.byteLength) throw new InvariantError(`segment ${i} [${off}, +${len}) is outside its ${buf.byteLength}-byte region`);
    if (i < chain.readableCount) r += len;
    else w += len;
  }
  if (r !== chain.readableBytes || w !== chain.writableBytes) throw new InvariantError(`byte counts ${chain.readableBytes}/${chain.writableBytes} do not match the segments (${r}/${w})`);
}

const scratch = new Uint8Array(8192);

function runCase(c: VqCase): void {
  const { mem } = memoryWith(MEMORY_LAYOUTS[c.layout]!);
  const regions = mem.descriptions().map((d) => mem.find(d.guestPhysAddr, 1)!.bytes);
  for (let k = 0; k < c.offered; k++) apply(mem, c, { kind: 'avail', slot: (c.lastAvailIdx + k) % Math.max(1, c.size), head: k });
  if (c.offered > 0) apply(mem, c, { kind: 'availIdx', delta: c.offered, absolute: false });
  for (const w of c.writes) apply(mem, c, w);
  // Throws QueueError for a bad size or ring address: expected.
  const vq = new SplitVirtqueue(mem, { index: 0, layout: { size: c.size, descGpa: c.descGpa, availGpa: c.availGpa, usedGpa: c.usedGpa }, lastAvailIdx: c.lastAvailIdx, eventIdx: c.eventIdx, indirect: c.indirect });
  const chain = new DescChain();
  let queueError: QueueError | null = null;
  for (const op of c.ops) {
    try {
      switch (op.kind) {
        case 'pop':
          if (vq.pop(chain)) {
            checkChain(chain, regions);
            if (op.consume) {
              chain.read(scratch, 0, 0, Math.min(chain.readableBytes, scratch.length));
              chain.write(scratch, 0, Math.min(chain.writableBytes, scratch.length), 0);
            }
            vq.pushUsed(chain.head, op.usedLen);
          }
          break;
        case 'pending':
          vq.pending();
          break;
        case 'notify':
          vq.needsNotify();
          break;
        case 'kickWanted':
          vq.setKickWanted(op.enable);
          break;
        case 'write':
          apply(mem, c, op.w);
          break;
      }
    } catch (e) {
      if (!(e instanceof QueueError)) throw e;
      if (vq.broken !== e) throw new InvariantError(`QueueError thrown but the queue is not marked broken with it: ${e.message}`);
      queueError = e;
    }
    if (queueError && op.kind === 'pop' && vq.broken === null) throw new InvariantError('a broken queue was repaired by itself');
  }
  if (vq.broken) {
    // A broken queue stays inert.
    if (vq.pop(chain) || vq.pending() !== 0) throw new InvariantError('a broken queue still hands out chains');
  }
  if (queueError) throw queueError;
}

export const virtqueueTarget: FuzzTarget<VqCase> = {
  name: 'virtqueue',
  description: 'split ring layout + descriptors/avail ring written by a hostile driver → SplitVirtqueue pop/pushUsed/notify',
  arbitrary: vqCase,
  expected: (e) => e instanceof QueueError,
  run: runCase,
};
