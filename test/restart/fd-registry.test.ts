/**
 * fd-registry.test.ts — one store name per open file (src/ops/restart/fd-registry.ts), with
 * real fds and a holder that records what it was told: a file stored once however many fd
 * numbers refer to it (QEMU re-sends the same memfd), a new file under a reused fd number
 * replaces the old one, a name leaves the store when nothing refers to its file, the resume
 * batch postpones forgetting, adopted names keep their serials.
 */
import t from 'tap';
import { native } from '../../src/sys/native.js';
import { logger } from '../../src/sys/log.js';
import { FdRegistry } from '../../src/ops/restart/fd-registry.js';
import type { FdHolder } from '../../src/ops/restart/fd-store.js';

function recorder(): FdHolder & { said: string[]; held: Map<string, number> } {
  const held = new Map<string, number>();
  const said: string[] = [];
  return {
    kind: 'test',
    said,
    held,
    put(name, fds) {
      said.push(`put ${name}`);
      held.set(name, fds[0]!);
    },
    remove(name) {
      said.push(`remove ${name}`);
      held.delete(name);
    },
  };
}

const log = logger.child({ test: 'fd-registry' });

t.test('the same open file under two fd numbers is stored once', async (t) => {
  const h = recorder();
  const r = new FdRegistry(h, log);
  const mem = native.memfdCreate('m', 4096);
  const again = native.dup(mem); // what a second SCM_RIGHTS copy of QEMU's memfd is
  const kick = native.eventfd(0);
  const call = native.eventfd(0);
  t.teardown(() => [mem, again, kick, call].forEach((fd) => native.close(fd)));
  r.sync('conn', [mem, kick, call], [mem, kick, call]);
  t.same(h.said, ['put vmpi-f1', 'put vmpi-f2', 'put vmpi-f3']);
  r.sync('conn', [again, kick, call], [again]);
  t.same(h.said.slice(3), [], 'the re-sent memfd is the file already stored: nothing new, nothing removed');
  t.equal(r.nameOf(again), 'vmpi-f1');
  t.equal(r.size, 3);
  t.equal(r.nameOf(kick) === r.nameOf(call), false, 'two eventfds share an inode but are two files');
});

t.test('a reused fd number is a new file; a file nobody refers to leaves the store', async (t) => {
  const h = recorder();
  const r = new FdRegistry(h, log);
  const a = native.eventfd(0);
  r.sync('conn', [a], [a]);
  native.close(a);
  const b = native.eventfd(0); // most likely the same number as a
  t.teardown(() => native.close(b));
  r.sync('conn', [b], [b]);
  t.same(h.said, ['put vmpi-f1', 'put vmpi-f2', 'remove vmpi-f1'], 'the new eventfd is stored before the old name goes');
  r.drop('conn');
  t.same(h.said.slice(3), ['remove vmpi-f2']);
  t.equal(r.size, 0);
});

t.test('a resume batch forgets nothing until it ends; adopted names keep their serials', async (t) => {
  const h = recorder();
  const r = new FdRegistry(h, log);
  const x = native.eventfd(0);
  const y = native.eventfd(0);
  const z = native.eventfd(0);
  t.teardown(() => [x, y, z].forEach((fd) => native.close(fd)));
  r.adopt('vmpi-f7', x);
  r.adopt('vmpi-f9', y);
  r.batch(() => {
    r.sync('one', [x]);
    t.same(h.said, [], 'y is not referenced yet, but the batch is not over');
    r.sync('two', [y]);
  });
  t.same(h.said, [], 'both adopted fds are referenced: nothing stored again, nothing removed');
  r.sync('three', [z], [z]);
  t.same(h.said, ['put vmpi-f10'], 'a new file gets a serial past the adopted ones');
  r.batch(() => r.drop('two'));
  t.same(h.said.slice(1), ['remove vmpi-f9']);
});

t.test("a file QEMU re-sends after the layer closed its earlier fd is still the stored file (SET_VRING_CALL with the same eventfd)", async (t) => {
  const h = recorder();
  const r = new FdRegistry(h, log);
  const call = native.eventfd(0);
  r.sync('conn', [call], [call]);
  const again = native.dup(call); // the same eventfd, received anew
  native.close(call); // replaceFd closes the earlier copy before the registry hears of it
  t.teardown(() => native.close(again));
  r.sync('conn', [again], [again]);
  t.same(h.said, ['put vmpi-f1'], 'not stored under a second name (systemd would drop it, and the next worker would miss it)');
  t.equal(r.nameOf(again), 'vmpi-f1');
});
