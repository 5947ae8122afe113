/**
 * state-file.test.ts — the restart state memfd (src/ops/restart/state-file.ts): the newest
 * complete document wins; a write torn by a crash (its slot's CRC fails) falls back to the one
 * before; a document too large for a slot is refused without touching the good one; a new
 * process reading the memfd gets what the last one wrote, and goes on from its generation.
 */
import t from 'tap';
import { writeSync } from 'node:fs';
import { native } from '../../src/sys/native.js';
import { SLOT_BYTES, StateFile } from '../../src/ops/restart/state-file.js';

t.test('newest complete write wins; a torn write falls back to the previous one', async (t) => {
  const f = StateFile.create();
  t.teardown(() => native.close(f.fd));
  t.equal(f.read(), undefined, 'a new memfd holds no document');
  t.equal(f.write('{"n":1}'), 1);
  t.equal(f.write('{"n":2}'), 2);
  t.same(f.read(), { generation: 2, text: '{"n":2}' });
  t.equal(f.write('{"n":3, "pad": "' + 'x'.repeat(5000) + '"}'), 3);
  // Tear generation 3 (slot 1) as a SIGKILL mid-write would: its tail never reached the memfd.
  writeSync(f.fd, Buffer.alloc(100, 0), 0, 100, SLOT_BYTES + 16 + 3000);
  t.same(f.read(), { generation: 2, text: '{"n":2}' }, 'the torn generation 3 fails its CRC: generation 2 is read');
  const again = StateFile.open(native.dup(f.fd));
  t.teardown(() => native.close(again.fd));
  t.same(again.read(), { generation: 2, text: '{"n":2}' }, 'another process reads the same');
  t.equal(again.write('{"n":4}'), 3, 'and writes the next generation into the torn slot');
  t.same(f.read(), { generation: 3, text: '{"n":4}' });
});

t.test('a document larger than a slot is refused and the last good one stays', async (t) => {
  const f = StateFile.create();
  t.teardown(() => native.close(f.fd));
  f.write('{"ok":true}');
  t.throws(() => f.write('x'.repeat(SLOT_BYTES)), { code: 'too_large', message: /over the \d+-byte slot; it was not saved/ });
  t.same(f.read(), { generation: 1, text: '{"ok":true}' });
});

t.test('generations compare across the 2^32 wrap', async (t) => {
  const f = StateFile.create();
  t.teardown(() => native.close(f.fd));
  // Fake a history near the wrap: write until the counter is set, through the private field.
  (f as unknown as { generation: number }).generation = 0xfffffffe;
  t.equal(f.write('{"a":1}'), 0xffffffff);
  t.equal(f.write('{"a":2}'), 0, 'the counter wraps to 0');
  t.same(StateFile.open(native.dup(f.fd)).read(), { generation: 0, text: '{"a":2}' }, 'generation 0 after 0xffffffff is the newer');
});
