/**
 * run.ts — `npm run fuzz`: every fuzz target (or those named) for FUZZ_SECONDS each (default 60),
 * one after the other in child processes; prints a table (target, executions, seconds, failures)
 * and each failure with its seed, and writes bench-results/fuzz.json. Exit code 1 on a failure.
 *
 *   FUZZ_SECONDS=300 npm run fuzz               # longer
 *   npm run fuzz -- vhost-user config           # some targets
 *   FUZZ_SEED=1234 npm run fuzz -- virtqueue    # replay a seed
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable, runChild } from './parent.js';
import type { FuzzResult } from './runner.js';
import { TARGETS } from './targets/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const seconds = Number(process.env.FUZZ_SECONDS ?? 60);
const names = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const n of names) {
  if (!TARGETS.has(n)) {
    process.stderr.write(`unknown fuzz target "${n}"; known: ${[...TARGETS.keys()].join(', ')}\n`);
    process.exit(2);
  }
}
const targets = names.length ? names : [...TARGETS.keys()];
const results: FuzzResult[] = [];
for (const t of targets) {
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Math.random() * 2 ** 31) | 0;
  process.stderr.write(`[fuzz] ${t}: ${seconds} s, seed ${seed}\n`);
  const r = await runChild(t, { seconds, seed });
  results.push(r);
  if (r.failure) process.stderr.write(`[fuzz] ${t} FAILED: ${r.failure.error}\n`);
}
process.stdout.write(`${formatTable(results)}\n`);
for (const r of results) {
  if (!r.failure) continue;
  const f = r.failure;
  process.stdout.write(`\n${r.target}: ${f.error}\n  replay: tsx test/fuzz/child.ts ${r.target} --seed ${f.seed}${f.path ? ` --path ${f.path}` : ''} --trace\n  input: ${f.input}\n${f.stack ? `${f.stack.replace(/^/gm, '  ')}\n` : ''}`);
}
const file = join(root, 'bench-results', 'fuzz.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, tool: 'fast-check', secondsPerTarget: seconds, results }, null, 2)}\n`);
process.stderr.write(`[fuzz] wrote ${file}\n`);
process.exit(results.some((r) => r.failures > 0) ? 1 : 0);
