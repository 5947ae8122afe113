/**
 * systemd-serve.test.ts — `vmpi serve` run by a real systemd 252 (PID 1 of a namespace,
 * test/helpers/systemd.ts) as a Type=notify unit: systemd counts it started only once READY=1
 * came, and by then the vhost-user socket (in a directory bind-mounted from the host) listens; a
 * front-end on the HOST connects by path and reads the VMPI config; `systemctl stop` (SIGTERM)
 * ends it cleanly and removes the socket. Needs root and the rootfs of scripts/systemd-rootfs.sh;
 * in CI their absence is a failure.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProtoFeature, Req, VirtioFeature, bit, hasBit } from '../src/vhost-user/protocol.js';
import { FRONTEND_PROTOCOL_FEATURES, VhostUserFrontend } from './frontend/frontend.js';
import { PROJECT_ROOT, startSystemd, systemdUnavailable } from './helpers/systemd.js';

const unavailable = systemdUnavailable();
if (unavailable && process.env.CI) t.fail(`the systemd tests cannot run in CI: ${unavailable}`);

const UNIT = 'vmpi-serve-test';

t.test('vmpi serve as a Type=notify unit: READY=1 after listen, a host front-end connects, stop removes the socket', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
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
  t.notOk(existsSync(sock), 'SIGTERM removed the socket file');
  const journal = await sd.journal(UNIT);
  t.match(journal, /front-end connected vmpiId=7 /, 'the journal has the host front-end');
  t.match(journal, /shutting down signal=SIGTERM/, 'and the SIGTERM');
  t.match(journal, /Deactivated successfully/, 'which ended it with exit 0');
});
