/**
 * figure.ts — one goodput-vs-SDU-size figure of the paper (Fig. 4a, 4b …), measured in one run.
 *
 * Owns what every figure bench shares: reading its settings from the environment (<ID>_SIZES,
 * _REPEATS, _SECONDS, _SYSTEMS, _OUT, _REPLOT, _WARMUP, _WARMUP_TOLERANCE, and for a host ↔ VM
 * figure _DIRECTION), the sweep (a warm-up per system until its rates are steady, warmup.ts; then repeat by repeat over the directions and sizes, not size by size, so slow drifts of the shared
 * machine spread over all of them; a failed measurement is retried once), the outputs (<id>.csv:
 * system,size,mean_mbps,ci95_low,ci95_high,repeats[,direction]; <id>.svg: means with 95% CI error
 * bars and a first-degree regression per series, one SVG per direction (<id>.svg for the first
 * direction of the figure, <id>-<direction>.svg for the others); <id>.json: every sample, the
 * settings, the ratios of the figure's own system to every other (per direction: "a/b" for the
 * first direction, "a/b@<direction>" for the others) and the SDU-rate ratios of the spec's
 * ratioPairs), rewritten after each system so an interrupted run keeps what it measured, and the
 * printed tables. The systems themselves are Series (series.ts) that the figure's run.ts makes.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { linearRegression, niceTicks, renderSvgPlot } from '../../src/dif/plot.js';
import { DIRECTIONS, type Direction, type Measurement, type Series } from './series.js';
import { summarize, type Summary } from './stats.js';
import { warmUp, WARMUP_DEFAULTS, type WarmupOptions, type WarmupResult } from './warmup.js';

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
  /**
   * A host ↔ VM figure: <ID>_DIRECTION picks to-guest (the default), to-host or both, and these
   * are the SVG titles and table headings per direction (title/tableTitle are then unused).
   */
  readonly directions?: Readonly<Record<Direction, { title: string; tableTitle: string }>>;
  /** SDU-rate (SDUs/s) ratios a/b printed and saved per size and direction, e.g. ['shim-dif', 'virtio-net']. */
  readonly ratioPairs?: readonly (readonly [string, string])[];
}

/** A bad <ID>_… setting: what was wrong and what is accepted. */
export class FigureSettingsError extends Error {
  override name = 'FigureSettingsError';
  constructor(
    readonly code: 'bad_sizes' | 'bad_repeats' | 'bad_system' | 'bad_direction' | 'bad_warmup',
    message: string,
  ) {
    super(message);
  }
}

export interface FigureSettings {
  sizes: number[];
  repeats: number;
  seconds: number;
  systems: string[];
  outDir: string;
  /** The directions measured; [null] for a figure without directions (Fig. 4b). */
  directions: (Direction | null)[];
  /** Before each system's repeats (warmup.ts): <ID>_WARMUP rounds at most (default 12; 0: none), <ID>_WARMUP_TOLERANCE (0.1), <ID>_WARMUP_AGREE rounds in a row (3). */
  warmup: WarmupOptions;
}

interface SystemResult {
  key: string;
  name: string;
  direction: Direction | null;
  samples: Map<number, Measurement[]>;
  warmup?: WarmupResult;
}

/** <ID>_DIRECTION: to-guest, to-host or both (unset: to-guest). */
export function parseDirection(name: string, value: string | undefined): Direction[] {
  const v = (value ?? 'to-guest').trim();
  if (v === 'both') return [...DIRECTIONS];
  if ((DIRECTIONS as readonly string[]).includes(v)) return [v as Direction];
  throw new FigureSettingsError('bad_direction', `${name}: unknown direction '${v}': use to-guest (host → VM, the default), to-host (VM → host) or both`);
}

export function parseSizes(name: string, spec: string): number[] {
  const range = /^(\d+):(\d+):(\d+)$/.exec(spec.trim());
  if (range) {
    const [a, step, b] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (step <= 0) throw new FigureSettingsError('bad_sizes', `${name}: step must be > 0 in ${spec}`);
    const out: number[] = [];
    for (let s = a; s <= b; s += step) out.push(s);
    return out;
  }
  const out = spec.split(',').map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < 0 || n > 65507)) throw new FigureSettingsError('bad_sizes', `${name}: bad list ${spec} (sizes 0..65507, comma list or START:STEP:END)`);
  return out;
}

/** The settings from <ID>_SIZES, _REPEATS, _SECONDS, _SYSTEMS, _OUT, _WARMUP, _WARMUP_TOLERANCE (and _DIRECTION), checked. */
export function readSettings(spec: FigureSpec, root: string, environ: NodeJS.ProcessEnv = process.env): FigureSettings {
  const P = spec.id.toUpperCase();
  const env = (k: string) => environ[`${P}_${k}`];
  const sizes = parseSizes(`${P}_SIZES`, env('SIZES') ?? '0:250:4000');
  const repeats = Number(env('REPEATS') ?? 20);
  const seconds = Number(env('SECONDS') ?? 1);
  const systems = (env('SYSTEMS') ?? (spec.defaultSystems ?? spec.systems).join(',')).split(',').map((s) => s.trim());
  if (!(repeats >= 1) || !(seconds > 0)) throw new FigureSettingsError('bad_repeats', `${P}_REPEATS must be >= 1 and ${P}_SECONDS > 0`);
  for (const s of systems) if (!spec.systems.includes(s)) throw new FigureSettingsError('bad_system', `${P}_SYSTEMS: unknown ${s} (known: ${spec.systems.join(', ')})`);
  let directions: (Direction | null)[] = [null];
  if (spec.directions) directions = parseDirection(`${P}_DIRECTION`, env('DIRECTION'));
  else if (env('DIRECTION') !== undefined) throw new FigureSettingsError('bad_direction', `${P}_DIRECTION: ${spec.id} has no directions (it is measured between two VMs); unset it`);
  const rounds = Number(env('WARMUP') ?? WARMUP_DEFAULTS.maxRounds);
  const tolerance = Number(env('WARMUP_TOLERANCE') ?? WARMUP_DEFAULTS.tolerance);
  if (!Number.isInteger(rounds) || rounds < 0 || rounds > 100) throw new FigureSettingsError('bad_warmup', `${P}_WARMUP must be an integer 0..100 (the most warm-up rounds; 0: none), not ${env('WARMUP')}`);
  if (!(tolerance > 0 && tolerance < 1)) throw new FigureSettingsError('bad_warmup', `${P}_WARMUP_TOLERANCE must be a fraction in (0, 1), not ${env('WARMUP_TOLERANCE')}`);
  const agree = Number(env('WARMUP_AGREE') ?? WARMUP_DEFAULTS.agree);
  if (!Number.isInteger(agree) || agree < 2 || agree > 10) throw new FigureSettingsError('bad_warmup', `${P}_WARMUP_AGREE must be an integer 2..10 (warm-up rounds in a row that agree), not ${env('WARMUP_AGREE')}`);
  const warmup = { maxRounds: rounds, tolerance, agree, seconds: Math.min(WARMUP_DEFAULTS.seconds, seconds) };
  return { sizes, repeats, seconds, systems, outDir: env('OUT') ?? join(root, 'bench-results'), directions, warmup };
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

/** Mean SDUs/s per size. */
function ppsMeans(r: SystemResult, sizes: number[]): Map<number, Summary> {
  return new Map(sizes.filter((s) => r.samples.has(s)).map((s) => [s, summarize(r.samples.get(s)!.map((m) => m.pps))]));
}

/** The CSV: one row per system, direction and size; the direction column only for figures that have directions. */
export function figureCsv(rows: readonly { key: string; direction: Direction | null; size: number; s: Summary }[], directional: boolean): string {
  const csv = [`system,size,mean_mbps,ci95_low,ci95_high,repeats${directional ? ',direction' : ''}`];
  for (const { key, direction, size, s } of rows) {
    csv.push(`${key},${size},${s.mean.toFixed(3)},${s.ciLow.toFixed(3)},${s.ciHigh.toFixed(3)},${s.n}${directional ? `,${direction ?? ''}` : ''}`);
  }
  return csv.join('\n') + '\n';
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

  /** The directions that have results, in the settings' order. */
  private measuredDirections(): (Direction | null)[] {
    return this.settings.directions.filter((d) => this.results.some((r) => r.direction === d));
  }

  /** Suffix of a direction's file and ratio names: none for the figure's first (default) direction. */
  private suffix(d: Direction | null, sep: string): string {
    return d === null || d === DIRECTIONS[0] ? '' : `${sep}${d}`;
  }

  private titles(d: Direction | null): { title: string; tableTitle: string } {
    return (d && this.spec.directions?.[d]) || { title: this.spec.title, tableTitle: this.spec.tableTitle };
  }

  /** Boot each system in turn, sweep it (every direction), power it off; outputs rewritten after each. */
  async run(makeSeries: (key: string) => Series): Promise<string[]> {
    const { sizes, repeats, seconds, systems, directions } = this.settings;
    this.startedAt = new Date();
    const total = systems.length * sizes.length * repeats * directions.length;
    const dirs = directions[0] === null ? '' : `; ${directions.join(' and ')}`;
    this.say(`${systems.join(', ')}${dirs}; sizes ${sizes.join(',')}; ${repeats} repeats × ${seconds} s: ${total} measurements`);
    let done = 0;
    for (const key of systems) {
      const series = makeSeries(key);
      const byDir = new Map<Direction | null, SystemResult>();
      for (const d of directions) {
        const r: SystemResult = { key: series.key, name: series.name, direction: d, samples: new Map() };
        byDir.set(d, r);
        this.results.push(r);
      }
      const measure = (size: number, secs: number, d: Direction | null) => (d === null ? series.measure(size, secs) : series.measure(size, secs, d));
      const t0 = Date.now();
      try {
        this.say(`${series.name}: booting the guests`);
        await series.start();
        this.say(`${series.name}: up after ${((Date.now() - t0) / 1000).toFixed(1)} s; warm-up (at most ${this.settings.warmup.maxRounds} rounds over the sizes, until steady within ${this.settings.warmup.tolerance * 100}%)`);
        for (const d of directions) {
          const w = await warmUp((size, secs) => measure(size, secs, d), sizes, this.settings.warmup, (s) => this.say(`${series.key}${d ? ` ${d}` : ''} ${s}`));
          byDir.get(d)!.warmup = w;
          if (!w.steady && w.rounds > 0) this.say(`${series.key}${d ? ` ${d}` : ''}: not steady after ${w.rounds} warm-up rounds; the first repeats may be colder`);
        }
        for (let rep = 1; rep <= repeats; rep++) {
          for (const d of directions) {
            const r = byDir.get(d)!;
            for (const size of sizes) {
              let m: Measurement;
              const what = `${series.key}${d ? ` ${d}` : ''}`;
              try {
                m = await measure(size, seconds, d);
              } catch (e) {
                this.say(`${what} size ${size}: ${(e as Error).message.split('\n')[0]}; retrying once`);
                m = await measure(size, seconds, d);
              }
              if (!r.samples.has(size)) r.samples.set(size, []);
              r.samples.get(size)!.push(m);
              done++;
              const sent = m.sentPps !== undefined ? `, sender ${Math.round(m.sentPps)}/s` : '';
              this.say(`${what} rep ${rep}/${repeats} size ${size}: ${m.mbps.toFixed(1)} Mb/s (${Math.round(m.pps)} SDU/s${sent}) [${done}/${total}]`);
            }
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
      settings: { sizes: number[]; repeats: number; secondsPerMeasurement: number; systems: string[]; directions?: (Direction | null)[] };
      systems: { key: string; name: string; direction?: Direction | null; points: { size: number; samples: Measurement[] }[] }[];
    }
    const saved = JSON.parse(readFileSync(path, 'utf8')) as Saved;
    // Files from before directions existed: a directional figure's were all host → VM.
    const old: Direction | null = this.spec.directions ? DIRECTIONS[0]! : null;
    this.settings = {
      ...this.settings,
      sizes: saved.settings.sizes,
      repeats: saved.settings.repeats,
      seconds: saved.settings.secondsPerMeasurement,
      systems: saved.settings.systems,
      directions: saved.settings.directions ?? [old],
    };
    this.results.push(...saved.systems.map((s) => ({ key: s.key, name: s.name, direction: s.direction ?? old, samples: new Map(s.points.map((p) => [p.size, p.samples])) })));
    this.startedAt = new Date(saved.date);
    this.durationSeconds = saved.durationSeconds;
    return this.write(true);
  }

  /** The Mb/s ratios of ours to every other system, per direction. */
  private mbpsRatios(): [string, ReturnType<typeof ratios>][] {
    const out: [string, ReturnType<typeof ratios>][] = [];
    for (const d of this.measuredDirections()) {
      const rs = this.results.filter((r) => r.direction === d);
      const ours = rs.find((r) => r.key === this.ours);
      if (!ours) continue;
      for (const r of rs) if (r !== ours) out.push([`${this.ours}/${r.key}${this.suffix(d, '@')}`, ratios(this.settings.sizes, this.summaries(ours), this.summaries(r))]);
    }
    return out;
  }

  /** The spec's ratioPairs on SDUs/s, per direction ("a/b@direction"), where both were measured. */
  private ppsRatios(): { name: string; a: string; b: string; direction: Direction | null; r: ReturnType<typeof ratios> }[] {
    const out: { name: string; a: string; b: string; direction: Direction | null; r: ReturnType<typeof ratios> }[] = [];
    for (const d of this.measuredDirections()) {
      for (const [a, b] of this.spec.ratioPairs ?? []) {
        const ra = this.results.find((r) => r.key === a && r.direction === d);
        const rb = this.results.find((r) => r.key === b && r.direction === d);
        if (!ra || !rb) continue;
        const { sizes } = this.settings;
        out.push({ name: `${a}/${b}${d ? `@${d}` : ''}`, a, b, direction: d, r: ratios(sizes, ppsMeans(ra, sizes), ppsMeans(rb, sizes)) });
      }
    }
    return out;
  }

  private write(done: boolean): string[] {
    const { id } = this.spec;
    const { sizes, repeats, seconds, systems, outDir, directions } = this.settings;
    mkdirSync(outDir, { recursive: true });
    const sums = new Map(this.results.map((r) => [r, this.summaries(r)]));
    const rows = this.results.flatMap((r) => [...sums.get(r)!].map(([size, s]) => ({ key: r.key, direction: r.direction, size, s })));
    writeFileSync(join(outDir, `${id}.csv`), figureCsv(rows, this.spec.directions !== undefined));
    const files = [join(outDir, `${id}.csv`)];
    for (const d of this.measuredDirections()) {
      const rs = this.results.filter((r) => r.direction === d);
      // Head room above the highest error bar so the legend (top left) does not hide points.
      const top = Math.max(1, ...rs.flatMap((r) => [...sums.get(r)!.values()].map((s) => (Number.isFinite(s.ciHigh) ? s.ciHigh : s.mean))));
      const yTicks = niceTicks(0, top * 1.3, 6);
      const svg = renderSvgPlot({
        yMin: 0,
        yMax: yTicks[yTicks.length - 1]!,
        title: this.titles(d).title,
        xLabel: this.spec.xLabel ?? 'SDU / UDP payload size (bytes)',
        yLabel: 'Goodput (Mb/s)',
        xMin: 0,
        series: rs.map((r) => ({
          name: r.name,
          color: this.spec.colors[r.key] ?? '#d62728',
          points: [...sums.get(r)!].map(([x, s]) => ({ x, y: s.mean, yLow: s.ciLow, yHigh: s.ciHigh })),
        })),
      });
      const file = join(outDir, `${id}${this.suffix(d, '-')}.svg`);
      writeFileSync(file, svg);
      files.push(file);
    }
    const directional = this.spec.directions !== undefined;
    const json = {
      date: this.startedAt.toISOString(),
      complete: done,
      durationSeconds: this.durationSeconds ?? (Date.now() - this.startedAt.getTime()) / 1000,
      settings: { sizes, repeats, secondsPerMeasurement: seconds, systems, guest: this.spec.guest, ...(directional ? { directions } : {}), warmup: this.settings.warmup },
      systems: this.results.map((r) => {
        const pts = [...sums.get(r)!].map(([x, s]) => ({ x, y: s.mean }));
        return {
          key: r.key,
          name: r.name,
          ...(directional ? { direction: r.direction } : {}),
          ...(r.warmup ? { warmup: r.warmup } : {}),
          regression: linearRegression(pts),
          points: [...sums.get(r)!].map(([size, s]) => ({
            size,
            ...s,
            meanPps: summarize(r.samples.get(size)!.map((m) => m.pps)).mean,
            meanSenderPps: summarize(r.samples.get(size)!.map((m) => m.sentPps ?? Number.NaN)).mean,
            samples: r.samples.get(size),
          })),
        };
      }),
      ratios: Object.fromEntries(this.mbpsRatios().map(([k, q]) => [k, { perSize: Object.fromEntries(q.perSize), geomean: q.geomean, ofMeans: q.ofMeans }])),
      ...(this.spec.ratioPairs ? { sduRateRatios: Object.fromEntries(this.ppsRatios().map((p) => [p.name, { perSize: Object.fromEntries(p.r.perSize), geomean: p.r.geomean }])) } : {}),
    };
    writeFileSync(join(outDir, `${id}.json`), JSON.stringify(json, null, 2) + '\n');
    files.push(join(outDir, `${id}.json`));
    return files;
  }

  printTable(): void {
    for (const d of this.measuredDirections()) this.printDirection(d);
    const pairs = this.ppsRatios();
    if (pairs.length) {
      const { sizes } = this.settings;
      console.log('\nSDU-rate ratios (SDUs/s of a / SDUs/s of b at the same size and direction):');
      console.log(['ratio'.padEnd(40), ...sizes.map((s) => String(s).padStart(8)), 'geomean'.padStart(9)].join(' '));
      for (const p of pairs) {
        console.log([p.name.padEnd(40), ...sizes.map((s) => f2(p.r.perSize.get(s) ?? Number.NaN).padStart(8)), f2(p.r.geomean).padStart(9)].join(' '));
      }
    }
  }

  private printDirection(d: Direction | null): void {
    const { sizes, repeats, seconds } = this.settings;
    const rs = this.results.filter((r) => r.direction === d);
    const sums = new Map(rs.map((r) => [r.key, this.summaries(r)]));
    const ours = sums.get(this.ours);
    const short = this.ours.replace(/-dif$/, '');
    const others = rs.filter((r) => r.key !== this.ours);
    const q = new Map(others.filter(() => ours).map((r) => [r.key, ratios(sizes, ours!, sums.get(r.key)!)]));
    console.log(`\n${this.titles(d).tableTitle} (Mb/s, mean [95% CI], ${repeats} × ${seconds} s per point, measured at the receiver)`);
    const cols = rs.map((r) => r.key);
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
    console.log(['size'.padStart(5), ...cols.map((c) => c.padStart(13))].join(' '));
    for (const size of sizes) {
      const cells = [String(size).padStart(5)];
      for (const r of rs) {
        const ms = r.samples.get(size);
        cells.push((ms ? Math.round(summarize(ms.map((m) => m.pps)).mean).toString() : '-').padStart(13));
      }
      console.log(cells.join(' '));
    }
    console.log('\nFirst-degree regression of the means (Mb/s = a·size + b):');
    for (const r of rs) {
      const reg = linearRegression([...sums.get(r.key)!].map(([x, s]) => ({ x, y: s.mean })));
      if (reg) console.log(`  ${r.name}: a = ${reg.slope.toFixed(4)}, b = ${reg.intercept.toFixed(1)}, R² = ${reg.r2.toFixed(3)}`);
    }
  }
}
