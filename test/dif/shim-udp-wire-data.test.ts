/**
 * shim-udp-wire-data.test.ts — the DATA decode fast path (no DataView, no closures per datagram):
 * the flow id is read right at every bit width, a short or id-0 header is refused as before.
 */
import t from 'tap';
import { DATA_HEADER_BYTES, WireError, decodeMessage, encodeData } from '../../src/dif/shim-udp/wire.js';

t.test('flow ids of every width decode as encoded', async (t) => {
  const sdu = Uint8Array.of(9, 8, 7);
  for (const dst of [1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000, 0x7fffffff, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff]) {
    const m = decodeMessage(encodeData(dst, sdu));
    t.same(m, { kind: 'data', dst, sdu: Buffer.from(sdu) }, `id 0x${dst.toString(16)}`);
  }
  const empty = decodeMessage(encodeData(5, new Uint8Array(0)));
  t.equal(empty.kind === 'data' && empty.sdu.byteLength, 0, 'an empty SDU');
  const inner = new Uint8Array(20);
  inner.set(encodeData(0xdeadbeef, sdu), 7);
  const v = decodeMessage(inner.subarray(7, 7 + DATA_HEADER_BYTES + 3));
  t.same(v.kind === 'data' && [v.dst, [...v.sdu]], [0xdeadbeef, [9, 8, 7]], 'a view at an offset into a larger buffer');
});

t.test('a short header or flow id 0 is refused with its reason', async (t) => {
  for (const n of [1, 2, 4]) {
    const e = (() => {
      try {
        decodeMessage(Uint8Array.of(1, 0, 0, 0, 1).subarray(0, n));
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    t.ok(e instanceof WireError && e.reason === 'truncated', `${n} bytes: truncated`);
  }
  t.throws(() => decodeMessage(Uint8Array.of(1, 0, 0, 0, 0, 42)), { reason: 'bad_field', message: 'DATA for flow id 0' }, 'id 0');
});
