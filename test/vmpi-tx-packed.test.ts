/**
 * vmpi-tx-packed.test.ts — VMPI_F_TX_PACKED on the host device (src/vmpi/device.ts), over a real
 * vhost-user connection with this process as the guest driver (test/helpers/vmpi-driver.ts):
 * negotiation both ways (offered by default; an old driver and a device without the option keep
 * one frame per chain), many records of several channels in one tx chain, records across
 * descriptor boundaries, malformed records (the records before delivered, the rest dropped,
 * counted), chains of random bytes, a handler that pauses the device mid-chain (the rest of the
 * chain waits, nothing lost, in order, the chain not returned until then), the per-turn budget
 * stopping mid-chain, a queue stop and a reset with records waiting, and a resumed connection
 * (restart) parsing the records its saved features say.
 */
import t, { type Test } from 'tap';
import { type VmpiTestDriver, packRecords } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import { MAX_SDU, connect, firstMismatch, handOver, pausedAt, pausingReceiver, sendChains, serveDevice, up, type Rec, type Served } from './helpers/vmpi-device-rig.js';
import { until } from './dif/helpers.js';
import { hasBit } from '../src/vhost-user/protocol.js';
import { PACKED_RECORD_HEADER_SIZE, VMPI_F_RX_PACKED, VMPI_F_TX_PACKED, type VmpiDevice, type VmpiDeviceOptions } from '../src/vmpi/device.js';

const CHAIN = PACKED_RECORD_HEADER_SIZE + MAX_SDU;

const serve = (t: Test, opts: Partial<VmpiDeviceOptions> = {}): Served => serveDevice(t, 'vmpi-txpacked-', { vmpiId: 8, ...opts });

/** Collect what the device delivers on `channels`. */
function collect(device: VmpiDevice, channels: number[]): Rec[] {
  const got: Rec[] = [];
  for (const ch of channels) device.bind(ch, (sdu, channel) => got.push({ channel, sdu: Uint8Array.prototype.slice.call(sdu) }));
  return got;
}

function same(t: Test, got: Rec[], want: Rec[], what: string): void {
  t.equal(firstMismatch(got, want), -1, `${what}: ${want.length} SDUs in order, channels and bytes intact (got ${got.length})`);
}

/** Greedy packing of `recs` into chains of at most CHAIN bytes (what the guest driver does). */
function chains(recs: Rec[]): Rec[][] {
  const out: Rec[][] = [];
  let cur: Rec[] = [];
  for (const r of recs) {
    if (cur.length > 0 && packRecords([...cur, r]).byteLength > CHAIN) {
      out.push(cur);
      cur = [];
    }
    cur.push(r);
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** Send `chains` (or raw byte chains) as the ring allows, until the device has taken them all. */
async function sendAll(d: VmpiTestDriver, list: Uint8Array[], segLen?: number, ms = 10_000): Promise<void> {
  let i = 0;
  await until(
    () => {
      while (i < list.length && d.sendChain(list[i]!, segLen)) i++;
      d.harvestTx();
      return i === list.length && d.txOutstanding === 0;
    },
    `${list.length} tx chains taken`,
    ms,
  );
}

t.test('negotiation: bit 1, offered by default; an old driver and a device without the option keep one frame per chain', async (t) => {
  t.equal(VMPI_F_TX_PACKED, 1, 'feature bit 1');
  t.not(VMPI_F_TX_PACKED, VMPI_F_RX_PACKED);
  const on = serve(t);
  t.ok(hasBit(on.device.features, VMPI_F_TX_PACKED), 'offered by default');
  const old = await connect(t, on.path, { rxPacked: true });
  await up(on.device);
  t.equal(on.device.txPacked, false, 'an old driver did not take it');
  t.equal(on.device.rxPacked, true, 'independent of rx packing');
  // Channels of 2^31 and more too (their le32 once read back as negative numbers, unbound).
  const got = collect(on.device, [3, 0x80000000, 0xffffffff]);
  const sent = Array.from({ length: 40 }, (_, i) => ({ channel: [3, 0x80000000, 0xffffffff][i % 3]!, sdu: patternSdu(3, i, (i * 53) % 300) }));
  await until(
    () => {
      while (got.length + old.txOutstanding < sent.length && old.send(sent[got.length + old.txOutstanding]!.channel, sent[got.length + old.txOutstanding]!.sdu));
      old.harvestTx();
      return got.length === sent.length;
    },
    'old frames',
    5000,
  );
  same(t, got, sent, 'new host, old driver: le32 channel | SDU frames');

  const off = serve(t, { txPacked: false });
  t.notOk(hasBit(off.device.features, VMPI_F_TX_PACKED), 'txPacked: false does not offer it');
  t.ok(hasBit(off.device.features, VMPI_F_RX_PACKED), 'rx packing still offered');
  const d = await connect(t, off.path, { txPacked: true });
  await up(off.device);
  t.equal(d.txPacked, false, 'a new driver cannot take what was not offered');
  t.equal(off.device.txPacked, false);
  const got2 = collect(off.device, [5]);
  for (let i = 0; i < 10; i++) t.ok(d.send(5, patternSdu(5, i, 100)));
  await until(() => got2.length === 10, 'frames without packing', 5000);
  t.equal(off.device.stats.drops.malformed, 0, 'frames, not misread as records');
});

t.test('packed: many records of several channels per chain, in order, one used entry per chain', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  t.equal(d.txPacked, true, 'negotiated');
  t.equal(device.txPacked, true);
  const got = collect(device, [1, 2, 3]);
  const sent = Array.from({ length: 600 }, (_, i) => ({ channel: 1 + (i % 3), sdu: patternSdu(1 + (i % 3), i, [250, 0, 7, 8, 9, 1000, 64][i % 7]!) }));
  const cs = chains(sent);
  t.ok(cs.length < 600 / 10, `${cs.length} chains for 600 SDUs`);
  const kicks0 = device.stats.kicks;
  await sendAll(d, cs.map(packRecords));
  same(t, got, sent, 'packed records');
  t.equal(device.stats.fromGuest.sdus, 600, 'fromGuest counts SDUs, not chains');
  t.equal(device.stats.fromGuest.bytes, sent.reduce((n, s) => n + s.sdu.byteLength, 0), 'SDU bytes (no headers, no padding)');
  t.equal(d.tx.stats.chains, cs.length);
  t.ok(device.stats.kicks - kicks0 <= cs.length, 'no more kicks than chains');
  t.equal(device.stats.drops.malformed + device.stats.drops.oversize + device.stats.drops.unbound_channel, 0, 'nothing dropped');
});

t.test('packed: limits — a max SDU fills a chain, empty SDUs, records across descriptors of 100 and 1000 bytes', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  const got = collect(device, [0, 0xffffffff, 77]);
  const sizes = [MAX_SDU, 0, 0, 1, 7, 8, 9, 4000, 200, MAX_SDU - 8, 0, 3, 1000, 1001, 999, 2048, 2040, 16, 0, MAX_SDU];
  const sent = sizes.map((n, i) => ({ channel: [0, 0xffffffff, 77][i % 3]!, sdu: patternSdu(6, i, n) }));
  const cs = chains(sent).map(packRecords);
  t.ok(
    cs.some((c) => c.byteLength === CHAIN),
    'a max SDU alone makes a chain of 8 + max SDU bytes',
  );
  await sendAll(d, cs, 100);
  same(t, got, sent, '100-byte descriptors (headers split: a record at 96 has its length at 100..103)');
  got.length = 0;
  await sendAll(d, cs, 1000);
  same(t, got, sent, '1000-byte descriptors');
  t.equal(device.stats.drops.malformed, 0);
});

t.test('packed: a malformed record ends its chain (the records before it delivered), counted; the next chain is fine', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  const got = collect(device, [4]);
  const good = [0, 1, 2].map((i) => ({ channel: 4, sdu: patternSdu(4, i, 100) }));
  const after = { channel: 4, sdu: patternSdu(4, 99, 50) };
  const body = packRecords(good);
  const withTail = (tail: Uint8Array): Uint8Array => {
    const start = (body.byteLength + 7) & ~7;
    const c = new Uint8Array(start + tail.byteLength);
    c.set(body);
    c.set(tail, start);
    return c;
  };
  const hdr = (channel: number, len: number, extra = 0): Uint8Array => {
    const h = new Uint8Array(8 + extra);
    new DataView(h.buffer).setUint32(0, channel, true);
    new DataView(h.buffer).setUint32(4, len, true);
    return h;
  };
  const cases: [string, Uint8Array, number][] = [
    ['a header cut short (5 bytes left)', withTail(new Uint8Array(5)), 3],
    ['a length running past the chain', withTail(hdr(4, 60, 59)), 3],
    ['a length over max SDU', withTail(hdr(4, MAX_SDU + 1, 16)), 3],
    ['a length of 2^32 - 1', withTail(hdr(4, 0xffffffff, 16)), 3],
    ['a chain shorter than a header', new Uint8Array(3), 0],
    ['an empty chain', new Uint8Array(0), 0],
  ];
  for (const [what, chain, delivered] of cases) {
    got.length = 0;
    const m0 = device.stats.drops.malformed;
    await sendAll(d, [chain, packRecords([after])]);
    same(t, got, [...good.slice(0, delivered), after], what);
    t.equal(device.stats.drops.malformed - m0, 1, `${what}: one malformed`);
  }
  // Longer than 8 + max SDU: the whole chain is refused (oversize), nothing of it delivered.
  got.length = 0;
  const o0 = device.stats.drops.oversize;
  const long = new Uint8Array(CHAIN + 8);
  long.set(packRecords(good));
  await sendAll(d, [long, packRecords([after])]);
  same(t, got, [after], 'a chain over 8 + max SDU');
  t.equal(device.stats.drops.oversize - o0, 1, 'counted as oversize');
  // Records for a channel nobody bound: each counted, the chain's other records delivered.
  got.length = 0;
  const u0 = device.stats.drops.unbound_channel;
  await sendAll(d, [packRecords([good[0]!, { channel: 9, sdu: new Uint8Array(10) }, good[1]!, { channel: 10, sdu: new Uint8Array(0) }])]);
  same(t, got, good.slice(0, 2), 'unbound records skipped');
  t.equal(device.stats.drops.unbound_channel - u0, 2);
  t.equal(device.isUp, true, 'the queue never broke');
});

t.test('packed: chains of random bytes and random descriptors never throw or break the device; a good chain follows', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  const got = collect(device, [1, 2, 3, 0xffffffff]);
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const list: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) {
    const c = new Uint8Array(rnd(CHAIN + 40));
    for (let k = 0; k < c.byteLength; k++) c[k] = rnd(256);
    // Plausible headers now and then: small channels and lengths.
    for (let k = 0; k + 8 <= c.byteLength && rnd(3) === 0; k += 8 * (1 + rnd(40))) {
      c[k] = 1 + rnd(3);
      c[k + 1] = c[k + 2] = c[k + 3] = 0;
      c[k + 4] = rnd(256);
      c[k + 5] = rnd(20);
      c[k + 6] = c[k + 7] = 0;
    }
    list.push(c);
  }
  for (let i = 0; i < list.length; i += 10) await sendAll(d, list.slice(i, i + 10), 120 + rnd(3000)); // at most 36 descriptors
  t.equal(device.isUp, true, 'still up');
  got.length = 0;
  const last = { channel: 2, sdu: patternSdu(2, 1, 300) };
  await sendAll(d, [packRecords([last])]);
  same(t, got, [last], 'a good chain after 300 random ones');
  t.ok(device.stats.drops.malformed + device.stats.drops.oversize > 0, 'random chains counted');
});

t.test('packed: a handler that pauses mid-chain (a full channel) loses nothing: the rest waits, in order, before later chains', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  const got: Rec[] = [];
  const room = { n: 5 };
  pausingReceiver(device, 6, got, room);
  const sent = Array.from({ length: 30 }, (_, i) => ({ channel: 6, sdu: patternSdu(6, i, 100) }));
  sendChains(t, d, sent, 15); // two chains of 15 records each
  await pausedAt(t, d, got, 5, 2, 50);
  let prev = 5;
  // 7 more (mid-chain again), 3 more (the pause falls on the chain's last record), the rest.
  for (const step of [7, 3, 100]) {
    room.n = step;
    device.resume();
    const want = Math.min(30, prev + step);
    await until(() => got.length === want, `resumed for ${step}`, 5000);
    await new Promise((r) => setTimeout(r, 20));
    t.equal(got.length, want, `then paused again at ${want}`);
    if (want === 15) {
      d.harvestTx();
      t.equal(d.txOutstanding, 1, 'the first chain returned once its last record was taken, the second not started');
    }
    prev = want;
  }
  await until(() => {
    d.harvestTx();
    return d.txOutstanding === 0;
  }, 'both chains returned', 5000);
  same(t, got, sent, 'after three pauses');
  t.equal(device.stats.fromGuest.sdus, 30);
});

t.test("packed: the per-turn budget stops mid-chain and goes on next turn; 30,000 empty SDUs in order", async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  let n = 0;
  let bad = -1;
  device.bind(7, (sdu) => {
    if (sdu.byteLength !== (n % 5 === 0 ? 4 : 0) || (sdu.byteLength === 4 && new DataView(sdu.buffer, sdu.byteOffset).getUint32(0, true) !== n)) bad = bad < 0 ? n : bad;
    n++;
  });
  const sent: Rec[] = [];
  for (let i = 0; i < 30_000; i++) {
    const sdu = new Uint8Array(i % 5 === 0 ? 4 : 0);
    if (sdu.byteLength) new DataView(sdu.buffer).setUint32(0, i, true);
    sent.push({ channel: 7, sdu });
  }
  const cs = chains(sent).map(packRecords);
  t.ok(cs.length > 64, `${cs.length} chains, more than the ring`);
  await sendAll(d, cs, undefined, 30_000);
  await until(() => n === 30_000, 'all', 30_000);
  t.equal(bad, -1, 'each in order');
});

t.test('packed: a queue stop with records waiting keeps the chain (not returned); a reset drops the waiting records, counted', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { txPacked: true });
  await up(device);
  let taken = 0;
  device.bind(8, () => {
    if (++taken === 2) device.pause();
  });
  t.ok(d.sendChain(packRecords(Array.from({ length: 10 }, (_, i) => ({ channel: 8, sdu: patternSdu(8, i, 20) })))));
  await until(() => taken === 2, 'two records', 5000);
  d.harvestTx();
  t.equal(d.txOutstanding, 1, 'held while paused');
  // What GET_VRING_BASE does to the queue (in this process: the device's side only).
  device.queueStopped(1);
  d.harvestTx();
  t.equal(d.txOutstanding, 1, 'not given back at the stop (a restart could not get its records back: vmpi-tx-held-restart.test.ts)');
  const r0 = device.stats.drops.device_reset;
  device.reset('test');
  t.equal(device.stats.drops.device_reset - r0, 8, 'the 8 waiting records dropped at the reset, counted');
  device.resume();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(taken, 2, 'nothing delivered after the reset');
});

t.test('restart: a resumed connection parses records when the saved features say the driver took VMPI_F_TX_PACKED', async (t) => {
  const a = serve(t);
  const d = await connect(t, a.path, { txPacked: true });
  await up(a.device);
  const gotA = collect(a.device, [4]);
  const first = Array.from({ length: 20 }, (_, i) => ({ channel: 4, sdu: patternSdu(4, i, 100) }));
  await sendAll(d, [packRecords(first)]);
  same(t, gotA, first, 'before the restart');
  const { saved, fd } = handOver(a.server);
  const b = serve(t);
  const gotB = collect(b.device, [4]);
  b.server.adopt(fd, saved);
  t.equal(b.device.txPacked, true, 'the new device took the saved features');
  await up(b.device);
  const second = Array.from({ length: 50 }, (_, i) => ({ channel: 4, sdu: patternSdu(4, 20 + i, 100) }));
  await sendAll(d, chains(second).map(packRecords));
  same(t, gotB, second, 'after the restart');
  t.equal(b.device.stats.drops.malformed, 0, 'records, not misread as frames');
});
