/**
 * The shim-udp datagram codec (src/dif/shim-udp/wire.ts): round trips of each message, the
 * 5-byte data header, and every malformed or truncated form refused with a typed WireError
 * (never another exception), including random garbage.
 */
import t from 'tap';
import { DATA_HEADER_BYTES, KIND_ALLOC_REQ, KIND_DATA, WireError, decodeMessage, encodeData, encodeMessage, type WireMessage } from '../../src/dif/shim-udp/wire.js';

const samples: WireMessage[] = [
  { kind: 'alloc_req', src: 7, reliable: false, inOrder: false, maxSdu: 1467, difName: 'udp.lo', srcApp: 'client|1', dstApp: 'rina-tgen' },
  { kind: 'alloc_req', src: 0xffffffff, reliable: true, inOrder: true, maxSdu: 0, difName: 'é', srcApp: 'a', dstApp: 'b|c|d|e' },
  { kind: 'alloc_resp', dst: 7, src: 9, accept: true, reason: '' },
  { kind: 'alloc_resp', dst: 7, src: 0, accept: false, reason: 'unknown application' },
  { kind: 'dealloc', dst: 9, src: 7, reason: 'bye' },
  { kind: 'dealloc', dst: 0, src: 7, reason: 'allocation timed out' },
  { kind: 'keepalive', dst: 1, src: 2 },
];

t.test('round trips', async (t) => {
  for (const m of samples) t.same(decodeMessage(encodeMessage(m)), m, m.kind);
  const sdu = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
  const d = encodeData(0x01020304, sdu);
  t.equal(d.byteLength, sdu.byteLength + DATA_HEADER_BYTES, 'data header is 5 bytes');
  t.same([...d.subarray(0, 5)], [KIND_DATA, 1, 2, 3, 4], 'kind then big-endian flow id');
  const back = decodeMessage(d);
  t.equal(back.kind, 'data');
  if (back.kind === 'data') {
    t.equal(back.dst, 0x01020304);
    t.same(Buffer.from(back.sdu), Buffer.from(sdu));
  }
  const empty = decodeMessage(encodeData(5, new Uint8Array(0)));
  t.same(empty.kind === 'data' ? [empty.dst, empty.sdu.byteLength] : null, [5, 0], 'a 0-byte SDU');
  t.equal(encodeMessage({ kind: 'dealloc', dst: 1, src: 2, reason: 'x'.repeat(5000) }).byteLength, 9 + 2 + 256, 'reasons cut to 256 bytes');
});

t.test('malformed and truncated datagrams: WireError with a reason', async (t) => {
  const expect = (buf: Uint8Array, reason: string, what: string): void => {
    try {
      decodeMessage(buf);
      t.fail(`${what}: decoded`);
    } catch (e) {
      t.ok(e instanceof WireError, `${what}: a WireError`);
      t.equal((e as WireError).reason, reason, `${what}: ${(e as Error).message}`);
    }
  };
  expect(new Uint8Array(0), 'truncated', 'empty');
  expect(Uint8Array.of(KIND_DATA, 0, 0, 1), 'truncated', 'short data header');
  expect(Uint8Array.of(KIND_DATA, 0, 0, 0, 0, 9), 'bad_field', 'data for id 0');
  expect(Uint8Array.of(0x7f, 0, 0, 0, 1), 'unknown_kind', 'unknown kind');
  const req = encodeMessage(samples[0]!);
  for (let n = 1; n < req.byteLength; n++) expect(req.subarray(0, n), 'truncated', `ALLOC_REQ cut to ${n} bytes`);
  expect(Buffer.concat([req, Buffer.of(0)]), 'trailing_bytes', 'ALLOC_REQ with a trailing byte');
  const flags = Buffer.from(req);
  flags[9] = 0x80;
  expect(flags, 'bad_field', 'undefined flag bits');
  const nonzeroDst = Buffer.from(req);
  nonzeroDst.writeUInt32BE(3, 1);
  expect(nonzeroDst, 'bad_field', 'ALLOC_REQ with a dst id');
  const badUtf8 = Buffer.from(encodeMessage({ ...samples[0]!, difName: 'ab' } as WireMessage));
  badUtf8[16] = 0xff;
  expect(badUtf8, 'bad_utf8', 'DIF name not UTF-8');
  const longLen = Buffer.from(req);
  longLen.writeUInt16BE(0xffff, 14);
  expect(longLen, 'truncated', 'string length beyond the datagram');
  const resp = Buffer.from(encodeMessage(samples[2]!));
  resp[9] = 2;
  expect(resp, 'bad_field', 'result 2');
  expect(encodeMessage({ kind: 'keepalive', dst: 1, src: 2 }).subarray(0, 8), 'truncated', 'short keepalive');
  expect(Buffer.of(0x13, 0, 0, 0, 0, 0, 0, 0, 1), 'bad_field', 'keepalive with id 0');
  expect(Buffer.of(0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 'bad_field', 'dealloc naming no flow');
  t.equal(req[0], KIND_ALLOC_REQ);
});

t.test('random garbage never throws anything but WireError', async (t) => {
  let seed = 12345;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  let bad = 0;
  for (let i = 0; i < 20000; i++) {
    const buf = Uint8Array.from({ length: rnd() % 64 }, rnd);
    if (i % 3 === 0 && buf.byteLength > 0) buf[0] = [0x01, 0x10, 0x11, 0x12, 0x13][i % 5]!;
    try {
      decodeMessage(buf);
    } catch (e) {
      if (!(e instanceof WireError)) t.fail(`not a WireError: ${String(e)}`);
      bad++;
    }
  }
  t.ok(bad > 0, `${bad} of 20000 refused, none with another exception`);
});
