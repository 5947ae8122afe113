/**
 * warmup.ts — the warm-up of a figure's series before its measured repeats (figure.ts): rounds of
 * one short run per size, until every size's rate is steady (within `tolerance` of the round
 * before) or `maxRounds` rounds ran. A Node guest under TCG runs its data path cold (interpreted,
 * then JIT tiers) for several seconds of traffic: Fig. 4c's normal DIF went 7.0k → 15.8k → 30.5k
 * SDU/s at 250 B in its first three 1 s runs, so one 1 s run at one size (the warm-up before this)
 * left the first repeats cold and the repeats not comparable. A failed warm-up run counts as not
 * steady; the measured runs then say whether the series works.
 */
import type { Measurement } from './series.js';

export interface WarmupOptions {
  /** Most rounds (0: no warm-up). */
  maxRounds: number;
  /** Steady: |rate − previous| ≤ tolerance × the larger of the two, for every size. */
  tolerance: number;
  /** Window of each warm-up run. */
  seconds: number;
}

export interface WarmupResult {
  rounds: number;
  steady: boolean;
  /** SDUs/s per round, per size (NaN: the run failed). */
  rates: number[][];
}

export const WARMUP_DEFAULTS: Readonly<WarmupOptions> = Object.freeze({ maxRounds: 6, tolerance: 0.1, seconds: 1 });

/** Warm `measure` up over `sizes` (see the header); each round said through `say`. */
export async function warmUp(measure: (size: number, seconds: number) => Promise<Measurement>, sizes: readonly number[], o: WarmupOptions, say: (s: string) => void): Promise<WarmupResult> {
  const rates: number[][] = [];
  let steady = false;
  for (let round = 1; round <= o.maxRounds && !steady; round++) {
    const r: number[] = [];
    for (const size of sizes) {
      try {
        r.push((await measure(size, o.seconds)).pps);
      } catch (e) {
        say(`warm-up round ${round} size ${size}: ${(e as Error).message.split('\n')[0]}`);
        r.push(Number.NaN);
      }
    }
    const prev = rates[rates.length - 1];
    steady = prev !== undefined && r.every((v, i) => Number.isFinite(v) && Number.isFinite(prev[i]!) && Math.abs(v - prev[i]!) <= o.tolerance * Math.max(v, prev[i]!));
    rates.push(r);
    say(`warm-up round ${round}/${o.maxRounds}: ${sizes.map((s, i) => `${s} B ${Math.round(r[i]!)}/s`).join(', ')}${steady ? ' (steady)' : ''}`);
  }
  return { rounds: rates.length, steady, rates };
}
