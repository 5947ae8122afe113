/**
 * warmup.ts — the warm-up of a figure's series before its measured repeats (figure.ts): rounds of
 * one short run per size, until every size's rate is steady (the last `agree` rounds within
 * `tolerance` of each other) or `maxRounds` rounds ran. A Node guest under TCG runs its data path cold (interpreted,
 * then JIT tiers) for several seconds of traffic: Fig. 4c's normal DIF went 7.0k → 15.8k → 30.5k
 * SDU/s at 250 B in its first three 1 s runs, so one 1 s run at one size (the warm-up before this)
 * left the first repeats cold and the repeats not comparable. A failed warm-up run counts as not
 * steady; the measured runs then say whether the series works.
 *
 * Two rounds in a row that agree were not enough: a TCG guest's JIT warms up in steps, so two
 * runs on a plateau passed for steady while the repeats after them kept rising (Fig. 4b, normal
 * DIF at 1000 B: warm-up 8.8k, 7.7k (steady) ... then repeats 23k, 40k, 41k, 35k, 47k SDU/s;
 * another boot: 17.2k, 15.6k (steady), then 23k ... 29k). Three in a row (`agree`), within at most
 * 12 rounds, measure what the system does once warm; a system that is warm at once (a kernel NIC)
 * takes three rounds.
 */
import type { Measurement } from './series.js';

export interface WarmupOptions {
  /** Most rounds (0: no warm-up). */
  maxRounds: number;
  /** Steady: max − min of the last `agree` rounds' rates ≤ tolerance × max, for every size. */
  tolerance: number;
  /** Rounds in a row that must agree (≥ 2). */
  agree: number;
  /** Window of each warm-up run. */
  seconds: number;
}

export interface WarmupResult {
  rounds: number;
  steady: boolean;
  /** SDUs/s per round, per size (NaN: the run failed). */
  rates: number[][];
}

export const WARMUP_DEFAULTS: Readonly<WarmupOptions> = Object.freeze({ maxRounds: 12, tolerance: 0.1, agree: 3, seconds: 1 });

/** Whether the last `agree` rounds of `rates` agree within `tolerance` for every size (a failed run, NaN, never does). */
export function roundsAgree(rates: readonly number[][], agree: number, tolerance: number): boolean {
  if (rates.length < agree) return false;
  const last = rates.slice(-agree);
  return last[0]!.every((_, i) => {
    const v = last.map((r) => r[i]!);
    if (!v.every(Number.isFinite)) return false;
    const hi = Math.max(...v);
    return hi - Math.min(...v) <= tolerance * hi;
  });
}

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
    rates.push(r);
    steady = roundsAgree(rates, o.agree, o.tolerance);
    say(`warm-up round ${round}/${o.maxRounds}: ${sizes.map((s, i) => `${s} B ${Math.round(r[i]!)}/s`).join(', ')}${steady ? ' (steady)' : ''}`);
  }
  return { rounds: rates.length, steady, rates };
}
