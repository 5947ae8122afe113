/**
 * compare.ts — the arithmetic of interleaved comparisons and soak runs, kept pure so a test can
 * check it: the median, the ratio of two interleaved series with its spread (each pair measured
 * back to back, under the same load), and the least-squares slope of a sampled series (RSS over
 * time). No timing and no I/O here.
 */

export class CompareError extends Error {
  override name = 'CompareError';
  constructor(
    readonly code: 'empty' | 'unpaired' | 'bad_value',
    message: string,
  ) {
    super(message);
  }
}

/** The median (the mean of the middle two for an even count). Throws on an empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new CompareError('empty', 'median of no values: measure at least once');
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface PairedRatio {
  /** Pairs in which both sides measured something (a failed run on either side drops its pair). */
  pairs: number;
  oursMedian: number;
  theirsMedian: number;
  /** median(ours) ÷ median(theirs): the headline figure. */
  ratio: number;
  /** ours[i] ÷ theirs[i] for each pair, in run order. */
  pairRatios: number[];
  /** The spread: the smallest and largest per-pair ratio, and their median. */
  min: number;
  max: number;
  pairMedian: number;
}

/**
 * The ratio of two series measured alternately (pair i = ours[i] and theirs[i], back to back).
 * A null or non-positive value on either side (a run that measured nothing) drops that pair;
 * null when no pair is left.
 */
export function pairedRatio(ours: readonly (number | null)[], theirs: readonly (number | null)[]): PairedRatio | null {
  if (ours.length !== theirs.length) throw new CompareError('unpaired', `${ours.length} runs of ours against ${theirs.length} of theirs: the series must alternate, one each per pair`);
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < ours.length; i++) {
    const x = ours[i];
    const y = theirs[i];
    if (x === null || x === undefined || y === null || y === undefined || !(x > 0) || !(y > 0)) continue;
    a.push(x);
    b.push(y);
  }
  if (a.length === 0) return null;
  const pairRatios = a.map((x, i) => x / b[i]!);
  const oursMedian = median(a);
  const theirsMedian = median(b);
  return {
    pairs: a.length,
    oursMedian,
    theirsMedian,
    ratio: oursMedian / theirsMedian,
    pairRatios,
    min: Math.min(...pairRatios),
    max: Math.max(...pairRatios),
    pairMedian: median(pairRatios),
  };
}

export interface Trend {
  n: number;
  start: number;
  peak: number;
  end: number;
  /** Least-squares slope, value units per x unit (e.g. bytes per second). 0 for one sample. */
  slope: number;
}

/** Start, peak, end and least-squares slope of samples (x, e.g. seconds; y, e.g. RSS bytes). */
export function trend(samples: readonly { x: number; y: number }[]): Trend {
  const n = samples.length;
  if (n === 0) throw new CompareError('empty', 'no samples: the soak ended before its first sample');
  for (const s of samples) if (!Number.isFinite(s.x) || !Number.isFinite(s.y)) throw new CompareError('bad_value', `sample (${s.x}, ${s.y}) is not a pair of finite numbers`);
  const mx = samples.reduce((a, s) => a + s.x, 0) / n;
  const my = samples.reduce((a, s) => a + s.y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const s of samples) {
    sxy += (s.x - mx) * (s.y - my);
    sxx += (s.x - mx) ** 2;
  }
  return { n, start: samples[0]!.y, peak: Math.max(...samples.map((s) => s.y)), end: samples[n - 1]!.y, slope: sxx > 0 ? sxy / sxx : 0 };
}
