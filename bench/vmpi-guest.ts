/**
 * vmpi-guest.ts — `npm run bench:vmpi`: host ↔ guest VMPI throughput under real QEMU 10 (TCG).
 *
 * Boots the test guest with one VMPI device and measures, per SDU size, guest → host
 * (`vmpi-perf send` into a host sink) and host → guest (host source into `vmpi-perf recv`), as
 * the guest tool reports it. Prints a table and writes bench-results/vmpi-guest.json.
 * Sizes from VMPI_BENCH_SIZES (comma list), SDUs per run from VMPI_BENCH_COUNT.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SendResult } from '../src/vmpi/device.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { Guest, ROOT, guestUnavailable } from '../test/helpers/guest.js';
import { parseResults, patternSdu } from '../test/helpers/pattern.js';

const sizes = (process.env.VMPI_BENCH_SIZES ?? '64,1000,4000,16384,65536').split(',').map(Number);
const countFor = (size: number) => Number(process.env.VMPI_BENCH_COUNT ?? Math.max(2000, Math.min(50000, Math.floor(200e6 / Math.max(size, 64)))));

interface Row {
  size: number;
  direction: 'guest_to_host' | 'host_to_guest';
  sdus: number;
  seconds: number;
  mbytesPerSec: number;
  sdusPerSec: number;
}

async function main(): Promise<void> {
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-bench-'));
  const host = new VmpiHost();
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 1 });
  let received = 0;
  device.bind(1, () => {
    received++;
  });
  const g = new Guest({ sockets: [join(dir, 'vm.sock')], timeoutMs: 900_000 });
  const rows: Row[] = [];
  try {
    await g.agentReady();
    for (const size of sizes) {
      const count = countFor(size);
      // guest → host
      received = 0;
      const r = await g.exec(`vmpi-perf send /dev/vmpi0 1 ${size} ${count}`, 300_000);
      const res = parseResults(r.out).find((x) => x.kind === 'RESULT');
      if (!res || res.status !== 'ok') throw new Error(`guest send failed: ${r.out}`);
      while (received < count) await new Promise((res2) => setTimeout(res2, 10));
      rows.push(row(size, 'guest_to_host', res));

      // host → guest: keep the rx ring full, waiting for 'drain' when the backlog is full.
      const from = g.mark;
      g.send(`vmpi-perf -t 30000 recv /dev/vmpi0 2 ${size} ${count}`);
      await g.waitFor(/READY mode=recv dev=\/dev\/vmpi0 channel=2\b/, 30_000, from);
      // The pattern's body repeats every 256 SDUs; only the le32 sequence number changes.
      const sdus = Array.from({ length: 256 }, (_, i) => patternSdu(2, i, size));
      for (let i = 0; i < count; ) {
        const sdu = sdus[i % 256]!;
        if (size >= 8) new DataView(sdu.buffer).setUint32(0, i, true);
        if (device.send(2, sdu) === SendResult.Full) {
          await new Promise<void>((res2) => device.once('drain', res2));
          continue;
        }
        i++;
        if (i % 256 === 0) await new Promise((res2) => setImmediate(res2));
      }
      const m = await g.waitFor(/RESULT mode=recv dev=\/dev\/vmpi0 channel=2 .*status=\S+\s/, 300_000, from);
      const res2 = parseResults(m[0]).find((x) => x.kind === 'RESULT')!;
      rows.push(row(size, 'host_to_guest', res2));
    }
  } finally {
    await g.stop();
    host.close();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log('\nVMPI host <-> guest throughput (QEMU 10 TCG, 1 vCPU, vmpi-perf in the guest)');
  console.log('size     direction        SDUs      MB/s      SDU/s');
  for (const r of rows) {
    console.log(`${String(r.size).padEnd(8)} ${r.direction.padEnd(16)} ${String(r.sdus).padStart(6)} ${r.mbytesPerSec.toFixed(1).padStart(9)} ${Math.round(r.sdusPerSec).toString().padStart(10)}`);
  }
  mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
  const out = join(ROOT, 'bench-results', 'vmpi-guest.json');
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), rows }, null, 2) + '\n');
  console.log(`\nwritten to ${out}`);
}

function row(size: number, direction: Row['direction'], r: Record<string, string>): Row {
  const seconds = Number(r.seconds);
  const sdus = Number(r.sdus);
  if (r.status !== 'ok') throw new Error(`${direction} size ${size}: status ${r.status}`);
  return { size, direction, sdus, seconds, mbytesPerSec: (Number(r.bytes) / seconds) / 1e6, sdusPerSec: sdus / seconds };
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
