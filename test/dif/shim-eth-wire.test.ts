/**
 * The shim-eth frame codecs (src/dif/shim-eth/wire.ts): Ethernet headers with and without an
 * 802.1Q tag, the length prefix and Ethernet padding, the ARP-style resolution messages: round
 * trips, and malformed or truncated input refused with a typed error naming what is wrong.
 */
import t from 'tap';
import {
  BROADCAST_MAC,
  ETHERTYPE_RINA,
  EthWireError,
  MacNames,
  buildFrame,
  decodeArp,
  encodeArp,
  formatMac,
  isArpPayload,
  parseMac,
  readEthHeader,
  readMessage,
  sameMac,
  writeEthHeader,
  type ArpMessage,
} from '../../src/dif/shim-eth/wire.js';
import { decodeMessage } from '../../src/dif/shim-udp/wire.js';

const A = parseMac('02:00:00:00:00:0a');
const B = parseMac('02-00-00-00-00-0B');

t.test('MAC text', async (t) => {
  t.equal(formatMac(B), '02:00:00:00:00:0b');
  for (const bad of ['', '02:00:00:00:00', '02:00:00:00:00:0g', '0200.0000.000a', '02:00:00:00:00:0a:01']) t.throws(() => parseMac(bad), /is not a MAC address/, bad);
});

t.test('MAC comparison and the per-address text cache of the receive path', async (t) => {
  t.ok(sameMac(A, parseMac('02:00:00:00:00:0A')));
  t.notOk(sameMac(A, B));
  t.ok(sameMac(new Uint8Array([9, ...B, 7]).subarray(1), B), 'a view at an offset');
  const names = new MacNames(3);
  const frame = new Uint8Array(12);
  // Two peers alternating (the relay's case), and addresses that differ only in the high 16 bits
  // or only in the low 32 (the 48-bit key must keep both halves).
  const macs = ['02:00:00:00:00:0a', '02:00:00:00:00:0b', '02:00:00:00:00:0a', '03:00:00:00:00:0a', 'ff:ff:ff:ff:ff:fe', '02:00:00:00:00:0b'];
  for (const m of macs) {
    frame.set(parseMac(m), 6);
    t.equal(names.name(frame.subarray(6, 12)), m, m);
    t.ok(names.size <= 3, 'bounded');
  }
  t.equal(names.name(frame.subarray(6, 12)), '02:00:00:00:00:0b', 'the same view again');
});

t.test('Ethernet header bytes at an offset (no DataView)', async (t) => {
  const buf = new Uint8Array(40).fill(0xee);
  const out = buf.subarray(3, 3 + 18);
  t.equal(writeEthHeader(out, B, A, ETHERTYPE_RINA, 0x123, 6), 18);
  t.same([...buf.subarray(0, 3)], [0xee, 0xee, 0xee], 'nothing before the view');
  t.same([...out], [2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a, 0x81, 0x00, 0xc1, 0x23, 0xd1, 0xf0]);
  t.equal(buf[21], 0xee, 'nothing after the header');
  t.match(readEthHeader(out), { vlan: 0x123, pcp: 6, ethertype: 0xd1f0, headerBytes: 18 });
  t.equal(writeEthHeader(out, A, B, 0x0800), 14);
  t.same([...out.subarray(12, 14)], [0x08, 0x00]);
  t.match(readEthHeader(out.subarray(0, 14)), { ethertype: 0x0800, vlan: undefined });
});

t.test('Ethernet header: untagged and 802.1Q', async (t) => {
  const f = new Uint8Array(18);
  t.equal(writeEthHeader(f, B, A, ETHERTYPE_RINA), 14);
  t.match(readEthHeader(f.subarray(0, 14)), { ethertype: 0xd1f0, headerBytes: 14, vlan: undefined });
  t.equal(writeEthHeader(f, B, A, ETHERTYPE_RINA, 100, 5), 18);
  const h = readEthHeader(f);
  t.same([formatMac(h.dst), formatMac(h.src), h.vlan, h.pcp, h.ethertype, h.headerBytes], ['02:00:00:00:00:0b', '02:00:00:00:00:0a', 100, 5, 0xd1f0, 18]);
  t.throws(() => writeEthHeader(f, B, A, ETHERTYPE_RINA, 4095), RangeError);
  t.throws(() => writeEthHeader(f, B, A, 0x05dc), RangeError);
  t.throws(() => writeEthHeader(new Uint8Array(17), B, A, ETHERTYPE_RINA, 1), RangeError);
  t.throws(() => writeEthHeader(f, B.subarray(0, 5), A, ETHERTYPE_RINA), RangeError);
});

t.test('Ethernet header: truncated and malformed', async (t) => {
  const f = new Uint8Array(22);
  writeEthHeader(f, B, A, ETHERTYPE_RINA, 7);
  t.throws(() => readEthHeader(f.subarray(0, 13)), { name: 'EthWireError', reason: 'truncated' });
  t.throws(() => readEthHeader(f.subarray(0, 16)), { reason: 'truncated', message: /tagged/ });
  const g = f.slice();
  g[12] = 0x05;
  g[13] = 0xdc;
  t.throws(() => readEthHeader(g), { reason: 'bad_field', message: /802\.3 length/ });
  const q = f.slice();
  q[16] = 0x81;
  q[17] = 0x00;
  t.throws(() => readEthHeader(q), { reason: 'bad_field', message: /QinQ/ });
  const r = f.slice();
  r[14] = 0x0f;
  r[15] = 0xff;
  t.throws(() => readEthHeader(r), { reason: 'bad_field', message: /4095/ });
});

t.test('length prefix and padding', async (t) => {
  const msg = new Uint8Array([0x13, 0, 0, 0, 1, 0, 0, 0, 2]);
  const f = buildFrame(B, A, undefined, msg);
  t.equal(f.byteLength, 14 + 2 + 9);
  t.same([...readMessage(f.subarray(14), f.byteLength)], [...msg]);
  const padded = new Uint8Array(60);
  padded.set(f);
  t.same([...readMessage(padded.subarray(14), 60)], [...msg], 'zero padding of a short frame is ignored');
  padded[59] = 1;
  t.throws(() => readMessage(padded.subarray(14), 60), { reason: 'trailing_bytes', message: /not zero/ });
  const long = new Uint8Array(100);
  long.set(f);
  t.throws(() => readMessage(long.subarray(14), 100), { reason: 'trailing_bytes', message: /only frames of at most 64/ });
  t.throws(() => readMessage(f.subarray(14, 16), 16), { name: 'EthWireError', reason: 'truncated' });
  t.throws(() => readMessage(f.subarray(14, 20), 20), { reason: 'truncated', message: /9 bytes/ });
  t.throws(() => readMessage(new Uint8Array([0, 0, 1]), 17), { reason: 'bad_field', message: /length 0/ });
  // DATA built by buildFrame decodes as the shim-udp DATA it is.
  const d = buildFrame(B, A, 9, new Uint8Array([9, 8, 7]), 42);
  const h = readEthHeader(d);
  t.match(decodeMessage(readMessage(d.subarray(h.headerBytes), d.byteLength)), { kind: 'data', dst: 42 });
  const empty = buildFrame(B, A, undefined, new Uint8Array(0), 42);
  const e60 = new Uint8Array(60);
  e60.set(empty);
  const m = decodeMessage(readMessage(e60.subarray(14), 60));
  t.equal(m.kind === 'data' ? m.sdu.byteLength : -1, 0, 'a 0-byte SDU stays 0 bytes through Ethernet padding');
});

t.test('resolution messages: round trip', async (t) => {
  const req: ArpMessage = { op: 'request', senderMac: A, senderName: 'rina-tgen-client', targetMac: new Uint8Array(6), targetName: 'rina-tgen' };
  const buf = encodeArp(req);
  t.ok(isArpPayload(buf), 'first byte 0');
  t.equal(buf.byteLength, 8 + 2 * (6 + 16), 'both names padded to the longer');
  t.same(decodeArp(buf), req);
  const rep: ArpMessage = { op: 'reply', senderMac: B, senderName: 'ñame|inst|ae|1', targetMac: A, targetName: 'x' };
  t.same(decodeArp(encodeArp(rep)), rep, 'UTF-8 names');
  t.notOk(isArpPayload(new Uint8Array([0x01, 0, 0, 0, 1])), 'a DATA message is not one');
  t.throws(() => encodeArp({ ...req, targetName: 'x'.repeat(256) }), RangeError);
  t.throws(() => encodeArp({ ...req, targetName: 'a\0b' }), RangeError);
  t.throws(() => encodeArp({ ...req, senderMac: A.subarray(0, 4) }), RangeError);
  void BROADCAST_MAC;
});

t.test('resolution messages: malformed and truncated', async (t) => {
  const good = encodeArp({ op: 'request', senderMac: A, senderName: 'abc', targetMac: new Uint8Array(6), targetName: 'abcd' });
  const bad = (mut: (b: Uint8Array) => void): Uint8Array => {
    const b = good.slice();
    mut(b);
    return b;
  };
  t.throws(() => decodeArp(good.subarray(0, 7)), { name: 'EthWireError', reason: 'truncated' });
  t.throws(() => decodeArp(good.subarray(0, good.byteLength - 1)), { reason: 'truncated', message: /needed/ });
  t.throws(() => decodeArp(bad((b) => (b[1] = 6))), { reason: 'bad_field', message: /hardware type/ });
  t.throws(() => decodeArp(bad((b) => (b[3] = 0))), { reason: 'bad_field', message: /protocol type/ });
  t.throws(() => decodeArp(bad((b) => (b[4] = 8))), { reason: 'bad_field', message: /hardware address length/ });
  t.throws(() => decodeArp(bad((b) => (b[5] = 0))), { reason: 'bad_field', message: /length 0/ });
  t.throws(() => decodeArp(bad((b) => (b[7] = 3))), { reason: 'bad_field', message: /operation 3/ });
  t.throws(() => decodeArp(bad((b) => (b[15] = 0))), { reason: 'bad_field', message: /NUL byte inside/ });
  t.throws(() => decodeArp(bad((b) => (b[14] = 0xff))), { name: 'EthWireError', reason: 'bad_utf8' });
  const longer = new Uint8Array(good.byteLength + 1);
  longer.set(good);
  t.throws(() => decodeArp(longer), { name: 'EthWireError', reason: 'trailing_bytes' });
  t.ok(new EthWireError('truncated', 'x') instanceof Error);
});
