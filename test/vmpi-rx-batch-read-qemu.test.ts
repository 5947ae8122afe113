/**
 * `udp-goodput -B BYTES vmpi-recv` (batch-read mode, what bench:fig4a's to-guest vmpi-channel
 * series runs) against real QEMU 10 (TCG) and the guest driver: the host sends a burst of SDUs of
 * sizes that exercise the records' padding (0, 1, 2, 3, 5, 7 bytes, 250 .. 65536) on one channel,
 * and the receiver must count exactly what the one-SDU-per-read receiver counts: every SDU after
 * the first (which opens the window), their bytes, the smallest and largest size. reads= shows
 * that reads did return many records. The window is closed by the idle timeout, so nothing sent
 * is left out of it. Then the same burst with the old mode (no -B) gives the same counts.
 * Needs the guest artefacts (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { SendResult, type VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { parseResults } from './helpers/pattern.js';
import { kernelTrouble } from './helpers/kernel-trouble.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

/** Sizes in sending order, cycled: unaligned ones next to each other, so padding matters. */
const SIZES = [250, 0, 1, 2, 3, 5, 7, 1000, 4000, 3, 65536, 1, 100];
const COUNT = 1300;
const CHANNEL = 5;
/** Idle timeout of the receiver: ends the window after the burst (generous for a loaded host). */
const IDLE_MS = 8000;

/** Send SDU i of SIZES[i % SIZES.length] bytes, i < COUNT, waiting for 'drain' when the host is full. */
async function burst(device: VmpiDevice): Promise<void> {
  const end = Date.now() + 120_000;
  for (let i = 0; i < COUNT; ) {
    const size = SIZES[i % SIZES.length]!;
    const sdu = new Uint8Array(size).fill(i & 255);
    if (device.send(CHANNEL, sdu) === SendResult.Full) {
      if (Date.now() > end) throw new Error('the backlog did not drain');
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 200);
        device.once('drain', () => {
          clearTimeout(timer);
          r();
        });
      });
      continue;
    }
    i++;
  }
}

/** What the receiver must report: every SDU but the first. */
function expected(): { datagrams: number; bytes: number; min: number; max: number } {
  const sizes = Array.from({ length: COUNT }, (_, i) => SIZES[i % SIZES.length]!).slice(1);
  return { datagrams: sizes.length, bytes: sizes.reduce((a, b) => a + b, 0), min: Math.min(...sizes), max: Math.max(...sizes) };
}

async function measure(t: Test, g: Guest, device: VmpiDevice, opts: string, what: string): Promise<Record<string, string>> {
  const job = g.start(`udp-goodput -w 60000 -t ${IDLE_MS} ${opts}vmpi-recv /dev/vmpi0 ${CHANNEL} 600000`, 300_000);
  await g.waitFor(new RegExp(`READY mode=vmpi-recv dev=/dev/vmpi0 channel=${CHANNEL}\\b`), 30_000, job.from);
  await burst(device);
  const done = await job.done;
  t.equal(done.rc, 0, `${what}: the receiver exited 0`);
  const r = parseResults(done.out).find((x) => x.kind === 'RESULT' && x.mode === 'vmpi-recv');
  t.ok(r, `${what}: RESULT line`);
  const want = expected();
  t.equal(r?.status, 'ok', `${what}: status ok`);
  t.equal(Number(r?.datagrams), want.datagrams, `${what}: every SDU after the first counted`);
  t.equal(Number(r?.bytes), want.bytes, `${what}: their bytes`);
  t.equal(Number(r?.size_min), want.min, `${what}: smallest size`);
  t.equal(Number(r?.size_max), want.max, `${what}: largest size`);
  t.equal(device.stats.backlogSdus, 0, `${what}: the host has nothing left to send`);
  return r ?? {};
}

t.test('batch-read receiver counts every record, as the one-SDU-per-read receiver does', { skip: unavailable ?? false, timeout: 600_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-batch-read-qemu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 44 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], timeoutMs: 580_000 });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');

  const b = await measure(t, g, device, '-B 262144 ', 'batch reads');
  const reads = Number(b.reads);
  t.ok(reads >= 1 && reads < Number(b.datagrams), `batch reads: ${b.datagrams} SDUs in ${reads} reads`);

  const one = await measure(t, g, device, '', 'one SDU per read');
  t.notOk('reads' in one, 'one SDU per read: no reads=');

  // A buffer smaller than 4 + max SDU is raised to it: the 65536-byte SDUs still fit.
  const small = await measure(t, g, device, '-B 64 ', 'batch reads, -B 64');
  t.ok(Number(small.reads) >= 1, `-B 64: ${small.datagrams} SDUs in ${small.reads} reads`);

  const k = await g.exec('dmesg');
  const trouble = kernelTrouble(k.out);
  t.same(trouble, [], 'no oops or warning in the guest kernel');
  if (trouble.length) t.comment(k.out);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
