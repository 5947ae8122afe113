/**
 * The QEMU test harness itself (test/helpers/guest.ts): kill() must end QEMU, not only
 * launch-guest.sh, or every failed or timed-out guest test leaves a TCG guest running.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { Guest, guestExit, guestUnavailable } from './helpers/guest.js';

const unavailable = guestUnavailable();
if (unavailable && process.env.CI) t.fail(`guest harness test cannot run in CI: ${unavailable}`);

function qemuRunning(name: string): boolean {
  return spawnSync('pgrep', ['-f', `qemu-system-x86_64 -name ${name} `]).status === 0;
}

t.test('kill() ends QEMU too', { skip: unavailable ?? false, timeout: 180_000 }, async (t) => {
  const name = `vmpi-harness-${process.pid}`;
  const g = new Guest({ name, timeoutMs: 150_000 });
  t.teardown(() => g.kill());
  await g.agentReady(1, 120_000);
  t.ok(qemuRunning(name), 'QEMU runs while the guest is up');
  g.kill();
  await guestExit(g, 20_000);
  const end = Date.now() + 10_000;
  while (qemuRunning(name) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  t.notOk(qemuRunning(name), 'no QEMU left after kill()');
});
