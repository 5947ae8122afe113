/**
 * The guest driver for guests of other distributions: the vmpi-dkms .deb built by
 * scripts/guest/build-dkms-deb.sh (contents and maintainer scripts, read with dpkg-deb -I/-c/-e),
 * its modprobe.d file (parsed by kmod's modprobe --showconfig), a real DKMS build of the package's
 * sources against the guest kernel's fetched headers (.cache/guest, with private dkms and source
 * trees, so nothing on this host changes), and that module loaded in a TCG guest in place of the
 * image's own vmpi.ko, where it binds the VMPI device.
 *
 * Without the dkms command (outside CI) the build falls back to the MAKE[0] line that dkms.conf
 * declares, run with the variables dkms would set, and says so.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiHost } from '../src/vmpi/host.js';
import { Guest, GUEST_DIR, guestUnavailable, ROOT } from './helpers/guest.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const SCRIPT = join(ROOT, 'scripts', 'guest', 'build-dkms-deb.sh');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-dkms-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[], timeout = 120_000): { status: number | null; out: string; stdout: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout });
  return { status: r.status, stdout: r.stdout ?? '', out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', timeout: 10_000 }).status === 0;

const noDpkg = has('dpkg-deb') ? null : 'dpkg-deb not installed';
if (noDpkg && process.env.CI) t.fail(`DKMS package test cannot run in CI: ${noDpkg}`);

let deb = '';
t.test('the vmpi-dkms .deb: contents, control, maintainer scripts', { skip: noDpkg ?? false }, async (t) => {
  const b = run('bash', [SCRIPT, join(dir, 'out')]);
  t.equal(b.status, 0, `build-dkms-deb.sh exits 0${b.status === 0 ? '' : `: ${b.out}`}`);
  deb = b.stdout.trim().split('\n').pop() ?? '';
  t.equal(deb, join(dir, 'out', `vmpi-dkms_${VERSION}_all.deb`), 'prints the path of vmpi-dkms_<package.json version>_all.deb');

  const files = run('dpkg-deb', ['-c', deb]).stdout
    .split('\n')
    .filter((l) => l.startsWith('-'))
    .map((l) => l.split(/\s+/))
    .map((f) => `${f[0]} ${f[1]} ${f[5]}`)
    .sort();
  const src = `./usr/src/vmpi-${VERSION}`;
  t.same(
    files,
    [
      '-rw-r--r-- root/root ./etc/modprobe.d/vmpi.conf',
      `-rw-r--r-- root/root ${src}/Kbuild`,
      `-rw-r--r-- root/root ${src}/dkms.conf`,
      `-rw-r--r-- root/root ${src}/vmpi.c`,
      `-rw-r--r-- root/root ${src}/vmpi_uapi.h`,
      '-rw-r--r-- root/root ./usr/share/doc/vmpi-dkms/README',
    ].sort(),
    'sources + dkms.conf under /usr/src/vmpi-<version>/, the modprobe.d file, owned by root',
  );

  const field = (f: string) => run('dpkg-deb', ['-f', deb, f]).stdout.trim();
  t.equal(field('Package'), 'vmpi-dkms');
  t.equal(field('Version'), VERSION);
  t.equal(field('Architecture'), 'all');
  t.match(field('Depends'), /^dkms \(>= [\d.]+\), kmod$/);
  const info = run('dpkg-deb', ['-I', deb]).stdout;
  t.match(info, /^\s+\d+ bytes,\s+\d+ lines\s+\*\s+postinst\s+#!\/bin\/sh$/m, 'postinst is an executable shell script');
  t.match(info, /^\s+\d+ bytes,\s+\d+ lines\s+\*\s+prerm\s+#!\/bin\/sh$/m, 'prerm is an executable shell script');
  t.match(info, /^\s+\d+ bytes,\s+1 lines\s+conffiles\s*$/m);

  const ctl = join(dir, 'control');
  t.equal(run('dpkg-deb', ['-e', deb, ctl]).status, 0);
  t.equal(readFileSync(join(ctl, 'conffiles'), 'utf8'), '/etc/modprobe.d/vmpi.conf\n', 'the modprobe.d file is a conffile');
  const postinst = readFileSync(join(ctl, 'postinst'), 'utf8');
  const prerm = readFileSync(join(ctl, 'prerm'), 'utf8');
  for (const n of ['postinst', 'prerm']) t.equal(run('sh', ['-n', join(ctl, n)]).status, 0, `${n} parses`);
  t.match(postinst, `NAME=vmpi\nVERSION=${VERSION}\n`);
  t.match(postinst, /configure\)[\s\S]*dkms add -m \$NAME -v \$VERSION[\s\S]*dkms install -m \$NAME -v \$VERSION -k "\$k"/, 'postinst: dkms add, then dkms install per kernel');
  t.match(postinst, /\[ ! -e "\$dir\/build" \][\s\S]*continue/, 'postinst skips kernels without headers instead of failing');
  t.match(prerm, /dkms remove -m \$NAME -v \$VERSION --all/, 'prerm: dkms remove');

  // The .deb's dkms.conf carries package.json's version; the repository's (for by-hand use) too.
  const x = join(dir, 'root');
  t.equal(run('dpkg-deb', ['-x', deb, x]).status, 0);
  const conf = readFileSync(join(x, src, 'dkms.conf'), 'utf8');
  t.match(conf, new RegExp(`^PACKAGE_VERSION="${VERSION.replace(/\./g, '\\.')}"$`, 'm'));
  t.match(readFileSync(join(ROOT, 'guest-driver', 'dkms.conf'), 'utf8'), new RegExp(`^PACKAGE_VERSION="${VERSION.replace(/\./g, '\\.')}"$`, 'm'), 'guest-driver/dkms.conf matches package.json');
  t.match(conf, /^PACKAGE_NAME="vmpi"$/m);
  t.match(conf, /^BUILT_MODULE_NAME\[0\]="vmpi"$/m);
  t.match(conf, /^AUTOINSTALL="yes"$/m, 'rebuilt for every new kernel');
  t.equal(readFileSync(join(x, 'usr/src', `vmpi-${VERSION}`, 'vmpi.c'), 'utf8'), readFileSync(join(ROOT, 'guest-driver', 'vmpi.c'), 'utf8'), 'the driver source is the repository\'s');

  // A second build is byte for byte the same (SOURCE_DATE_EPOCH).
  const again = run('bash', [SCRIPT, join(dir, 'again')]);
  t.equal(again.status, 0);
  t.ok(readFileSync(deb).equals(readFileSync(again.stdout.trim())), 'the .deb builds reproducibly');
});

t.test('the modprobe.d file keeps gpio_virtio off the device (kmod parses it)', { skip: has('modprobe') ? false : 'modprobe (kmod) not installed' }, async (t) => {
  const r = run('modprobe', ['-C', join(ROOT, 'guest-driver', 'vmpi-modprobe.conf'), '--showconfig']);
  t.equal(r.status, 0, `modprobe --showconfig exits 0${r.status === 0 ? '' : `: ${r.out.slice(0, 500)}`}`);
  t.match(r.stdout, /^blacklist gpio_virtio$/m, 'no autoload of gpio_virtio from the modalias');
  t.match(r.stdout, /^softdep gpio_virtio pre: vmpi\s*$/m, 'and vmpi first when gpio_virtio is loaded anyway');
});

const KVER_FILE = join(GUEST_DIR, 'kernel-version');
const KSRC_FILE = join(GUEST_DIR, 'kernel-src');
const noHeaders = existsSync(KVER_FILE) && existsSync(KSRC_FILE) && existsSync(readFileSync(KSRC_FILE, 'utf8').trim()) ? null : 'guest kernel headers not fetched: run scripts/guest/build.sh';
if (noHeaders && process.env.CI) t.fail(`DKMS build test cannot run in CI: ${noHeaders}`);
if (!has('dkms') && process.env.CI) t.fail('dkms not installed in CI: run scripts/setup-system.sh');

let builtKo = '';
t.test('DKMS builds the package against the fetched guest headers', { skip: noDpkg ?? noHeaders ?? false, timeout: 300_000 }, async (t) => {
  if (!deb) {
    t.fail('no .deb from the first test');
    return;
  }
  const rel = readFileSync(KVER_FILE, 'utf8').trim();
  const ksrc = readFileSync(KSRC_FILE, 'utf8').trim();
  const x = join(dir, 'root');
  const srcTree = join(x, 'usr', 'src');
  const dkmsTree = join(dir, 'dkms');
  if (has('dkms')) {
    // Private trees: the host's /var/lib/dkms and /usr/src stay as they are.
    mkdirSync(dkmsTree, { recursive: true });
    const trees = ['--sourcetree', srcTree, '--dkmstree', dkmsTree];
    const add = run('dkms', ['add', '-m', 'vmpi', '-v', VERSION, ...trees]);
    t.equal(add.status, 0, `dkms add: ${add.out.trim()}`);
    const build = run('dkms', ['build', '-m', 'vmpi', '-v', VERSION, '-k', rel, '--kernelsourcedir', ksrc, ...trees], 240_000);
    t.equal(build.status, 0, `dkms build -k ${rel}`);
    if (build.status !== 0) t.comment(build.out);
    const status = run('dkms', ['status', '-m', 'vmpi', '-v', VERSION, ...trees]).stdout;
    t.match(status, new RegExp(`vmpi/${VERSION.replace(/\./g, '\\.')}, ${rel}, x86_64: built`), 'dkms status: built for the guest kernel');
    builtKo = join(dkmsTree, 'vmpi', VERSION, rel, 'x86_64', 'module', 'vmpi.ko');
  } else {
    t.comment('dkms is not installed (scripts/setup-system.sh installs it): running the MAKE[0] line of dkms.conf with the variables dkms sets instead');
    const build = join(dkmsTree, 'vmpi', VERSION, 'build');
    const r = run('bash', [
      '-c',
      'set -euo pipefail; mkdir -p "$4"; cp -r "$1/vmpi-$5/." "$4/"; kernel_source_dir=$2 dkms_tree=$3; . "$4/dkms.conf"; eval "${MAKE[0]}"',
      'sh', srcTree, ksrc, dkmsTree, build, VERSION,
    ], 240_000);
    t.equal(r.status, 0, 'dkms.conf MAKE[0] builds');
    if (r.status !== 0) t.comment(r.out);
    builtKo = join(build, 'vmpi.ko');
  }
  t.ok(existsSync(builtKo), 'vmpi.ko built');
  const info = run('modinfo', [builtKo]).stdout;
  t.match(info, new RegExp(`^vermagic:\\s+${rel.replace(/\./g, '\\.')} `, 'm'), 'built for the guest kernel');
  t.match(info, /^alias:\s+virtio:d00000029v\*$/m, 'binds virtio device id 0x29');
  t.match(info, /^name:\s+vmpi$/m);
});

const noGuest = guestUnavailable();
if (noGuest && process.env.CI) t.fail(`DKMS guest test cannot run in CI: ${noGuest}`);

t.test('the DKMS-built module binds the VMPI device in a guest', { skip: noHeaders ?? noGuest ?? false, timeout: 200_000 }, async (t) => {
  if (!builtKo || !existsSync(builtKo)) {
    t.fail('no DKMS-built vmpi.ko from the previous test');
    return;
  }
  const ko = join(dir, 'vmpi-dkms.ko');
  t.equal(run('strip', ['--strip-debug', '-o', ko, builtKo]).status, 0);
  const b64 = readFileSync(ko).toString('base64').replace(/.{76}/g, '$&\n');
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const sock = join(dir, 'vm.sock');
  const device = host.addDevice({ socketPath: sock, vmpiId: 5 });
  let ups = 0;
  device.on('up', () => ups++);
  // The image's /init loaded its own vmpi.ko: replace it by the DKMS one.
  const script = `rmmod vmpi || exit 3
[ -e /dev/vmpi0 ] && exit 4
base64 -d > /tmp/vmpi.ko <<'B64'
${b64}
B64
insmod /tmp/vmpi.ko || exit 5
for i in $(seq 1 50); do [ -e /dev/vmpi0 ] && break; sleep 0.1; done
echo "DKMS-BOUND $(ls /sys/bus/virtio/drivers/vmpi | grep -c '^virtio') $(ls /dev | grep '^vmpi' | tr '\\n' ' ')"
`;
  const g = new Guest({ sockets: [sock], script, timeoutMs: 180_000, name: 'vmpi-dkms-test' });
  t.teardown(() => g.kill());
  const m = await g.waitFor(/DKMS-BOUND (\d+) ([^\r\n]*)\r?\n/, 170_000);
  t.equal(m[1], '1', 'the DKMS module bound the virtio device');
  t.match(m[2]!, /\bvmpi0\b/, '/dev/vmpi0 is back');
  const r = await g.done;
  t.equal(r.exitCode, 0, `guest script status (output tail: ${r.output.slice(-400)})`);
  t.equal(ups, 2, 'the host saw the device come up twice: the image\'s vmpi.ko, then the DKMS one');
});
