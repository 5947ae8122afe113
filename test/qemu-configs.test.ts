/**
 * The shipped deployment files in qemu-configs/ parse: every systemd unit passes
 * `systemd-analyze verify` with nothing to say (unknown keys, bad values and missing binaries are
 * all reported on stderr, so the output must be empty), the launch script is valid bash, and the
 * libvirt domain is well-formed XML. Tools that are not installed skip their part (outside CI).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers/guest.js';

const CONFIGS = join(ROOT, 'qemu-configs');

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { timeout: 10000 }).status === 0;
}

function missing(tool: string): string | false {
  if (have(tool)) return false;
  if (process.env.CI) t.fail(`${tool} is not installed (scripts/setup-system.sh installs it)`);
  return `${tool} not installed`;
}

function verify(unit: string): string {
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', unit], { encoding: 'utf8', timeout: 60000 });
  // A hang (killed at the timeout) must not read as "says nothing".
  if (r.error) return `systemd-analyze verify ${unit}: ${r.error.message}`;
  return `${r.stdout}${r.stderr}`.trim();
}

t.test('systemd units verify cleanly', { skip: missing('systemd-analyze') }, async (t) => {
  const units = readdirSync(join(CONFIGS, 'systemd')).filter((f) => /\.(service|socket)$/.test(f));
  t.same(units.sort(), ['vm@.service', 'vmpi-guest.service', 'vmpi.service', 'vmpi@.service', 'vmpi@.socket'], 'every unit is verified');
  for (const u of units) t.equal(verify(join(CONFIGS, 'systemd', u)), '', `${u}: systemd-analyze verify says nothing`);

  // The check itself can fail: a unit with an unknown key is reported.
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-units-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'bad.service'), '[Service]\nExecStart=/bin/true\nBogusKey=1\n');
  t.match(verify(join(dir, 'bad.service')), /Unknown key 'BogusKey'/, 'a broken unit is reported');
});

t.test('the vmpi units wait for readiness and put NonBlocking= where systemd reads it', async (t) => {
  const dir = join(CONFIGS, 'systemd');
  for (const u of ['vmpi.service', 'vmpi@.service', 'vmpi-guest.service']) {
    const text = readFileSync(join(dir, u), 'utf8');
    t.match(text, /^Type=notify$/m, `${u}: Type=notify (vmpi sends READY=1 once its sockets listen)`);
    t.match(text, /^NotifyAccess=main$/m, `${u}: only the main process may notify`);
    t.notMatch(text, /^ExecStart=\/usr\/bin\/node /m, `${u}: node from systemd's PATH (the supported one first), not the distribution's`);
  }
  for (const u of readdirSync(dir).filter((f) => f.endsWith('.socket'))) {
    t.notMatch(readFileSync(join(dir, u), 'utf8'), /^NonBlocking=/m, `${u}: NonBlocking= is a [Service] option; a .socket unit ignores it`);
  }
  const perVm = readFileSync(join(dir, 'vmpi@.service'), 'utf8');
  t.match(perVm, /^\[Service\][^[]*^NonBlocking=yes$/m, 'vmpi@.service sets NonBlocking=yes in [Service]');
  // Per-VM mode offers the host IPC API: a runtime directory the vmpi user can write, and the
  // daemon told to use it (serve honours VMPI_IPC_SOCKET and then requires it to work).
  const ipcDir = /^RuntimeDirectory=(\S+)$/m.exec(perVm)?.[1];
  t.equal(ipcDir, 'vmpi-ipc/%i', 'vmpi@.service has a runtime directory of its own');
  t.match(perVm, new RegExp(`^Environment=VMPI_IPC_SOCKET=/run/${ipcDir?.replace('%', '\\%')}/ipc\\.sock$`, 'm'), 'and puts the IPC socket in it');
});

t.test('launch-guest.sh is valid bash', async (t) => {
  const r = spawnSync('bash', ['-n', join(CONFIGS, 'launch-guest.sh')], { encoding: 'utf8', timeout: 60000 });
  t.equal(r.status, 0, r.stderr);
});

t.test('the libvirt domain is well-formed XML', { skip: missing('xmllint') }, async (t) => {
  const r = spawnSync('xmllint', ['--noout', join(CONFIGS, 'libvirt-domain.xml')], { encoding: 'utf8', timeout: 60000 });
  t.equal(r.status, 0, r.stderr);
});
