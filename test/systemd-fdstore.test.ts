/**
 * systemd-fdstore.test.ts — systemd's fd store through our own sd_notify code (src/ops/notify.ts),
 * against a real systemd 252 as PID 1 of a namespace (test/helpers/systemd.ts): a Type=notify unit
 * with FileDescriptorStoreMax=16 and Restart=on-failure (test/helpers/fdstore-child.ts) stores an
 * eventfd and a memfd by name; after each of two SIGKILLs and a `systemctl restart` the new process
 * gets them back in $LISTEN_FDS/$LISTEN_FDNAMES ($LISTEN_PID its own pid) with the counter and the
 * bytes intact; FDSTOREREMOVE=1 drops one name; a stored socket whose peer hung up is dropped
 * unless stored with FDPOLL=0; a name with ':' is refused by sdNotify before systemd sees it.
 * Needs root and the rootfs of scripts/systemd-rootfs.sh; in CI their absence is a failure.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, startSystemd, systemdUnavailable } from './helpers/systemd.js';
import { MEMFD_TEXT, type StartReport } from './helpers/fdstore-format.js';

const unavailable = systemdUnavailable();
if (unavailable && process.env.CI) t.fail(`the systemd tests cannot run in CI: ${unavailable}`);

const UNIT = 'vmpi-fdstore-test';

t.test('fd store: eventfd and memfd survive two SIGKILLs and a restart by name; FDSTOREREMOVE and POLLHUP drop one', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-fdstore-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const boot = Date.now();
  const sd = await startSystemd(t, { binds: [dir] });
  t.comment(`systemd booted in ${Date.now() - boot} ms`);
  const out = join(dir, 'starts.jsonl');
  const reports = (): StartReport[] => (existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as StartReport) : []);
  const props = ['MainPID', 'NRestarts', 'ActiveState', 'SubState'];

  const started = await sd.startUnit(UNIT, [process.execPath, '--import', import.meta.resolve('tsx'), join(PROJECT_ROOT, 'test/helpers/fdstore-child.ts'), out], {
    properties: { Type: 'notify', NotifyAccess: 'main', FileDescriptorStoreMax: 16, Restart: 'on-failure', RestartSec: '100ms' },
  });
  t.equal(started.rc, 0, `systemd-run returned once READY=1 came (${started.stderr.trim()})`);
  let st = await sd.waitShow(UNIT, props, (p) => p.ActiveState === 'active', 20_000, 'active');
  const first = reports()[0];
  t.ok(first, 'the first start reported');
  if (!first) return;
  t.equal(first.error, undefined, 'the first start stored its fds without an error');
  t.equal(String(first.pid), st.MainPID, 'the report comes from the main process');
  t.equal(first.listenFds, null, 'the first start got no fds');
  t.same(first.refused && { name: first.refused.name, code: first.refused.code }, { name: 'NotifyError', code: 'notify_fdname' }, 'sdNotify refused FDNAME "bad:name" with a typed error');
  t.match(first.refused?.message ?? '', /FDNAME "bad:name" is not a valid fd name: use 1\.\.255 printable ASCII characters without ':'/);

  // Two crashes (Restart=on-failure restarts the unit) and one `systemctl restart` (one job).
  for (const round of [1, 2, 3]) {
    const before = st.MainPID;
    if (round <= 2) await sd.runOk(['systemctl', 'kill', '-s', 'KILL', UNIT]);
    else await sd.runOk(['systemctl', 'restart', UNIT], { timeoutMs: 30_000 });
    // NRestarts counts automatic restarts; a `systemctl restart` sets it back to 0.
    const restarts = round <= 2 ? String(round) : '0';
    st = await sd.waitShow(UNIT, props, (p) => p.NRestarts === restarts && p.ActiveState === 'active' && p.SubState === 'running' && p.MainPID !== before && p.MainPID !== '0', 30_000, `restarted (${round})`);
    const rep = reports()[round];
    t.ok(rep, `restart ${round} reported`);
    if (!rep) return;
    t.equal(rep.error, undefined, `restart ${round}: no error`);
    t.equal(String(rep.pid), st.MainPID, `restart ${round}: the report is the new main process's`);
    t.equal(rep.listenPid, String(rep.pid), `restart ${round}: LISTEN_PID is its own pid`);
    const byName = new Map(rep.fds.map((f) => [f.name, f]));
    t.equal(rep.listenFds, String(rep.fds.length), `restart ${round}: LISTEN_FDS counts the fds`);
    const evt = byName.get('evt');
    t.equal(evt?.kind, 'anon_inode:[eventfd]', `restart ${round}: "evt" is an eventfd`);
    t.equal(evt?.counter, 4 + round, `restart ${round}: with its counter intact (5, then + 1 per restart)`);
    const mem = byName.get('mem');
    t.match(mem?.kind ?? '', /^\/memfd:vmpi-fdstore-test/, `restart ${round}: "mem" is the memfd`);
    t.equal(mem?.text, MEMFD_TEXT, `restart ${round}: with its bytes intact`);
    if (round === 1) {
      t.ok(byName.has('spare'), 'restart 1 still has "spare"');
      t.same(rep.removed, ['spare'], 'and removed it with FDSTOREREMOVE=1');
    } else {
      t.notOk(byName.has('spare'), `restart ${round} no longer has "spare" (FDSTOREREMOVE=1 worked)`);
    }
    // What a stored vhost-user socket does when its peer (QEMU) goes: systemd drops it on POLLHUP,
    // unless it was stored with FDPOLL=0.
    t.notOk(byName.has('sock-hup'), `restart ${round}: the socket whose peer hung up was dropped`);
    t.match(byName.get('sock-nopoll')?.kind ?? '', /^socket:/, `restart ${round}: the one stored with FDPOLL=0 was kept`);
    // Why sdNotify checks names: systemd takes a bad one without an error and files the fd under
    // its default name, where nobody looking it up by name finds it.
    t.notOk([...byName.keys()].some((n) => n.includes('bad')), `restart ${round}: no fd under the invalid name`);
    t.equal(byName.get('stored')?.kind, 'anon_inode:[eventfd]', `restart ${round}: systemd filed the fd sent raw with FDNAME=bad:name as "stored"`);
    t.comment(`restart ${round}: LISTEN_FDNAMES=${rep.listenFdNames}`);
  }
  await sd.runOk(['systemctl', 'stop', UNIT]);
});
