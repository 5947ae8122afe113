/**
 * normal-dif.ts — `npm run bench:normal-dif`: what one SDU costs in the normal DIF's own code,
 * natively on the host, without QEMU, TCG or syscalls (bench:fig4b measures the whole path in
 * TCG guests; this says how much of it is our TypeScript).
 *
 * One process, the tests' in-memory topology (test/dif/normal/ipcp-harness.ts): VM1 —shim— host
 * —shim— VM2, each shim DIF a real shim-hv IPC process pair over an in-memory VMPI port pair
 * (capacity 256 SDUs per direction, so backpressure is real), n.DIF's three normal IPC processes
 * on top, the host relaying. Series, each a flow written as fast as backpressure allows
 * (write() until refused, then 'drain'), SDUs counted at the receiver:
 *   shim         one shim DIF flow VM1 → host (the baseline: the layer below)
 *   normal-fc    n.DIF VM1 → host → VM2, flow-control cube (bench:fig4b's QoS)
 *   normal-rel   n.DIF VM1 → host → VM2, reliable cube
 * For each: SDUs/s, and CPU µs per SDU (user+system of this process over the window: every IPC
 * process of the path runs here, so this is the whole path's cost), and the ratio to the shim.
 * Environment: NDIF_SIZES (default 0,100,1000,4000), NDIF_SECONDS (default 1), NDIF_REPEATS
 * (default 5), NDIF_SERIES (comma list of normal-fc,normal-rel; default both; the shim always
 * runs, as the baseline), NDIF_PATH=only (just the first table: the normal DIF's own path,
 * normal-dif-path.ts, receive copied vs borrowed, interleaved; written to
 * bench-results/normal-dif-path.json). Writes bench-results/normal-dif.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { Flow } from '../src/dif/api.js';
import { ROOT } from '../test/helpers/guest.js';
import { acceptAll, knows, topology } from '../test/dif/normal/ipcp-harness.js';
import { summarize } from './common/stats.js';
import { QOS_CUBES, measurePath, type PathRx, type PathSample } from './normal-dif-path.js';

const sizes = (process.env.NDIF_SIZES ?? '0,100,1000,4000').split(',').map(Number);
const seconds = Number(process.env.NDIF_SECONDS ?? 1);
const repeats = Number(process.env.NDIF_REPEATS ?? 5);
const only = process.env.NDIF_SERIES?.split(',');

interface Sample {
  sdus: number;
  sdusPerS: number;
  cpuUsPerSdu: number;
}

/** Write `size`-byte SDUs on `tx` for `seconds`, count them on `rx`. */
async function run(tx: Flow, rx: Flow, size: number): Promise<Sample> {
  let got = 0;
  const onData = () => void got++;
  rx.on('data', onData);
  const sdu = new Uint8Array(size);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let sent = 0;
  while (performance.now() < end) {
    let k = 0;
    while (k < 64 && tx.write(sdu)) {
      sent++;
      k++;
    }
    if (k < 64) await new Promise<void>((r) => tx.once('drain', () => r()));
    else await new Promise<void>((r) => setImmediate(r));
  }
  // Let what is in flight arrive (bounded).
  for (let i = 0; i < 200 && got < sent; i++) await new Promise((r) => setTimeout(r, 5));
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  rx.off('data', onData);
  return { sdus: got, sdusPerS: got / wall, cpuUsPerSdu: got > 0 ? (cpu.user + cpu.system) / got : Number.NaN };
}

/** The normal DIF's own path, nothing below it (normal-dif-path.ts): PDUs copied or borrowed on receive, interleaved. */
function pathTable(): PathSample[] {
  const out: PathSample[] = [];
  const rxs: PathRx[] = ['copy', 'borrow'];
  for (let rep = 0; rep < repeats; rep++) {
    for (const size of sizes) {
      for (const cube of [QOS_CUBES['flow-control'], QOS_CUBES.reliable]) {
        // Alternate which goes first, so neither always runs on a warmer (or busier) machine.
        for (const rx of rep % 2 === 0 ? rxs : [...rxs].reverse()) out.push(measurePath(cube, size, seconds, rx));
      }
    }
  }
  console.log(`\nnormal DIF's own path VM1 EFCP+RMT → host RMT → VM2 RMT+EFCP; receive: copy (before borrowed reads) / borrow (mean of ${repeats} × ${seconds} s, interleaved)`);
  console.log(['size'.padStart(5), 'fc copy'.padStart(8), 'fc borrow'.padStart(10), 'ratio'.padStart(6), 'rel copy'.padStart(9), 'rel borrow'.padStart(11), 'ratio'.padStart(6), 'slice µs'.padStart(9)].join(' '));
  for (const size of sizes) {
    const mean = (cube: string, rx: PathRx, f: (s: PathSample) => number) => summarize(out.filter((s) => s.size === size && s.cube === cube && s.rx === rx).map(f)).mean;
    const us = (cube: string, rx: PathRx) => mean(cube, rx, (s) => s.cpuUsPerSdu);
    const cells = (cube: string) => [us(cube, 'copy').toFixed(2), us(cube, 'borrow').toFixed(2), (us(cube, 'borrow') / us(cube, 'copy')).toFixed(2)];
    const [fc, rel] = [cells('flow-control'), cells('reliable')];
    console.log([String(size).padStart(5), fc[0]!.padStart(8), fc[1]!.padStart(10), fc[2]!.padStart(6), rel[0]!.padStart(9), rel[1]!.padStart(11), rel[2]!.padStart(6), mean('flow-control', 'copy', (s) => s.sliceUs).toFixed(2).padStart(9)].join(' '));
  }
  return out;
}

async function main(): Promise<void> {
  const path = pathTable();
  if (process.env.NDIF_PATH === 'only') {
    const file = join(ROOT, 'bench-results', 'normal-dif-path.json');
    mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
    writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, settings: { sizes, seconds, repeats }, path }, null, 2) + '\n');
    console.log(`\nwritten: ${file}`);
    return;
  }
  const teardowns: (() => void)[] = [];
  const t = { teardown: (fn: () => void) => teardowns.push(fn) } as unknown as Test;
  const topo = await topology(t, { capacity: 256, maxSdu: 65536 });
  // Baseline: a shim DIF flow VM1 → host (shims[2] is VM1's guest-side shim, shims[0] the host's).
  const [h1, , g1] = topo.shims;
  const shimRx: Flow[] = [];
  h1!.register('sink/1', (req) => shimRx.push(req.accept()));
  const shimTx = await g1!.allocateFlow('src/1', 'sink/1', {});
  const ndif = acceptAll(topo.vm2, 'sink/2');
  for (let i = 0; i < 500 && !knows(topo.vm1, 'sink'); i++) await new Promise((r) => setTimeout(r, 10));
  const fcTx = await topo.vm1.allocateFlow('src/2', 'sink/2', { reliable: false, inOrder: true });
  const fcRx = await ndif.next();
  const relTx = await topo.vm1.allocateFlow('src/3', 'sink/2', { reliable: true, inOrder: true });
  const relRx = await ndif.next();
  const all: [string, Flow, Flow][] = [
    ['shim', shimTx, shimRx[0]!],
    ['normal-fc', fcTx, fcRx],
    ['normal-rel', relTx, relRx],
  ];
  // The shim stays first: it is the baseline the ratios divide by.
  const series = all.filter(([k]) => k === 'shim' || !only || only.includes(k));
  const samples = new Map<string, Sample[]>();
  for (let rep = 0; rep < repeats; rep++) {
    for (const size of sizes) {
      for (const [key, tx, rx] of series) {
        const s = await run(tx, rx, size);
        const k = `${key}/${size}`;
        if (!samples.has(k)) samples.set(k, []);
        samples.get(k)!.push(s);
      }
    }
  }
  console.log(`\nnormal DIF per-SDU cost, in process, no QEMU (mean [95% CI] of ${repeats} × ${seconds} s; µs = CPU of the whole path per SDU)`);
  console.log(['size'.padStart(5), ...series.map(([k]) => `${k} SDU/s`.padStart(24)), ...series.map(([k]) => `${k} µs`.padStart(15)), ...series.slice(1).map(([k]) => `${k.replace('normal-', '')}/shim µs`.padStart(12))].join(' '));
  const out: Record<string, unknown>[] = [];
  for (const size of sizes) {
    const rate = series.map(([k]) => summarize(samples.get(`${k}/${size}`)!.map((s) => s.sdusPerS)));
    const us = series.map(([k]) => summarize(samples.get(`${k}/${size}`)!.map((s) => s.cpuUsPerSdu)));
    const cells = [String(size).padStart(5)];
    for (const r of rate) cells.push(`${Math.round(r.mean)} [${Math.round(r.ciLow)}, ${Math.round(r.ciHigh)}]`.padStart(24));
    for (const u of us) cells.push(u.mean.toFixed(1).padStart(15));
    for (const u of us.slice(1)) cells.push((u.mean / us[0]!.mean).toFixed(2).padStart(12));
    console.log(cells.join(' '));
    out.push({ size, ...Object.fromEntries(series.map(([k], i) => [k, { sdusPerS: rate[i], cpuUsPerSdu: us[i], samples: samples.get(`${k}/${size}`) }])) });
  }
  const dir = join(ROOT, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'normal-dif.json');
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, settings: { sizes, seconds, repeats }, points: out, path }, null, 2) + '\n');
  console.log(`\nwritten: ${file}`);
  for (const fn of teardowns.reverse()) fn();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
