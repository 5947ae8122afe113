/**
 * systemd-serve.test.ts — `vmpi serve` run by a real systemd 252 (PID 1 of a namespace,
 * test/helpers/systemd.ts) as a Type=notify unit: systemd counts it started only once READY=1
 * came, and by then the vhost-user socket (in a directory bind-mounted from the host) listens; a
 * front-end on the HOST connects by path and reads the VMPI config; `systemctl stop` (SIGTERM)
 * ends it with exit 0 and nothing listens on the path after. Then the restart mode `systemd`
 * against the real fd store: with FileDescriptorStoreMax= and Restart=on-failure, two kill -9 of
 * the built `vmpi serve` and a `systemctl restart` leave the host front-end's connection (memory
 * table, two queues) open and answered by each new worker. Needs root, the rootfs of scripts/systemd-rootfs.sh and dist/
 * (the second test); in CI their absence is a failure.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/sys/native.js';
import { ProtoFeature, Req, VirtioFeature, bit, hasBit } from '../src/vhost-user/protocol.js';
import { GuestMemoryImage } from './frontend/guest-memory.js';
import { FRONTEND_PROTOCOL_FEATURES, VhostUserFrontend } from './frontend/frontend.js';
import { PROJECT_ROOT, startSystemd, systemdUnavailable } from './helpers/systemd.js';

const unavailable = systemdUnavailable();
if (unavailable && process.env.CI) t.fail(`the systemd tests cannot run in CI: ${unavailable}`);

const UNIT = 'vmpi-serve-test';
const CLI = join(PROJECT_ROOT, 'dist/src/cli.js');
const noDist = existsSync(CLI) ? undefined : `${CLI} is missing: run scripts/build.sh`;
if (noDist && process.env.CI) t.fail(`the systemd fd-store test of vmpi serve cannot run in CI: ${noDist}`);

/** The errno code of connecting to `path`, or 'connected'. */
function connectError(path: string): string {
  try {
    native.close(native.connectUnix(path));
    return 'connected';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

t.test('vmpi serve as a Type=notify unit: READY=1 after listen, a host front-end connects, nothing listens after stop', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-sd-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sd = await startSystemd(t, { binds: [dir] });
  const sock = join(dir, 'vm1.sock');

  const started = await sd.startUnit(UNIT, [process.execPath, '--import', import.meta.resolve('tsx'), join(PROJECT_ROOT, 'src/cli.ts'), 'serve', '--socket', sock, '--vmpi-id', '7', '--no-metrics', '--no-ipc'], {
    properties: { Type: 'notify', NotifyAccess: 'main', KillSignal: 'SIGTERM', TimeoutStartSec: 20, TimeoutStopSec: 15 },
    env: { VMPI_LOG_LEVEL: 'info' },
  });
  t.equal(started.rc, 0, `systemd-run returned once the unit was started (${started.stderr.trim()})`);
  // systemd-run waits for the start job, which for Type=notify ends at READY=1.
  t.ok(existsSync(sock), 'the socket listens by the time systemd counts the unit started');
  const st = await sd.show(UNIT, ['ActiveState', 'SubState', 'MainPID', 'StatusText']);
  t.same([st.ActiveState, st.SubState], ['active', 'running'], `active (running), main pid ${st.MainPID}`);

  const fe = new VhostUserFrontend(sock, { timeoutMs: 10_000 });
  t.teardown(() => fe.close());
  const offered = await fe.getFeatures();
  t.ok(hasBit(offered, VirtioFeature.PROTOCOL_FEATURES), 'the host front-end got GET_FEATURES answered through the path');
  await fe.setFeatures(offered & (bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.PROTOCOL_FEATURES)));
  await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & FRONTEND_PROTOCOL_FEATURES);
  await fe.request(Req.SET_OWNER);
  t.ok(hasBit(fe.protocolFeatures, ProtoFeature.CONFIG), 'CONFIG negotiated');
  const cfg = await fe.getConfig(0, 8);
  t.equal(Buffer.from(cfg).readUInt16LE(6), 7, 'the device config carries --vmpi-id 7');
  fe.close();

  await sd.runOk(['systemctl', 'stop', UNIT], { timeoutMs: 30_000 });
  const after = await sd.show(UNIT, ['ActiveState', 'Result']);
  t.equal(after.ActiveState, 'inactive', 'stopped');
  // Under systemd a SIGTERM is a hand-over (the socket file may stay for the next start), and a
  // stop empties the fd store: either way nobody accepts on the path any more.
  t.match(connectError(sock), /^(ECONNREFUSED|ENOENT)$/, 'after the stop nothing listens on the socket path');
  const journal = await sd.journal(UNIT);
  t.match(journal, /front-end connected vmpiId=7 /, 'the journal has the host front-end');
  t.match(journal, /(shutting down|handing over).*signal=SIGTERM/, 'and the SIGTERM');
  t.match(journal, /Deactivated successfully/, 'which ended it with exit 0');
});

t.test('vmpi serve under systemd with a fd store: kill -9 twice and a systemctl restart, the host front-end connection lives on', { skip: unavailable ?? noDist ?? false, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-sd-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sd = await startSystemd(t, { binds: [dir] });
  const sock = join(dir, 'vm1.sock');
  const unit = 'vmpi-serve-fdstore';
  // The built code, as a service runs it; mode auto is `systemd` under NOTIFY_SOCKET.
  const started = await sd.startUnit(unit, [process.execPath, CLI, 'serve', '--socket', sock, '--vmpi-id', '9', '--no-metrics', '--no-ipc'], {
    properties: { Type: 'notify', NotifyAccess: 'main', FileDescriptorStoreMax: 64, Restart: 'on-failure', RestartSec: '100ms', TimeoutStartSec: 20 },
    env: { VMPI_LOG_LEVEL: 'info' },
  });
  t.equal(started.rc, 0, `started (${started.stderr.trim()})`);
  const fe = new VhostUserFrontend(sock, { timeoutMs: 15_000 });
  t.teardown(() => fe.close());
  const mem = new GuestMemoryImage(1024 * 1024);
  t.teardown(() => mem.close());
  const hs = await fe.handshake({ memory: mem, queues: [{ size: 64 }, { size: 64 }] });
  t.ok(hs.config !== undefined || hasBit(fe.protocolFeatures, ProtoFeature.CONFIG), 'full handshake: features, memory table, two queues');
  t.equal(Buffer.from(await fe.getConfig(0, 8)).readUInt16LE(6), 9, 'the device answers GET_CONFIG');

  let st = await sd.show(unit, ['MainPID', 'NRestarts']);
  // Two crashes (Restart=on-failure), then a `systemctl restart` (SIGTERM: a hand-over; one job
  // keeps the store; NRestarts goes back to 0).
  for (const round of [1, 2, 3]) {
    const before = st.MainPID;
    const t0 = Date.now();
    if (round <= 2) await sd.runOk(['systemctl', 'kill', '-s', 'KILL', unit]);
    else await sd.runOk(['systemctl', 'restart', unit], { timeoutMs: 30_000 });
    const restarts = round <= 2 ? String(round) : '0';
    st = await sd.waitShow(unit, ['MainPID', 'NRestarts', 'ActiveState', 'SubState'], (p) => p.NRestarts === restarts && p.ActiveState === 'active' && p.SubState === 'running' && p.MainPID !== before, 30_000, `restarted (${round})`);
    const cfg = await fe.getConfig(0, 8).catch(async (e: Error) => {
      throw new Error(`${e.message}; journal:\n${await sd.journal(unit)}`);
    });
    const what = round <= 2 ? `kill -9 #${round}` : 'systemctl restart';
    t.equal(Buffer.from(cfg).readUInt16LE(6), 9, `${what}: the new worker (pid ${st.MainPID}) answers GET_CONFIG on the same connection, ${Date.now() - t0} ms after it`);
    t.notOk(fe.closed, `${what}: the front-end never saw a close`);
  }
  const journal = await sd.journal(unit);
  t.match(journal, /resuming from the state the last worker left/, 'the journal has the resume');
  t.notMatch(journal, /cannot resume the front-end connection/, 'and no failed resume');
  fe.close();
  await sd.runOk(['systemctl', 'stop', unit], { timeoutMs: 30_000 });
});
