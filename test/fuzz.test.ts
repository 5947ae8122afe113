/**
 * fuzz.test.ts — every fuzz target (test/fuzz/targets) for a bounded time in CI: first a fixed
 * seed for a fixed number of cases (the same cases on every run, regressions first), then a
 * fresh random seed for a few seconds (printed, so a failure can be replayed). Each target runs
 * in a child process (test/fuzz/parent.ts), so a crash or a hang fails only its own subtest.
 * `npm run fuzz` runs the same targets for longer. Total: about 6 × (2 + 3) s plus start-up.
 */
import t from 'tap';
import { runChild } from './fuzz/parent.js';
import type { FuzzResult } from './fuzz/runner.js';
import { TARGETS } from './fuzz/targets/index.js';

const FIXED_SEED = 20261201;
/** Cases with the fixed seed (bounded by time too, in case a machine is slow). */
const FIXED_RUNS = Number(process.env.FUZZ_CI_RUNS ?? 300);
const RANDOM_SECONDS = Number(process.env.FUZZ_CI_SECONDS ?? 3);

function report(r: FuzzResult): string {
  const f = r.failure;
  if (!f) return '';
  return [
    `${r.target}: ${f.error}`,
    `replay: npx tsx test/fuzz/child.ts ${r.target} --seed ${f.seed}${f.path ? ` --path ${f.path}` : ''} --trace`,
    `input: ${f.input}`,
    f.stack ?? '',
  ].join('\n');
}

for (const name of TARGETS.keys()) {
  t.test(name, async (t) => {
    const fixed = await runChild(name, { seconds: 10, runs: FIXED_RUNS, seed: FIXED_SEED, graceSeconds: 20 });
    t.equal(fixed.failures, 0, `fixed seed ${FIXED_SEED}: ${fixed.executions} cases${fixed.failure ? `\n${report(fixed)}` : ''}`);
    t.ok(fixed.executions >= Math.min(FIXED_RUNS, 50), `ran the fixed cases (${fixed.executions})`);
    const seed = (Math.random() * 2 ** 31) | 0;
    const random = await runChild(name, { seconds: RANDOM_SECONDS, seed, graceSeconds: 20 });
    t.equal(random.failures, 0, `random seed ${seed}: ${random.executions} cases in ${random.seconds} s${random.failure ? `\n${report(random)}` : ''}`);
  });
}
