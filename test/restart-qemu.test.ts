/**
 * restart-qemu.test.ts — the back-end restarts under live VMs (QEMU 10, TCG) and the guests
 * never notice: `vmpi serve` (its default keeper mode, src/ops/restart/keeper.ts) serves two
 * VMs; each guest streams SDUs through an echo channel (`vmpi-perf stream`: guest → host →
 * guest, counted per SDU); the worker is killed with SIGKILL in the middle of the streams, three
 * times in a row; then the code is upgraded (a copy of the build with another version string,
 * SIGHUP), and an upgrade to code that cannot read the state (another state format version) is
 * refused while the running worker keeps serving.
 *
 * Asserted each time: the streams go on by themselves; no SDU fails its pattern; SDUs lost
 * (host → guest SDUs that were only in the dead worker's memory) and duplicated (guest → host
 * chains delivered but not completed, replayed after the rewind) stay within the bounds
 * src/ops/restart/worker.ts documents; QEMU logs no vhost-user error; the guest driver logs
 * nothing (no reset, no reload). The restart window is printed per kill, as the host sees it
 * (SIGKILL → connection resumed) and as the guest sees it (longest gap between two SDUs).
 *
 * Runs the built code (dist/, which scripts/bootstrap.sh builds before the tests), as a service
 * would. Needs the guest artefacts; in CI their absence is a failure.
 */
import t from 'tap';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guest, ROOT, guestUnavailable } from './helpers/guest.js';
import { ECHO_CHANNEL, RestartStreams, VHOST_ERRORS } from './helpers/restart-streams.js';
import { until } from './helpers/serve.js';
import { startServe, workerPid } from './helpers/restart.js';

const unavailable = guestUnavailable() ?? (existsSync(join(ROOT, 'dist/src/cli.js')) ? null : 'dist/ is not built (npm run build)');
if (unavailable && process.env.CI) t.fail(`restart tests cannot run in CI: ${unavailable}`);

/** A copy of the built code that a test may change ("install a new version"). */
function appCopy(dir: string, name: string): string {
  const app = join(dir, name);
  cpSync(join(ROOT, 'dist'), join(app, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
  symlinkSync(join(ROOT, 'build'), join(app, 'build'));
  return app;
}

function setVersion(app: string, version: string): void {
  const p = join(app, 'package.json');
  const pkg = JSON.parse(readFileSync(p, 'utf8')) as { version: string };
  pkg.version = version;
  writeFileSync(p, JSON.stringify(pkg));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('kill -9 of the worker ×3, an upgrade and a refused upgrade, under two live VMs', { skip: unavailable ?? false, timeout: 600_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-restart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const app = appCopy(dir, 'app');
  setVersion(app, '0.0.0-a');
  const s1 = join(dir, 'vm1.sock');
  const s2 = join(dir, 'vm2.sock');
  const serve = startServe(join(app, 'dist/src/cli.js'), ['--socket', s1, '--vmpi-id', '1', '--socket', s2, '--vmpi-id', '2', '--echo-channel', String(ECHO_CHANNEL), '--no-ipc', '--metrics-listen', '127.0.0.1:0']);
  t.teardown(() => {
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  });
  await until('both sockets', () => existsSync(s1) && existsSync(s2), 30_000, serve.log);
  const g1 = new Guest({ sockets: [s1], timeoutMs: 540_000, name: 'vmpi-restart-1' });
  t.teardown(() => g1.kill());
  const g2 = new Guest({ sockets: [s2], timeoutMs: 540_000, name: 'vmpi-restart-2' });
  t.teardown(() => g2.kill());
  await Promise.all([g1.agentReady(), g2.agentReady()]);
  await until('both guest drivers up', () => serve.lines('guest driver up').length >= 2, 60_000, serve.log);
  const guests = [g1, g2];
  const dmesgBefore = await Promise.all(guests.map((g) => g.exec('dmesg | grep -ci vmpi')));

  const rs = new RestartStreams(t, guests, async () => serve.log());
  await rs.warmUp();
  const round = (what: string, act: () => Promise<{ hostWindowMs: number | null }>, maxLost?: number) => rs.round(what, act, maxLost);

  const kill = async (): Promise<{ hostWindowMs: number }> => {
    const resumedBefore = serve.lines('front-end connection resumed').length;
    const pid = workerPid(serve.child.pid!);
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    await until('both connections resumed', () => serve.lines('front-end connection resumed').length >= resumedBefore + 2, 30_000, serve.log);
    const resumed = serve.lines('front-end connection resumed').slice(resumedBefore);
    const last = Math.max(...resumed.map((j) => Date.parse(String(j.time))));
    t.not(workerPid(serve.child.pid!), pid, 'a new worker runs');
    return { hostWindowMs: last - t0 };
  };

  for (let k = 1; k <= 3; k++) await round(`kill -9 #${k}`, kill);

  // Upgrade: the code on disk changes (another version), SIGHUP: the new code checks it can
  // read the state, the old worker hands over (exit 75), the keeper starts the new code.
  setVersion(app, '0.0.0-b');
  await round('upgrade to B', async () => {
    const resumedBefore = serve.lines('front-end connection resumed').length;
    const t0 = Date.now();
    process.kill(serve.child.pid!, 'SIGHUP');
    await until('the upgrade resumed both connections', () => serve.lines('front-end connection resumed').length >= resumedBefore + 2, 60_000, serve.log);
    const last = Math.max(...serve.lines('front-end connection resumed').slice(resumedBefore).map((j) => Date.parse(String(j.time))));
    return { hostWindowMs: last - t0 };
  }, 0); // a hand-over: the device backlogs go with it, nothing is lost
  t.ok(serve.lines('resuming from the state the last worker left').some((j) => j.writtenBy === '0.0.0-a'), 'version B resumed the state version A wrote');

  // An upgrade to code that reads another state format: refused, the running worker stays.
  const docJs = join(app, 'dist/src/ops/restart/document.js');
  writeFileSync(docJs, readFileSync(docJs, 'utf8').replace(/DOCUMENT_VERSION = 1\b/, 'DOCUMENT_VERSION = 99'));
  const before = workerPid(serve.child.pid!);
  const res = await round('refused upgrade', async () => {
    const refusedBefore = serve.lines('upgrade refused by the new code; this worker keeps serving').length;
    process.kill(serve.child.pid!, 'SIGHUP');
    await until('the refusal', () => serve.lines('upgrade refused by the new code; this worker keeps serving').length > refusedBefore, 60_000, serve.log);
    return { hostWindowMs: null };
  });
  t.equal(workerPid(serve.child.pid!), before, 'the same worker keeps serving');
  for (const [i, r] of res.entries()) t.same([r.lost, r.dup], ['0', '0'], `refused upgrade, VM${i + 1}: not even a pause's loss`);
  const refusal = serve.lines('upgrade refused by the new code; this worker keeps serving').at(-1)!;
  t.match(String(refusal.said), /format version 1 .*reads version 99 only/, 'the refusal says which versions');

  t.comment(rs.table());
  const dmesgAfter = await Promise.all(guests.map((g) => g.exec('dmesg | grep -ci vmpi')));
  for (const [i, g] of guests.entries()) {
    t.equal(dmesgAfter[i]!.out.trim(), dmesgBefore[i]!.out.trim(), `VM${i + 1}: the guest driver logged nothing across the restarts (no reset, no reload)`);
    t.notMatch(g.output, VHOST_ERRORS, `VM${i + 1}: QEMU logged no vhost-user error`);
  }
  t.equal(serve.lines('cannot resume the front-end connection; the VM must reconnect its device').length, 0, 'every resume succeeded');
  const url = String(serve.lines('metrics listening').at(-1)!.url);
  const text = await (await fetch(url, { signal: AbortSignal.timeout(10_000) })).text();
  const metric = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1]);
  t.equal(metric('vmpi_restarts_total'), 4, 'metrics: 4 restarts survived (3 kills, 1 upgrade)');
  t.equal(metric('vmpi_restart_connections_resumed_total'), 8, 'metrics: 2 connections resumed at each of the 4 restarts');
  t.equal(metric('vmpi_restart_resume_failures_total'), 0, 'metrics: no resume failed');
  t.match(text, /^vmpi_restart_info\{holder="keeper"\} 1$/m, 'metrics: the keeper holds the fds');
  await Promise.all(guests.map((g) => g.stop()));
  serve.child.kill('SIGTERM');
  const code = await Promise.race([new Promise((r) => serve.child.once('exit', (c) => r(c))), sleep(20_000).then(() => 'timeout')]);
  t.equal(code, 0, 'the keeper and its worker end cleanly on SIGTERM');
});
