/**
 * pci.test.ts — the normal DIF's PCI codec (src/dif/normal/pci.ts, docs/NORMAL-DIF-PCI.md): every
 * field at its offset in network byte order, round trips at the extremes, every malformed and
 * truncated form refused with its reason, and the RMT's in-place accessors.
 */
import t from 'tap';
import { CTRL_ACK, CTRL_FC, CTRL_LEN, DEFAULT_TTL, PCI_LEN, PciError, PciFlag, PduType, decodePci, decrementTtl, encodePci, markEcn, newPci, peekDstAddr, peekTtl, type Pci } from '../../../src/dif/normal/pci.js';

function pdu(p: Partial<Pci>, payload = new Uint8Array(0)): Uint8Array {
  const pci = { ...newPci(), ...p, length: payload.length };
  const hlen = pci.type >= 0xc0 ? PCI_LEN + CTRL_LEN : PCI_LEN;
  const buf = new Uint8Array(hlen + payload.length);
  t.equal(encodePci(pci, buf), hlen);
  buf.set(payload, hlen);
  return buf;
}

t.test('every base field at its documented offset, big-endian', async (t) => {
  const b = pdu({ type: PduType.DT, flags: PciFlag.DRF, ttl: 7, dstAddr: 0x01020304, srcAddr: 0x05060708, dstCep: 0x090a0b0c, srcCep: 0x0d0e0f10, qosId: 0x1112, seqNum: 0x13141516 }, new Uint8Array([0xaa, 0xbb]));
  t.same([...b.subarray(0, PCI_LEN)], [1, 0x80, 0x80, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0x11, 0x12, 0, 0, 0, 0, 0, 2, 0x13, 0x14, 0x15, 0x16]);
  t.same([...b.subarray(PCI_LEN)], [0xaa, 0xbb], 'payload after the header');
  const c = pdu({ type: PduType.CTRL | CTRL_FC | CTRL_ACK, lastCtrlSeqRcvd: 0x21222324, ackNackSeq: 0x25262728, newRightWinEdge: 0x292a2b2c, newLeftWinEdge: 0x2d2e2f30, myLeftWinEdge: 0x31323334, myRightWinEdge: 0x35363738 });
  t.equal(c.length, PCI_LEN + CTRL_LEN);
  t.same([...c.subarray(PCI_LEN)], [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38]);
});

t.test('round trips at the extremes', async (t) => {
  const max = 0xffffffff;
  for (const p of [
    { type: PduType.DT, flags: PciFlag.DRF | PciFlag.ECN, ttl: 255, dstAddr: max, srcAddr: max, dstCep: max, srcCep: max, qosId: 0xffff, seqNum: max },
    { type: PduType.MGMT, flags: 0, ttl: 0, dstAddr: 0, srcAddr: 0, dstCep: 0, srcCep: 0, qosId: 0, seqNum: 0 },
    { type: PduType.CTRL | CTRL_ACK, ackNackSeq: max, lastCtrlSeqRcvd: 1, newRightWinEdge: 2, newLeftWinEdge: 3, myLeftWinEdge: 4, myRightWinEdge: max },
    { type: PduType.CTRL | CTRL_FC, newRightWinEdge: 0x80000000 },
  ]) {
    const b = pdu(p, new Uint8Array(3));
    const out = newPci();
    const hlen = decodePci(b, out);
    t.same(out, { ...newPci(), ...p, length: 3 }, `type 0x${p.type.toString(16)}`);
    t.equal(hlen + out.length, b.length);
  }
  t.equal(newPci().ttl, DEFAULT_TTL);
});

t.test('decodes at an offset inside a larger buffer', async (t) => {
  const b = pdu({ dstAddr: 9, seqNum: 77 }, new Uint8Array([1, 2, 3]));
  const big = new Uint8Array(b.length + 10);
  big.set(b, 5);
  const out = newPci();
  t.equal(decodePci(big, out, 5, b.length), PCI_LEN);
  t.equal(out.dstAddr, 9);
  t.equal(out.seqNum, 77);
  t.equal(peekDstAddr(big, 5), 9);
});

function reason(buf: Uint8Array, size?: number): string {
  try {
    decodePci(buf, newPci(), 0, size);
    return 'accepted';
  } catch (e) {
    t.ok(e instanceof PciError && e.code === 'ERR_PCI', 'only PciError escapes');
    return (e as PciError).reason;
  }
}

t.test('malformed and truncated PDUs are refused with their reason', async (t) => {
  const good = pdu({ seqNum: 1 }, new Uint8Array(4));
  t.equal(reason(good), 'accepted');
  for (let n = 0; n < PCI_LEN; n++) t.equal(reason(good.subarray(0, n)), 'truncated', `${n} bytes`);
  const ctrl = pdu({ type: PduType.CTRL | CTRL_ACK });
  for (const n of [PCI_LEN, PCI_LEN + 1, PCI_LEN + CTRL_LEN - 1]) t.equal(reason(ctrl.subarray(0, n)), n === PCI_LEN ? 'truncated' : 'truncated', `control PDU cut at ${n}`);
  const mut = (i: number, v: number): Uint8Array => {
    const b = good.slice();
    b[i] = v;
    return b;
  };
  t.equal(reason(mut(0, 2)), 'version');
  t.equal(reason(mut(0, 0)), 'version');
  for (const ty of [0x00, 0x81, 0x41, 0xc0, 0xc1, 0xd0, 0xff]) t.equal(reason(mut(1, ty)), 'type', `type 0x${ty.toString(16)}`);
  for (const fl of [0x02, 0x40, 0x7e]) t.equal(reason(mut(2, fl)), 'flags', `flags 0x${fl.toString(16)}`);
  t.equal(reason(mut(23, 1)), 'field', 'reserved must be zero');
  t.equal(reason(mut(27, 5)), 'length', 'length beyond the bytes present');
  t.equal(reason(mut(27, 3)), 'length', 'length short of the bytes present (trailing bytes)');
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  t.equal(reason(trailing), 'length', 'a byte after the PDU');
});

t.test('encode refuses what it cannot write', async (t) => {
  const buf = new Uint8Array(64);
  const bad: [Partial<Pci>, string][] = [
    [{ type: 0x12 }, 'type'],
    [{ type: PduType.CTRL }, 'type'],
    [{ flags: 0x10 }, 'flags'],
    [{ ttl: 256 }, 'field'],
    [{ dstAddr: -1 }, 'field'],
    [{ srcCep: 2 ** 32 }, 'field'],
    [{ qosId: 0x10000 }, 'field'],
    [{ seqNum: 1.5 }, 'field'],
  ];
  for (const [p, r] of bad) {
    const e = t.throws(() => encodePci({ ...newPci(), ...p }, buf)) as PciError;
    t.equal(e.reason, r, JSON.stringify(p));
  }
  t.equal((t.throws(() => encodePci(newPci(), new Uint8Array(PCI_LEN - 1))) as PciError).reason, 'truncated');
});

t.test('RMT accessors work in place', async (t) => {
  const b = pdu({ dstAddr: 0xfedcba98, ttl: 2 });
  t.equal(peekDstAddr(b), 0xfedcba98, 'an address with the top bit set reads unsigned');
  t.equal(peekTtl(b), 2);
  t.equal(decrementTtl(b), 1);
  t.equal(decrementTtl(b), 0);
  t.equal(decrementTtl(b), 0, 'never below 0');
  markEcn(b);
  const out = newPci();
  decodePci(b, out);
  t.equal(out.flags & PciFlag.ECN, PciFlag.ECN);
  t.equal(out.ttl, 0);
});
