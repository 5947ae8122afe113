/**
 * vmpi-rx-packed.test.ts — VMPI_F_RX_PACKED on the host device (src/vmpi/device.ts), over a real
 * vhost-user connection with this process as the guest driver (test/helpers/vmpi-driver.ts):
 * negotiation (offered by default, not without the option, an old driver keeps one frame per
 * chain), many small SDUs in one rx chain with one used entry per chain, records aligned and
 * ending at used.len, an SDU that does not fit in what is left going to the next chain, a max
 * SDU filling a chain exactly, records across descriptor boundaries, the backlog drained into
 * packed chains without loss, a chain too small for a record breaking the queue, an open chain
 * given back when its queue stops, and a resumed connection (restart) speaking the packing its
 * saved features say.
 */
import t, { type Test } from 'tap';
import { type VmpiTestDriver } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import { MAX_SDU, connect, firstMismatch, handOver, serveDevice, up, type Served } from './helpers/vmpi-device-rig.js';
import { until } from './dif/helpers.js';
import { hasBit } from '../src/vhost-user/protocol.js';
import { PACKED_RECORD_ALIGN, PACKED_RECORD_HEADER_SIZE, SendResult, VMPI_F_RX_PACKED, type VmpiDeviceOptions } from '../src/vmpi/device.js';

const BUF = PACKED_RECORD_HEADER_SIZE + MAX_SDU;
const align = (n: number): number => Math.ceil(n / PACKED_RECORD_ALIGN) * PACKED_RECORD_ALIGN;

const serve = (t: Test, opts: Partial<VmpiDeviceOptions> = {}): Served => serveDevice(t, 'vmpi-packed-', { vmpiId: 7, ...opts });

async function pumpUntil(d: VmpiTestDriver, cond: () => boolean, what: string, ms = 5000): Promise<void> {
  await until(
    () => {
      d.pump();
      return cond();
    },
    what,
    ms,
  );
}

/** Chains the greedy packer uses for `sizes` (records aligned, one chain of BUF bytes each). */
function expectedChains(sizes: number[]): number[] {
  const per: number[] = [];
  let used = 0;
  let n = 0;
  for (const s of sizes) {
    const rec = PACKED_RECORD_HEADER_SIZE + s;
    if (n > 0 && align(used) + rec <= BUF) {
      used = align(used) + rec;
      n++;
    } else {
      if (n > 0) per.push(n);
      used = rec;
      n = 1;
    }
    if (align(used) + PACKED_RECORD_HEADER_SIZE > BUF) {
      per.push(n);
      n = 0;
      used = 0;
    }
  }
  if (n > 0) per.push(n);
  return per;
}

function checkReceived(t: Test, d: VmpiTestDriver, sent: { channel: number; sdu: Uint8Array }[]): void {
  t.equal(d.received.length, sent.length, 'every SDU arrived');
  t.equal(firstMismatch(d.received.slice(0, sent.length), sent), -1, 'in order, channels and bytes intact');
}

t.test('negotiation: offered by default; an old driver and a device without the option keep one frame per chain', async (t) => {
  const on = serve(t);
  t.ok(hasBit(on.device.features, VMPI_F_RX_PACKED), 'offered by default');
  const old = await connect(t, on.path);
  await up(on.device);
  t.equal(on.device.rxPacked, false, 'an old driver did not take it');
  old.postRx();
  const sent = Array.from({ length: 40 }, (_, i) => ({ channel: 3, sdu: patternSdu(3, i, 250) }));
  for (const s of sent) t.equal(on.device.send(s.channel, s.sdu), SendResult.Sent);
  await pumpUntil(old, () => old.received.length === sent.length, '40 SDUs');
  checkReceived(t, old, sent);
  t.same(old.rxUsedLens, sent.map((s) => 4 + s.sdu.byteLength), 'one chain per frame, used.len = 4 + SDU');

  const off = serve(t, { rxPacked: false });
  t.notOk(hasBit(off.device.features, VMPI_F_RX_PACKED), 'rxPacked: false does not offer it');
  const d = await connect(t, off.path, { rxPacked: true });
  await up(off.device);
  t.equal(d.rxPacked, false, 'a new driver cannot take what was not offered');
  t.equal(off.device.rxPacked, false);
});

t.test('packed: a burst of small SDUs fills few chains, one used entry each, records aligned up to used.len', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { rxPacked: true });
  await up(device);
  t.equal(d.rxPacked, true, 'negotiated');
  t.equal(device.rxPacked, true);
  d.postRx();
  await until(() => d.rx.outstanding === 64, 'rx posted', 5000);
  const sent = Array.from({ length: 200 }, (_, i) => ({ channel: 1 + (i % 3), sdu: patternSdu(1 + (i % 3), i, 250) }));
  const calls0 = device.stats.calls;
  for (const s of sent) t.equal(device.send(s.channel, s.sdu), SendResult.Sent, 'fits in the posted chains');
  await pumpUntil(d, () => d.received.length === sent.length, '200 SDUs');
  checkReceived(t, d, sent);
  const per = expectedChains(sent.map((s) => s.sdu.byteLength));
  t.same(d.rxRecordsPerChain, per, `records per chain: ${per.join(',')}`);
  t.equal(per[0], Math.floor((BUF - 258) / 264) + 1, 'a full chain holds as many 250-byte records as fit');
  t.equal(d.rxUsedLens[0], align(258) * (per[0]! - 1) + 258, 'used.len ends at the last record (no padding after it)');
  t.ok(device.stats.calls - calls0 <= 2, `one burst, at most a call or two (${device.stats.calls - calls0}), not one per SDU`);
  t.equal(device.stats.toGuest.sdus, 200);
  t.equal(device.stats.toGuest.bytes, 200 * 250);
});

t.test('packed: limits — empty SDUs, max SDU fills a chain, what does not fit goes to the next chain, records across segments', async (t) => {
  const { device, path } = serve(t);
  // 1000-byte descriptors: headers and SDUs straddle descriptor boundaries.
  const d = await connect(t, path, { rxPacked: true, rxSegLen: 1000 });
  await up(device);
  d.postRx();
  const sizes = [0, 0, 1, 7, 8, 9, MAX_SDU, 4000, 200, MAX_SDU - 8, 0, MAX_SDU, 3, 1000, 1001, 999, 2048, 2040, 16, 0];
  const sent = sizes.map((n, i) => ({ channel: 0xfffffff0 + (i % 4), sdu: patternSdu(5, i, n) }));
  let i = 0;
  await pumpUntil(
    d,
    () => {
      while (i < sent.length && device.send(sent[i]!.channel, sent[i]!.sdu) === SendResult.Sent) i++;
      while (i < sent.length && device.send(sent[i]!.channel, sent[i]!.sdu) !== SendResult.Full) i++;
      return d.received.length === sent.length;
    },
    `${sent.length} SDUs of 0..${MAX_SDU} bytes`,
  );
  checkReceived(t, d, sent);
  t.same(d.rxRecordsPerChain, expectedChains(sizes), 'greedy packing: a record that does not fit starts the next chain');
  const maxChain = d.rxUsedLens.indexOf(BUF);
  t.ok(maxChain >= 0, 'a max SDU takes a whole chain: used.len = 8 + max SDU');
  t.equal(d.rxRecordsPerChain[maxChain], 1);
  t.ok(
    d.rxUsedLens.every((l) => l <= BUF),
    'no used.len beyond the chain',
  );
  t.equal(device.stats.drops.malformed, 0);
});

t.test('packed: the backlog drains into packed chains, in order, nothing lost, drain emitted', async (t) => {
  const { device, path } = serve(t, { backlogMaxSdus: 5000, backlogMaxBytes: 8 * 2 ** 20 });
  const d = await connect(t, path, { rxPacked: true });
  await up(device);
  let drains = 0;
  device.on('drain', () => drains++);
  // No rx buffers yet: everything waits in the backlog.
  const sent = Array.from({ length: 3000 }, (_, i) => ({ channel: 9, sdu: patternSdu(9, i, (i * 37) % 600) }));
  for (const s of sent) t.equal(device.send(s.channel, s.sdu), SendResult.Queued);
  t.equal(device.stats.backlogSdus, 3000);
  t.ok(device.stats.rxQueueFull >= 1, 'no guest buffer: counted');
  await pumpUntil(d, () => d.received.length === sent.length, '3000 backlogged SDUs', 10_000);
  checkReceived(t, d, sent);
  t.equal(device.stats.backlogSdus, 0);
  t.ok(drains >= 1, "'drain' once the backlog emptied");
  t.ok(d.rxUsedLens.length < 3000 / 10, `${d.rxUsedLens.length} chains for 3000 SDUs`);
});

t.test('packed: an rx chain too small for a record breaks the queue (counted), as without packing', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { rxPacked: true, rxBufLen: 100 });
  await up(device);
  d.postRx();
  await until(() => d.rx.outstanding === 64, 'rx posted', 5000);
  t.equal(device.send(1, new Uint8Array(50)), SendResult.Sent, '58-byte record fits in 100');
  t.equal(device.send(1, new Uint8Array(30)), SendResult.Sent, 'next record at 64: 64 + 38 > 100, next chain');
  t.equal(device.send(1, new Uint8Array(93)), SendResult.Queued, '101 bytes fit in no chain: the queue breaks, the SDU waits');
  t.equal(device.stats.drops.malformed, 1);
  await pumpUntil(d, () => d.received.length === 2, 'the two records that fit');
  t.same(d.rxRecordsPerChain, [1, 1, 0], 'one record each, then the refused chain given back empty');
  t.same(d.rxUsedLens, [58, 38, 0]);
});

t.test('restart: a resumed connection packs when the saved features say the driver took VMPI_F_RX_PACKED', async (t) => {
  // In one process, as the restart worker does across two (handOver): snapshot the connection,
  // abandon it, and adopt its socket and state in a new server with a new device.
  const a = serve(t);
  const d = await connect(t, a.path, { rxPacked: true });
  await up(a.device);
  d.postRx();
  await until(() => d.rx.outstanding === 64, 'rx posted', 5000);
  const first = Array.from({ length: 20 }, (_, i) => ({ channel: 4, sdu: patternSdu(4, i, 100) }));
  for (const s of first) a.device.send(s.channel, s.sdu);
  await pumpUntil(d, () => d.received.length === 20, 'before the restart');
  const { saved, fd } = handOver(a.server);
  const b = serve(t);
  b.server.adopt(fd, saved);
  t.equal(b.device.rxPacked, true, 'the new device took the saved features');
  await up(b.device);
  const second = Array.from({ length: 50 }, (_, i) => ({ channel: 4, sdu: patternSdu(4, 20 + i, 100) }));
  for (const s of second) t.equal(b.device.send(s.channel, s.sdu), SendResult.Sent);
  await pumpUntil(d, () => d.received.length === 70, 'after the restart');
  checkReceived(t, d, [...first, ...second]);
});

t.test('packed: a queue that stops with a chain open gives that chain back first (its SDUs were Sent)', async (t) => {
  const { device, path } = serve(t);
  const d = await connect(t, path, { rxPacked: true });
  await up(device);
  d.postRx();
  await until(() => d.rx.outstanding === 64, 'rx posted', 5000);
  const sent = Array.from({ length: 5 }, (_, i) => ({ channel: 2, sdu: patternSdu(2, i, 300) }));
  for (const s of sent) t.equal(device.send(s.channel, s.sdu), SendResult.Sent);
  // In the same turn, before the deferred flush: what GET_VRING_BASE or a reset does to the queue.
  device.queueStopped(0);
  d.pump();
  checkReceived(t, d, sent);
  t.same(d.rxRecordsPerChain, [5], 'one chain, returned at the stop');
});
