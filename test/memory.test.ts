/**
 * GuestMemory (src/vhost-user/memory.ts) over an ArrayBuffer-backed Mapper: region bookkeeping,
 * guest-physical and front-end virtual translation at the edges, the last-region cache, overlap
 * and limit checks, page alignment of the mapping, and fd/mapping ownership on every path.
 */
import t, { type Test } from 'tap';
import { MemoryAccessError, ProtocolError, type VhostUserErrorCode } from '../src/vhost-user/errors.js';
import { GuestMemory } from '../src/vhost-user/memory.js';
import type { MemRegionDesc } from '../src/vhost-user/messages.js';
import { ArrayMapper, memoryWith } from './helpers/array-mapper.js';

type T = Test;

/** `fn` throws a request-scoped ProtocolError with `code`, naming `request`, its message containing `detail`. */
function throwsProtocol(tt: T, fn: () => unknown, request: string, detail: string, code: VhostUserErrorCode = 'bad_request'): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof ProtocolError)) return void tt.fail(`expected ProtocolError, got ${String(err)}`);
  tt.equal(err.request, request);
  tt.equal(err.code, code, `code ${code}`);
  tt.equal(err.scope, 'request', 'refuses the request');
  tt.ok(err.message.startsWith(`${request}: `), 'message names the request');
  tt.match(err.message, detail);
}

const UVA = 0x7f55_0000_0000;
const A: MemRegionDesc = { guestPhysAddr: 0, size: 0x10000, userAddr: UVA, mmapOffset: 0 };
const B: MemRegionDesc = { guestPhysAddr: 0x10000, size: 0x8000, userAddr: UVA + 0x20000, mmapOffset: 0x10000 };
const C: MemRegionDesc = { guestPhysAddr: 0x1_0000_0000, size: 0x4000, userAddr: UVA + 0x100000, mmapOffset: 0 };

t.test('a single region', async (t) => {
  const mapper = new ArrayMapper();
  const mem = new GuestMemory(mapper, 4);
  t.equal(mem.regionCount, 0);
  t.equal(mem.maxRegions, 4);
  t.equal(mem.find(0, 1), undefined, 'nothing mapped yet');
  const desc = { ...C };
  const r = mem.add('SET_MEM_TABLE', desc, 7);
  t.equal(mem.regionCount, 1);
  t.same(mapper.maps.map(({ fd, offset, length }) => ({ fd, offset, length })), [{ fd: 7, offset: 0, length: 0x4000 }]);
  t.equal(r.fd, 7);
  t.equal(r.bytes.byteLength, 0x4000);
  t.equal(r.bytes.byteOffset, 0);
  t.equal(r.bytes.buffer, mapper.maps[0]!.buffer);
  t.equal(r.view.byteLength, 0x4000);
  t.equal(r.gpaEnd, 0x1_0000_4000);
  t.equal(r.uvaEnd, UVA + 0x104000);
  t.same(mem.descriptions(), [C]);
  t.same(mem.fds(), [7]);

  // The region keeps its own copy of the description.
  desc.size = 1;
  t.equal(r.desc.size, 0x4000);
  const d = mem.descriptions();
  d[0]!.size = 2;
  t.equal(mem.descriptions()[0]!.size, 0x4000, 'descriptions() returns copies');

  // Boundaries.
  const base = C.guestPhysAddr;
  t.equal(mem.find(base, 1), r, 'first byte');
  t.equal(mem.find(base, 0x4000), r, 'whole region');
  t.equal(mem.find(base + 0x3fff, 1), r, 'last byte');
  t.equal(mem.find(base + 0x3ff0, 16), r, 'last 16 bytes');
  t.equal(mem.find(base + 0x4000, 1), undefined, 'one past the end');
  t.equal(mem.find(base + 0x3ff1, 16), undefined, 'range running one byte past the end');
  t.equal(mem.find(base, 0x4001), undefined, 'one byte longer than the region');
  t.equal(mem.find(base - 1, 1), undefined, 'one before the start');
  t.equal(mem.find(base - 1, 2), undefined, 'range starting one before');
  t.equal(mem.findStart(base + 0x3fff), r);
  t.equal(mem.findStart(base + 0x4000), undefined);
  t.equal(mem.findStart(base - 1), undefined);

  t.same(mapper.unmaps, []);
  t.same(mapper.closed, [], 'fd kept open while mapped');
});

t.test('several regions: translation, adjacent regions, straddling ranges', async (t) => {
  const { mem, mapper } = memoryWith([A, C, B]);
  t.equal(mem.regionCount, 3);
  t.same(mem.descriptions(), [A, C, B], 'insertion order');
  t.same(mem.fds(), [100, 101, 102]);
  const [ra, rc, rb] = mapper.maps.map((m) => m.buffer);
  const region = (gpa: number) => mem.findStart(gpa)?.bytes.buffer;

  t.equal(region(0), ra);
  t.equal(region(0xffff), ra);
  t.equal(region(0x10000), rb, 'first byte of B, adjacent to A');
  t.equal(region(0x17fff), rb);
  t.equal(region(0x18000), undefined, 'gap after B');
  t.equal(region(0xffff_ffff), undefined, 'just before C');
  t.equal(region(0x1_0000_0000), rc);

  // A range straddling A and B: no single region holds it; findStart finds the first one.
  t.equal(mem.find(0xfff0, 0x20), undefined);
  t.equal(mem.find(0xffff, 2), undefined);
  t.equal(mem.findStart(0xfff0)?.desc.guestPhysAddr, 0);
  t.equal(mem.find(0xfff0, 0x10)?.desc.guestPhysAddr, 0, 'up to the boundary is fine');
  t.equal(mem.find(0x10000, 0x8000)?.desc.guestPhysAddr, 0x10000);

  // Alternating lookups: the last-region cache must not answer for another region.
  for (let i = 0; i < 3; i++) {
    t.equal(mem.find(0x100, 4)?.desc.guestPhysAddr, 0);
    t.equal(mem.find(0x10100, 4)?.desc.guestPhysAddr, 0x10000);
    t.equal(mem.find(0x1_0000_0100, 4)?.desc.guestPhysAddr, 0x1_0000_0000);
    t.equal(mem.find(0x18000, 1), undefined, 'miss after a hit does not return the cached region');
  }
});

t.test('uvaToGpa', async (t) => {
  const { mem } = memoryWith([A, B, C]);
  t.equal(mem.uvaToGpa(UVA, 16, 'x'), 0);
  t.equal(mem.uvaToGpa(UVA + 0xfff0, 16, 'x'), 0xfff0, 'last 16 bytes of A');
  t.equal(mem.uvaToGpa(UVA + 0x20000, 1, 'x'), 0x10000, 'B: uva and gpa differ by 0x10000');
  t.equal(mem.uvaToGpa(UVA + 0x27fff, 1, 'x'), 0x17fff);
  t.equal(mem.uvaToGpa(UVA + 0x100010, 0x100, 'x'), 0x1_0000_0010);
  const fails = (uva: number, len: number, what: string) => {
    let err: unknown;
    try {
      mem.uvaToGpa(uva, len, what);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof MemoryAccessError, `${uva.toString(16)}+${len} fails`);
    t.match(err, { code: 'memory_access', scope: 'queue' }, 'a memory access error breaks a queue, not the connection');
    return (err as Error).message;
  };
  t.equal(fails(UVA + 0xfff1, 16, 'queue 0 descriptor table'), `queue 0 descriptor table at front-end address 0x${(UVA + 0xfff1).toString(16)} (+16) is not inside any memory region`);
  t.equal(fails(UVA + 0x10000, 1, 'used ring'), `used ring at front-end address 0x${(UVA + 0x10000).toString(16)} (+1) is not inside any memory region`);
  t.equal(fails(UVA - 1, 2, 'avail'), `avail at front-end address 0x${(UVA - 1).toString(16)} (+2) is not inside any memory region`);
  t.equal(fails(0, 1, 'ring'), 'ring at front-end address 0x0 (+1) is not inside any memory region', 'gpa 0 is not uva 0');
});

t.test('the last-region cache never returns a removed region', async (t) => {
  const { mem, mapper } = memoryWith([A, B]);
  t.equal(mem.find(0x10010, 8)?.desc.guestPhysAddr, 0x10000, 'B now cached');
  mem.remove('REM_MEM_REG', B);
  t.equal(mem.find(0x10010, 8), undefined, 'removed region not served from the cache');
  t.equal(mem.findStart(0x10000), undefined);

  // Re-adding the same range gives a new mapping; lookups must see the new one.
  const nb = mem.add('ADD_MEM_REG', { ...B }, 55);
  nb.bytes[0x10] = 0xab;
  const found = mem.find(0x10010, 8);
  t.equal(found, nb);
  t.equal(found?.bytes[0x10], 0xab);
  t.not(found?.bytes.buffer, mapper.maps[1]!.buffer, 'not the old mapping');

  // clear() drops the cache as well.
  t.equal(mem.find(0x100, 1)?.desc.guestPhysAddr, 0);
  mem.clear();
  t.equal(mem.find(0x100, 1), undefined);
  t.equal(mem.find(0x10010, 8), undefined);
  t.equal(mem.regionCount, 0);

  // Removing a region that is not the cached one keeps lookups right.
  const m2 = memoryWith([A, B]).mem;
  t.equal(m2.find(0x10, 1)?.desc.guestPhysAddr, 0, 'A cached');
  m2.remove('REM_MEM_REG', B);
  t.equal(m2.find(0x10, 1)?.desc.guestPhysAddr, 0);
  t.equal(m2.find(0x10010, 1), undefined);
});

t.test('overlap rejection in guest-physical and user space', async (t) => {
  const mapper = new ArrayMapper();
  const mem = new GuestMemory(mapper, 8);
  mem.add('SET_MEM_TABLE', A, 10); // gpa [0, 0x10000), uva [UVA, UVA+0x10000)
  const gpaOverlaps: [MemRegionDesc, string][] = [
    [{ guestPhysAddr: 0xf000, size: 0x2000, userAddr: UVA + 0x800000, mmapOffset: 0 }, '0xf000+0x2000'],
    [{ guestPhysAddr: 0x1000, size: 0x1000, userAddr: UVA + 0x800000, mmapOffset: 0 }, '0x1000+0x1000'],
    [{ guestPhysAddr: 0, size: 0x10000, userAddr: UVA + 0x800000, mmapOffset: 0 }, '0x0+0x10000'],
    [{ guestPhysAddr: 0, size: 0x100000, userAddr: UVA + 0x800000, mmapOffset: 0 }, '0x0+0x100000'],
    [{ guestPhysAddr: 0xffff, size: 1, userAddr: UVA + 0x800000, mmapOffset: 0 }, '0xffff+0x1'],
  ];
  let fd = 20;
  for (const [desc, what] of gpaOverlaps) {
    const myFd = fd++;
    throwsProtocol(t, () => mem.add('ADD_MEM_REG', desc, myFd), 'ADD_MEM_REG', `region ${what} overlaps region 0x0+0x10000 in guest-physical space`);
    t.equal(mapper.closed.at(-1), myFd, `fd ${myFd} closed`);
  }
  const uvaOverlaps: MemRegionDesc[] = [
    { guestPhysAddr: 0x100000, size: 0x2000, userAddr: UVA - 0x1000, mmapOffset: 0 },
    { guestPhysAddr: 0x100000, size: 0x1000, userAddr: UVA + 0xf000, mmapOffset: 0 },
    { guestPhysAddr: 0x100000, size: 0x100000, userAddr: UVA - 0x10000, mmapOffset: 0 },
  ];
  for (const desc of uvaOverlaps) {
    const myFd = fd++;
    throwsProtocol(t, () => mem.add('SET_MEM_TABLE', desc, myFd), 'SET_MEM_TABLE', `region at user address 0x${desc.userAddr.toString(16)} overlaps another region's user addresses`);
    t.equal(mapper.closed.at(-1), myFd, `fd ${myFd} closed`);
  }
  t.equal(mapper.maps.length, 1, 'no mapping attempted for a rejected region');
  t.equal(mem.regionCount, 1);
  t.same(mapper.closed, [20, 21, 22, 23, 24, 25, 26, 27]);

  // Adjacent on both sides in both spaces is fine.
  mem.add('ADD_MEM_REG', { guestPhysAddr: 0x10000, size: 0x1000, userAddr: UVA + 0x10000, mmapOffset: 0 }, 30);
  mem.add('ADD_MEM_REG', { guestPhysAddr: 0x20000, size: 0x1000, userAddr: UVA - 0x1000, mmapOffset: 0 }, 31);
  t.equal(mem.regionCount, 3);
  t.same(mapper.closed, [20, 21, 22, 23, 24, 25, 26, 27], 'accepted fds stay open');
});

t.test('maximum region count', async (t) => {
  const mapper = new ArrayMapper();
  const mem = new GuestMemory(mapper, 2);
  mem.add('ADD_MEM_REG', A, 1);
  mem.add('ADD_MEM_REG', B, 2);
  throwsProtocol(t, () => mem.add('ADD_MEM_REG', C, 3), 'ADD_MEM_REG', 'too many memory regions (limit 2)');
  t.same(mapper.closed, [3]);
  t.equal(mapper.maps.length, 2);
  t.equal(mem.regionCount, 2);
  // After a removal there is room again.
  mem.remove('REM_MEM_REG', A);
  mem.add('ADD_MEM_REG', C, 4);
  t.same(mem.fds(), [2, 4]);
});

t.test('non-page-aligned mmap offset', async (t) => {
  const mapper = new ArrayMapper(4096);
  const file = Uint8Array.from({ length: 0x6000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff);
  mapper.files.set(9, file);
  const mem = new GuestMemory(mapper, 4);
  const r = mem.add('ADD_MEM_REG', { guestPhysAddr: 0x40000, size: 0x2000, userAddr: UVA, mmapOffset: 0x1234 }, 9);
  t.same(mapper.maps.map(({ fd, offset, length }) => ({ fd, offset, length })), [{ fd: 9, offset: 0x1000, length: 0x234 + 0x2000 }], 'mapping starts on the page below and covers the region');
  t.equal(r.bytes.byteOffset, 0x234);
  t.equal(r.bytes.byteLength, 0x2000);
  t.equal(r.view.byteOffset, 0x234);
  t.equal(r.bytes[0], file[0x1234], 'gpa 0x40000 is file offset 0x1234');
  t.equal(r.bytes[0x1fff], file[0x1234 + 0x1fff]);
  t.equal(r.view.getUint32(0x100, true), new DataView(file.buffer).getUint32(0x1334, true));

  // Page-aligned offset: no delta. A different page size is honoured.
  const m64 = new ArrayMapper(0x10000);
  m64.files.set(4, file);
  const r2 = new GuestMemory(m64, 4).add('ADD_MEM_REG', { guestPhysAddr: 0, size: 0x100, userAddr: UVA, mmapOffset: 0x5000 }, 4);
  t.same(m64.maps.map(({ offset, length }) => ({ offset, length })), [{ offset: 0, length: 0x5100 }]);
  t.equal(r2.bytes.byteOffset, 0x5000);
  t.equal(r2.bytes[5], file[0x5005]);
  const r3 = memoryWith([{ guestPhysAddr: 0, size: 0x1000, userAddr: UVA, mmapOffset: 0x3000 }]);
  t.same(r3.mapper.maps.map(({ offset, length }) => ({ offset, length })), [{ offset: 0x3000, length: 0x1000 }]);
  t.equal(r3.mem.findStart(0)?.bytes.byteOffset, 0);
});

t.test('map failure: ProtocolError, fd closed, nothing recorded', async (t) => {
  const { mem, mapper } = memoryWith([A]);
  mapper.failNextMap = new Error('ENOMEM');
  throwsProtocol(t, () => mem.add('ADD_MEM_REG', { ...B, mmapOffset: 0x1234 }, 77), 'ADD_MEM_REG', 'cannot map region 0x10000+0x8000 (fd 77, offset 4660): ENOMEM', 'map_failed');
  t.same(mapper.closed, [77]);
  t.same(mapper.unmaps, []);
  t.equal(mem.regionCount, 1);
  t.same(mem.fds(), [100]);
  t.equal(mem.findStart(0x10000), undefined);
});

t.test('remove and clear release mappings and close fds', async (t) => {
  const { mem, mapper } = memoryWith([A, B, C]);
  const [ma, mb, mc] = mapper.maps.map((m) => m.buffer);
  mem.remove('REM_MEM_REG', { ...B, mmapOffset: 0x999000 }); // mmap_offset is not part of the match
  t.same(mapper.unmaps, [mb]);
  t.same(mapper.closed, [101]);
  t.same(mem.descriptions(), [A, C]);
  t.same(mem.fds(), [100, 102]);
  t.equal(mem.findStart(0x10000), undefined);
  t.equal(mem.findStart(0)?.bytes.buffer, ma);

  mem.clear();
  t.same(mapper.unmaps, [mb, ma, mc]);
  t.same(mapper.closed, [101, 100, 102]);
  t.same(mapper.live(), []);
  t.equal(mem.regionCount, 0);
  t.same(mem.descriptions(), []);
  t.same(mem.fds(), []);
  mem.clear();
  t.same(mapper.closed, [101, 100, 102], 'second clear closes nothing twice');
  t.equal(mapper.unmaps.length, 3);
});

t.test('REM_MEM_REG of an unknown region', async (t) => {
  const { mem, mapper } = memoryWith([A, B]);
  throwsProtocol(t, () => mem.remove('REM_MEM_REG', C), 'REM_MEM_REG', 'no region at guest address 0x100000000 of size 0x4000');
  throwsProtocol(t, () => mem.remove('REM_MEM_REG', { ...B, size: 0x4000 }), 'REM_MEM_REG', 'no region at guest address 0x10000 of size 0x4000');
  throwsProtocol(t, () => mem.remove('REM_MEM_REG', { ...B, userAddr: B.userAddr + 0x1000 }), 'REM_MEM_REG', 'no region at guest address 0x10000 of size 0x8000');
  throwsProtocol(t, () => mem.remove('REM_MEM_REG', { ...B, guestPhysAddr: 0x10001 }), 'REM_MEM_REG', 'no region at guest address 0x10001 of size 0x8000');
  t.equal(mem.regionCount, 2, 'nothing removed');
  t.same(mapper.unmaps, []);
  t.same(mapper.closed, []);
  mem.remove('REM_MEM_REG', B);
  throwsProtocol(t, () => mem.remove('REM_MEM_REG', B), 'REM_MEM_REG', 'no region at guest address 0x10000 of size 0x8000');
  t.same(mapper.closed, [101], 'a second remove of the same region closes nothing more');
});

t.test('a region must lie inside its fd: mmapOffset + size <= file size', async (t) => {
  const mapper = new ArrayMapper();
  mapper.infos.set(5, { size: 0x20000 });
  const mem = new GuestMemory(mapper, 8);
  const err = t.throws(() => mem.add('SET_MEM_TABLE', { guestPhysAddr: 0, size: 0x10000, userAddr: UVA, mmapOffset: 0x18000 }, 5)) as ProtocolError;
  t.equal(err.code, 'region_beyond_fd');
  t.match(err.message, /ends at file offset 163840, beyond the end of its fd \(131072 bytes/);
  t.same(mapper.maps, [], 'nothing mapped');
  t.same(mapper.closed, [5], 'fd closed once');
  t.equal(mem.regionCount, 0);
  mem.add('SET_MEM_TABLE', { guestPhysAddr: 0, size: 0x10000, userAddr: UVA, mmapOffset: 0x10000 }, 6);
  mapper.infos.set(7, { size: 0x20000 });
  t.doesNotThrow(() => mem.add('ADD_MEM_REG', { guestPhysAddr: 0x100000, size: 0x20000, userAddr: UVA + 0x100000, mmapOffset: 0 }, 7), 'exactly the whole file');
  // Regions beyond 4 GiB and 64 GiB of file: plain number arithmetic, no 32-bit wrap.
  mapper.infos.set(8, { size: 0x10_0000_0000 + 0x1000 });
  t.throws(() => mem.add('ADD_MEM_REG', { guestPhysAddr: 0x2_0000_0000, size: 0x2000, userAddr: UVA + 0x1000_0000, mmapOffset: 0x10_0000_0000 }, 8), { code: 'region_beyond_fd' });
});

t.test('a memory fd must be sealed against shrinking unless unsealed memory is allowed', async (t) => {
  const mapper = new ArrayMapper();
  mapper.infos.set(1, { seals: 0, what: '/memfd:mem (deleted)' });
  mapper.infos.set(2, { seals: -1, what: '/dev/hugepages/vm1' });
  mapper.infos.set(3, { seals: 0x1 | 0x4, what: '/memfd:mem (deleted)' }); // SEAL_SEAL|GROW, no SHRINK
  mapper.infos.set(4, { seals: 0x2, what: '/memfd:mem (deleted)' }); // SHRINK alone is enough
  const mem = new GuestMemory(mapper, 8);
  const unsealed = t.throws(() => mem.add('SET_MEM_TABLE', A, 1)) as ProtocolError;
  t.equal(unsealed.code, 'memory_not_sealed');
  t.match(unsealed.message, /\/memfd:mem \(deleted\)\) has no F_SEAL_SHRINK seal, so it could shrink under the mapping and crash the server \(SIGBUS\); give QEMU memory-backend-memfd with seal=on/);
  t.match((t.throws(() => mem.add('SET_MEM_TABLE', A, 2)) as ProtocolError).message, /\/dev\/hugepages\/vm1\) cannot be sealed/);
  t.throws(() => mem.add('SET_MEM_TABLE', A, 3), { code: 'memory_not_sealed' });
  t.same(mapper.closed, [1, 2, 3], 'each refused fd closed once');
  t.same(mapper.maps, [], 'none mapped');
  t.doesNotThrow(() => mem.add('SET_MEM_TABLE', A, 4));

  const trusting = new GuestMemory(mapper, 8, { allowUnsealed: true });
  mapper.infos.set(9, { seals: -1, size: 0x10000 });
  t.doesNotThrow(() => trusting.add('SET_MEM_TABLE', A, 9), 'allowUnsealed: accepted');
  mapper.infos.set(10, { seals: -1, size: 0x1000 });
  t.throws(() => trusting.add('ADD_MEM_REG', B, 10), { code: 'region_beyond_fd' }, 'but still inside the file');
});

t.test('an fd that cannot be inspected is refused and closed', async (t) => {
  const mapper = new ArrayMapper();
  mapper.inspect = () => {
    throw new Error('EBADF');
  };
  const mem = new GuestMemory(mapper, 8);
  const e = t.throws(() => mem.add('ADD_MEM_REG', A, 12)) as ProtocolError;
  t.equal(e.code, 'map_failed');
  t.match(e.message, /cannot inspect the fd of region 0x0\+0x10000 \(fd 12, offset 0\): EBADF/);
  t.same(mapper.closed, [12]);
});

t.test('address-space budgets: per connection and per process', async (t) => {
  const mapper = new ArrayMapper();
  const mem = new GuestMemory(mapper, 8, { maxMappedBytes: 0x1a000 });
  mem.add('ADD_MEM_REG', A, 1);
  mem.add('ADD_MEM_REG', B, 2);
  t.equal(mem.mappedBytes, 0x18000);
  const over = t.throws(() => mem.add('ADD_MEM_REG', C, 3)) as ProtocolError;
  t.equal(over.code, 'memory_budget');
  t.match(over.message, /would bring this front-end's guest memory to 114688 bytes, over its budget of 106496/);
  t.same(mapper.closed, [3], 'refused fd closed');
  t.equal(mapper.maps.length, 2, 'not mapped');
  mem.remove('REM_MEM_REG', B);
  t.equal(mem.mappedBytes, 0x10000, 'released on removal');
  t.doesNotThrow(() => mem.add('ADD_MEM_REG', C, 4), 'fits again');
  // A non-page-aligned offset costs the bytes from the page below.
  const m2 = new GuestMemory(mapper, 8, { maxMappedBytes: 0x10000 });
  t.throws(() => m2.add('ADD_MEM_REG', { ...A, mmapOffset: 0x10 }, 5), { code: 'memory_budget' }, 'delta counted');

  const saved = GuestMemory.processMaxMappedBytes;
  t.teardown(() => {
    GuestMemory.processMaxMappedBytes = saved;
  });
  const base = GuestMemory.processMappedBytes;
  GuestMemory.processMaxMappedBytes = base + 0x14000;
  const other = new GuestMemory(mapper, 8);
  other.add('ADD_MEM_REG', A, 10);
  t.equal(GuestMemory.processMappedBytes, base + 0x10000, 'counted for the process');
  const all = t.throws(() => other.add('ADD_MEM_REG', B, 11)) as ProtocolError;
  t.equal(all.code, 'memory_budget');
  t.match(all.message, /maps for all its front-ends/);
  t.throws(() => new GuestMemory(mapper, 8).add('ADD_MEM_REG', B, 12), { code: 'memory_budget' }, 'whichever connection asks');
  other.clear();
  mem.clear();
  t.equal(GuestMemory.processMappedBytes, base - 0x14000, 'clear() gives it back');
  t.doesNotThrow(() => new GuestMemory(mapper, 8).add('ADD_MEM_REG', B, 13));
});
