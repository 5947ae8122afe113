/**
 * child.ts — runs ONE fuzz target in this process and prints its result as the last stdout line
 * (JSON). run.ts and test/fuzz.test.ts start one child per target, so a target that crashes the
 * process (a native abort, SIGBUS) or hangs it (a loop that never yields) is seen by the parent,
 * which kills it after its budget and reports the seed to replay.
 *
 *   tsx test/fuzz/child.ts TARGET [--seconds N] [--runs N] [--seed N [--path P]] [--trace]
 *
 * An exception that reaches the process (uncaughtException / unhandledRejection: something a
 * callback, timer or promise of the code under test threw) is a failure of the running target.
 */
import { runTarget, type FuzzResult, type RunOptions } from './runner.js';
import { TARGETS } from './targets/index.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const name = process.argv[2] ?? '';
const make = TARGETS.get(name);
if (!make) {
  process.stderr.write(`unknown fuzz target "${name}"; known: ${[...TARGETS.keys()].join(', ')}\n`);
  process.exit(2);
}
const opts: RunOptions = {
  seconds: Number(arg('seconds') ?? process.env.FUZZ_SECONDS ?? 60),
  runs: arg('runs') !== undefined ? Number(arg('runs')) : undefined,
  seed: arg('seed') !== undefined ? Number(arg('seed')) : undefined,
  path: arg('path'),
  maxRssMb: process.env.FUZZ_MAX_RSS_MB ? Number(process.env.FUZZ_MAX_RSS_MB) : undefined,
  trace: process.argv.includes('--trace'),
};

let reported = false;
function report(r: FuzzResult): void {
  if (reported) return;
  reported = true;
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
function escaped(kind: string, e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  report({
    target: name,
    seed: opts.seed ?? -1,
    executions: -1,
    seconds: -1,
    failures: 1,
    rejected: -1,
    maxRssMb: Math.round(process.memoryUsage.rss() / 2 ** 20),
    failure: { seed: opts.seed ?? -1, path: null, error: `${kind}: ${err.name}: ${err.message}`, stack: err.stack?.split('\n').slice(0, 12).join('\n'), input: '(rerun with --trace to see the input)' },
  });
  process.exit(1);
}
process.on('uncaughtException', (e) => escaped('uncaughtException', e));
process.on('unhandledRejection', (e) => escaped('unhandledRejection', e));

const target = await make();
const result = await runTarget(target, opts);
report(result);
process.exit(result.failures > 0 ? 1 : 0);
