/**
 * vmpi-qemu-bigmem.test.ts — a VM with 16 GiB of RAM under real QEMU 10 (TCG) runs its VMPI device
 * end to end. QEMU splits such RAM into a region below the PCI hole and one of 14 GiB above 4 GiB,
 * both on one sealed memfd, so the server maps a region larger than 4 GiB at a file offset of
 * 2 GiB; the guest kernel's buffers can land anywhere in it. The memory is not touched (beyond
 * what the guest kernel uses), so it costs the host little. Needs the guest artefacts
 * (scripts/guest/build.sh); in CI their absence is a failure.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { SendResult } from '../src/vmpi/device.js';
import { Guest, guestExit, guestUnavailable } from './helpers/guest.js';
import { crc32, parseResults, patternSdu } from './helpers/pattern.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest tests cannot run in CI: ${unavailable}`);

const GiB = 2 ** 30;
const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');

async function waitFor(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function rssMiB(): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

t.test('a 16 GiB VM (memfd, TCG): regions over 4 GiB are mapped and the device works both ways', { skip: unavailable ?? false, timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-bigmem-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 16 });
  const got: Uint8Array[] = [];
  device.bind(1, (sdu) => got.push(Uint8Array.prototype.slice.call(sdu)));
  const rssBefore = rssMiB();
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], memMb: 16 * 1024, name: 'vmpi-bigmem', timeoutMs: 200_000 });
  t.teardown(() => g.kill());
  await g.agentReady(1, 150_000);
  await waitFor(() => device.isUp, 'device up');

  const conn = [...host.server(16)!.connections][0]!;
  const regions = conn.state.memory;
  const biggest = Math.max(...regions.map((r) => r.size));
  const top = Math.max(...regions.map((r) => r.guestPhysAddr + r.size));
  t.ok(biggest > 4 * GiB, `a region of ${(biggest / GiB).toFixed(1)} GiB is mapped (regions: ${regions.map((r) => `0x${r.guestPhysAddr.toString(16)}+${(r.size / GiB).toFixed(2)}G@${(r.mmapOffset / GiB).toFixed(2)}G`).join(', ')})`);
  t.ok(top >= 16 * GiB, `guest memory reaches 0x${top.toString(16)}`);
  const mem = await g.exec("grep MemTotal /proc/meminfo");
  t.match(mem.out, /MemTotal:\s+1[56]\d{6} kB/, `the guest sees ~16 GiB (${mem.out.trim()})`);

  // Guest → host: the guest's buffers come from wherever its allocator puts them.
  const count = 64;
  const r = await g.exec(`vmpi-perf send /dev/vmpi0 1 4000 ${count}`);
  t.equal(r.rc, 0, `guest send: ${r.out.trim()}`);
  await waitFor(() => got.length >= count, `${count} SDUs from the guest`);
  let crc = 0;
  let bad = 0;
  got.forEach((sdu, i) => {
    crc = crc32(sdu, crc);
    if (Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(1, i, 4000))) !== 0) bad++;
  });
  t.equal(bad, 0, 'every SDU from the guest matches the pattern');
  t.equal(parseResults(r.out).find((x) => x.kind === 'RESULT')?.crc32, hex(crc), 'guest and host CRC-32 agree');

  // Host → guest.
  const from = g.mark;
  await g.background(`vmpi-perf -t 20000 recv /dev/vmpi0 1 4000 ${count}`);
  await g.waitFor(/READY mode=recv dev=\/dev\/vmpi0 channel=1\b/, 30_000, from);
  let sent = 0;
  let full = 0;
  for (let i = 0; i < count; i++) {
    const sdu = patternSdu(1, i, 4000);
    sent = crc32(sdu, sent);
    if (device.send(1, sdu) === SendResult.Full) full++;
  }
  t.equal(full, 0, 'the device took every SDU');
  await g.exec('wait', 60_000);
  const res = parseResults(g.output.slice(from)).find((x) => x.kind === 'RESULT' && x.mode === 'recv');
  t.equal(res?.status, 'ok', 'the guest received every SDU');
  t.equal(res?.errors, '0', 'no content errors');
  t.equal(res?.crc32, hex(sent), 'CRC-32 matches what the host sent');
  const rssAfter = rssMiB();
  t.ok(rssAfter - rssBefore < 512, `server RSS grew by ${(rssAfter - rssBefore).toFixed(0)} MiB for a 16 GiB guest (mapped, untouched)`);
  await g.exec('poweroff -f').catch(() => undefined);
  await guestExit(g);
});
