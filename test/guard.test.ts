/**
 * guard.test.ts — the process guard of `vmpi serve` / `vmpi guest` (src/ops/guard.ts): an
 * exception thrown from a timer, an I/O callback or a rejected promise that no layer contained is
 * logged and counted, and the process keeps running. Run in a child process, because the point is
 * what happens to the process itself; without the guard the same child exits 1 at the first throw.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');

function runChild(withGuard: boolean): { status: number | null; stdout: string; stderr: string } {
  const guard = resolve(ROOT, 'src/ops/guard.ts');
  const log = resolve(ROOT, 'src/sys/log.ts');
  const js = `
    const { installProcessGuard, uncaughtCount } = await import(${JSON.stringify(guard)});
    const { logger } = await import(${JSON.stringify(log)});
    if (${withGuard}) installProcessGuard(logger);
    const fs = await import('node:fs');
    setTimeout(() => { throw new Error('boom in a timer'); }, 5);
    setTimeout(() => { Promise.reject(new Error('boom in a promise')); }, 10);
    setTimeout(() => fs.stat('/', () => { throw Object.assign(new Error('boom in an I/O callback'), { code: 'EBOOM' }); }), 15);
    setTimeout(() => { console.log('alive after', uncaughtCount()); }, 200);
  `;
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'error' };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', js], { env, encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('without the guard the first throw ends the process (the test can fail)', async (t) => {
  const r = runChild(false);
  t.equal(r.status, 1);
  t.equal(r.stdout, '', 'it never got to say it is alive');
  // It died of the first throw, not of something else (a module that failed to load would also exit 1).
  t.match(r.stderr, /^Error: boom in a timer$/m, r.stderr);
  t.notMatch(r.stderr, /boom in a promise|boom in an I\/O callback/, 'nothing after the first throw ran');
});

t.test('with the guard: timer, promise and I/O callback throws are logged, counted and survived', async (t) => {
  const r = runChild(true);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, 'alive after 3\n', 'all three reached the guard and the process went on');
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; kind: string; err: { message: string; code?: string } });
  t.same(lines.map((l) => [l.level, l.kind, l.err.message]), [
    [50, 'uncaught exception', 'boom in a timer'],
    [50, 'unhandled rejection', 'boom in a promise'],
    [50, 'uncaught exception', 'boom in an I/O callback'],
  ], 'each logged at error level with its message');
  t.equal(lines[2]!.err.code, 'EBOOM', 'and its code');
});
