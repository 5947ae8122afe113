/**
 * packet-child.ts — the AF_PACKET addon checks (test/addon-packet.test.ts runs this file, a tap
 * test of its own, inside a network namespace it created with a veth pair A—B; argv: A B).
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { native } from '../../src/sys/native.js';

const [A, B] = process.argv.slice(2) as [string, string];
const ETH = 0xd1f0;

function frame(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array, vlan?: number): Uint8Array {
  const h = vlan === undefined ? 14 : 18;
  const f = new Uint8Array(h + payload.byteLength);
  f.set(dst, 0);
  f.set(src, 6);
  const v = new DataView(f.buffer);
  if (vlan !== undefined) {
    v.setUint16(12, 0x8100);
    v.setUint16(14, vlan);
  }
  v.setUint16(h - 2, type);
  f.set(payload, h);
  return f;
}

const SLOT = 2048;
const MAX = 32;
const buf = new Uint8Array(SLOT * MAX);
const meta = new Int32Array(2 * MAX);

/** Every frame waiting on `fd` within `ms` (polls; a frame sent on a veth arrives at once). */
async function drain(fd: number, ms = 300): Promise<{ bytes: Uint8Array; len: number; type: number }[]> {
  const out: { bytes: Uint8Array; len: number; type: number }[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const n = native.packetRecvBatch(fd, buf, SLOT, MAX, meta);
    for (let i = 0; i < n; i++) out.push({ bytes: buf.slice(i * SLOT, i * SLOT + Math.min(meta[2 * i]!, SLOT)), len: meta[2 * i]!, type: meta[2 * i + 1]! });
    if (n === 0) await new Promise((r) => setTimeout(r, 10));
  }
  return out;
}

const ia = native.packetIfInfo(A);
const ib = native.packetIfInfo(B);
const BCAST = new Uint8Array(6).fill(0xff);

t.test('interface info', async (t) => {
  t.ok(ia.index > 0 && ib.index > 0 && ia.index !== ib.index, 'indexes');
  t.equal(ia.mac.byteLength, 6);
  t.equal(ia.hwType, 1, 'Ethernet');
  t.equal(ia.mtu, 9000, 'jumbo MTU read');
  t.ok(ia.up && ib.up, 'up');
  t.throws(() => native.packetIfInfo('nosuchif0'), { code: 'ENODEV' });
  t.throws(() => native.packetIfInfo(''), TypeError);
  t.throws(() => native.packetIfInfo('x'.repeat(16)), TypeError);
  t.throws(() => native.packetOpen(0, ETH, -1), TypeError);
  t.throws(() => native.packetOpen(ia.index, ETH, 4095), TypeError);
  t.throws(() => native.packetOpen(ia.index, 0x05ff, -1), TypeError, 'a length, not an ethertype');
});

t.test('untagged frames of one ethertype, batched receive, oversize, broadcast', async (t) => {
  const fa = native.packetOpen(ia.index, ETH, -1);
  const fb = native.packetOpen(ib.index, ETH, -1);
  t.teardown(() => {
    native.close(fa);
    native.close(fb);
  });
  const payload = Uint8Array.from({ length: 100 }, (_, i) => i);
  for (let i = 0; i < 20; i++) {
    payload[0] = i;
    t.equal(native.packetSend(fa, frame(ib.mac, ia.mac, ETH, payload), 0, 114), 114);
  }
  native.packetSend(fa, frame(ib.mac, ia.mac, 0x88b5, payload), 0, 114); // another ethertype: not for fb
  const big = frame(ib.mac, ia.mac, ETH, new Uint8Array(5000).fill(7));
  t.equal(native.packetSend(fa, big, 0, big.byteLength), big.byteLength, 'a jumbo frame');
  native.packetSend(fa, frame(BCAST, ia.mac, ETH, payload), 0, 114);
  const got = await drain(fb);
  t.equal(got.length, 22, '20 frames + the jumbo one + the broadcast, not the other ethertype');
  t.same(got.slice(0, 20).map((f) => f.bytes[14]), [...Array(20).keys()], 'in order, bytes intact');
  t.same(Buffer.from(got[0]!.bytes.subarray(0, 6)), Buffer.from(ib.mac), 'the Ethernet header is in the data');
  t.equal(got[20]!.len, 5014, 'the full length of a frame larger than its slot');
  t.ok(got[20]!.len > SLOT, 'so the caller can drop it as oversize');
  t.equal(got[21]!.type, 1, 'a broadcast says so');
  t.equal(got[0]!.type, 0, 'to this host');
  t.equal(native.packetRecvBatch(fb, buf, SLOT, MAX, meta), 0, 'nothing more: 0, no throw');
  t.throws(() => native.packetRecvBatch(fb, buf, SLOT, MAX + 1, meta), TypeError, 'buffer too small for the batch');
  t.throws(() => native.packetRecvBatch(fb, buf, SLOT, MAX, new Int32Array(3)), TypeError);
  t.throws(() => native.packetSend(fa, payload, 0, 10), TypeError, 'shorter than an Ethernet header');
});

t.test('batched send: many frames from one buffer in one call, in order, bad arguments refused', async (t) => {
  const fa = native.packetOpen(ia.index, ETH, -1);
  const fb = native.packetOpen(ib.index, ETH, -1);
  t.teardown(() => {
    native.close(fa);
    native.close(fb);
  });
  const N = 24;
  const slot = 200;
  const tx = new Uint8Array(N * slot);
  const offsets = Uint32Array.from({ length: N }, (_, k) => k * slot);
  const lengths = Uint32Array.from({ length: N }, (_, k) => 14 + 10 + k);
  for (let k = 0; k < N; k++) tx.set(frame(ib.mac, ia.mac, ETH, new Uint8Array(10 + k).fill(k)), k * slot);
  t.equal(native.packetSendBatch(fa, tx, offsets, lengths, 0, 4), 4, 'frames 0..3');
  t.equal(native.packetSendBatch(fa, tx, offsets, lengths, 4, N - 4), N - 4, 'frames 4.. from an offset into the arrays');
  const got = await drain(fb);
  t.equal(got.length, N, 'every frame arrived');
  t.same(got.map((f) => f.len), [...lengths], 'each with its own length');
  t.same(got.map((f) => f.bytes[14]), [...Array(N).keys()], 'in order, bytes intact');
  t.throws(() => native.packetSendBatch(fa, tx, offsets, lengths, 0, N + 1), TypeError, 'arrays shorter than the frames asked');
  t.throws(() => native.packetSendBatch(fa, tx, offsets, lengths, 0, 0), TypeError, 'count 0');
  t.throws(() => native.packetSendBatch(fa, tx, offsets, Uint32Array.of(10), 0, 1), { name: 'TypeError', message: 'packetSendBatch: frame 0 is shorter than an Ethernet header' }, 'shorter than an Ethernet header');
  t.throws(() => native.packetSendBatch(fa, tx, Uint32Array.of(N * slot), Uint32Array.of(14), 0, 1), { name: 'TypeError', message: 'packetSendBatch: frame 0 lies outside buf' }, 'outside the buffer');
  t.throws(() => native.packetSendBatch(fa, tx, new Int32Array(N) as unknown as Uint32Array, lengths, 0, 1), TypeError, 'not a Uint32Array');
  t.equal(native.packetRecvBatch(fb, buf, SLOT, MAX, meta), 0, 'nothing was sent by the refused calls');
});

t.test('VLAN: a socket for one VLAN id sees only frames tagged with it', async (t) => {
  const fa = native.packetOpen(ia.index, ETH, -1);
  const f100 = native.packetOpen(ib.index, ETH, 100);
  const f200 = native.packetOpen(ib.index, ETH, 200);
  const fplain = native.packetOpen(ib.index, ETH, -1);
  t.teardown(() => [fa, f100, f200, fplain].forEach((fd) => native.close(fd)));
  const p = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  native.packetSend(fa, frame(ib.mac, ia.mac, ETH, p, 100), 0, 26);
  native.packetSend(fa, frame(ib.mac, ia.mac, ETH, p, (5 << 13) | 100), 0, 26); // priority bits: same VLAN
  native.packetSend(fa, frame(ib.mac, ia.mac, ETH, p, 300), 0, 26);
  native.packetSend(fa, frame(ib.mac, ia.mac, 0x88b5, p, 100), 0, 26);
  native.packetSend(fa, frame(ib.mac, ia.mac, ETH, p), 0, 22);
  const g100 = await drain(f100);
  const g200 = await drain(f200, 50);
  const gplain = await drain(fplain, 50);
  t.equal(g100.length, 2, 'VLAN 100: its two frames of the ethertype');
  t.equal(g100[0]!.len, 22, 'the tag is not in the data');
  t.same([...g100[0]!.bytes.subarray(12, 14)], [0xd1, 0xf0], 'the inner ethertype follows the source MAC');
  t.same([...g100[0]!.bytes.subarray(14)], [...p]);
  t.equal(g200.length, 0, 'VLAN 200 sees none');
  t.same(gplain.map((f) => f.type), [3, 3, 3, 0], 'the untagged socket gets the tagged ones too, as OTHERHOST (to drop), and its own');
  // A VLAN socket does not get its own outgoing frames.
  native.packetSend(f100, frame(ia.mac, ib.mac, ETH, p, 100), 0, 26);
  t.equal((await drain(f100, 50)).length, 0, 'no loopback of outgoing frames');
});

t.test('interface down: ENETDOWN once, then it works again when up', async (t) => {
  const fa = native.packetOpen(ia.index, ETH, -1);
  const fb = native.packetOpen(ib.index, ETH, -1);
  t.teardown(() => {
    native.close(fa);
    native.close(fb);
  });
  const ipl = (state: string): void => void spawnSync('ip', ['link', 'set', B, state], { timeout: 10_000 });
  ipl('down');
  t.throws(() => native.packetRecvBatch(fb, buf, SLOT, MAX, meta), { code: 'ENETDOWN' }, 'the socket error');
  t.equal(native.packetRecvBatch(fb, buf, SLOT, MAX, meta), 0, 'reported once');
  t.throws(() => native.packetSend(fb, frame(ia.mac, ib.mac, ETH, new Uint8Array(4)), 0, 18), { code: 'ENETDOWN' }, 'send on a down interface');
  const one = frame(ia.mac, ib.mac, ETH, new Uint8Array(4));
  t.throws(() => native.packetSendBatch(fb, one, Uint32Array.of(0), Uint32Array.of(18), 0, 1), { code: 'ENETDOWN' }, 'a batched send on a down interface');
  ipl('up');
  // veth needs both ends up for carrier; give it a moment.
  const until = Date.now() + 3000;
  while (!native.packetIfInfo(B).running && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  native.packetSend(fa, frame(ib.mac, ia.mac, ETH, new Uint8Array(4)), 0, 18);
  t.equal((await drain(fb)).length, 1, 'frames arrive again');
});
