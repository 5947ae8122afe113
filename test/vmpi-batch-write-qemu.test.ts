/**
 * Batched writes of the guest driver (VMPI_IOC_SET_BATCH with VMPI_BATCH_WRITE, docs/DEVICE.md)
 * against real QEMU 10 (TCG): guest-driver/tools/vmpi-batch-check.c writes records of pattern
 * SDUs, bad ones among them, and the host checks that exactly the SDUs the driver said it took
 * arrive, each as a frame of its own, in order, intact; then with the host not taking tx frames
 * (VmpiDevice.pause), non-blocking batches stop at a whole record where the ring fills and a
 * blocking one waits for the host. Needs the guest artefacts (scripts/guest/build.sh).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import type { VmpiDevice } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable, hostCondition } from './helpers/guest.js';
import { parseResults, patternSdu } from './helpers/pattern.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-batch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every SDU of `ch` the host got, copied. */
function collect(device: VmpiDevice, ch: number): Uint8Array[] {
  const got: Uint8Array[] = [];
  device.bind(ch, (sdu) => got.push(Uint8Array.prototype.slice.call(sdu)));
  return got;
}

/** How many of `got` differ from pattern SDUs seq 0.. of `sizes`, and the first mismatch. */
function mismatches(got: readonly Uint8Array[], ch: number, sizes: readonly number[]): { bad: number; first: string } {
  let bad = 0;
  let first = '';
  sizes.forEach((size, seq) => {
    const want = patternSdu(ch, seq, size);
    const sdu = got[seq];
    if (sdu === undefined || Buffer.compare(Buffer.from(sdu), Buffer.from(want)) !== 0) {
      bad++;
      if (!first) first = `seq ${seq}: got ${sdu?.byteLength ?? 'nothing'} bytes, want ${size}`;
    }
  });
  return { bad, first };
}

t.test('batched write: many SDUs per write(), each a frame; bad records end the batch; O_NONBLOCK stops at a whole record', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const dir = tmp(t);
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 51 });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')] });
  t.teardown(() => g.kill());
  await g.agentReady();
  await hostCondition(() => device.isUp, 'device up');

  // 1. Records of every kind of length in one write, then bad records after good ones.
  const ch = 6;
  const got = collect(device, ch);
  const w = await g.exec(`vmpi-batch-check write /dev/vmpi0 ${ch}`, 60_000);
  const fails = w.out.match(/^FAIL .*$/gm) ?? [];
  t.same(fails, [], 'every check in the guest passed (whole buffer taken; prefix before a record over max SDU, cut short, or stray bytes, then EMSGSIZE/EINVAL; 0 bytes; one SDU per write without the flag; unknown bit EINVAL)');
  t.equal(w.rc, 0, `vmpi-batch-check write exits 0: ${w.out.trim().slice(-400)}`);
  const sizes = [0, 1, 2, 3, 5, 100, 1000, 4000, 4096, device.maxSdu, 7, 100, 100, 100, 8, 9];
  await hostCondition(() => got.length >= sizes.length, `${sizes.length} SDUs on channel ${ch}`);
  await new Promise((r) => setTimeout(r, 300)); // anything the driver should not have sent would be here by now
  t.equal(got.length, sizes.length, 'exactly the SDUs of the records the driver took, none past a bad record');
  const m = mismatches(got, ch, sizes);
  t.equal(m.bad, 0, `each record is one frame, in order, intact${m.first ? ` (${m.first})` : ''}`);
  t.equal(device.stats.drops.malformed, 0, 'no malformed frames');

  // 2. The host takes no tx frames: non-blocking batches fill the ring and stop at a record.
  const ch2 = 7;
  const size = 200;
  const got2 = collect(device, ch2);
  device.pause();
  const from = g.mark;
  await g.background(`vmpi-batch-check fill /dev/vmpi0 ${ch2} ${size}`);
  const filled = await g.waitFor(/FILLED sdus=(\d+) partial=(\d+)\r?\n/, 60_000, from);
  const n = Number(filled[1]);
  t.ok(n > 0, `non-blocking batches were taken until the ring filled (${n} SDUs)`);
  if (device.txPacked) {
    // Packed tx (VMPI_F_TX_PACKED): a write of 48 small records is one tx chain, so all of it or
    // EAGAIN; a prefix needs a write of several chains (test/vmpi-tx-packed-qemu.test.ts).
    t.equal(n % 48, 0, `packed tx: each non-blocking write of 48 records went whole, as one chain (${filled[2]} partial)`);
  } else t.ok(Number(filled[2]) >= 1, 'a write that found the ring filling returned a prefix of whole records');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(got2.length, 0, 'nothing reached the paused host');
  device.resume();
  const r = await g.exec('wait', 60_000);
  const out = g.output.slice(from);
  const res = parseResults(out).find((x) => x.kind === 'RESULT' && x.mode === 'fill');
  t.same(out.match(/^FAIL .*$/gm) ?? [], [], 'every write returned whole records; the blocking write waited and took all 100');
  t.equal(res?.status, 'ok', `guest verdict (${r.out.trim()}): ${res ? JSON.stringify(res) : out.slice(-1500)}`);
  await hostCondition(() => got2.length >= n + 100, `${n + 100} SDUs on channel ${ch2}`);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(got2.length, n + 100, 'the host got exactly the SDUs the writes said they took');
  const m2 = mismatches(got2, ch2, Array.from({ length: n + 100 }, () => size));
  t.equal(m2.bad, 0, `in order and intact${m2.first ? ` (${m2.first})` : ''}`);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
