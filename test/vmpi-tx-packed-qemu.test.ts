/**
 * VMPI_F_TX_PACKED against real QEMU 10 (TCG) and the guest driver: the carrier passes device
 * feature bit 1 to the guest and back; batch writes of SDUs of 0 .. 64 KiB on several channels at
 * once (vmpi-batch-check write: pattern SDUs of 0..max SDU bytes and bad records after good ones,
 * on three channels; udp-goodput -B 64 vmpi-send: 64 SDUs per write of 0, 250, 1000 and 65536
 * bytes, on four more) arrive complete and in order per channel, every SDU the writes said they
 * took and nothing more; packed, far fewer tx chains than SDUs. The same with the feature off
 * both ways: a host that does not offer it (txPacked: false; new driver, old host) and a driver
 * loaded with tx_packed=0 (old driver, new host): one chain per SDU.
 * Needs the guest artefacts (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import type { VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { parseResults, patternSdu } from './helpers/pattern.js';
import { kernelTrouble } from './helpers/kernel-trouble.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

/** vmpi-batch-check write's SDU sizes (seq 0..15; max SDU is 65536 here). */
const CHECK_SIZES = [0, 1, 2, 3, 5, 100, 1000, 4000, 4096, 65536, 7, 100, 100, 100, 8, 9];
const CHECK_CHANNELS = [6, 7, 8];
/** udp-goodput -B 64 vmpi-send: one channel per size. */
const SEND_SIZES = [0, 250, 1000, 65536];
const SEND_CHANNEL = (i: number) => 20 + i;

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-txpacked-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What the host got on the channels of the traffic below. */
function collect(device: VmpiDevice): Map<number, Uint8Array[]> {
  const got = new Map<number, Uint8Array[]>();
  for (const ch of [...CHECK_CHANNELS, ...SEND_SIZES.map((_, i) => SEND_CHANNEL(i))]) {
    const list: Uint8Array[] = [];
    got.set(ch, list);
    device.bind(ch, (sdu) => list.push(Uint8Array.prototype.slice.call(sdu)));
  }
  return got;
}

/**
 * Run every writer at once (so chains of seven channels interleave in the tx ring), then check
 * each channel. Returns SDUs and chains the host took for it.
 */
async function traffic(t: Test, g: Guest, device: VmpiDevice, what: string): Promise<{ sdus: number; chains: number }> {
  const got = collect(device);
  const sdus0 = device.stats.fromGuest.sdus;
  const chains0 = device.stats.txChains;
  const cmds = [
    ...CHECK_CHANNELS.map((ch) => `vmpi-batch-check write /dev/vmpi0 ${ch} >/tmp/tx-${ch}.log 2>&1 &`),
    ...SEND_SIZES.map((size, i) => `udp-goodput -B 64 vmpi-send /dev/vmpi0 ${SEND_CHANNEL(i)} ${size} 1500 >/tmp/tx-${SEND_CHANNEL(i)}.log 2>&1 &`),
  ];
  const w = await g.exec(`${cmds.join(' ')} wait; cat /tmp/tx-*.log`, 120_000);
  t.same(w.out.match(/^(FAIL|ERROR) .*$/gm) ?? [], [], `${what}: every writer in the guest passed`);
  const results = parseResults(w.out).filter((x) => x.kind === 'RESULT');
  const want = new Map<number, number>();
  for (const ch of CHECK_CHANNELS) {
    const r = results.find((x) => x.mode === 'write' && x.channel === String(ch));
    t.equal(r?.status, 'ok', `${what}: vmpi-batch-check write on ${ch}`);
    want.set(ch, CHECK_SIZES.length);
  }
  for (const [i] of SEND_SIZES.entries()) {
    const r = results.find((x) => x.mode === 'vmpi-send' && x.channel === String(SEND_CHANNEL(i)));
    t.ok(Number(r?.datagrams) > 0, `${what}: udp-goodput sent ${r?.datagrams} SDUs of ${SEND_SIZES[i]} B`);
    want.set(SEND_CHANNEL(i), Number(r?.datagrams));
  }
  const total = [...want.values()].reduce((a, b) => a + b, 0);
  await hostCondition(() => [...want].every(([ch, n]) => got.get(ch)!.length >= n), `${what}: ${total} SDUs at the host`, 60_000);
  await new Promise((r) => setTimeout(r, 300)); // anything sent past a bad record would be here by now
  for (const ch of CHECK_CHANNELS) {
    const list = got.get(ch)!;
    t.equal(list.length, CHECK_SIZES.length, `${what}: channel ${ch}: exactly the SDUs of the records the driver took`);
    const bad = CHECK_SIZES.filter((size, seq) => !list[seq] || Buffer.compare(Buffer.from(list[seq]), Buffer.from(patternSdu(ch, seq, size))) !== 0).length;
    t.equal(bad, 0, `${what}: channel ${ch}: SDUs of 0..65536 B in order, intact`);
  }
  for (const [i, size] of SEND_SIZES.entries()) {
    const ch = SEND_CHANNEL(i);
    const list = got.get(ch)!;
    const model = Buffer.from(Uint8Array.from({ length: size }, (_, k) => k & 255));
    t.equal(list.length, want.get(ch), `${what}: channel ${ch}: every SDU the writes took, no more`);
    t.equal(list.filter((s) => Buffer.compare(Buffer.from(s.buffer, s.byteOffset, s.byteLength), model) !== 0).length, 0, `${what}: channel ${ch}: each ${size} B, intact`);
  }
  t.equal(device.stats.drops.malformed + device.stats.drops.oversize, 0, `${what}: no malformed chain`);
  for (const ch of got.keys()) device.unbind(ch);
  const k = await g.exec('dmesg');
  t.same(kernelTrouble(k.out), [], `${what}: no oops or warning in the guest kernel`);
  return { sdus: device.stats.fromGuest.sdus - sdus0, chains: device.stats.txChains - chains0 };
}

t.test('packed tx on: batch writes of 0..64 KiB SDUs on 7 channels at once, complete and in order, far fewer chains than SDUs', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 41 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.txPacked, true, 'the driver took VMPI_F_TX_PACKED through the gpio carrier');
  const dmesg = await g.exec('dmesg | grep -i vmpi');
  t.match(dmesg.out, /packed tx/, `the driver says so (${dmesg.out.trim()})`);
  const r = await traffic(t, g, device, 'packed');
  t.ok(r.chains * 4 < r.sdus, `${r.sdus} SDUs in ${r.chains} tx chains`);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('new driver, host not offering it (txPacked: false): the same traffic, one chain per SDU', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 42, txPacked: false });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.txPacked, false, 'not negotiated');
  const dmesg = await g.exec('dmesg | grep -i vmpi');
  t.match(dmesg.out, /one frame per buffer tx/, 'the driver sends one frame per tx buffer');
  const r = await traffic(t, g, device, 'host without it');
  t.equal(r.chains, r.sdus, `${r.sdus} SDUs, one chain each`);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('old driver (tx_packed=0), new host: the same traffic, one chain per SDU', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 43 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], append: ['vmpi_noload'], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  const ins = await g.exec('insmod /lib/modules/vmpi.ko tx_packed=0');
  t.equal(ins.rc, 0, `driver loaded with tx_packed=0 (${ins.out.trim()})`);
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.txPacked, false, 'the driver did not take VMPI_F_TX_PACKED');
  t.equal(device.rxPacked, true, 'rx packing is separate');
  const r = await traffic(t, g, device, 'driver without it');
  t.equal(r.chains, r.sdus, `${r.sdus} SDUs, one chain each`);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
