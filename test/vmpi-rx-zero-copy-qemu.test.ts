/**
 * Zero-copy packed rx against real QEMU 10 (TCG) and the guest driver: a channel's queue holds
 * references on the rx buffers its records arrived in (docs/DEVICE.md, "Packed rx"), so what
 * such a design can get wrong is checked here, with the driver loaded with rx_queue_bytes=1 MiB
 * (15 whole rx buffers of 68 KiB) and rx_stall_ms=300:
 *  - a channel left full while another flows: channel 5 gets one 250-byte SDU per rx buffer (one
 *    every 20 SDUs of 4000 bytes on channel 6) and is not read for a while. It holds at most
 *    rx_queue_bytes of buffers (channel_stats rx_queued_bytes, whole buffers), so the guest's rx
 *    buffers (sysfs rx_buffers) stay within ring + pool + that bound instead of one buffer per
 *    queued record; once it has been full for rx_stall_ms its records are dropped (counted) and
 *    channel 6 gets every SDU, in order, verified;
 *  - the records channel 5 did queue are then read one per read() (many reads out of buffers
 *    whose other records channel 6 has long consumed): in order, intact (CRC-32);
 *  - a file closed with records queued, in buffers shared with a channel still holding its own
 *    (channel 6's reader starts late): the buffers are not reused under the other reader (its
 *    SDUs verify), rx_buffers falls back to ring + pool, and the channel can be bound again.
 * Needs the guest artefacts (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { SendResult, type VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { crc32, parseResults, patternSdu } from './helpers/pattern.js';
import { kernelTrouble } from './helpers/kernel-trouble.js';
import { channelStatsRow } from './helpers/guest-channel-stats.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const QUEUE_BYTES = 1 << 20;
/** An rx buffer: 8 + 64 KiB rounded up to pages (docs/DEVICE.md). */
const RX_BUF_BYTES = 17 * 4096;
/** rx ring (64 slots, indirect descriptors) + the driver's pool of spare buffers (32). */
const RING_AND_POOL = 64 + 32;
const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-zc-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Send `plan` (channel, size, seq) in order, waiting for 'drain' when the backlog is full. */
async function sendAll(device: VmpiDevice, plan: Array<[number, number, number]>): Promise<void> {
  const end = Date.now() + 120_000;
  for (let i = 0; i < plan.length; ) {
    const [ch, size, seq] = plan[i]!;
    if (device.send(ch, patternSdu(ch, seq, size)) !== SendResult.Full) {
      i++;
      continue;
    }
    if (Date.now() > end) throw new Error('the backlog did not drain');
    await new Promise<void>((r) => {
      const timer = setTimeout(r, 500);
      device.once('drain', () => {
        clearTimeout(timer);
        r();
      });
    });
  }
}

/** CRC-32 of pattern SDUs seq 0..n-1 on channel `ch`. */
function crcOf(ch: number, size: number, n: number): string {
  let c = 0;
  for (let s = 0; s < n; s++) c = crc32(patternSdu(ch, s, size), c);
  return hex(c);
}

t.test('zero-copy rx: a full channel holds whole buffers within rx_queue_bytes, others flow, close releases', { skip: unavailable ?? false, timeout: 500_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 41 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], append: ['vmpi_noload', 'slub_debug=FZPU'], timeoutMs: 480_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  const ins = await g.exec(`insmod /lib/modules/vmpi.ko rx_queue_bytes=${QUEUE_BYTES} rx_stall_ms=300`);
  t.equal(ins.rc, 0, `driver loaded (${ins.out.trim()})`);
  await hostCondition(() => device.isUp, 'device up');
  t.equal(device.rxPacked, true, 'packed rx');
  const sys = async (name: string): Promise<string> => (await g.exec(`cat /sys/bus/virtio/devices/*/${name}`)).out;
  const counter = async (name: string): Promise<number> => Number(/(\d+)/.exec(await sys(name))?.[1] ?? NaN);
  /** channel_stats row of `ch` as a map by the header's column names. */
  const chanStats = async (ch: number): Promise<Record<string, number> | undefined> => channelStatsRow(await sys('channel_stats'), ch);

  // --- a channel left full while another flows ---
  const N5 = 60;
  const EVERY = 20;
  const N6 = N5 * EVERY;
  g.send(`vmpi-perf -t 4000 -d 20000 recv /dev/vmpi0 5 250 ${N5} >/tmp/r5.log 2>&1 &`);
  g.send(`vmpi-perf -t 60000 recv /dev/vmpi0 6 4000 ${N6} >/tmp/r6.log 2>&1 &`);
  for (const f of ['r5', 'r6']) {
    const end = Date.now() + 60_000;
    while (!/READY/.test((await g.exec(`cat /tmp/${f}.log`)).out)) {
      if (Date.now() > end) throw new Error(`${f} not ready`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const plan: Array<[number, number, number]> = [];
  for (let i = 0; i < N6; i++) {
    plan.push([6, 4000, i]);
    if (i % EVERY === 0) plan.push([5, 250, i / EVERY]);
  }
  await sendAll(device, plan);
  // Channel 6 gets everything while 5 is still not being read (its reader sleeps 20 s).
  const w6 = await g.exec('while ! grep -q RESULT /tmp/r6.log; do sleep 0.2; done; cat /tmp/r6.log', 120_000);
  const r6 = parseResults(w6.out).find((x) => x.kind === 'RESULT');
  t.equal(r6?.status, 'ok', `channel 6: ${N6} SDUs of 4000 bytes in order while channel 5 is full (${w6.out.trim().split('\n').pop()})`);
  t.equal(r6?.crc32, crcOf(6, 4000, N6), 'channel 6: CRC-32 matches');
  const s5 = await chanStats(5);
  t.ok(s5, 'channel 5 in channel_stats');
  const queued = s5?.rx_queued ?? NaN;
  t.ok(s5 && s5.rx_queued_bytes <= QUEUE_BYTES, `channel 5 holds ${s5?.rx_queued_bytes} bytes of buffers, within rx_queue_bytes ${QUEUE_BYTES}`);
  t.equal(s5?.rx_queued_bytes, queued * RX_BUF_BYTES, `each of its ${queued} records is in a buffer of its own, charged whole`);
  t.ok(queued >= 1 && queued < N5, `channel 5 filled by bytes before its ${N5} SDUs (${queued} queued)`);
  t.ok((s5?.rx_drops_stalled ?? 0) > 0, `channel 5 stalled after rx_stall_ms and its later records were dropped (${s5?.rx_drops_stalled})`);
  const bufs = await counter('rx_buffers');
  const bound = RING_AND_POOL + Math.floor(QUEUE_BYTES / RX_BUF_BYTES) + 1;
  t.ok(bufs <= bound, `guest rx buffers ${bufs} <= ring + pool + rx_queue_bytes of buffers (${bound})`);

  // --- the queued records read one per read(), out of buffers channel 6 consumed long ago ---
  const w5 = await g.exec('while ! grep -q RESULT /tmp/r5.log; do sleep 0.2; done; cat /tmp/r5.log', 60_000);
  const r5 = parseResults(w5.out).find((x) => x.kind === 'RESULT');
  t.ok(Number(r5?.sdus) >= queued, `channel 5 reads its ${queued} queued SDUs, one per read (${w5.out.trim().split('\n').pop()})`);
  t.equal(r5?.errors, '0', 'channel 5: every SDU intact');
  t.equal(r5?.badlen, '0', 'channel 5: lengths right');
  // The queued ones are seq 0..queued-1, in order; after the drops resume, a gap is expected.
  if (r5?.gaps === '0') t.equal(r5?.crc32, crcOf(5, 250, Number(r5.sdus)), 'channel 5: CRC-32 of seq 0.. matches');
  else t.ok(Number(r5?.sdus) > queued, 'channel 5: later SDUs after the drop (a gap)');
  await g.exec('wait', 30_000);
  const idle = await counter('rx_buffers');
  t.ok(idle <= RING_AND_POOL, `with the queues empty, rx buffers back to ring + pool (${idle})`);

  // --- close with records queued, sharing buffers with a reader that has not read yet ---
  const M = 200;
  const holder = await g.background('vmpi-perf -d 600000 recv /dev/vmpi0 7 100 1000 >/tmp/r7.log 2>&1');
  g.send(`vmpi-perf -t 60000 -d 6000 recv /dev/vmpi0 8 1000 ${M} >/tmp/r8.log 2>&1 &`);
  for (const f of ['r7', 'r8']) {
    const end = Date.now() + 60_000;
    while (!/READY/.test((await g.exec(`cat /tmp/${f}.log`)).out)) {
      if (Date.now() > end) throw new Error(`${f} not ready`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const mixed: Array<[number, number, number]> = [];
  for (let i = 0; i < M; i++) mixed.push([8, 1000, i], [7, 100, i]);
  await sendAll(device, mixed);
  await hostCondition(() => device.stats.backlogSdus === 0, 'host backlog empty', 60_000);
  const s7 = await chanStats(7);
  t.ok((s7?.rx_queued ?? 0) > 0, `channel 7 has records queued (${s7?.rx_queued})`);
  // The holder dies and its file is released when the guest gets to it: wait for that, bounded.
  // (Both of stop 29's CI failures here were the pid read in part, see Guest.background.)
  const killed = await g.exec(`kill ${holder}`);
  t.equal(killed.rc, 0, `the holder (pid ${holder}) was signalled`);
  let s7after = await chanStats(7);
  for (const end = Date.now() + 30_000; s7after !== undefined && Date.now() < end; s7after = await chanStats(7)) await new Promise((r) => setTimeout(r, 250));
  // Who still holds the device, when it did not unbind (one line, so CI's excerpt shows it).
  const holders = s7after === undefined ? '' : (await g.exec('ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c vmpi0; ps | grep vmpi-perf | grep -v grep')).out.replace(/\s+/g, ' ').slice(-400);
  t.equal(s7after, undefined, `channel 7 unbound once its file is closed${holders && ` (still bound: ${holders})`}`);
  const w8 = await g.exec('while ! grep -q RESULT /tmp/r8.log; do sleep 0.2; done; cat /tmp/r8.log', 120_000);
  const r8 = parseResults(w8.out).find((x) => x.kind === 'RESULT');
  t.equal(r8?.status, 'ok', `channel 8: its ${M} SDUs, read after channel 7 closed on the same buffers, intact and in order`);
  t.equal(r8?.crc32, crcOf(8, 1000, M), 'channel 8: CRC-32 matches');
  t.ok((await counter('rx_buffers')) <= RING_AND_POOL, 'buffers released: rx buffers back to ring + pool');
  g.send('vmpi-perf -t 30000 recv /dev/vmpi0 7 100 10 >/tmp/r7b.log 2>&1 &');
  {
    const end = Date.now() + 60_000;
    while (!/READY/.test((await g.exec('cat /tmp/r7b.log')).out)) {
      if (Date.now() > end) throw new Error(`r7b not ready: ${(await g.exec('cat /tmp/r7b.log; ps')).out.slice(-600)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await sendAll(device, Array.from({ length: 10 }, (_, i): [number, number, number] => [7, 100, i]));
  const w7 = await g.exec('wait; cat /tmp/r7b.log', 60_000);
  const r7 = parseResults(w7.out).find((x) => x.kind === 'RESULT');
  t.equal(r7?.status, 'ok', 'channel 7 bound again gets new SDUs from seq 0, in order');
  t.equal(r7?.crc32, crcOf(7, 100, 10), 'channel 7: CRC-32 matches');
  const k = await g.exec('dmesg');
  t.same(kernelTrouble(k.out), [], 'no oops or warning in the guest kernel');
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
