/**
 * runner.ts — the shared fuzz runner: one target = one fast-check property over hostile input.
 *
 * Owns: the `FuzzTarget` contract, running a target for a time budget or a number of cases with
 * a seed, and the property every target shares:
 *   - only the target's expected, typed errors escape (anything else is a failure);
 *   - no case takes longer than `caseTimeoutMs` (a slow case is a failure; a real infinite loop
 *     is caught by the parent process's watchdog, see child.ts / run.ts);
 *   - the process's RSS stays under `maxRssMb` (sampled every few cases);
 *   - the target's own invariants hold (it throws `InvariantError`).
 * Known regressions (`examples`) run first, every time. Results are plain JSON.
 *
 * Why fast-check and not a coverage-guided fuzzer: Jazzer.js' prebuilt addon needs a newer glibc
 * than Debian 12's and its source build downloads libFuzzer; fast-check is pure JavaScript, keeps
 * shrinking and replay (seed + path), and runs at a high case count here.
 */
import fc from 'fast-check';

/** A target's own check failed: the input was accepted but the result is wrong. */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

export interface FuzzTarget<T> {
  readonly name: string;
  /** One line: what is fed to what. */
  readonly description: string;
  readonly arbitrary: fc.Arbitrary<T>;
  /** Run one case; may throw an expected error (see `expected`) or resolve. */
  run(input: T): void | Promise<void>;
  /** True for the typed errors the code under test is allowed to throw for bad input. */
  expected(err: unknown): boolean;
  /** Inputs that once failed: replayed before the random cases. */
  readonly examples?: readonly T[];
  /** Per-case bound (default 1000 ms). */
  readonly caseTimeoutMs?: number;
  /** Called once before the first case / after the last (resources shared by cases). */
  setup?(): void | Promise<void>;
  teardown?(): void | Promise<void>;
  /** Counts of how cases ended, for the report (what the generator reaches). */
  outcomes?(): Record<string, number>;
  /** Short printable form of an input for failure reports (default: fc.stringify, cut). */
  show?(input: T): string;
}

export interface RunOptions {
  /** Time budget in seconds (default 60). */
  seconds?: number;
  /** Stop after this many cases (default: unbounded, until `seconds`). */
  runs?: number;
  seed?: number;
  /** fast-check counterexample path (with `seed`): replay that one case. */
  path?: string;
  /** RSS ceiling in MiB (default 1536). */
  maxRssMb?: number;
  /** Print every input before running it (to find the case that hangs). */
  trace?: boolean;
}

export interface FuzzFailure {
  seed: number;
  path: string | null;
  error: string;
  stack?: string;
  input: string;
}

export interface FuzzResult {
  target: string;
  seed: number;
  executions: number;
  seconds: number;
  failures: number;
  /** Cases that ended in an expected typed error (the rest were accepted). */
  rejected: number;
  maxRssMb: number;
  /** The expected errors seen, by class and code (or reason), with counts: what the cases hit. */
  errorKinds?: Record<string, number>;
  outcomes?: Record<string, number>;
  failure?: FuzzFailure;
}

/** "ProtocolError", "ControlMessageError[bad_name]", "DifError[rejected]": class and discriminator. */
function errorKind(e: unknown): string {
  if (!(e instanceof Error)) return typeof e;
  const o = e as { code?: unknown; reason?: unknown };
  const tag = typeof o.code === 'string' ? o.code : typeof o.reason === 'string' ? o.reason : undefined;
  return tag === undefined ? e.name : `${e.name}[${tag}]`;
}

function describeError(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${e.name}${code !== undefined ? `[${String(code)}]` : ''}: ${e.message}`;
  }
  return `non-Error thrown: ${String(e)}`;
}

function showInput<T>(t: FuzzTarget<T>, input: T): string {
  const s = t.show ? t.show(input) : fc.stringify(input);
  return s.length > 4000 ? `${s.slice(0, 4000)}… (${s.length} chars)` : s;
}

/** Run `target` under the shared property; never throws for a failing target (see `failure`). */
export async function runTarget<T>(target: FuzzTarget<T>, opts: RunOptions = {}): Promise<FuzzResult> {
  const seconds = opts.seconds ?? 60;
  const seed = opts.seed ?? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const maxRss = (opts.maxRssMb ?? 1536) * 1024 * 1024;
  const caseTimeoutMs = target.caseTimeoutMs ?? 1000;
  let executions = 0;
  let rejected = 0;
  const kinds = new Map<string, number>();
  let peakRss = process.memoryUsage.rss();

  const check = (input: T, started: number): void => {
    const ms = performance.now() - started;
    if (ms > caseTimeoutMs) throw new InvariantError(`case took ${ms.toFixed(0)} ms, above the ${caseTimeoutMs} ms bound`);
    if (executions % 64 === 0) {
      const rss = process.memoryUsage.rss();
      if (rss > peakRss) peakRss = rss;
      if (rss > maxRss) throw new InvariantError(`RSS ${(rss / 2 ** 20).toFixed(0)} MiB is above the ${(maxRss / 2 ** 20).toFixed(0)} MiB bound`);
    }
    void input;
  };
  const onError = (e: unknown): void => {
    if (e instanceof InvariantError || !target.expected(e)) throw e;
    rejected++;
    const k = errorKind(e);
    kinds.set(k, (kinds.get(k) ?? 0) + 1);
  };

  const predicate = async (input: T): Promise<void> => {
    executions++;
    if (opts.trace) process.stderr.write(`[fuzz ${target.name}] case ${executions}: ${showInput(target, input)}\n`);
    const started = performance.now();
    try {
      await target.run(input);
    } catch (e) {
      onError(e);
    }
    check(input, started);
  };

  await target.setup?.();
  const t0 = performance.now();
  let details: fc.RunDetails<[T]>;
  try {
    details = await fc.check(fc.asyncProperty(target.arbitrary, predicate), {
      seed,
      path: opts.path,
      numRuns: opts.runs ?? 2 ** 31 - 1,
      examples: (target.examples ?? []).map((e) => [e] as [T]),
      plugins: [fc.interruptAfterTimeLimit(seconds * 1000)],
      endOnFailure: false,
    }) as fc.RunDetails<[T]>;
  } finally {
    await target.teardown?.();
  }
  const elapsed = (performance.now() - t0) / 1000;
  const result: FuzzResult = {
    target: target.name,
    seed,
    executions,
    seconds: Math.round(elapsed * 10) / 10,
    failures: details.failed && details.counterexample !== null ? 1 : 0,
    rejected,
    maxRssMb: Math.round(peakRss / 2 ** 20),
    errorKinds: Object.fromEntries([...kinds].sort((a, b) => b[1] - a[1])),
    outcomes: target.outcomes?.(),
  };
  if (details.failed && details.counterexample) {
    const err = details.errorInstance;
    result.failure = {
      seed: details.seed,
      path: details.counterexamplePath,
      error: describeError(err),
      stack: err instanceof Error ? err.stack?.split('\n').slice(0, 12).join('\n') : undefined,
      input: showInput(target, details.counterexample[0]),
    };
  }
  return result;
}
