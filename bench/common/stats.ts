/**
 * stats.ts — mean and 95% confidence interval of repeated measurements (Student's t, two-sided),
 * as the paper's Fig. 4a shows them.
 */

/** t_{0.975, df} for df = 1..30. */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101,
  2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** Two-sided 95% Student t quantile for `df` degrees of freedom. */
export function t975(df: number): number {
  if (df < 1) return Number.NaN;
  if (df <= 30) return T975[df - 1]!;
  // Beyond the table: the normal quantile with the usual first-order correction (< 0.1% off).
  return 1.959964 + 2.4 / df;
}

export interface Summary {
  n: number;
  mean: number;
  /** Sample standard deviation (n − 1); 0 for a single value. */
  sd: number;
  ciLow: number;
  ciHigh: number;
}

/** Mean and 95% CI; with one value the interval is the value itself. */
export function summarize(values: readonly number[]): Summary {
  const n = values.length;
  if (n === 0) return { n, mean: Number.NaN, sd: Number.NaN, ciLow: Number.NaN, ciHigh: Number.NaN };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0;
  const half = n > 1 ? (t975(n - 1) * sd) / Math.sqrt(n) : 0;
  return { n, mean, sd, ciLow: mean - half, ciHigh: mean + half };
}
