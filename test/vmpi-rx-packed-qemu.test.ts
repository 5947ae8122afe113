/**
 * VMPI_F_RX_PACKED against real QEMU 10 (TCG) and the guest driver: the carrier passes device
 * feature bit 0 to the guest and back (the host device sees it taken); SDUs of 0..4000 bytes and
 * 65536 bytes on eleven channels at once, sent host → guest interleaved in one burst, arrive
 * complete and in order per channel (vmpi-perf recv verifies every byte and the CRC-32), with the
 * feature on and with it off (the driver loaded with rx_packed=0: one frame per rx buffer, the old
 * format); then a host that lies inside a packed buffer (a record past used.len, one over max
 * SDU, a header cut by used.len, used.len over the buffer): the records before the bad one are
 * delivered, the rest is dropped and counted (rx_malformed), the kernel logs no oops, and good
 * traffic flows afterwards.
 * Needs the guest artefacts (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { SendResult, type VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { HostileVmpiDevice } from './helpers/hostile-device.js';
import { crc32, parseResults, patternSdu } from './helpers/pattern.js';
import { kernelTrouble } from './helpers/kernel-trouble.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');
/** One channel per size; every size at once, so packed chains mix them. */
const SIZES = [0, 1, 7, 8, 250, 1000, 1500, 2048, 3000, 4000, 65536];

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-packed-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Start `vmpi-perf recv` for every size (channel 100 + index), send all of them from the host
 * interleaved (round robin over the channels, whatever the backlog takes, waiting for 'drain'
 * when it is full), and check each receiver's verdict and CRC-32.
 */
async function burst(t: Test, g: Guest, device: VmpiDevice, what: string): Promise<void> {
  const counts = SIZES.map((s) => (s >= 65536 ? 8 : 150));
  for (const [i, size] of SIZES.entries()) g.send(`vmpi-perf -t 60000 recv /dev/vmpi0 ${100 + i} ${size} ${counts[i]} >/tmp/recv-${i}.log 2>&1 &`);
  for (const i of SIZES.keys()) {
    const r = await waitForFile(g, i);
    t.ok(r, `${what}: receiver ${i} ready`);
  }
  const crcs = SIZES.map(() => 0);
  const sent = SIZES.map(() => 0);
  const total = counts.reduce((a, b) => a + b, 0);
  let done = 0;
  const end = Date.now() + 120_000;
  while (done < total) {
    let full = false;
    for (const [i, size] of SIZES.entries()) {
      if (sent[i]! >= counts[i]!) continue;
      const ch = 100 + i;
      const sdu = patternSdu(ch, sent[i]!, size);
      const r = device.send(ch, sdu);
      if (r === SendResult.Full) {
        full = true;
        break;
      }
      crcs[i] = crc32(sdu, crcs[i]!);
      sent[i]!++;
      done++;
    }
    if (full) {
      if (Date.now() > end) throw new Error(`${what}: the backlog did not drain`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 1000);
        device.once('drain', () => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }
  const w = await g.exec('wait; cat /tmp/recv-*.log', 90_000);
  const results = parseResults(w.out).filter((x) => x.kind === 'RESULT' && x.mode === 'recv');
  for (const [i, size] of SIZES.entries()) {
    const res = results.find((x) => x.channel === String(100 + i));
    t.equal(res?.status, 'ok', `${what}: ${counts[i]} SDUs of ${size} bytes arrive in order, verified`);
    t.equal(res?.sdus, String(counts[i]), `${what}: count (${size} B)`);
    t.equal(res?.crc32, hex(crcs[i]!), `${what}: CRC-32 matches what the host sent (${size} B)`);
  }
  t.equal(device.stats.drops.malformed, 0, `${what}: the host saw no malformed rx buffer`);
}

async function waitForFile(g: Guest, i: number): Promise<boolean> {
  const end = Date.now() + 60_000;
  while (Date.now() < end) {
    const r = await g.exec(`grep -c READY /tmp/recv-${i}.log 2>/dev/null || true`);
    if (/^1\r?$/m.test(r.out)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

t.test('packed rx on: 0..4000 B and 64 KiB SDUs, interleaved on 11 channels, complete and in order', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 31 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.rxPacked, true, 'the driver took VMPI_F_RX_PACKED through the gpio carrier');
  const dmesg = await g.exec('dmesg | grep -i vmpi');
  t.match(dmesg.out, /packed rx/, `the driver says so (${dmesg.out.trim()})`);
  await burst(t, g, device, 'packed');
  const k = await g.exec('dmesg');
  t.same(kernelTrouble(k.out), [], 'no oops or warning in the guest kernel');
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('packed rx off (driver loaded with rx_packed=0): the same traffic in the old format', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 32 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], append: ['vmpi_noload'], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  const ins = await g.exec('insmod /lib/modules/vmpi.ko rx_packed=0');
  t.equal(ins.rc, 0, `driver loaded with rx_packed=0 (${ins.out.trim()})`);
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.rxPacked, false, 'the driver did not take VMPI_F_RX_PACKED');
  const dmesg = await g.exec('dmesg | grep -i vmpi');
  t.match(dmesg.out, /one frame per buffer/, 'one frame per rx buffer');
  await burst(t, g, device, 'unpacked');
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('packed rx, hostile host: bad records inside a buffer are dropped and counted, the good ones before them delivered', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = tmp(t);
  const sock = join(dir, 'vm.sock');
  const dev = new HostileVmpiDevice({ vmpiId: 33 });
  const server = new VhostUserServer({ path: sock, createDevice: () => dev, maxConnections: 1 });
  server.listen();
  t.teardown(() => server.close());
  const g = new Guest({ sockets: [sock], append: ['slub_debug=FZPU', 'init_on_alloc=0'], timeoutMs: 380_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => dev.isUp, 'device up');
  t.equal(dev.rxPacked, true, 'packed');
  const counter = async (name: string): Promise<number> => Number(/(\d+)/.exec((await g.exec(`cat /sys/bus/virtio/devices/*/${name}`)).out)?.[1] ?? NaN);

  /** A record `le32 channel | le32 length | bytes`, padded to 8. */
  const rec = (channel: number, length: number, bytes: Uint8Array): Uint8Array => {
    const out = new Uint8Array(Math.ceil((8 + bytes.byteLength) / 8) * 8);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, channel, true);
    dv.setUint32(4, length, true);
    out.set(bytes, 8);
    return out;
  };
  const cat = (...parts: Uint8Array[]): Uint8Array => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.byteLength;
    }
    return out;
  };
  /** Write raw bytes into the next rx buffer (sendClaiming writes `le32 channel | sdu`). */
  const raw = (bytes: Uint8Array, claimed: number) => {
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    return dev.sendClaiming(dv.getUint32(0, true), bytes.subarray(4), claimed);
  };

  const from = g.mark;
  g.send('vmpi-perf -t 30000 dump /dev/vmpi0 7 4 &');
  await g.waitFor(/READY mode=dump dev=\/dev\/vmpi0 channel=7\b/, 30_000, from);
  const m0 = await counter('rx_malformed');
  const good = [patternSdu(7, 0, 100), patternSdu(7, 1, 20), patternSdu(7, 2, 300), patternSdu(7, 3, 50)];
  // 1: a good record, then one whose length runs past used.len.
  let b = cat(rec(7, 100, good[0]!), rec(7, 5000, new Uint8Array(16)));
  await raw(b, b.byteLength);
  // 2: a good record, then one over max SDU (claimed within used.len).
  b = cat(rec(7, 20, good[1]!), rec(7, 65537, new Uint8Array(16)));
  await raw(b, b.byteLength);
  // 3: a good record, then a header cut by used.len (4 bytes of it).
  b = cat(rec(7, 300, good[2]!), new Uint8Array([7, 0, 0, 0]));
  await raw(b, align8(8 + 300) + 4);
  // 4: used.len over the buffer (8 + 65536 + 1): the whole buffer is dropped.
  b = rec(7, 10, new Uint8Array(10));
  await raw(b, 8 + 65536 + 1);
  // 5: used.len 0: an empty buffer, nothing delivered, nothing counted.
  await raw(new Uint8Array(8), 0);
  // 6: good again.
  b = rec(7, 50, good[3]!);
  await raw(b, 8 + 50);
  const w = await g.exec('wait', 40_000);
  const got = [...g.output.slice(from).matchAll(/SDU channel=\d+ n=\d+ len=(\d+) hex=([0-9a-f]*)/g)].map((m) => Buffer.from(m[2]!, 'hex'));
  t.equal(got.length, 4, `the four good records are read (${w.out.trim()})`);
  for (const [i, sdu] of good.entries()) t.same(got[i], Buffer.from(sdu), `good record ${i} intact`);
  t.equal((await counter('rx_malformed')) - m0, 4, 'four bad buffers counted in rx_malformed');
  const k = await g.exec('dmesg');
  t.same(kernelTrouble(k.out), [], 'no oops or warning in the guest kernel');
  t.match(k.out, /bad record at offset/, 'logged');
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}
