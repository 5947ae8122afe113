/**
 * VMPI devices against real QEMU 10 (TCG) and the guest driver: SDUs of every size on several
 * channels both ways, two VMs on one server, module reload and guest reboot, a misbehaving
 * guest, VMPI_IOC_SHUTDOWN (guest-driver/tools/vmpi-shutdown-check.c), and the rx stall rule (a slow reader stays lossless, a trickling one stalls). Needs the guest artefacts (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { HostMetrics } from '../src/ops/metrics.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { SendResult, type VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, within } from './helpers/guest.js';
import { crc32, parseResults, patternSdu } from './helpers/pattern.js';
import { channelStatsRow } from './helpers/guest-channel-stats.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');
const SIZES = [0, 1, 1000, 4000, 4096, 65536];

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Collects SDUs per channel on a device; checks each against the pattern. */
class Sink {
  readonly sdus = new Map<number, Uint8Array[]>();
  constructor(device: VmpiDevice, channels: number[]) {
    for (const ch of channels) {
      this.sdus.set(ch, []);
      device.bind(ch, (sdu, c) => this.sdus.get(c)!.push(Uint8Array.prototype.slice.call(sdu)));
    }
  }
  take(ch: number): Uint8Array[] {
    const got = this.sdus.get(ch)!;
    this.sdus.set(ch, []);
    return got;
  }
}

function sendPattern(device: VmpiDevice, ch: number, size: number, count: number, seq0 = 0): number {
  let crc = 0;
  for (let i = 0; i < count; i++) {
    const sdu = patternSdu(ch, seq0 + i, size);
    crc = crc32(sdu, crc);
    const r = device.send(ch, sdu);
    if (r === SendResult.Full) throw new Error(`backlog full at SDU ${i}`);
  }
  return crc;
}

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Run `vmpi-perf send` in the guest and check what the host got, SDU by SDU. */
async function guestToHost(t: Test, g: Guest, sink: Sink, dev: string, ch: number, size: number, count: number, seq0 = 0): Promise<void> {
  const r = await g.exec(`vmpi-perf -s ${seq0} send ${dev} ${ch} ${size} ${count}`);
  t.equal(r.rc, 0, `guest send ch ${ch} size ${size}: ${r.out.trim()}`);
  const res = parseResults(r.out).find((x) => x.kind === 'RESULT')!;
  await waitFor(() => sink.sdus.get(ch)!.length >= count, `${count} SDUs on channel ${ch}`);
  const got = sink.take(ch);
  t.equal(got.length, count, `host got ${count} SDUs of ${size} bytes on channel ${ch}`);
  let crc = 0;
  let bad = 0;
  got.forEach((sdu, i) => {
    crc = crc32(sdu, crc);
    if (Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(ch, seq0 + i, size))) !== 0) bad++;
  });
  t.equal(bad, 0, `every SDU matches the pattern (ch ${ch}, size ${size})`);
  t.equal(res?.crc32, hex(crc), 'guest and host CRC-32 agree');
}

/** Start `vmpi-perf recv` in the guest, send from the host, and check the guest's verdict. */
async function hostToGuest(t: Test, g: Guest, device: VmpiDevice, dev: string, ch: number, size: number, count: number, seq0 = 0): Promise<void> {
  const from = g.mark;
  await g.background(`vmpi-perf -t 20000 -s ${seq0} recv ${dev} ${ch} ${size} ${count}`);
  await g.waitFor(new RegExp(`READY mode=recv dev=${dev} channel=${ch}\\b`), 30_000, from);
  const crc = sendPattern(device, ch, size, count, seq0);
  const r = await g.exec('wait', 60_000);
  const res = parseResults(g.output.slice(from)).find((x) => x.kind === 'RESULT' && x.mode === 'recv' && x.channel === String(ch));
  t.equal(res?.status, 'ok', `guest received ${count} SDUs of ${size} bytes on channel ${ch} (${r.out.trim()})`);
  t.equal(res?.sdus, String(count), 'SDU count');
  t.equal(res?.errors, '0', 'no content errors');
  t.equal(res?.crc32, hex(crc), 'CRC-32 matches what the host sent');
}

t.test('one VM: every SDU size on several channels, both ways', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 11 });
  const metrics = new HostMetrics(host, { processMetrics: false });
  const channels = [1, 2, 3];
  const sink = new Sink(device, channels);
  const g = new Guest({ sockets: [join(dir, 'vm.sock')] });
  t.teardown(() => g.kill());
  await g.agentReady();
  await waitFor(() => device.isUp, 'device up');

  const info = await g.exec('vmpi-perf info /dev/vmpi0');
  t.match(info.out, /vmpi_id=11\b/, 'the guest reads the VMPI-id from the device config');
  t.match(info.out, /max_sdu=65536\b/, 'and the SDU limit');
  const id = await g.exec('cat /sys/bus/virtio/devices/*/device');
  t.match(id.out, /^0x0029\r?$/m, 'the carrier is virtio device 41');

  for (const [i, size] of SIZES.entries()) {
    const ch = channels[i % channels.length]!;
    const count = size >= 65536 ? 8 : 40;
    await guestToHost(t, g, sink, '/dev/vmpi0', ch, size, count);
    await hostToGuest(t, g, device, '/dev/vmpi0', ch, size, count);
  }
  t.equal(device.stats.drops.malformed, 0, 'no malformed frames');
  t.equal(device.stats.drops.unbound_channel, 0, 'no frames for unbound channels');

  // What Prometheus would scrape after that traffic.
  const sdus = SIZES.reduce((n, size) => n + (size >= 65536 ? 8 : 40), 0);
  const bytes = SIZES.reduce((n, size) => n + size * (size >= 65536 ? 8 : 40), 0);
  const scrape = await metrics.metrics();
  const sample = (name: string, dir: string) => Number(new RegExp(`^${name}\\{vmpi_id="11",direction="${dir}"\\} (\\S+)$`, 'm').exec(scrape)?.[1]);
  t.equal(sample('vmpi_device_sdus_total', 'from_guest'), sdus, 'metrics: SDUs from the guest');
  t.equal(sample('vmpi_device_sdus_total', 'to_guest'), sdus, 'metrics: SDUs to the guest');
  t.equal(sample('vmpi_device_bytes_total', 'from_guest'), bytes, 'metrics: bytes from the guest');
  t.equal(sample('vmpi_device_bytes_total', 'to_guest'), bytes, 'metrics: bytes to the guest');
  t.match(scrape, /^vmpi_device_up\{vmpi_id="11"\} 1$/m, 'metrics: device up');
  t.match(scrape, /^vmpi_vhost_user_connections\{vmpi_id="11"\} 1$/m, 'metrics: one front-end connected');
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('two VMs on one server: traffic in both, no cross-talk, one misbehaves', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const devs = [host.addDevice({ socketPath: join(dir, 'a.sock'), vmpiId: 21 }), host.addDevice({ socketPath: join(dir, 'b.sock'), vmpiId: 22 })];
  const sinks = devs.map((d) => new Sink(d, [1]));
  const guests = [new Guest({ sockets: [join(dir, 'a.sock')], name: 'vm-a' }), new Guest({ sockets: [join(dir, 'b.sock')], name: 'vm-b' })];
  t.teardown(() => guests.forEach((g) => g.kill()));
  await Promise.all(guests.map((g) => g.agentReady()));
  await waitFor(() => devs.every((d) => d.isUp), 'both devices up');
  for (const [i, g] of guests.entries()) t.match((await g.exec('vmpi-perf info /dev/vmpi0')).out, new RegExp(`vmpi_id=${21 + i}\\b`), `VM ${i} sees its own VMPI-id`);

  // Both guests send at the same time, with different sequence ranges.
  const runs = guests.map((g, i) => g.exec(`vmpi-perf -s ${10000 * (i + 1)} send /dev/vmpi0 1 1500 300`));
  const results = await Promise.all(runs);
  results.forEach((r, i) => t.equal(r.rc, 0, `VM ${i} sent`));
  await waitFor(() => sinks.every((s) => s.sdus.get(1)!.length >= 300), 'both hosts sides got 300 SDUs');
  sinks.forEach((s, i) => {
    const got = s.take(1);
    t.equal(got.length, 300, `device ${i} got exactly its VM's 300 SDUs`);
    const seqs = got.map((sdu) => new DataView(sdu.buffer, sdu.byteOffset).getUint32(0, true));
    t.same(seqs, Array.from({ length: 300 }, (_, k) => 10000 * (i + 1) + k), `device ${i} got only its own VM's sequence numbers, in order`);
  });

  // VM a misbehaves: an SDU over the limit (refused by its driver), an unbound channel, garbage
  // on the control channel; VM b keeps working meanwhile.
  const big = await guests[0]!.exec('vmpi-perf raw /dev/vmpi0 1 @70000');
  t.match(big.out, /ERROR .*errno=EMSGSIZE/, 'a write over the SDU limit is refused with EMSGSIZE');
  const unbound = devs[0]!.stats.drops.unbound_channel;
  t.equal((await guests[0]!.exec('vmpi-perf send /dev/vmpi0 77 100 5')).rc, 0);
  t.equal((await guests[0]!.exec('vmpi-perf raw /dev/vmpi0 0 deadbeef00ff')).rc, 0);
  await waitFor(() => devs[0]!.stats.drops.unbound_channel >= unbound + 6, 'drops counted');
  t.equal(devs[0]!.stats.drops.unbound_channel, unbound + 6, 'frames for unknown channels (77, and 0 with no control handler) are counted');
  await guestToHost(t, guests[1]!, sinks[1]!, '/dev/vmpi0', 1, 4000, 50, 7);
  await hostToGuest(t, guests[1]!, devs[1]!, '/dev/vmpi0', 1, 4000, 50, 3);
  await guestToHost(t, guests[0]!, sinks[0]!, '/dev/vmpi0', 1, 100, 10, 0);
  for (const g of guests) g.send('poweroff -f');
  await Promise.all(guests.map((g) => guestExit(g)));
});

t.test('module unload/reload and guest reboot: the server survives and serves again', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 31 });
  const sink = new Sink(device, [4]);
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], allowReboot: true });
  t.teardown(() => g.kill());
  await g.agentReady();
  await waitFor(() => device.isUp, 'device up');
  await guestToHost(t, g, sink, '/dev/vmpi0', 4, 512, 20);

  const down = once(device, 'down');
  t.equal((await g.exec('rmmod vmpi')).rc, 0, 'rmmod vmpi');
  await within(down, 30_000, "the device's 'down' after rmmod");
  t.notOk(device.isUp, 'device down after the driver left');
  t.equal((await g.exec('insmod /lib/modules/vmpi.ko && sleep 0.5 && ls /dev/vmpi0')).rc, 0, 'insmod again');
  await waitFor(() => device.isUp, 'device up after reload');
  await guestToHost(t, g, sink, '/dev/vmpi0', 4, 2048, 20);
  await hostToGuest(t, g, device, '/dev/vmpi0', 4, 2048, 20);

  const connBefore = [...host.server(31)!.connections][0];
  g.send('reboot -f');
  await g.agentReady(2, 120_000);
  await waitFor(() => device.isUp, 'device up after reboot', 60_000);
  t.equal([...host.server(31)!.connections][0], connBefore, 'the vhost-user connection survived the guest reboot');
  await guestToHost(t, g, sink, '/dev/vmpi0', 4, 4000, 20);
  await hostToGuest(t, g, device, '/dev/vmpi0', 4, 4000, 20);
  g.send('poweroff -f');
  await guestExit(g);
  await waitFor(() => host.server(31)!.connections.size === 0, 'connection closed after QEMU exits');
});

t.test('VMPI_IOC_SHUTDOWN on a dup: the channel is free at once, queued SDUs stay readable, then ESHUTDOWN', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 41 });
  const ch = 5;
  const sink = new Sink(device, [ch]);
  const g = new Guest({ sockets: [join(dir, 'vm.sock')] });
  t.teardown(() => g.kill());
  await g.agentReady();
  await waitFor(() => device.isUp, 'device up');

  // Fill the channel's queue so that the next frame parks; with the stall deadline out of reach
  // only the shutdown's kick can let it (and the frames behind it) through within the 5 s the
  // guest tool allows.
  const qlen = Number(/(\d+)/.exec((await g.exec('cat /sys/module/vmpi/parameters/rx_queue_len')).out)?.[1]);
  t.equal((await g.exec('echo 60000 > /sys/module/vmpi/parameters/rx_stall_ms')).rc, 0, 'rx_stall_ms=60000');
  const extra = 8;
  const from = g.mark;
  g.send(`vmpi-shutdown-check -t 60000 /dev/vmpi0 ${ch} ${qlen} ${extra} &`);
  await g.waitFor(new RegExp(`READY mode=shutdown dev=/dev/vmpi0 channel=${ch}\\b`), 30_000, from);
  sendPattern(device, ch, 100, qlen + extra);
  const r = await g.exec('wait $!', 120_000);
  const out = g.output.slice(from);
  const res = parseResults(out).find((x) => x.kind === 'RESULT' && x.mode === 'shutdown');
  const fails = out.match(/^FAIL .*$/gm) ?? [];
  t.equal(r.rc, 0, 'vmpi-shutdown-check exits 0');
  t.same(fails, [], 'every check in the guest passed (binds at once after shutdown, poll IN|OUT|HUP without ERR, write/BIND/read/NEXT_LEN ESHUTDOWN, F_SHUTDOWN, blocked reader and poller woken, never-bound file)');
  t.equal(res?.status, 'ok', `guest verdict: ${res ? JSON.stringify(res) : out.slice(-2000)}`);
  t.equal(res?.sdus, String(qlen), `the ${qlen} SDUs queued before the shutdown were still read`);
  t.equal(res?.errors, '0', 'in order and intact');
  t.equal(Number(res?.late_file2) + Number(res?.late_unbound), extra, `the ${extra} frames behind the full queue (one parked) reached the new file or were dropped as unbound`);
  t.ok(Number(res?.late_ms) < 5000, `without waiting for rx_stall_ms (${res?.late_ms} ms)`);
  t.equal(device.stats.backlogSdus, 0, 'the host backlog drained');
  t.same(sink.take(ch), [], 'writes on shut-down files never reached the host');
  // Everything was closed: the channel carries traffic again.
  await hostToGuest(t, g, device, '/dev/vmpi0', ch, 1000, 20);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});

t.test('a slow reader that keeps reading loses nothing however long its queue stays full; one that trickles still stalls', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 43 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')] });
  t.teardown(() => g.kill());
  await g.agentReady();
  await waitFor(() => device.isUp, 'device up');
  const qlen = Number(/(\d+)/.exec((await g.exec('cat /sys/module/vmpi/parameters/rx_queue_len')).out)?.[1]);
  const stalled = async () => Number(/(\d+)/.exec((await g.exec('cat /sys/bus/virtio/devices/*/rx_drops_stalled')).out)?.[1]);
  const STALL_MS = 500;
  t.equal((await g.exec(`echo ${STALL_MS} > /sys/module/vmpi/parameters/rx_stall_ms`)).rc, 0, `rx_stall_ms=${STALL_MS}`);

  // Slow: 6 ms per SDU, so draining a full queue to half (qlen / 2 SDUs) takes longer than
  // rx_stall_ms (the rule before 2026-12 stalled it and dropped), an eighth of it far less.
  const PACE_MS = 6;
  t.ok((qlen / 2) * PACE_MS > STALL_MS && (qlen / 8) * PACE_MS < STALL_MS / 2, `the pace (${PACE_MS} ms/SDU) drains half of ${qlen} SDUs slower than rx_stall_ms, an eighth well within it`);
  const ch = 6;
  const count = 3 * qlen;
  let from = g.mark;
  await g.background(`vmpi-perf -t 30000 -p ${PACE_MS} recv /dev/vmpi0 ${ch} 1000 ${count}`);
  await g.waitFor(new RegExp(`READY mode=recv dev=/dev/vmpi0 channel=${ch}\\b`), 30_000, from);
  const crc = sendPattern(device, ch, 1000, count);
  // While it reads: its queue filled (a frame parked), so the stall clock did run.
  const fullEnd = Date.now() + 30_000;
  let full = 0;
  while (full === 0 && Date.now() < fullEnd) {
    full = channelStatsRow((await g.exec('cat /sys/bus/virtio/devices/*/channel_stats')).out, ch)?.rx_full ?? 0;
  }
  t.ok(full >= 1, `the slow reader's queue filled (rx_full ${full}): frames parked behind it`);
  await g.exec('wait', 120_000);
  const res = parseResults(g.output.slice(from)).find((x) => x.kind === 'RESULT' && x.mode === 'recv' && x.channel === String(ch));
  t.equal(res?.status, 'ok', `the slow reader got all ${count} SDUs (${res ? `${res.sdus} in ${res.seconds} s` : 'no result'})`);
  t.equal(res?.gaps, '0', 'none missing');
  t.equal(res?.crc32, hex(crc), 'CRC-32 matches what the host sent');
  t.equal(await stalled(), 0, 'rx_drops_stalled 0: the slow reader never stalled');

  // Trickle: 200 ms per SDU takes an eighth of the queue in far more than rx_stall_ms: stalled,
  // its later frames dropped and counted. The reader is stopped once that is seen.
  from = g.mark;
  const pid = await g.background(`vmpi-perf -t 30000 -p 200 recv /dev/vmpi0 ${ch} any ${count}`);
  await g.waitFor(new RegExp(`READY mode=recv dev=/dev/vmpi0 channel=${ch}\\b`), 30_000, from);
  sendPattern(device, ch, 1000, qlen + 64);
  const stallEnd = Date.now() + 30_000;
  let drops = 0;
  while (drops === 0 && Date.now() < stallEnd) {
    await new Promise((r) => setTimeout(r, 250));
    drops = await stalled();
  }
  t.ok(drops > 0, `the trickling reader's channel stalled: ${drops} frames dropped and counted`);
  await g.exec(`kill ${pid}; wait`, 30_000);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
