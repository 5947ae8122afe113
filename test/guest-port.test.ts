/**
 * guest-port.test.ts — the TypeScript stack inside the VM: GuestVmpiPort (src/vmpi/guest-port.ts)
 * over the guest driver's /dev/vmpi0, in Node in a real QEMU 10 guest (the Node image of
 * scripts/guest/build-node.sh, launch-guest.sh --node), against a VmpiHost in this process.
 *
 * The guest sends a burst of max-size SDUs on a channel it never bound (file opened on demand)
 * while the host device is paused, so the tx ring fills (EAGAIN), the port's backlog fills
 * (Queued, then Full) and the guest waits for 'drain' until the host resumes; the host checks every
 * SDU. The guest binds two channels and echoes every SDU back; the host sends SDUs of 0, 1, 4000
 * and 65536 bytes on both and checks the echoes byte for byte and in order. The guest also checks its typed errors, and at the
 * end unbinds the driver from the device so the port reports 'down'.
 * Needs the guest artefacts; in CI their absence is a failure.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { GuestPortError, GuestVmpiPort } from '../src/vmpi/guest-port.js';
import { VMPI_IOC_BIND, VMPI_IOC_GET_INFO, VMPI_IOC_NEXT_LEN, VMPI_IOC_SET_BATCH, VMPI_IOC_SHUTDOWN, parseVmpiInfo } from '../src/vmpi/guest-uapi.js';
import { SendResult } from '../src/vmpi/port.js';
import { GUEST_DIR, Guest, guestExit, guestUnavailable, nodeScript } from './helpers/guest.js';
import { patternSdu } from './helpers/pattern.js';

function nodeGuestUnavailable(): string | null {
  const base = guestUnavailable();
  if (base) return base;
  if (!existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz'))) {
    return 'guest artefact initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh';
  }
  return null;
}

const unavailable = nodeGuestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const VMPI_ID = 23;
const ECHO_CHANNELS = [3, 4];
const SIZES = [0, 1, 4000, 65536];
const ROUNDS = 3;
const ECHO_COUNT = ECHO_CHANNELS.length * SIZES.length * ROUNDS;
const BURST_CHANNEL = 7;
const BURST = 200; // > tx ring (64) + backlog (4 MiB = 64 SDUs): reaches Full
const BURST_SIZE = 65536;
/** Batch reads: SDUs the host queues on this channel before the guest's one read(2). */
const BATCH_CHANNEL = 9;
const BATCH_SIZES = [0, 1, 2, 3, 5, 1000, 4000, 0, 7];
/**
 * bindBatch: the host sends these (channel, size) SDUs, interleaved, while the guest's event loop
 * is blocked; channels 11 and 12 are bound with bindBatch, 13 with bind(). Each SDU's seq is its
 * index here (pattern(): in its first 4 bytes, so every size is ≥ 8).
 */
const BB_SENDS: [number, number][] = [[11, 8], [11, 100], [11, 65536], [12, 9], [12, 4000], [11, 8], [11, 1000], [13, 8], [13, 64], [12, 8]];
const BB_BATCH = [11, 12];
const BB_ONE = 13;

/** Runs in the guest: `node /tmp/app.mjs` (nodeScript). Reports on the console as `GUEST-<TAG> <json>`. */
const GUEST_JS = `
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { basename } from 'node:path';
import { GuestVmpiPort } from '/opt/vmpi/dist/src/vmpi/guest-port.js';

const out = (tag, v) => console.log('GUEST-' + tag + ' ' + JSON.stringify(v));
const errCode = (fn) => { try { fn(); return 'no error'; } catch (e) { return e.name + ':' + e.code; } };
const timeout = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error('timeout: ' + what)), ms).unref());
function pattern(ch, seq, size) {
  const b = new Uint8Array(size);
  const base = (7 * seq + 13 * ch) & 0xff;
  for (let i = 0; i < size; i++) b[i] = (i + base) & 0xff;
  if (size >= 8) { const v = new DataView(b.buffer); v.setUint32(0, seq, true); v.setUint32(4, ch, true); }
  return b;
}

const checks = {};
checks.missing = errCode(() => new GuestVmpiPort(9));
try { new GuestVmpiPort('/dev/vmpi9'); } catch (e) { checks.missingMsg = e.message; }
const port = new GuestVmpiPort('/dev/vmpi0');
out('INFO', { vmpiId: port.vmpiId, maxSdu: port.maxSdu, index: port.index, isUp: port.isUp });

// Echo: keep SDUs the port refused (Full) and send them again on 'drain', in order.
const held = [];
const results = [0, 0, 0];
let echoed = 0;
let echoDone;
const echoFinished = new Promise((r) => (echoDone = r));
const flushHeld = () => {
  while (held.length > 0) {
    const [c, sdu] = held[0];
    const r = port.send(c, sdu);
    results[r]++;
    if (r === 2) return;
    held.shift();
    if (++echoed === ${ECHO_COUNT}) echoDone();
  }
};
port.on('drain', flushHeld);
for (const ch of ${JSON.stringify(ECHO_CHANNELS)}) {
  port.bind(ch, (sdu, c) => {
    if (held.length > 0) { held.push([c, sdu.slice()]); return; }
    const r = port.send(c, sdu);
    results[r]++;
    if (r === 2) held.push([c, sdu.slice()]);
    else if (++echoed === ${ECHO_COUNT}) echoDone();
  });
}
const other = new GuestVmpiPort(0);
checks.busy = errCode(() => other.bind(${ECHO_CHANNELS[0]}, () => {}));
other.close();
checks.closed = errCode(() => other.send(1, new Uint8Array(1)));
checks.oversize = errCode(() => port.send(1, new Uint8Array(port.maxSdu + 1)));
checks.badChannel = errCode(() => port.send(-1, new Uint8Array(1)));
checks.isBound = [port.isBound(${ECHO_CHANNELS[0]}), port.isBound(${BURST_CHANNEL})];
console.log('GUEST-BOUND');

// Burst on a channel never bound here: the port opens its file on demand.
const burst = [0, 0, 0];
let drains = 0;
for (let seq = 0; seq < ${BURST}; ) {
  const r = port.send(${BURST_CHANNEL}, pattern(${BURST_CHANNEL}, seq, ${BURST_SIZE}));
  burst[r]++;
  if (r === 2) {
    if (drains === 0) console.log('GUEST-BURST-FULL ' + JSON.stringify(port.stats));
    await Promise.race([once(port, 'drain'), timeout(60000, 'drain')]);
    drains++;
    continue;
  }
  seq++;
}
await Promise.race([echoFinished, timeout(60000, 'echoes')]);
while (port.stats.backlogSdus > 0) await Promise.race([once(port, 'drain'), timeout(30000, 'final drain')]);
out('STATS', { echoed, results, burst, drains, stats: port.stats, info: port.info() });
out('CHECKS', checks);

// bindBatch: block the event loop until the driver has queued every SDU the host sends (its
// rx_frames counter), so each channel file's one read(2) takes all of that channel's records.
{
  const batches = {};
  const singles = [];
  let badView = 0;
  for (const c of ${JSON.stringify(BB_BATCH)}) {
    batches[c] = [];
    port.bindBatch(c, (b, ch) => {
      const seqs = [];
      let sum = 0;
      for (let i = 0; i < b.count; i++) {
        const s = b.sdu(i);
        if (s.buffer !== b.buffer.buffer || s.byteOffset !== b.buffer.byteOffset + b.offset(i) || s.byteLength !== b.length(i)) badView++;
        const seq = new DataView(s.buffer, s.byteOffset, s.byteLength).getUint32(0, true);
        const want = pattern(ch, seq, s.byteLength);
        seqs.push(s.every((x, k) => x === want[k]) ? seq : -1);
        sum += b.length(i);
      }
      if (sum !== b.bytes) badView++;
      batches[ch].push(seqs);
    });
  }
  port.bind(${BB_ONE}, (s, ch) => singles.push(new DataView(s.buffer, s.byteOffset, s.byteLength).getUint32(0, true)));
  const isBound = [port.isBound(11), port.isBound(13)];
  const base = port.info().rxFrames;
  console.log('GUEST-BB-BOUND');
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  let queued = 0;
  for (let i = 0; i < 1500 && queued < ${BB_SENDS.length}; i++) {
    queued = port.info().rxFrames - base;
    if (queued < ${BB_SENDS.length}) Atomics.wait(sleeper, 0, 0, 20);
  }
  const total = () => Object.values(batches).reduce((a, l) => a + l.flat().length, 0) + singles.length;
  for (let i = 0; i < 400 && total() < ${BB_SENDS.length}; i++) await new Promise((r) => setTimeout(r, 25));
  out('BB', { queued, batches, singles, badView, isBound });
  for (const c of ${JSON.stringify([...BB_BATCH, BB_ONE])}) port.unbind(c);
}

// Batch reads (VMPI_IOC_SET_BATCH), on a raw file: the host queues SDUs, one read(2) takes them all.
{
  const { native } = await import('/opt/vmpi/dist/src/sys/native.js');
  const gf = await import('/opt/vmpi/dist/src/vmpi/guest-uapi.js');
  const { openSync, readSync, constants } = await import('node:fs');
  const fd = openSync('/dev/vmpi0', constants.O_RDWR | constants.O_NONBLOCK);
  native.ioctl(fd, gf.VMPI_IOC_BIND, gf.u32Arg(${BATCH_CHANNEL}));
  const batchOn = gf.setBatchMode(fd);
  console.log('GUEST-BATCH-BOUND');
  const info = new Uint8Array(gf.VMPI_INFO_SIZE);
  let queued = 0;
  for (let i = 0; i < 400 && queued < ${BATCH_SIZES.length}; i++) {
    native.ioctl(fd, gf.VMPI_IOC_GET_INFO, info);
    queued = new DataView(info.buffer).getUint32(20, true);
    if (queued < ${BATCH_SIZES.length}) await new Promise((r) => setTimeout(r, 50));
  }
  const small = (() => { try { readSync(fd, new Uint8Array(2), 0, 2, null); return 'read'; } catch (e) { return e.code; } })();
  const buf = new Uint8Array(256 * 1024);
  const n = readSync(fd, buf, 0, buf.length, null);
  const v = new DataView(buf.buffer);
  const lens = [], aligned = [], intact = [];
  for (let off = 0; off < n; ) {
    const len = v.getUint32(off, true);
    aligned.push(off % 4 === 0);
    const sdu = buf.subarray(off + 4, off + 4 + len);
    intact.push(sdu.every((b, k) => b === ((k + lens.length * 31) & 0xff)));
    lens.push(len);
    off += 4 + len + ((4 - ((4 + len) % 4)) % 4);
  }
  const after = (() => { try { readSync(fd, buf, 0, buf.length, null); return 'read'; } catch (e) { return e.code; } })();
  out('BATCH', { batchOn, queued, small, bytes: n, lens, aligned: aligned.every(Boolean), intact: intact.every(Boolean), after });
}

// Device removal: unbind the driver from the virtio device behind /dev/vmpi0.
const devs = '/sys/bus/virtio/devices';
const dev = readdirSync(devs).find((d) => { try { return readFileSync(devs + '/' + d + '/devname', 'utf8').trim() === 'vmpi0'; } catch { return false; } });
const drv = basename(readlinkSync(devs + '/' + dev + '/driver'));
const down = once(port, 'down');
writeFileSync('/sys/bus/virtio/drivers/' + drv + '/unbind', dev);
const [reason] = await Promise.race([down, timeout(20000, 'down')]);
out('DOWN', { reason, isUp: port.isUp, sendAfter: port.send(3, new Uint8Array(1)), bindAfter: errCode(() => port.bind(5, () => {})) });
port.close();
port.close();
console.log('GUEST-END');
`;

const GUEST_SCRIPT = nodeScript(GUEST_JS);

function json<T>(output: string, tag: string): T | undefined {
  const m = new RegExp(`GUEST-${tag} (\\{.*\\})`).exec(output);
  return m ? (JSON.parse(m[1]!) as T) : undefined;
}

async function waitUntil(cond: () => boolean, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('without a VMPI device (host side): ioctl numbers, info layout, typed errors, no fd leaks', async (t) => {
  // From guest-driver/vmpi_uapi.h (gcc: _IOW(0xB7, 1, __u32), _IOR(0xB7, 2, struct vmpi_info) = 104 bytes).
  t.equal(VMPI_IOC_BIND, 0x4004b701);
  t.equal(VMPI_IOC_GET_INFO, 0x8068b702);
  t.equal(VMPI_IOC_NEXT_LEN, 0x8004b703, '_IOR(0xB7, 3, __u32)');
  t.equal(VMPI_IOC_SHUTDOWN, 0xb704, '_IO(0xB7, 4)');
  t.equal(VMPI_IOC_SET_BATCH, 0x4004b705, '_IOW(0xB7, 5, __u32)');
  const b = new Uint8Array(104);
  const v = new DataView(b.buffer);
  [7, 65536, 2, 3].forEach((x, i) => v.setUint32(i * 4, x, true));
  for (let i = 0; i < 9; i++) v.setBigUint64(32 + i * 8, BigInt(100 + i), true);
  v.setUint32(24, 256, true); // rx_queue_len
  const parsed = {
    vmpiId: 7,
    maxSdu: 65536,
    index: 2,
    flags: 3,
    removed: true,
    rxQueueLen: 256,
    rxFrames: 100,
    rxBytes: 101,
    txFrames: 102,
    txBytes: 103,
    rxDropsUnbound: 104,
    rxDropsFull: 105,
    rxMalformed: 106,
    rxDropsNomem: 107,
    rxDropsStalled: 108,
  };
  t.same(parseVmpiInfo(b), parsed, 'every field of struct vmpi_info');
  t.same(parseVmpiInfo(b.subarray(0, 96)), { ...parsed, rxDropsStalled: 0 }, 'older 96-byte layout: no rx_drops_stalled');

  const fds = readdirSync('/proc/self/fd').length;
  const missing = t.throws(() => new GuestVmpiPort('/nonexistent/vmpi0')) as GuestPortError;
  t.ok(missing instanceof GuestPortError);
  t.equal(missing.code, 'device_missing');
  t.equal(missing.message, 'cannot open /nonexistent/vmpi0: no such device. Is the VMPI guest driver loaded (insmod vmpi.ko) and does the VM have a VMPI device?', 'says to load the driver');
  const notVmpi = t.throws(() => new GuestVmpiPort('/dev/null')) as GuestPortError;
  t.equal(notVmpi.code, 'io');
  t.equal(notVmpi.message, '/dev/null does not answer VMPI_IOC_GET_INFO (ENOTTY): is it a VMPI device of a matching driver version?', 'a char device that is not a VMPI device');
  t.equal(readdirSync('/proc/self/fd').length, fds, 'failed constructions leaked no fd');
});

t.test('GuestVmpiPort in Node in the guest: echo, on-demand channel, backpressure, errors, down', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-guest-port-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const sock = join(dir, 'vm.sock');
  const device = host.addDevice({ socketPath: sock, vmpiId: VMPI_ID });
  const got = new Map<number, Uint8Array[]>();
  for (const ch of [...ECHO_CHANNELS, BURST_CHANNEL]) {
    got.set(ch, []);
    device.bind(ch, (sdu, c) => got.get(c)!.push(Uint8Array.prototype.slice.call(sdu)));
  }

  device.pause(); // the guest's tx ring fills up during the burst
  const g = new Guest({ sockets: [sock], node: true, script: GUEST_SCRIPT, memMb: 768, timeoutMs: 360_000, name: 'vmpi-guest-port-test' });
  t.teardown(() => g.kill());

  const info = await g.waitJson('GUEST-INFO', 180_000);
  t.same(info, { vmpiId: VMPI_ID, maxSdu: 65536, index: 0, isUp: true }, 'the guest port reads vmpiId and maxSdu from the driver');
  await g.waitFor(/GUEST-BOUND/, 60_000);
  t.ok(device.isUp, 'the host device is up');
  const full = await g.waitJson<{ txRingFull: number; backlogSdus: number; backlogBytes: number; drops: Record<string, number> }>('GUEST-BURST-FULL', 60_000);
  t.equal(full.txRingFull, 1, "host paused: one write found the tx ring full; after it every SDU queued behind the backlog's head");
  t.equal(full.backlogSdus, 64, 'the backlog took 4 MiB / 64 KiB = 64 SDUs before Full');
  t.equal(full.backlogBytes, 4 * 1024 * 1024);
  t.same(full.drops, { unbound_channel: 0, backlog_full: 1, oversize: 1, device_gone: 0, write_error: 0 }, 'one refusal so far (and the oversize check)');
  t.equal(got.get(BURST_CHANNEL)!.length, 0, 'nothing reached the paused host');
  device.resume();

  // Guest → host burst on the on-demand channel: backlog drained on writability, in order.
  await waitUntil(() => got.get(BURST_CHANNEL)!.length >= BURST, 'the burst', 120_000);
  const burst = got.get(BURST_CHANNEL)!;
  t.equal(burst.length, BURST, `${BURST} SDUs of ${BURST_SIZE} bytes from the guest on channel ${BURST_CHANNEL}`);
  const badBurst = burst.filter((sdu, i) => Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(BURST_CHANNEL, i, BURST_SIZE))) !== 0).length;
  t.equal(badBurst, 0, 'each matches the pattern, in order');

  // Host → guest on both channels; the guest echoes every SDU back.
  const sent = new Map<number, Uint8Array[]>(ECHO_CHANNELS.map((ch) => [ch, []]));
  let seq = 0;
  let refused = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const size of SIZES) {
      for (const ch of ECHO_CHANNELS) {
        const sdu = patternSdu(ch, seq++, size);
        sent.get(ch)!.push(sdu);
        if (device.send(ch, sdu) === SendResult.Full) refused++;
      }
    }
  }
  t.equal(refused, 0, `host sent ${ECHO_COUNT} SDUs`);
  const perChannel = ECHO_COUNT / ECHO_CHANNELS.length;
  await waitUntil(() => ECHO_CHANNELS.every((ch) => got.get(ch)!.length >= perChannel), 'the echoes', 120_000);
  for (const ch of ECHO_CHANNELS) {
    const echoes = got.get(ch)!;
    const expect = sent.get(ch)!;
    t.equal(echoes.length, expect.length, `${expect.length} echoes on channel ${ch}`);
    const bad = expect.filter((sdu, i) => !echoes[i] || Buffer.compare(Buffer.from(sdu), Buffer.from(echoes[i]!)) !== 0).length;
    t.equal(bad, 0, `every echo on channel ${ch} equals what was sent, byte for byte and in order (sizes ${echoes.map((e) => e.byteLength).join(',')})`);
  }

  // bindBatch: the guest blocks until all are queued, then reads each channel's file once.
  await g.waitFor(/GUEST-BB-BOUND/, 60_000);
  for (const [seq, [ch, size]] of BB_SENDS.entries()) t.not(device.send(ch, patternSdu(ch, seq, size)), SendResult.Full);
  const bb = await g.waitJson<Record<string, unknown>>('GUEST-BB', 90_000);
  const seqsOf = (ch: number): number[] => [...BB_SENDS.entries()].filter(([, [c]]) => c === ch).map(([seq]) => seq);
  t.same(
    bb,
    {
      queued: BB_SENDS.length,
      batches: Object.fromEntries(BB_BATCH.map((ch) => [String(ch), [seqsOf(ch)]])),
      singles: seqsOf(BB_ONE),
      badView: 0,
      isBound: [true, true],
    },
    "bindBatch: each channel's records of one read come as one batch, intact and in order (interleaved sends split by channel); bind() on another channel still gets one SDU a call",
  );

  await g.waitFor(/GUEST-BATCH-BOUND/, 60_000);
  for (const [i, size] of BATCH_SIZES.entries()) t.not(device.send(BATCH_CHANNEL, Uint8Array.from({ length: size }, (_, k) => (k + i * 31) & 0xff)), SendResult.Full);
  const batch = await g.waitJson<Record<string, unknown>>('GUEST-BATCH', 60_000);
  t.same(
    batch,
    { batchOn: true, queued: BATCH_SIZES.length, small: 'EMSGSIZE', bytes: BATCH_SIZES.reduce((a, n) => a + 4 + n + ((4 - ((4 + n) % 4)) % 4), 0), lens: BATCH_SIZES, aligned: true, intact: true, after: 'EAGAIN' },
    'batch mode: one read(2) returned every queued SDU as le32 length + SDU, 4-aligned, intact; a buffer too small for the first: EMSGSIZE',
  );

  const res = await guestExit(g, 120_000);
  const out = res.output;
  t.equal(res.exitCode, 0, `the guest script succeeded${res.exitCode === 0 ? '' : ':\n' + out.slice(-4000)}`);
  const stats = json<{
    echoed: number;
    results: number[];
    burst: number[];
    drains: number;
    stats: { drops: Record<string, number>; toHost: { sdus: number }; fromHost: { sdus: number; bytes: number }; txRingFull: number };
    info: { vmpiId: number; rxDropsUnbound: number; rxMalformed: number };
  }>(out, 'STATS');
  t.ok(stats, 'guest stats reported');
  if (stats) {
    t.equal(stats.echoed, ECHO_COUNT, 'the guest echoed every SDU');
    t.equal(stats.stats.fromHost.sdus, ECHO_COUNT, 'the port delivered every SDU to a handler');
    t.equal(stats.stats.fromHost.bytes, ROUNDS * ECHO_CHANNELS.length * SIZES.reduce((a, b) => a + b, 0), 'and every byte');
    t.equal(stats.stats.toHost.sdus, ECHO_COUNT + BURST, 'the port wrote every echo and burst SDU');
    t.equal(stats.burst[0]! + stats.burst[1]!, BURST, 'burst: every SDU Sent or Queued once');
    t.ok(stats.burst[1]! >= 64, `burst: at least a full backlog Queued (${stats.burst[1]})`);
    t.ok(stats.burst[2]! > 0, 'burst: some Full');
    t.equal(stats.drains, stats.burst[2], "burst: every Full answered by one 'drain'");
    t.ok(stats.stats.txRingFull > 0, 'writes found the tx ring full');
    t.same(
      stats.stats.drops,
      { unbound_channel: 0, backlog_full: stats.burst[2]! + stats.results[2]!, oversize: 1, device_gone: 0, write_error: 0 },
      'drops: only the refusals the script saw (burst and echo Full) and its one oversize check; no write errors, nothing on the unbound channel',
    );
    t.equal(stats.info.vmpiId, VMPI_ID, 'info() re-reads the driver');
    t.equal(stats.info.rxMalformed, 0);
    t.comment(`guest port: echo Sent/Queued/Full ${stats.results.join('/')}, burst ${stats.burst.join('/')}, drains ${stats.drains}, tx ring full ${stats.stats.txRingFull} times`);
  }
  const checks = json<Record<string, unknown>>(out, 'CHECKS');
  t.same(checks, {
    missing: 'GuestPortError:device_missing',
    missingMsg: 'cannot open /dev/vmpi9: no such device. Is the VMPI guest driver loaded (insmod vmpi.ko) and does the VM have a VMPI device?',
    busy: 'GuestPortError:channel_busy',
    closed: 'GuestPortError:closed',
    oversize: 'GuestPortError:oversize',
    badChannel: 'GuestPortError:bad_channel',
    isBound: [true, false],
  }, 'typed errors in the guest');
  const down = json<Record<string, unknown>>(out, 'DOWN');
  t.same(down, { reason: 'the device was removed', isUp: false, sendAfter: SendResult.Full, bindAfter: 'GuestPortError:device_gone' }, "driver unbound: 'down', then refusals");
  t.match(out, /GUEST-END/, 'the guest closed the port and finished');
  t.equal(device.stats.drops.malformed, 0, 'no malformed frames at the host');
  t.equal(device.stats.drops.unbound_channel, 0, 'no frames for unbound channels at the host');
});
