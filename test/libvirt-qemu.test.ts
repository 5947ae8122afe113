/**
 * The shipped libvirt domain (qemu-configs/libvirt-domain.xml) booted by a real libvirtd (Debian
 * 12: libvirt 9.0) driving QEMU 10 under TCG, against a real `vmpi serve` process.
 *
 * Owns: starting virtlogd and libvirtd where they are installed and not running (no systemd as
 * PID 1 in containers) and stopping only what it started; the test domain, generated from the
 * shipped XML by substituting its name, memory size, socket path and boot (direct kernel boot of
 * the Node test guest instead of the disk) and adding a log file to its serial console, so the
 * shipped device lines, PCI address included, are what boots. Checks that the guest driver binds
 * the device (/dev/vmpi0), that the server reports vmpi_device_up 1, and that a shim DIF flow
 * works end to end: a host application on serve's IPC socket allocates a flow to an echo
 * application in the guest (`vmpi guest` + the client library) and gets SDUs of 0..4000 bytes
 * back intact. The domain is destroyed and undefined at the end, whatever happened.
 *
 * Skips with the reason where libvirt cannot run (not installed, not root, no guest image,
 * libvirtd does not start); with CI set, that is a failure instead.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { IpcClient } from '../src/dif/ipc/client.js';
import { readN } from './helpers/flows.js';
import { GUEST_DIR, guestUnavailable, nodeScript, ROOT } from './helpers/guest.js';
import { patternSdu } from './helpers/pattern.js';

const SHIPPED = join(ROOT, 'qemu-configs', 'libvirt-domain.xml');
const IMAGES = '/var/lib/libvirt/images';
const URI = 'qemu:///system';
const AUTOSTART_NETS = '/etc/libvirt/qemu/networks/autostart';
const VMPI_ID = 47;
const DIF = `hv.vmpi-${VMPI_ID}`;
const SIZES = Array.from({ length: 9 }, (_, i) => i * 500);
const NODE_ARGS = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts')];

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/** Why libvirt cannot run here, or null. */
function unavailableReason(): string | null {
  const g = guestUnavailable();
  if (g) return g;
  if (!existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz'))) return 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh';
  for (const c of ['virsh', 'libvirtd', 'virtlogd']) {
    if (!onPath(c)) return `${c} not installed: run scripts/setup-system.sh (libvirt-daemon-system)`;
  }
  if (process.getuid?.() !== 0) return 'libvirtd (qemu:///system) needs root';
  if (!existsSync(IMAGES)) return `${IMAGES} missing (libvirt-daemon-system installs it)`;
  return null;
}


function virsh(args: string[], timeoutMs = 60_000): { ok: boolean; out: string } {
  const r = spawnSync('virsh', ['-c', URI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The pid in `pidfile` if that process runs and is `name`, else null. */
function daemonPid(pidfile: string, name: string): number | null {
  try {
    const pid = Number(readFileSync(pidfile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return null;
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name ? pid : null;
  } catch {
    return null;
  }
}

interface Daemon {
  name: string;
  pid: number;
}

/** Start `name -d` unless it runs; returns it when this test started it. */
async function ensureDaemon(name: 'virtlogd' | 'libvirtd'): Promise<Daemon | null> {
  const pidfile = `/run/${name}.pid`;
  if (daemonPid(pidfile, name) !== null) return null;
  if (name === 'libvirtd') {
    // A network marked autostart would put a bridge with an address on this host's network.
    const auto = (existsSync(AUTOSTART_NETS) ? readdirSync(AUTOSTART_NETS, { withFileTypes: true }) : []).filter((e) => e.name.endsWith('.xml'));
    if (auto.length > 0) throw new Error(`not starting libvirtd: it would autostart the networks ${auto.map((e) => e.name).join(', ')} (${AUTOSTART_NETS}); remove them or start libvirtd yourself`);
  }
  const r = spawnSync(name, ['-d'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${name} -d failed (${r.status}): ${r.stderr}`);
  const end = Date.now() + 15_000;
  for (;;) {
    const pid = daemonPid(pidfile, name);
    if (pid !== null) return { name, pid };
    if (Date.now() > end) throw new Error(`${name} -d: no live pid in ${pidfile} after 15 s`);
    await sleep(100);
  }
}

async function stopDaemon(d: Daemon): Promise<void> {
  try {
    process.kill(d.pid, 'SIGTERM');
  } catch {
    return;
  }
  const end = Date.now() + 10_000;
  while (Date.now() < end) {
    if (!existsSync(`/proc/${d.pid}`)) return;
    await sleep(100);
  }
  try {
    process.kill(d.pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Replace the one occurrence of `re` in `s`, or throw: the shipped file changed shape. */
function replaceOnce(s: string, re: RegExp, by: string, what: string): string {
  const n = [...s.matchAll(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g'))].length;
  if (n !== 1) throw new Error(`libvirt-domain.xml: expected one ${what} (${re}), found ${n}`);
  return s.replace(re, by);
}

interface DomainSubst {
  name: string;
  memMb: number;
  socket: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  consoleLog: string;
}

/** The test domain: the shipped XML with these substitutions, its device lines untouched. */
function testDomainXml(shipped: string, s: DomainSubst): string {
  let x = shipped;
  x = replaceOnce(x, /<domain type='qemu'/, "<domain type='qemu'", "<domain type='qemu'> (TCG)");
  x = replaceOnce(x, /<name>[^<]*<\/name>/, `<name>${s.name}</name>`, '<name>');
  x = replaceOnce(x, /<memory unit='MiB'>\d+<\/memory>/, `<memory unit='MiB'>${s.memMb}</memory>`, '<memory>');
  x = replaceOnce(x, /<currentMemory unit='MiB'>\d+<\/currentMemory>/, `<currentMemory unit='MiB'>${s.memMb}</currentMemory>`, '<currentMemory>');
  x = replaceOnce(
    x,
    /<boot dev='hd'\/>/,
    `<kernel>${s.kernel}</kernel>\n    <initrd>${s.initrd}</initrd>\n    <cmdline>${s.cmdline}</cmdline>`,
    "<boot dev='hd'/>",
  );
  x = replaceOnce(x, /\n *<disk [^>]*>[\s\S]*?<\/disk>/, '', '<disk>');
  x = replaceOnce(x, /<serial type='pty'>\s*<target port='0'\/>/, `<serial type='pty'>\n      <log file='${s.consoleLog}' append='off'/>\n      <target port='0'/>`, "<serial type='pty'>");
  x = replaceOnce(x, /path=\/run\/vmpi\/vm1\.sock/, `path=${s.socket}`, 'socket path of chardev vmpi0');
  return x;
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

function scrape(url: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = get(url, { agent: false, timeout: 5000 }, (r) => {
      let body = '';
      r.setEncoding('utf8').on('data', (c: string) => (body += c));
      r.on('end', () => res(body));
    });
    req.on('timeout', () => req.destroy(new Error('metrics scrape timed out')));
    req.on('error', rej);
  });
}

/** `p`, or a rejection naming `what` when it has not settled within `ms`. */
async function within<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `check` every 100 ms until it returns a value, for at most `ms`. */
async function until<T>(what: string, ms: number, check: () => T | null | Promise<T | null>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** The guest: `vmpi guest`, then an echo application on the client library. */
const GUEST_JS = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('LV-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const difs = await c.listDifs();
let echoed = 0;
const echo = await c.register('${DIF}', 'echo/1');
echo.on('request', async (req) => {
  const f = await req.accept();
  out('FLOW', { datapath: f.datapath });
  f.on('data', (sdu) => { echoed++; f.write(sdu); });
});
const quit = await c.register('${DIF}', 'quit/1');
quit.on('request', async (req) => {
  await req.reject('bye');
  out('QUIT', { echoed });
  setTimeout(() => process.exit(0), 100);
});
out('READY', { difs });
`;
const GUEST_SCRIPT = nodeScript(
  GUEST_JS,
  `echo "LV-DRIVER $(ls /sys/bus/virtio/drivers/vmpi 2>/dev/null | grep -c '^virtio') $(ls /dev | grep '^vmpi' | tr '\\n' ' ')"
mkdir -p /run/vmpi
node /opt/vmpi/dist/src/cli.js guest --log-level warn &
for i in $(seq 1 200); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`,
);

/** The guest initramfs with GUEST_SCRIPT as /etc/vmpi-run.sh (as launch-guest.sh --run does). */
function buildInitrd(dir: string, out: string): void {
  const extra = join(dir, 'extra');
  mkdirSync(join(extra, 'etc'), { recursive: true });
  writeFileSync(join(extra, 'etc', 'vmpi-run.sh'), GUEST_SCRIPT, { mode: 0o755 });
  const r = spawnSync(
    'bash',
    ['-c', `set -euo pipefail; cp "$1" "$3"; cd "$2" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -n >> "$3"`, 'sh', join(GUEST_DIR, 'initramfs-node.cpio.gz'), extra, out],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (r.status !== 0) throw new Error(`building the guest initrd failed: ${r.stderr}`);
  rmSync(extra, { recursive: true, force: true });
  chmodSync(out, 0o644);
}

/**
 * libvirtd and virtlogd for the test: where virsh already reaches a libvirtd (running, or socket
 * activated by systemd) nothing is started; else each one not running is started with -d.
 */
async function startLibvirt(started: Daemon[]): Promise<void> {
  if (virsh(['list', '--all', '--name'], 15_000).ok) return;
  mkdirSync('/var/log/libvirt', { recursive: true });
  mkdirSync('/var/run/libvirt', { recursive: true });
  // virtlogd first: libvirtd hands it QEMU's log and the console log.
  for (const n of ['virtlogd', 'libvirtd'] as const) {
    const d = await ensureDaemon(n);
    if (d) started.push(d);
  }
  // (`virsh list`, not `virsh version`: that probes QEMU on every call, seconds each.)
  await until('libvirtd to answer virsh', 30_000, () => (virsh(['list', '--all', '--name'], 10_000).ok ? true : null));
}

const tStart = Date.now();
const started: Daemon[] = [];
let unavailable = unavailableReason();
if (!unavailable) {
  try {
    await startLibvirt(started);
  } catch (e) {
    unavailable = `libvirtd cannot run here: ${(e as Error).message}`;
  }
}
t.teardown(async () => {
  // Stop the daemons this test started, unless someone else's domain appeared meanwhile.
  const others = started.length > 0 ? virsh(['list', '--all', '--name'], 15_000).out.trim() : '';
  if (others === '') for (const d of started.reverse()) await stopDaemon(d);
  started.length = 0;
});

/** The domain defined now, the server and the image directory, for the signal handler. */
let liveDomain: string | null = null;
let liveServe: ChildProcess | null = null;
let liveDir: string | null = null;
function removeDomainSync(name: string): void {
  const st = virsh(['domstate', name], 15_000);
  if (st.ok && !/shut off/.test(st.out)) virsh(['destroy', name], 30_000);
  virsh(['undefine', name], 30_000);
  rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
  liveDomain = null;
}
// Killed (tap's timeout, Ctrl-C): the VM runs under libvirtd, not as a child of this process, so
// destroy it and stop the daemons started here before going.
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    if (liveDomain) removeDomainSync(liveDomain);
    liveServe?.kill('SIGKILL');
    if (liveDir) rmSync(liveDir, { recursive: true, force: true });
    for (const d of started) {
      try {
        process.kill(d.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    process.exit(1);
  });
}
if (unavailable && process.env.CI) t.fail(`libvirt test cannot run in CI: ${unavailable}`);

t.test('the shipped libvirt domain boots with a VMPI device and a shim DIF flow works', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  let serve: ChildProcess | undefined;
  let serveLog = '';
  let defined = false;
  const name = `vmpi-test-${process.pid}`;
  const dir = mkdtempSync(join(IMAGES, 'vmpi-test-'));
  chmodSync(dir, 0o755); // libvirt-qemu (group kvm) must reach the socket, kernel and initrd
  liveDir = dir;
  const consoleLog = join(dir, 'console.log');
  const consoleText = () => {
    try {
      return readFileSync(consoleLog, 'utf8');
    } catch {
      return '';
    }
  };
  const diag = () => `\n--- console ---\n${consoleText().slice(-3000)}\n--- vmpi serve ---\n${serveLog.slice(-3000)}`;

  t.teardown(async () => {
    if (defined) removeDomainSync(name);
    if (serve && serve.exitCode === null && serve.signalCode === null) {
      const gone = new Promise((r) => serve!.once('exit', r));
      serve.kill('SIGTERM');
      await Promise.race([gone, sleep(10_000)]);
      if (serve.exitCode === null && serve.signalCode === null) serve.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
    liveDir = null;
  });

  // 1. libvirt (started above).
  const kvm = existsSync('/dev/kvm') ? statSync('/dev/kvm') : null;
  if (kvm && (kvm.mode & 0o060) !== 0o060) t.comment('/dev/kvm is not group-accessible: libvirt re-probes QEMU on every call (slow); scripts/setup-system.sh fixes it');
  t.comment(`libvirtd answers ${((Date.now() - tStart) / 1000).toFixed(1)} s after the test started`);
  t.pass(`libvirtd answers (${started.length ? `started here: ${started.map((d) => d.name).join(', ')}` : 'already running'})`);

  // 2. vmpi serve, its socket in group kvm (QEMU runs as libvirt-qemu, a member of kvm).
  const socket = join(dir, 'vm.sock');
  const ipcSocket = join(dir, 'ipc.sock');
  const port = await freePort();
  const cfg = join(dir, 'vmpi.yaml');
  writeFileSync(cfg, `devices:\n  - {socket: ${socket}, vmpiId: ${VMPI_ID}, group: kvm, mode: "0660"}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  serve = spawn(process.execPath, [...NODE_ARGS, 'serve', '--config', cfg, '--ipc-socket', ipcSocket, '--metrics-listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveServe = serve;
  serve.stdout!.setEncoding('utf8').on('data', (s: string) => (serveLog += s));
  serve.stderr!.setEncoding('utf8').on('data', (s: string) => (serveLog += s));
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;
  const deviceUp = async (): Promise<string | null> => {
    if (serve!.exitCode !== null) throw new Error(`vmpi serve exited ${serve!.exitCode}:${diag()}`);
    const m = await scrape(metricsUrl).catch(() => '');
    return new RegExp(`^vmpi_device_up\\{vmpi_id="${VMPI_ID}"\\} ([01])$`, 'm').exec(m)?.[1] ?? null;
  };
  t.equal(await until('vmpi serve metrics', 30_000, deviceUp), '0', 'vmpi serve listens; the device is down before the VM');
  await until('the IPC socket', 10_000, () => (existsSync(ipcSocket) ? true : null));
  t.comment(`vmpi serve up ${((Date.now() - tStart) / 1000).toFixed(1)} s after the test started`);

  // 3. The test domain from the shipped file: kernel and initrd where libvirt-qemu reads them.
  const kernel = join(dir, 'vmlinuz');
  copyFileSync(join(GUEST_DIR, 'vmlinuz'), kernel);
  chmodSync(kernel, 0o644);
  const initrd = join(dir, 'initrd.cpio.gz');
  buildInitrd(dir, initrd);
  const xml = testDomainXml(readFileSync(SHIPPED, 'utf8'), {
    name,
    memMb: 768,
    socket,
    kernel,
    initrd,
    cmdline: 'console=ttyS0 quiet panic=-1',
    consoleLog,
  });
  const xmlFile = join(dir, 'domain.xml');
  writeFileSync(xmlFile, xml);
  const def = virsh(['define', xmlFile]);
  t.ok(def.ok, `virsh define: ${def.out.trim()}`);
  defined = def.ok;
  if (defined) liveDomain = name;
  if (!def.ok) return;
  t.comment(`domain defined ${((Date.now() - tStart) / 1000).toFixed(1)} s after the test started`);
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s after virsh start`;
  const st = virsh(['start', name], 90_000);
  t.ok(st.ok, `virsh start: ${st.out.trim()}`);
  if (!st.ok) {
    t.comment(`QEMU log: ${readQemuLog(name)}`);
    return;
  }
  const dump = virsh(['dumpxml', name]).out;
  t.notMatch(dump, /<address type='pci' domain='0x0000' bus='0x00' slot='0x10'/, 'libvirt put none of its own devices at the VMPI slot (pcie.0 0x10)');

  // 4. The guest driver binds the device; the back-end sees both queues running.
  const drv = await until('the guest driver line', 120_000, () => /LV-DRIVER (\d+) ([^\r\n]*)\r?\n/.exec(consoleText()));
  t.comment(`guest driver up ${since()}`);
  t.equal(drv[1], '1', 'vmpi.ko bound the virtio device');
  t.match(drv[2]!, /\bvmpi0\b/, '/dev/vmpi0 exists in the guest');
  t.equal(await until('vmpi_device_up 1', 60_000, async () => ((await deviceUp()) === '1' ? '1' : null)), '1', 'vmpi serve reports vmpi_device_up 1');

  // 5. A shim DIF flow: host application → guest echo application and back.
  const readyM = await until('the guest application', 120_000, () => /LV-READY (\{[^\r\n]*\})\r?\n/.exec(consoleText())).catch((e: Error) => {
    throw new Error(e.message + diag());
  });
  t.comment(`guest application ready ${since()}`);
  t.same(JSON.parse(readyM[1]!).difs, [{ name: DIF, address: VMPI_ID }], 'vmpi guest offers the shim DIF of the device');
  const app = await within('the IPC daemon to accept a client', 10_000, IpcClient.connect(ipcSocket));
  t.teardown(() => app.close());
  const f = await within('the flow to echo/1 to be allocated', 60_000, app.allocate(DIF, 'echo/1', { src: 'lvclient/1', qos: { maxSdu: 4000 } }));
  t.equal(f.state, 'allocated', 'flow allocated from the host to the guest application');
  for (const [i, size] of SIZES.entries()) await within(`SDU ${i} to be taken by the flow`, 30_000, f.send(patternSdu(i, i, size)));
  const echoes = await readN(f, SIZES.length, 60_000);
  const bad = echoes.filter((sdu, i) => Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(i, i, SIZES[i]!))) !== 0).length;
  t.equal(bad, 0, `${SIZES.length} SDUs of 0..4000 bytes echoed back intact and in order`);
  t.match(consoleText(), /LV-FLOW \{"datapath":"vmpi_file"\}/, 'the guest application reads the driver file of its channel');
  t.match(await within('the quit/1 allocation to be answered', 60_000, app.allocate(DIF, 'quit/1').catch((e: unknown) => e)), { code: 'rejected', peerReason: 'bye' }, 'quit request answered');
  const exit = await until('the guest to power off', 60_000, () => /VMPI-GUEST-EXIT (\d+)/.exec(consoleText()));
  t.equal(exit[1], '0', 'the guest script ended with status 0');
  t.match(consoleText(), new RegExp(`LV-QUIT \\{"echoed":${SIZES.length}\\}`), 'the guest echo application saw every SDU');
  await until('the domain to shut off', 30_000, () => (/shut off/.test(virsh(['domstate', name], 10_000).out) ? true : null));
  t.pass(`the domain shut off after the guest powered off (${since()})`);
});

function readQemuLog(name: string): string {
  try {
    return readFileSync(`/var/log/libvirt/qemu/${name}.log`, 'utf8').slice(-3000);
  } catch {
    return '(no QEMU log)';
  }
}
