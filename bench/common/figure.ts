/**
 * figure.ts — one goodput-vs-SDU-size figure of the paper (Fig. 4a, 4b …), measured in one run.
 *
 * Owns what every figure bench shares: reading its settings from the environment (<ID>_SIZES,
 * _REPEATS, _SECONDS, _SYSTEMS, _OUT, _REPLOT), the sweep (repeat by repeat over the sizes, not
 * size by size, so slow drifts of the shared machine spread over all sizes; a failed measurement is
 * retried once), the outputs (<id>.csv: system,size,mean_mbps,ci95_low,ci95_high,repeats; <id>.svg:
 * means with 95% CI error bars and a first-degree regression per series; <id>.json: every sample,
 * the settings, the ratios of the figure's own system to every other), rewritten after each system
 * so an interrupted run keeps what it measured, and the printed table. The systems themselves are
 * Series (series.ts) that the figure's run.ts makes.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { linearRegression, niceTicks, renderSvgPlot } from '../../src/dif/plot.js';
import type { Measurement, Series } from './series.js';
import { summarize, type Summary } from './stats.js';

export interface FigureSpec {
  /** File names and the environment prefix: 'fig4a' → fig4a.csv, FIG4A_SIZES … */
  readonly id: string;
  /** SVG title and the table's heading. */
  readonly title: string;
  readonly tableTitle: string;
  /** Every system key this figure knows, in the default order; the first is ours (the ratios' numerator). */
  readonly systems: readonly string[];
  /** Keys measured unless <ID>_SYSTEMS says otherwise. */
  readonly defaultSystems?: readonly string[];
  readonly colors: Readonly<Record<string, string>>;
  /** Said in the JSON's settings. */
  readonly guest: string;
  readonly xLabel?: string;
}

export interface FigureSettings {
  sizes: number[];
  repeats: number;
  seconds: number;
  systems: string[];
  outDir: string;
}

interface SystemResult {
  key: string;
  name: string;
  samples: Map<number, Measurement[]>;
}

export function parseSizes(name: string, spec: string): number[] {
  const range = /^(\d+):(\d+):(\d+)$/.exec(spec.trim());
  if (range) {
    const [a, step, b] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (step <= 0) throw new Error(`${name}: step must be > 0 in ${spec}`);
    const out: number[] = [];
    for (let s = a; s <= b; s += step) out.push(s);
    return out;
  }
  const out = spec.split(',').map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < 0 || n > 65507)) throw new Error(`${name}: bad list ${spec}`);
  return out;
}

/** The settings from <ID>_SIZES, _REPEATS, _SECONDS, _SYSTEMS and _OUT, checked. */
export function readSettings(spec: FigureSpec, root: string): FigureSettings {
  const P = spec.id.toUpperCase();
  const env = (k: string) => process.env[`${P}_${k}`];
  const sizes = parseSizes(`${P}_SIZES`, env('SIZES') ?? '0:250:4000');
  const repeats = Number(env('REPEATS') ?? 20);
  const seconds = Number(env('SECONDS') ?? 1);
  const systems = (env('SYSTEMS') ?? (spec.defaultSystems ?? spec.systems).join(',')).split(',').map((s) => s.trim());
  if (!(repeats >= 1) || !(seconds > 0)) throw new Error(`${P}_REPEATS must be >= 1 and ${P}_SECONDS > 0`);
  for (const s of systems) if (!spec.systems.includes(s)) throw new Error(`${P}_SYSTEMS: unknown ${s} (known: ${spec.systems.join(', ')})`);
  return { sizes, repeats, seconds, systems, outDir: env('OUT') ?? join(root, 'bench-results') };
}

const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');
const f2 = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : 'n/a');

function ratios(sizes: number[], a: Map<number, Summary>, b: Map<number, Summary>): { perSize: Map<number, number>; geomean: number; ofMeans: number } {
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

export class Figure {
  private readonly results: SystemResult[] = [];
  private startedAt = new Date();
  private durationSeconds: number | undefined;

  constructor(
    private readonly spec: FigureSpec,
    private settings: FigureSettings,
    private readonly say: (s: string) => void,
  ) {}

  private get ours(): string {
    return this.spec.systems[0]!;
  }

  private summaries(r: SystemResult): Map<number, Summary> {
    return new Map(this.settings.sizes.filter((s) => r.samples.has(s)).map((s) => [s, summarize(r.samples.get(s)!.map((m) => m.mbps))]));
  }

  /** Boot each system in turn, sweep it, power it off; outputs rewritten after each. */
  async run(makeSeries: (key: string) => Series): Promise<string[]> {
    const { sizes, repeats, seconds, systems } = this.settings;
    this.startedAt = new Date();
    const total = systems.length * sizes.length * repeats;
    this.say(`${systems.join(', ')}; sizes ${sizes.join(',')}; ${repeats} repeats × ${seconds} s: ${total} measurements`);
    let done = 0;
    for (const key of systems) {
      const series = makeSeries(key);
      const r: SystemResult = { key: series.key, name: series.name, samples: new Map() };
      this.results.push(r);
      const t0 = Date.now();
      try {
        this.say(`${series.name}: booting the guests`);
        await series.start();
        this.say(`${series.name}: up after ${((Date.now() - t0) / 1000).toFixed(1)} s; warm-up`);
        await series.measure(sizes[sizes.length - 1]!, Math.min(1, seconds));
        for (let rep = 1; rep <= repeats; rep++) {
          for (const size of sizes) {
            let m: Measurement;
            try {
              m = await series.measure(size, seconds);
            } catch (e) {
              this.say(`${series.key} size ${size}: ${(e as Error).message.split('\n')[0]}; retrying once`);
              m = await series.measure(size, seconds);
            }
            if (!r.samples.has(size)) r.samples.set(size, []);
            r.samples.get(size)!.push(m);
            done++;
            const sent = m.sentPps !== undefined ? `, sender ${Math.round(m.sentPps)}/s` : '';
            this.say(`${series.key} rep ${rep}/${repeats} size ${size}: ${m.mbps.toFixed(1)} Mb/s (${Math.round(m.pps)} SDU/s${sent}) [${done}/${total}]`);
          }
        }
      } finally {
        await series.stop();
      }
      this.say(`${series.name}: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      this.write(false);
    }
    return this.write(true);
  }

  /** <ID>_REPLOT: the outputs and the table again from a previous run's JSON. */
  replot(path: string): string[] {
    interface Saved {
      date: string;
      durationSeconds: number;
      settings: { sizes: number[]; repeats: number; secondsPerMeasurement: number; systems: string[] };
      systems: { key: string; name: string; points: { size: number; samples: Measurement[] }[] }[];
    }
    const saved = JSON.parse(readFileSync(path, 'utf8')) as Saved;
    this.settings = { ...this.settings, sizes: saved.settings.sizes, repeats: saved.settings.repeats, seconds: saved.settings.secondsPerMeasurement, systems: saved.settings.systems };
    this.results.push(...saved.systems.map((s) => ({ key: s.key, name: s.name, samples: new Map(s.points.map((p) => [p.size, p.samples])) })));
    this.startedAt = new Date(saved.date);
    this.durationSeconds = saved.durationSeconds;
    return this.write(true);
  }

  private write(done: boolean): string[] {
    const { id } = this.spec;
    const { sizes, repeats, seconds, systems, outDir } = this.settings;
    mkdirSync(outDir, { recursive: true });
    const sums = new Map(this.results.map((r) => [r.key, this.summaries(r)]));
    const csv = ['system,size,mean_mbps,ci95_low,ci95_high,repeats'];
    for (const r of this.results) {
      for (const [size, s] of sums.get(r.key)!) csv.push(`${r.key},${size},${s.mean.toFixed(3)},${s.ciLow.toFixed(3)},${s.ciHigh.toFixed(3)},${s.n}`);
    }
    writeFileSync(join(outDir, `${id}.csv`), csv.join('\n') + '\n');
    // Head room above the highest error bar so the legend (top left) does not hide points.
    const top = Math.max(1, ...[...sums.values()].flatMap((m) => [...m.values()].map((s) => (Number.isFinite(s.ciHigh) ? s.ciHigh : s.mean))));
    const yTicks = niceTicks(0, top * 1.3, 6);
    const svg = renderSvgPlot({
      yMin: 0,
      yMax: yTicks[yTicks.length - 1]!,
      title: this.spec.title,
      xLabel: this.spec.xLabel ?? 'SDU / UDP payload size (bytes)',
      yLabel: 'Goodput (Mb/s)',
      xMin: 0,
      series: this.results.map((r) => ({
        name: r.name,
        color: this.spec.colors[r.key] ?? '#d62728',
        points: [...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean, yLow: s.ciLow, yHigh: s.ciHigh })),
      })),
    });
    writeFileSync(join(outDir, `${id}.svg`), svg);
    const ours = sums.get(this.ours);
    const json = {
      date: this.startedAt.toISOString(),
      complete: done,
      durationSeconds: this.durationSeconds ?? (Date.now() - this.startedAt.getTime()) / 1000,
      settings: { sizes, repeats, secondsPerMeasurement: seconds, systems, guest: this.spec.guest },
      systems: this.results.map((r) => {
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
        this.results
          .filter((r) => r.key !== this.ours && ours)
          .map((r) => {
            const q = ratios(sizes, ours!, sums.get(r.key)!);
            return [`${this.ours}/${r.key}`, { perSize: Object.fromEntries(q.perSize), geomean: q.geomean, ofMeans: q.ofMeans }];
          }),
      ),
    };
    writeFileSync(join(outDir, `${id}.json`), JSON.stringify(json, null, 2) + '\n');
    return [`${id}.csv`, `${id}.svg`, `${id}.json`].map((f) => join(outDir, f));
  }

  printTable(): void {
    const { sizes, repeats, seconds } = this.settings;
    const sums = new Map(this.results.map((r) => [r.key, this.summaries(r)]));
    const ours = sums.get(this.ours);
    const short = this.ours.replace(/-dif$/, '');
    const others = this.results.filter((r) => r.key !== this.ours);
    const q = new Map(others.filter(() => ours).map((r) => [r.key, ratios(sizes, ours!, sums.get(r.key)!)]));
    console.log(`\n${this.spec.tableTitle} (Mb/s, mean [95% CI], ${repeats} × ${seconds} s per point, measured at the receiver)`);
    const cols = this.results.map((r) => r.key);
    console.log(['size'.padStart(5), ...cols.map((c) => c.padStart(26)), ...[...q.keys()].map((k) => `${short}/${k}`.padStart(19))].join(' '));
    for (const size of sizes) {
      const cells = [String(size).padStart(5)];
      for (const c of cols) {
        const s = sums.get(c)!.get(size);
        cells.push((s ? `${f1(s.mean)} [${f1(s.ciLow)}, ${f1(s.ciHigh)}]` : '-').padStart(26));
      }
      for (const r of q.values()) cells.push(f2(r.perSize.get(size) ?? Number.NaN).padStart(19));
      console.log(cells.join(' '));
    }
    for (const [k, r] of q) {
      console.log(`${this.ours} / ${k}: geometric mean of the per-size ratios (sizes > 0) ${f2(r.geomean)}; ratio of the mean goodput over all sizes ${f2(r.ofMeans)}`);
    }
    console.log('\nSDUs (datagrams) per second at the receiver (mean):');
    console.log(['size'.padStart(5), ...cols.map((c) => c.padStart(12))].join(' '));
    for (const size of sizes) {
      const cells = [String(size).padStart(5)];
      for (const r of this.results) {
        const ms = r.samples.get(size);
        cells.push((ms ? Math.round(summarize(ms.map((m) => m.pps)).mean).toString() : '-').padStart(12));
      }
      console.log(cells.join(' '));
    }
    console.log('\nFirst-degree regression of the means (Mb/s = a·size + b):');
    for (const r of this.results) {
      const reg = linearRegression([...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean })));
      if (reg) console.log(`  ${r.name}: a = ${reg.slope.toFixed(4)}, b = ${reg.intercept.toFixed(1)}, R² = ${reg.r2.toFixed(3)}`);
    }
  }
}
