/**
 * run.ts — `npm run bench:fig4a`: the paper's Fig. 4a on this machine, in one run.
 *
 * Host → VM goodput vs SDU (UDP payload) size for three systems, each a TCG guest with the same
 * settings (qemu-configs/launch-guest.sh defaults: q35, accel=tcg, 1 vCPU; 768M; the kernel and
 * initramfs of scripts/guest/build.sh), booted once per system:
 *   shim-dif    the shim DIF for hypervisors with vmpi-tgen over the IPC API at both ends
 *               (series.ts: TgenShimSeries; the guest runs the same TypeScript on Node)
 *   virtio-net  virtio-net-pci on a tap (no vhost-net: /dev/vhost-net does not exist here)
 *   e1000       e1000 on a tap
 * The NICs' taps live in a network namespace this bench creates and removes (netns.ts).
 * Goodput is always measured by the receiver in the guest over a fixed window.
 *
 * Environment:
 *   FIG4A_SIZES     comma list or START:STEP:END (default 0:250:4000). Size 0 is measured for every
 *                   system: a zero-length UDP datagram is valid, goodput 0, SDUs/s still reported.
 *   FIG4A_REPEATS   measurements per point (default 20)
 *   FIG4A_SECONDS   window per measurement, seconds (default 1)
 *   FIG4A_SYSTEMS   comma list of shim-dif,virtio-net,e1000 (default all three, in this order),
 *                   and vmpi-channel: the raw VMPI channel without a DIF, host VmpiDevice → a C
 *                   receiver in the guest (what the device alone carries; not in the paper)
 *   FIG4A_SHIM_RECEIVER  vmpi-channel's receiver: udp-goodput (default: count-only, the same loop
 *                   as the UDP receiver) or vmpi-perf (verifies every SDU)
 *   FIG4A_SENDER_NICE  nice(1) increment for the unpaced UDP sender (default 0, as netperf)
 *   FIG4A_OUT       output directory (default bench-results/)
 *   FIG4A_REPLOT    path of a fig4a.json: measure nothing, rewrite the CSV/SVG/JSON in FIG4A_OUT from
 *                   its samples and print the table (e.g. after a change to the plot)
 * Writes fig4a.csv (system,size,mean_mbps,ci95_low,ci95_high,repeats), fig4a.svg (means, 95% CI
 * error bars, first-degree regression per series) and fig4a.json (every sample, the settings, the
 * ratios), rewritten after each system so an interrupted run keeps what it measured.
 * Measurements go repeat by repeat over the sizes (not size by size) so slow drifts of the shared
 * machine spread over all sizes.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { linearRegression, niceTicks, renderSvgPlot } from '../../src/dif/plot.js';
import { ROOT, guestUnavailable, liveGuests } from '../../test/helpers/guest.js';
import { PrivateNet, removeStale } from './netns.js';
import { GUEST_MEM_MB, ShimVmpiSeries, TgenShimSeries, UdpNicSeries, liveSenders, type Measurement, type Series, type ShimReceiver } from './series.js';
import { summarize, type Summary } from './stats.js';

const say = (s: string) => process.stdout.write(`[fig4a] ${s}\n`);

function parseSizes(spec: string): number[] {
  const range = /^(\d+):(\d+):(\d+)$/.exec(spec.trim());
  if (range) {
    const [a, step, b] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (step <= 0) throw new Error(`FIG4A_SIZES: step must be > 0 in ${spec}`);
    const out: number[] = [];
    for (let s = a; s <= b; s += step) out.push(s);
    return out;
  }
  const out = spec.split(',').map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < 0 || n > 65507)) throw new Error(`FIG4A_SIZES: bad list ${spec}`);
  return out;
}

let sizes = parseSizes(process.env.FIG4A_SIZES ?? '0:250:4000');
let repeats = Number(process.env.FIG4A_REPEATS ?? 20);
let seconds = Number(process.env.FIG4A_SECONDS ?? 1);
let systems = (process.env.FIG4A_SYSTEMS ?? 'shim-dif,virtio-net,e1000').split(',').map((s) => s.trim());
const shimReceiver = (process.env.FIG4A_SHIM_RECEIVER ?? 'udp-goodput') as ShimReceiver;
const senderNice = Number(process.env.FIG4A_SENDER_NICE ?? 0);
const outDir = process.env.FIG4A_OUT ?? join(ROOT, 'bench-results');
if (!(repeats >= 1) || !(seconds > 0)) throw new Error('FIG4A_REPEATS must be >= 1 and FIG4A_SECONDS > 0');
if (!['udp-goodput', 'vmpi-perf'].includes(shimReceiver)) throw new Error(`FIG4A_SHIM_RECEIVER: ${shimReceiver}?`);
for (const s of systems) if (!['shim-dif', 'vmpi-channel', 'virtio-net', 'e1000'].includes(s)) throw new Error(`FIG4A_SYSTEMS: unknown ${s}`);

interface SystemResult {
  key: string;
  name: string;
  samples: Map<number, Measurement[]>;
}

const net = new PrivateNet();
let cleaned = false;
function cleanupSync(): void {
  if (cleaned) return;
  cleaned = true;
  for (const s of liveSenders) s.kill('SIGKILL');
  for (const g of [...liveGuests]) g.kill();
  // Deleting the tap detaches a QEMU that may still be exiting; the namespace goes with the
  // last process in it.
  net.remove();
}
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`${sig}: stopping guests, removing ${net.ns}`);
    cleanupSync();
    process.exit(130);
  });
}

function makeSeries(key: string, goodputBin: string): Series {
  switch (key) {
    case 'shim-dif':
      return new TgenShimSeries();
    case 'vmpi-channel':
      return new ShimVmpiSeries(shimReceiver);
    case 'virtio-net':
      return new UdpNicSeries('virtio-net-pci', net, goodputBin, senderNice);
    default:
      return new UdpNicSeries('e1000', net, goodputBin, senderNice);
  }
}

function summaries(r: SystemResult): Map<number, Summary> {
  return new Map(sizes.filter((s) => r.samples.has(s)).map((s) => [s, summarize(r.samples.get(s)!.map((m) => m.mbps))]));
}

const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');
const f2 = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : 'n/a');

function ratios(a: Map<number, Summary>, b: Map<number, Summary>): { perSize: Map<number, number>; geomean: number; ofMeans: number } {
  const perSize = new Map<number, number>();
  let logSum = 0;
  let n = 0;
  let sa = 0;
  let sb = 0;
  for (const s of sizes) {
    const x = a.get(s)?.mean;
    const y = b.get(s)?.mean;
    if (x === undefined || y === undefined) continue;
    const ratio = y > 0 ? x / y : Number.NaN;
    perSize.set(s, ratio);
    if (Number.isFinite(ratio) && ratio > 0) {
      logSum += Math.log(ratio);
      n++;
    }
    sa += x;
    sb += y;
  }
  return { perSize, geomean: n ? Math.exp(logSum / n) : Number.NaN, ofMeans: sb > 0 ? sa / sb : Number.NaN };
}

function writeOutputs(results: SystemResult[], startedAt: Date, done: boolean, durationSeconds?: number): string[] {
  mkdirSync(outDir, { recursive: true });
  const sums = new Map(results.map((r) => [r.key, summaries(r)]));
  // CSV
  const csv = ['system,size,mean_mbps,ci95_low,ci95_high,repeats'];
  for (const r of results) {
    for (const [size, s] of sums.get(r.key)!) csv.push(`${r.key},${size},${s.mean.toFixed(3)},${s.ciLow.toFixed(3)},${s.ciHigh.toFixed(3)},${s.n}`);
  }
  writeFileSync(join(outDir, 'fig4a.csv'), csv.join('\n') + '\n');
  // SVG; head room above the highest error bar so the legend (top left) does not hide points.
  const top = Math.max(1, ...[...sums.values()].flatMap((m) => [...m.values()].map((s) => (Number.isFinite(s.ciHigh) ? s.ciHigh : s.mean))));
  const yTicks = niceTicks(0, top * 1.3, 6);
  const svg = renderSvgPlot({
    yMin: 0,
    yMax: yTicks[yTicks.length - 1]!,
    title: 'Fig. 4a (reproduced): host → VM goodput, QEMU 10 TCG, 1 vCPU',
    xLabel: 'SDU / UDP payload size (bytes)',
    yLabel: 'Goodput (Mb/s)',
    xMin: 0,
    series: results.map((r) => ({
      name: r.name,
      color: ({ 'shim-dif': '#2ca02c', 'vmpi-channel': '#9467bd', 'virtio-net': '#1f77b4' } as Record<string, string>)[r.key] ?? '#d62728',
      points: [...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean, yLow: s.ciLow, yHigh: s.ciHigh })),
    })),
  });
  writeFileSync(join(outDir, 'fig4a.svg'), svg);
  // JSON: settings, every sample, summaries, regressions, ratios.
  const shim = sums.get('shim-dif');
  const json = {
    date: startedAt.toISOString(),
    complete: done,
    durationSeconds: durationSeconds ?? (Date.now() - startedAt.getTime()) / 1000,
    settings: { sizes, repeats, secondsPerMeasurement: seconds, systems, shimReceiver, guest: `q35, accel=tcg, 1 vCPU, ${GUEST_MEM_MB}M, scripts/guest/build.sh kernel; busybox initramfs (NICs, vmpi-channel), Node initramfs (shim-dif)` },
    systems: results.map((r) => {
      const pts = [...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean }));
      return {
        key: r.key,
        name: r.name,
        regression: linearRegression(pts),
        points: [...sums.get(r.key)!].map(([size, s]) => ({
          size,
          ...s,
          meanPps: summarize(r.samples.get(size)!.map((m) => m.pps)).mean,
          meanSenderPps: summarize(r.samples.get(size)!.map((m) => m.sentPps ?? Number.NaN)).mean,
          samples: r.samples.get(size),
        })),
      };
    }),
    ratios: Object.fromEntries(
      results
        .filter((r) => r.key !== 'shim-dif' && shim)
        .map((r) => {
          const q = ratios(shim!, sums.get(r.key)!);
          return [`shim-dif/${r.key}`, { perSize: Object.fromEntries(q.perSize), geomean: q.geomean, ofMeans: q.ofMeans }];
        }),
    ),
  };
  writeFileSync(join(outDir, 'fig4a.json'), JSON.stringify(json, null, 2) + '\n');
  return ['fig4a.csv', 'fig4a.svg', 'fig4a.json'].map((f) => join(outDir, f));
}

function printTable(results: SystemResult[]): void {
  const sums = new Map(results.map((r) => [r.key, summaries(r)]));
  const shim = sums.get('shim-dif');
  const others = results.filter((r) => r.key !== 'shim-dif');
  const q = new Map(others.filter(() => shim).map((r) => [r.key, ratios(shim!, sums.get(r.key)!)]));
  console.log(`\nFig. 4a: host → VM goodput (Mb/s, mean [95% CI], ${repeats} × ${seconds} s per point, measured at the guest receiver)`);
  const cols = results.map((r) => r.key);
  const head = ['size'.padStart(5), ...cols.map((c) => c.padStart(26)), ...[...q.keys()].map((k) => `shim/${k}`.padStart(17))];
  console.log(head.join(' '));
  for (const size of sizes) {
    const cells = [String(size).padStart(5)];
    for (const c of cols) {
      const s = sums.get(c)!.get(size);
      cells.push((s ? `${f1(s.mean)} [${f1(s.ciLow)}, ${f1(s.ciHigh)}]` : '-').padStart(26));
    }
    for (const r of q.values()) cells.push(f2(r.perSize.get(size) ?? Number.NaN).padStart(17));
    console.log(cells.join(' '));
  }
  for (const [k, r] of q) {
    console.log(`shim-dif / ${k}: geometric mean of the per-size ratios (sizes > 0) ${f2(r.geomean)}; ratio of the mean goodput over all sizes ${f2(r.ofMeans)}`);
  }
  console.log('\nSDUs (datagrams) per second at the receiver (mean):');
  console.log(['size'.padStart(5), ...cols.map((c) => c.padStart(12))].join(' '));
  for (const size of sizes) {
    const cells = [String(size).padStart(5)];
    for (const r of results) {
      const ms = r.samples.get(size);
      cells.push((ms ? Math.round(summarize(ms.map((m) => m.pps)).mean).toString() : '-').padStart(12));
    }
    console.log(cells.join(' '));
  }
  console.log('\nFirst-degree regression of the means (Mb/s = a·size + b):');
  for (const r of results) {
    const reg = linearRegression([...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean })));
    if (reg) console.log(`  ${r.name}: a = ${reg.slope.toFixed(4)}, b = ${reg.intercept.toFixed(1)}, R² = ${reg.r2.toFixed(3)}`);
  }
}

/** FIG4A_REPLOT: the outputs and the table again from a previous run's fig4a.json. */
function replot(path: string): void {
  interface Saved {
    date: string;
    durationSeconds: number;
    settings: { sizes: number[]; repeats: number; secondsPerMeasurement: number; systems: string[] };
    systems: { key: string; name: string; points: { size: number; samples: Measurement[] }[] }[];
  }
  const saved = JSON.parse(readFileSync(path, 'utf8')) as Saved;
  sizes = saved.settings.sizes;
  repeats = saved.settings.repeats;
  seconds = saved.settings.secondsPerMeasurement;
  systems = saved.settings.systems;
  const results: SystemResult[] = saved.systems.map((s) => ({ key: s.key, name: s.name, samples: new Map(s.points.map((p) => [p.size, p.samples])) }));
  const startedAt = new Date(saved.date);
  const files = writeOutputs(results, startedAt, true, saved.durationSeconds);
  printTable(results);
  console.log(`\nrewritten from ${path}: ${files.join(', ')}`);
}

async function main(): Promise<void> {
  if (process.env.FIG4A_REPLOT) return replot(process.env.FIG4A_REPLOT);
  const startedAt = new Date();
  if (process.getuid?.() !== 0) throw new Error('bench:fig4a needs root (network namespace and tap device)');
  const build = spawnSync('bash', [join(ROOT, 'scripts/guest/build.sh')], { stdio: 'inherit' });
  if (build.status !== 0) throw new Error('scripts/guest/build.sh failed');
  const why = guestUnavailable();
  if (why) throw new Error(why);
  const goodputBin = join(ROOT, '.cache/guest/udp-goodput');
  const stale = removeStale();
  if (stale.length) say(`removed stale namespaces of dead runs: ${stale.join(', ')}`);
  if (systems.some((s) => s !== 'shim-dif')) {
    net.create();
    say(`private network: namespace ${net.ns}, tap ${net.tap}`);
  }
  const total = systems.length * sizes.length * repeats;
  say(`${systems.join(', ')}; sizes ${sizes.join(',')}; ${repeats} repeats × ${seconds} s: ${total} measurements`);

  const results: SystemResult[] = [];
  let done = 0;
  for (const key of systems) {
    const series = makeSeries(key, goodputBin);
    const r: SystemResult = { key: series.key, name: series.name, samples: new Map() };
    results.push(r);
    const t0 = Date.now();
    try {
      say(`${series.name}: booting the guest`);
      await series.start();
      say(`${series.name}: guest up after ${((Date.now() - t0) / 1000).toFixed(1)} s; warm-up`);
      await series.measure(sizes[sizes.length - 1]!, Math.min(1, seconds));
      for (let rep = 1; rep <= repeats; rep++) {
        for (const size of sizes) {
          let m: Measurement;
          try {
            m = await series.measure(size, seconds);
          } catch (e) {
            say(`${series.key} size ${size}: ${(e as Error).message.split('\n')[0]}; retrying once`);
            m = await series.measure(size, seconds);
          }
          if (!r.samples.has(size)) r.samples.set(size, []);
          r.samples.get(size)!.push(m);
          done++;
          const sent = m.sentPps !== undefined ? `, sender ${Math.round(m.sentPps)}/s` : '';
          say(`${series.key} rep ${rep}/${repeats} size ${size}: ${m.mbps.toFixed(1)} Mb/s (${Math.round(m.pps)} SDU/s${sent}) [${done}/${total}]`);
        }
      }
    } finally {
      await series.stop();
    }
    say(`${series.name}: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    writeOutputs(results, startedAt, false);
  }
  const files = writeOutputs(results, startedAt, true);
  printTable(results);
  console.log(`\nwritten: ${files.join(', ')}`);
  console.log(`total time ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s`);
}

main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => {
    cleanupSync();
  });
