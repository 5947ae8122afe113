/**
 * normal-only.ts — Fig. 4c's normal-DIF series alone (normal-series.ts), without the NIC series
 * or the figure: `bash scripts/with-node.sh tsx bench/fig4c/normal-only.ts` (root: network
 * namespaces). For checking the series and quick numbers; `npm run bench:fig4c` is the figure.
 *
 * Environment: FIG4C_SIZES (comma list, default 250,1000,4000), FIG4C_REPEATS (default 3),
 * FIG4C_SECONDS (window per measurement, default 1), FIG4C_OUT (default bench-results/).
 * Prints a table (mean and range per size) and writes fig4c-normal-only.json there.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { liveGuests, ROOT } from '../../test/helpers/guest.js';
import { closeAllSync } from '../../test/helpers/two-hosts.js';
import type { Measurement } from '../common/series.js';
import { NormalInterHostSeries } from './normal-series.js';

const say = (s: string) => process.stdout.write(`[fig4c-normal] ${s}\n`);
const sizes = (process.env.FIG4C_SIZES ?? '250,1000,4000').split(',').map(Number);
const repeats = Number(process.env.FIG4C_REPEATS ?? 3);
const seconds = Number(process.env.FIG4C_SECONDS ?? 1);
const outDir = process.env.FIG4C_OUT ?? join(ROOT, 'bench-results');
if (sizes.some((s) => !Number.isInteger(s) || s < 0) || !(repeats >= 1) || !(seconds > 0)) {
  console.error('FIG4C_SIZES must be a comma list of integers >= 0, FIG4C_REPEATS >= 1, FIG4C_SECONDS > 0');
  process.exit(2);
}

const cleanup = (): void => {
  for (const g of [...liveGuests]) g.kill();
  closeAllSync();
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`${sig}: stopping guests and serves, removing the namespaces`);
    cleanup();
    process.exit(130);
  });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, veth)');
  const series = new NormalInterHostSeries({ say });
  const samples: { size: number; repeat: number; m: Measurement }[] = [];
  const t0 = Date.now();
  try {
    await series.start();
    say(`topology up in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    for (let r = 0; r < repeats; r++) {
      for (const size of sizes) {
        const m = await series.measure(size, seconds);
        samples.push({ size, repeat: r, m });
        say(`size ${size}: ${m.mbps.toFixed(1)} Mb/s, ${m.pps.toFixed(0)} SDU/s (sent ${m.sentPps?.toFixed(0) ?? '?'} /s)`);
      }
    }
  } finally {
    await series.stop();
  }
  console.log(`\n${series.name}\n size |  mean Mb/s |  min..max Mb/s | mean SDU/s`);
  for (const size of sizes) {
    const ms = samples.filter((s) => s.size === size).map((s) => s.m);
    const mb = ms.map((m) => m.mbps);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(`${String(size).padStart(5)} | ${mean(mb).toFixed(1).padStart(10)} | ${`${Math.min(...mb).toFixed(1)}..${Math.max(...mb).toFixed(1)}`.padStart(14)} | ${mean(ms.map((m) => m.pps)).toFixed(0).padStart(10)}`);
  }
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, 'fig4c-normal-only.json');
  writeFileSync(file, JSON.stringify({ system: series.key, name: series.name, sizes, repeats, seconds, samples }, null, 2));
  console.log(`\nwritten: ${file}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
