/**
 * systemd-units.test.ts — the shipped units in qemu-configs/systemd/ run by a real systemd 252 (PID
 * 1 of a namespace, test/helpers/systemd.ts), as PROVISIONING.md installs them: the project at
 * /opt/vmpi, a `vmpi` system user, group kvm, `node` on systemd's PATH. vmpi@.socket listens with
 * the owner and mode it says; the first front-end connection (from the HOST, through the
 * namespace's /run) starts vmpi@.service as user vmpi with every hardening option on, which
 * answers with the VMPI id of its env file and opens its IPC socket; stopping both removes the
 * socket. vmpi.service with the example config: READY, sockets, metrics, back after kill -9; a
 * live front-end (memory, two queues) survives a kill -9 and a `systemctl restart` under the
 * unit's hardening, through its fd store; the same for vmpi@.socket + vmpi@.service, whose
 * socket and IPC socket stay served. Without RuntimeDirectoryPreserve=restart in the units,
 * systemd deletes their runtime directory between the two processes and the new one crash-loops. Needs root, the rootfs of scripts/systemd-rootfs.sh and dist/ (scripts/build.sh); in
 * CI their absence is a failure.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ProtoFeature, Req, VirtioFeature, bit, hasBit } from '../src/vhost-user/protocol.js';
import { FRONTEND_PROTOCOL_FEATURES, VhostUserFrontend } from './frontend/frontend.js';
import { GuestMemoryImage } from './frontend/guest-memory.js';
import { NODE_PREFIX, PROJECT_ROOT, startSystemd, systemdUnavailable, type Systemd } from './helpers/systemd.js';

const CLI = join(PROJECT_ROOT, 'dist/src/cli.js');
const unavailable = systemdUnavailable() ?? (existsSync(CLI) ? undefined : `${CLI} is missing: run scripts/build.sh`);
if (unavailable && process.env.CI) t.fail(`the systemd tests cannot run in CI: ${unavailable}`);

const UNITS = join(PROJECT_ROOT, 'qemu-configs/systemd');

/** A systemd with the project at /opt/vmpi, users vmpi and group kvm, node on PATH, and `units` installed. */
async function install(t: Test, units: string[], opts: { net?: boolean } = {}): Promise<Systemd> {
  const sd = await startSystemd(t, { binds: [{ source: PROJECT_ROOT, target: '/opt/vmpi' }], net: opts.net ?? false });
  await sd.runOk(['groupadd', '--system', 'kvm']);
  await sd.runOk(['useradd', '--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'vmpi']);
  await sd.runOk(['ln', '-s', join(NODE_PREFIX, 'bin/node'), '/usr/local/bin/node']);
  for (const u of units) sd.writeFile(`/etc/systemd/system/${u}`, readFileSync(join(UNITS, u), 'utf8'));
  return sd;
}

/** The features handshake up to SET_OWNER, then the VMPI id from the device config. */
async function vmpiIdOf(fe: VhostUserFrontend): Promise<number> {
  const offered = await fe.getFeatures();
  await fe.setFeatures(offered & (bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.PROTOCOL_FEATURES)));
  await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & FRONTEND_PROTOCOL_FEATURES);
  await fe.request(Req.SET_OWNER);
  if (!hasBit(fe.protocolFeatures, ProtoFeature.CONFIG)) throw new Error('CONFIG was not negotiated');
  return Buffer.from(await fe.getConfig(0, 8)).readUInt16LE(6);
}

t.test('vmpi@.socket + vmpi@.service as shipped: socket activation from a host front-end, user vmpi, hardened', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const sd = await install(t, ['vmpi@.service', 'vmpi@.socket']);
  sd.writeFile('/etc/vmpi/vm/web1.env', 'VMPI_ID=5\n');
  await sd.runOk(['systemctl', 'daemon-reload']);
  await sd.runOk(['systemctl', 'start', 'vmpi@web1.socket']);

  const sock = sd.hostPath('/run/vmpi/web1.sock');
  const vmpiUid = Number((await sd.runOk(['id', '-u', 'vmpi'])).trim());
  const kvmGid = Number((await sd.runOk(['getent', 'group', 'kvm'])).split(':')[2]);
  const st = statSync(sock);
  t.ok(st.isSocket(), 'vmpi@web1.socket made /run/vmpi/web1.sock');
  t.same([st.uid, st.gid, st.mode & 0o777], [vmpiUid, kvmGid, 0o660], 'owned by vmpi:kvm, mode 0660 (SocketUser/SocketGroup/SocketMode)');
  t.equal((await sd.show('vmpi@web1.service', ['ActiveState'])).ActiveState, 'inactive', 'no back-end before a front-end connects');

  // The front-end's first request waits in the socket while systemd starts the service.
  const fe = new VhostUserFrontend(sock, { timeoutMs: 15_000 });
  t.teardown(() => fe.close());
  const id = await vmpiIdOf(fe).catch(async (e: Error) => {
    throw new Error(`${e.message}; journal of vmpi@web1.service:\n${await sd.journal('vmpi@web1.service')}`);
  });
  t.equal(id, 5, 'the first connection started the back-end, which answered with VMPI_ID=5 from /etc/vmpi/vm/web1.env');

  const svc = await sd.waitShow('vmpi@web1.service', ['ActiveState', 'SubState', 'MainPID'], (p) => p.ActiveState === 'active', 20_000, 'active');
  t.equal((await sd.runOk(['stat', '-c', '%U', `/proc/${svc.MainPID}`])).trim(), 'vmpi', 'the back-end runs as user vmpi');
  t.ok(statSync(sd.hostPath('/run/vmpi-ipc/web1/ipc.sock')).isSocket(), 'and has its IPC socket in its runtime directory');
  fe.close();

  await sd.runOk(['systemctl', 'stop', 'vmpi@web1.service', 'vmpi@web1.socket'], { timeoutMs: 30_000 });
  t.notOk(existsSync(sock), 'stopping the socket unit removed the socket (RemoveOnStop=yes)');
  const journal = await sd.journal('vmpi@web1.service');
  t.match(journal, /front-end connected vmpiId=5 /, 'the journal has the front-end');
  t.notMatch(journal, /Failed with result/, 'and no failure');
});

t.test('vmpi.service as shipped with the example config: READY after check-config and listen, sockets vmpi:kvm 0660, metrics, back after kill -9', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  // Its own network namespace: the example config's metrics port is fixed.
  const sd = await install(t, ['vmpi.service'], { net: true });
  sd.writeFile('/etc/vmpi/vmpi.yaml', readFileSync(join(PROJECT_ROOT, 'qemu-configs/vmpi.example.yaml'), 'utf8'));
  await sd.runOk(['systemctl', 'daemon-reload']);
  // Type=notify: `systemctl start` returns once READY=1 came (after ExecStartPre's check-config).
  const started = await sd.run(['systemctl', 'start', 'vmpi.service'], { timeoutMs: 60_000 });
  t.equal(started.rc, 0, `vmpi.service started${started.rc === 0 ? '' : `: ${started.stderr}\n${await sd.journal('vmpi.service')}`}`);
  const vmpiUid = Number((await sd.runOk(['id', '-u', 'vmpi'])).trim());
  const kvmGid = Number((await sd.runOk(['getent', 'group', 'kvm'])).split(':')[2]);
  for (const [name, id] of [['vm1', 1], ['vm2', 2]] as const) {
    const sock = sd.hostPath(`/run/vmpi/${name}.sock`);
    const st = statSync(sock);
    t.same([st.isSocket(), st.uid, st.gid, st.mode & 0o777], [true, vmpiUid, kvmGid, 0o660], `${name}.sock listens, vmpi:kvm 0660 (group and mode from the config)`);
    const fe = new VhostUserFrontend(sock, { timeoutMs: 15_000 });
    t.teardown(() => fe.close());
    t.equal(await vmpiIdOf(fe), id, `a host front-end on ${name}.sock gets VMPI id ${id}`);
    fe.close();
  }
  const metrics = await sd.runOk([process.execPath, '-e', "fetch('http://127.0.0.1:19464/metrics').then((r) => r.text()).then((s) => process.stdout.write(s))"]);
  t.match(metrics, /^vmpi_build_info\{/m, 'metrics on 127.0.0.1:19464 (inside the namespace)');

  const before = (await sd.show('vmpi.service', ['MainPID'])).MainPID;
  await sd.runOk(['systemctl', 'kill', '-s', 'KILL', 'vmpi.service']);
  const st = await sd.waitShow('vmpi.service', ['MainPID', 'NRestarts', 'ActiveState'], (p) => p.NRestarts === '1' && p.ActiveState === 'active' && p.MainPID !== before, 30_000, 'restarted after kill -9');
  t.pass(`Restart=on-failure brought it back (main pid ${before} -> ${st.MainPID})`);
  const fe = new VhostUserFrontend(sd.hostPath('/run/vmpi/vm1.sock'), { timeoutMs: 15_000 });
  t.teardown(() => fe.close());
  t.equal(await vmpiIdOf(fe), 1, 'a new front-end connects to vm1.sock again');
  fe.close();

  await sd.runOk(['systemctl', 'stop', 'vmpi.service'], { timeoutMs: 30_000 });
  t.notOk(existsSync(sd.hostPath('/run/vmpi/vm1.sock')), 'stop removed the sockets');
  t.notMatch(await sd.journal('vmpi.service'), /Failed with result '(?!signal)/, 'no failure but the kill');
});

t.test('vmpi.service as shipped (fd store, RuntimeDirectoryPreserve=restart): a live front-end survives kill -9 and systemctl restart under the unit hardening', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const sd = await install(t, ['vmpi.service'], { net: true });
  sd.writeFile('/etc/vmpi/vmpi.yaml', readFileSync(join(PROJECT_ROOT, 'qemu-configs/vmpi.example.yaml'), 'utf8'));
  await sd.runOk(['systemctl', 'daemon-reload']);
  const started = await sd.run(['systemctl', 'start', 'vmpi.service'], { timeoutMs: 60_000 });
  t.equal(started.rc, 0, `vmpi.service started${started.rc === 0 ? '' : `: ${started.stderr}\n${await sd.journal('vmpi.service')}`}`);
  const fe = new VhostUserFrontend(sd.hostPath('/run/vmpi/vm2.sock'), { timeoutMs: 15_000 });
  t.teardown(() => fe.close());
  const mem = new GuestMemoryImage(1024 * 1024);
  t.teardown(() => mem.close());
  await fe.handshake({ memory: mem, queues: [{ size: 64 }, { size: 64 }] });
  t.equal(Buffer.from(await fe.getConfig(0, 8)).readUInt16LE(6), 2, 'a front-end with memory and two queues on vm2.sock');
  let st = await sd.show('vmpi.service', ['MainPID']);
  for (const how of ['kill', 'restart'] as const) {
    const before = st.MainPID;
    const t0 = Date.now();
    if (how === 'kill') await sd.runOk(['systemctl', 'kill', '-s', 'KILL', 'vmpi.service']);
    else await sd.runOk(['systemctl', 'restart', 'vmpi.service'], { timeoutMs: 30_000 });
    st = await sd.waitShow('vmpi.service', ['MainPID', 'ActiveState', 'SubState'], (p) => p.ActiveState === 'active' && p.SubState === 'running' && p.MainPID !== before, 30_000, `back after ${how}`);
    const cfg = await fe.getConfig(0, 8).catch(async (e: Error) => {
      throw new Error(`${e.message}; journal:\n${await sd.journal('vmpi.service')}`);
    });
    t.equal(Buffer.from(cfg).readUInt16LE(6), 2, `${how}: the new worker answers on the same connection (${Date.now() - t0} ms after it)`);
    t.notOk(fe.closed, `${how}: the front-end never saw a close`);
  }
  const journal = await sd.journal('vmpi.service');
  t.notMatch(journal, /cannot resume|cannot save the restart state/, 'no failed resume or state save');
  await sd.runOk(['systemctl', 'stop', 'vmpi.service'], { timeoutMs: 30_000 });
});

t.test('vmpi@.socket + vmpi@.service as shipped (fd store, RuntimeDirectoryPreserve=restart): a live front-end survives kill -9 and systemctl restart; the sockets stay served', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const sd = await install(t, ['vmpi@.service', 'vmpi@.socket']);
  sd.writeFile('/etc/vmpi/vm/web1.env', 'VMPI_ID=5\n');
  await sd.runOk(['systemctl', 'daemon-reload']);
  await sd.runOk(['systemctl', 'start', 'vmpi@web1.socket']);
  const unit = 'vmpi@web1.service';
  const fe = new VhostUserFrontend(sd.hostPath('/run/vmpi/web1.sock'), { timeoutMs: 15_000 });
  t.teardown(() => fe.close());
  const mem = new GuestMemoryImage(1024 * 1024);
  t.teardown(() => mem.close());
  await fe.handshake({ memory: mem, queues: [{ size: 64 }, { size: 64 }] });
  t.equal(Buffer.from(await fe.getConfig(0, 8)).readUInt16LE(6), 5, 'a front-end with memory and two queues started the back-end');
  let st = await sd.waitShow(unit, ['MainPID', 'ActiveState'], (p) => p.ActiveState === 'active', 20_000, 'active');
  for (const how of ['kill', 'restart'] as const) {
    const before = st.MainPID;
    const t0 = Date.now();
    if (how === 'kill') await sd.runOk(['systemctl', 'kill', '-s', 'KILL', unit]);
    else await sd.runOk(['systemctl', 'restart', unit], { timeoutMs: 30_000 });
    st = await sd.waitShow(unit, ['MainPID', 'ActiveState', 'SubState'], (p) => p.ActiveState === 'active' && p.SubState === 'running' && p.MainPID !== before, 30_000, `back after ${how}`);
    const cfg = await fe.getConfig(0, 8).catch(async (e: Error) => {
      throw new Error(`${e.message}; journal:\n${await sd.journal(unit)}`);
    });
    t.equal(Buffer.from(cfg).readUInt16LE(6), 5, `${how}: the new worker answers on the same connection (${Date.now() - t0} ms)`);
    t.notOk(fe.closed, `${how}: the front-end never saw a close`);
    t.ok(existsSync(sd.hostPath('/run/vmpi-ipc/web1/ipc.sock')), `${how}: the IPC socket is still there`);
    // The accept loop on the socket unit's socket runs again: a second front-end is accepted and
    // refused (one per device, and the resumed one is still attached).
    const probe = new VhostUserFrontend(sd.hostPath('/run/vmpi/web1.sock'), { timeoutMs: 15_000 });
    t.teardown(() => probe.close());
    await probe.getFeatures().catch(() => undefined);
    await probe.waitClosed(15_000);
    probe.close();
  }
  const journal = await sd.journal(unit);
  t.equal(journal.match(/refusing front-end: this socket already serves its maximum number of front-ends/g)?.length, 2, 'each second front-end was accepted and refused: the socket is served');
  t.notMatch(journal, /cannot resume|cannot save the restart state/, 'no failed resume or state save');
  await sd.runOk(['systemctl', 'stop', unit, 'vmpi@web1.socket'], { timeoutMs: 30_000 });
});
