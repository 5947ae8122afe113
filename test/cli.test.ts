/**
 * cli.test.ts — the `vmpi` command as a process (`node --import tsx src/cli.ts …`, so the pid is
 * the CLI's own, as systemd socket activation needs): help and version, usage errors (exit 2),
 * check-config (0 valid, 1 invalid with every problem), and serve: start-up from flags and from a
 * config file, socket permissions, the metrics endpoint, an inherited socket (LISTEN_FDS), and a
 * clean exit 0 on SIGTERM/SIGINT that removes the sockets it created.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { native } from '../src/sys/native.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'src/cli.ts');
// tsx as a loader of this very process (not the tsx CLI, which would run a child node).
const NODE_ARGS = ['--import', import.meta.resolve('tsx'), CLI];
const dir = mkdtempSync(join(tmpdir(), 'vmpi-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running CLI process with its output so far. */
class Proc {
  stdout = '';
  stderr = '';
  readonly done: Promise<Result>;
  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.done = new Promise((res) => child.on('close', (code, signal) => res({ code, signal, stdout: this.stdout, stderr: this.stderr })));
  }

  /** Wait for the process to exit, at most `ms`: then it is killed and the test fails with its output. */
  async wait(ms = 30000): Promise<Result> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, rej) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        rej(new Error(`vmpi ${this.child.spawnargs.slice(-4).join(' ')} did not exit within ${ms} ms; stderr:\n${this.stderr}`));
      }, ms);
    });
    try {
      return await Promise.race([this.done, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Wait for a stderr (log) line matching `re`; returns the match. */
  async waitLog(re: RegExp, ms = 15000): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = this.stderr.match(re);
      if (m) return m;
      if (this.child.exitCode !== null || Date.now() > end) throw new Error(`no log line ${re} (exit ${this.child.exitCode}); stderr:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function start(args: string[], opts: { env?: NodeJS.ProcessEnv; stdio?: StdioOptions; shell?: string } = {}): Proc {
  // Without tap's NODE_OPTIONS (its process-info loader would slow every child down).
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: undefined, VMPI_LOG_LEVEL: 'info', ...opts.env };
  delete env.NODE_OPTIONS;
  const stdio = opts.stdio ?? ['ignore', 'pipe', 'pipe'];
  const child = opts.shell
    ? spawn('/bin/sh', ['-c', opts.shell, 'sh', process.execPath, ...NODE_ARGS, ...args], { cwd: dir, env, stdio })
    : spawn(process.execPath, [...NODE_ARGS, ...args], { cwd: dir, env, stdio });
  return new Proc(child);
}

function run(args: string[], env?: NodeJS.ProcessEnv): Promise<Result> {
  return start(args, { env }).wait();
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** GET `url`'s body; fails after `ms` when the endpoint does not answer. */
function scrape(url: string, ms = 10000): Promise<string> {
  return new Promise((res, rej) => {
    const req = get(url, { agent: false, timeout: ms }, (r) => {
      let body = '';
      r.setEncoding('utf8').on('data', (c: string) => (body += c));
      r.on('end', () => res(body));
    });
    req.on('timeout', () => req.destroy(new Error(`${url} did not answer within ${ms} ms`)));
    req.on('error', rej);
  });
}

t.test('help and version', async (t) => {
  const main = await run(['--help']);
  t.equal(main.code, 0);
  t.match(main.stdout, /Usage: vmpi <command>/);
  t.match(main.stdout, /check-config/);
  t.equal((await run([])).stdout, main.stdout, 'no command: main help');
  for (const [cmd, re] of [
    ['serve', /Usage: vmpi serve .*--config FILE/s],
    ['check-config', /Usage: vmpi check-config FILE/],
    ['qemu-args', /Usage: vmpi qemu-args --socket PATH/],
    ['guest', /Usage: vmpi guest \[--device \/dev\/vmpiN\]/],
    ['ipcp', /Usage: vmpi ipcp list \[--ipc-socket PATH\] \[--json\]/],
    ['dif', /Usage: vmpi dif show NAME \[--ipc-socket PATH\] \[--json\]/],
  ] as const) {
    const r = await run([cmd, '--help']);
    t.equal(r.code, 0, `${cmd} --help exits 0`);
    t.match(r.stdout, re);
    t.equal(r.stderr, '');
  }
  const v = await run(['--version']);
  t.equal(v.code, 0);
  t.equal(v.stdout, '0.1.0\n');
});

t.test('usage errors exit 2 with a message', async (t) => {
  const bogus = await run(['serve', '--bogus']);
  t.equal(bogus.code, 2);
  t.match(bogus.stderr, /^vmpi serve: Unknown option '--bogus'/);
  const cmd = await run(['frobnicate']);
  t.equal(cmd.code, 2);
  t.equal(cmd.stderr, 'vmpi: unknown command "frobnicate"; see vmpi --help\n');
  const none = await run(['serve', '--no-metrics']);
  t.equal(none.code, 2);
  t.equal(none.stderr, 'vmpi serve: give at least one --socket PATH, --listen-fd N or --config FILE\n');
  const ids = await run(['serve', '--socket', 'x.sock', '--vmpi-id', '3', '--vmpi-id', '4']);
  t.equal(ids.code, 2, 'more --vmpi-id than devices is a usage error');
  t.equal(ids.stderr, 'vmpi serve: --vmpi-id given 2 times for 1 device (--socket/--listen-fd); give one --vmpi-id per --socket, in the same order\n');
  const id = await run(['serve', '--socket', 'x.sock', '--vmpi-id', '70000']);
  t.equal(id.code, 2);
  t.equal(id.stderr, '--vmpi-id 70000: expected an integer 1..65535\n');
  const addr = await run(['serve', '--socket', 'x.sock', '--metrics-listen', 'nowhere']);
  t.equal(addr.code, 2);
  t.equal(addr.stderr, '--metrics-listen nowhere: is not HOST:PORT or :PORT (for example "127.0.0.1:19464", "[::1]:19464" or ":19464")\n');
  const lvl = await run(['serve', '--socket', 'x.sock', '--log-level', 'loud']);
  t.equal(lvl.code, 2);
  t.equal(lvl.stderr, '--log-level loud: expected one of trace, debug, info, warn, error, fatal, silent\n');
  const gb = await run(['guest', '--bogus']);
  t.equal(gb.code, 2, 'vmpi guest: unknown option');
  t.match(gb.stderr, /^vmpi guest: Unknown option '--bogus'/);
  const noDev = await run(['guest', '--device', join(dir, 'vmpi9'), '--ipc-socket', join(dir, 'g.sock')]);
  t.equal(noDev.code, 1, 'vmpi guest on a missing device: runtime error');
  t.equal(noDev.stderr, `vmpi guest: cannot open ${join(dir, 'vmpi9')}: no such device. Is the VMPI guest driver loaded (insmod vmpi.ko) and does the VM have a VMPI device?\n`);
  t.notOk(existsSync(join(dir, 'g.sock')), 'no IPC socket left behind');
  const cc = await run(['check-config']);
  t.equal(cc.code, 2);
  t.equal(cc.stderr, 'vmpi check-config: expected one FILE, got 0; see vmpi check-config --help\n');
  const cc2 = await run(['check-config', 'a.yaml', 'b.yaml']);
  t.equal(cc2.code, 2);
  t.equal(cc2.stderr, 'vmpi check-config: expected one FILE, got 2; see vmpi check-config --help\n');
  t.equal((await run(['check-config', '--bogus', 'a.yaml'])).code, 2);
  t.notOk(existsSync(join(dir, 'x.sock')), 'nothing created on a usage error');
});

t.test('qemu-args: QEMU escaping, sizes, one device', async (t) => {
  const r = await run(['qemu-args', '--socket', '/run/vm,1.sock', '--mem', '8G']);
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    ['-object', 'memory-backend-memfd,id=mem,size=8G,share=on', '-machine', 'q35,memory-backend=mem', '-m', '8G', '-chardev', 'socket,id=vmpi0,path=/run/vm,,1.sock', '-device', 'vhost-user-gpio-pci,chardev=vmpi0,id=vmpi0', ''].join('\n'),
    'a comma in a path is doubled, as QEMU option syntax needs',
  );
  for (const [args, re] of [
    [['qemu-args', '--socket', 'a.sock', '--mem', 'banana'], 'vmpi qemu-args: --mem banana: expected a size such as 512M, 8G or 1073741824\n'],
    [['qemu-args', '--socket', 'a.sock', '--socket', 'b.sock'], 'vmpi qemu-args: --socket given 2 times; it describes one device, give it once\n'],
    [['qemu-args', '--socket', 'a.sock', '--id', 'x,y'], "vmpi qemu-args: --id x,y: QEMU ids start with a letter and use letters, digits, '.', '_' and '-'\n"],
  ] as const) {
    const bad = await run([...args]);
    t.equal(bad.code, 2, `${args.join(' ')}: usage error`);
    t.equal(bad.stderr, re);
    t.equal(bad.stdout, '', 'nothing half-printed');
  }
});

t.test('VMPI_LOG_LEVEL that pino does not know: a warning, not a crash', async (t) => {
  const r = await run(['--help'], { VMPI_LOG_LEVEL: 'verbose' });
  t.equal(r.code, 0);
  t.match(r.stdout, /Usage: vmpi <command>/);
  t.notMatch(r.stderr, /at .*levels\.js|Error:/, 'no stack trace');
  const c = await run(['check-config', '--schema'], { VMPI_LOG_LEVEL: 'loud' });
  t.equal(c.code, 0);
});

t.test('check-config', async (t) => {
  const good = file('good.yaml', 'devices:\n  - {socket: a.sock, vmpiId: 3, owner: root, mode: "0600"}\n  - {socket: b.sock}\nmetrics: {listen: "127.0.0.1:9999"}\n');
  const r = await run(['check-config', good]);
  t.equal(r.code, 0);
  t.equal(r.stdout, `${good}: ok: 2 devices (VMPI-ids 3, auto), metrics on 127.0.0.1:9999\n`);
  t.equal(r.stderr, '');

  const json = file('good.json', '{"devices": [{"socket": "j.sock", "mode": "0660"}], "metrics": {"enabled": false}}');
  const rj = await run(['check-config', json]);
  t.equal(rj.code, 0);
  t.equal(rj.stdout, `${json}: ok: 1 device (VMPI-ids auto), metrics off\n`);

  const withNormal = file('normal.yaml', 'devices:\n  - {socket: n.sock}\nnormal: {dif: n.DIF}\n');
  const rn = await run(['check-config', withNormal]);
  t.equal(rn.code, 0);
  t.equal(rn.stdout, `${withNormal}: ok: 1 device (VMPI-ids auto), metrics on 127.0.0.1:19464, normal DIF n.DIF\n`);
  const badNormal = file('badnormal.yaml', 'devices:\n  - {socket: n.sock}\nnormal: {dif: n.DIF, maxPduSize: 10}\n');
  const rbn = await run(['check-config', badNormal]);
  t.equal(rbn.code, 1);
  t.equal(rbn.stderr, `${badNormal}: normal.maxPduSize: 10 is below the minimum 1024\n`, 'the error names the field');

  // serve --config refuses a file without devices, so check-config must not call it ok.
  const empty = file('empty.json', '{"metrics": {"enabled": false}}');
  const re = await run(['check-config', empty]);
  t.equal(re.code, 1, 'no devices: invalid, as serve --config would say');
  t.equal(re.stdout, '');
  t.equal(re.stderr, `${empty}: devices: none: vmpi serve --config ${empty} would refuse to start; list devices (or shimUdp, shimEth), or serve it with --socket PATH\n`);
  // A shim DIF over UDP is enough to serve (no VM at all).
  const udpOnly = file('udp.json', '{"metrics": {"enabled": false}, "shimUdp": {"dif": "udp.lo", "bind": "127.0.0.1:7300"}, "normal": {"dif": "n.DIF", "role": "member"}}');
  const ru = await run(['check-config', udpOnly]);
  t.equal(ru.code, 0, ru.stderr);
  t.equal(ru.stdout, `${udpOnly}: ok: no device, metrics off, shim-udp DIF udp.lo on 127.0.0.1:7300, normal DIF n.DIF (member)\n`);
  // A member of a mesh: it enrolls others and keeps further neighbours; a bad neighbour is one line.
  const mesh = file('mesh.json', '{"metrics": {"enabled": false}, "shimUdp": {"dif": "udp.lo", "bind": "127.0.0.1:7300"}, "normal": {"dif": "n.DIF", "role": "member", "acceptEnrollment": true, "neighbours": [{"name": "c.n", "dif": "udp.lo"}]}}');
  const rmesh = await run(['check-config', mesh]);
  t.equal(rmesh.code, 0, rmesh.stderr);
  t.equal(rmesh.stdout, `${mesh}: ok: no device, metrics off, shim-udp DIF udp.lo on 127.0.0.1:7300, normal DIF n.DIF (member, enrolls others, 1 neighbour)\n`);
  const badMesh = file('badmesh.json', '{"metrics": {"enabled": false}, "shimUdp": {"dif": "udp.lo", "bind": "127.0.0.1:7300"}, "normal": {"dif": "n.DIF", "role": "member", "neighbours": [{"name": "c.n", "dif": "udp.l0"}]}}');
  const rbm = await run(['check-config', badMesh]);
  t.equal(rbm.code, 1);
  t.equal(rbm.stderr, `${badMesh}: normal.neighbours[0].dif: "udp.l0" is not a lower DIF of this process; use "udp.lo" or a device's "hv.vmpi-<VMPI-id>"\n`, 'one line naming the field');
  // So is a shim DIF over Ethernet.
  const ethOnly = file('eth.json', '{"metrics": {"enabled": false}, "shimEth": {"dif": "eth.v100", "interface": "eth0", "vlan": 100}}');
  const rx = await run(['check-config', ethOnly]);
  t.equal(rx.code, 0, rx.stderr);
  t.equal(rx.stdout, `${ethOnly}: ok: no device, metrics off, shim-eth DIF eth.v100 on eth0 VLAN 100\n`);

  // Valid but unsafe: any local user could play the VM's front-end.
  const open = file('open.yaml', 'devices:\n  - {socket: o.sock, mode: "0777"}\n');
  const ro = await run(['check-config', open]);
  t.equal(ro.code, 0, 'a world-writable socket is allowed…');
  t.equal(ro.stdout, `${open}: ok: 1 device (VMPI-ids auto), metrics on 127.0.0.1:19464\n`);
  t.equal(ro.stderr, `${open}: warning: devices[0].mode: "0777" lets every local user connect to this vhost-user socket and act as the VM's front-end; use "0660" with group: kvm (or the group QEMU runs as)\n`, '…with a warning');

  // The octal hint speaks the file's own syntax.
  const jm = file('mode.json', '{"devices": [{"socket": "m.sock", "mode": 660}]}');
  const rm = await run(['check-config', jm]);
  t.equal(rm.code, 1);
  t.equal(rm.stderr, `${jm}: devices[0].mode: 660 is an integer, expected a quoted octal mode such as "0660" (write it as a string, "mode": "0660": a JSON number is decimal)\n`);
  t.notMatch(rm.stderr, /YAML/, 'no YAML advice for a JSON file');

  const bad = file('bad.yaml', 'devices:\n  - {socket: a.sock, vmpiId: 1}\n  - {socket: b.sock, vmpiId: 70000, owner: nosuch-user-vmpi-test}\n  - {socket: a.sock, vmpiId: 1}\nlog: {level: loud}\n');
  const rb = await run(['check-config', bad]);
  t.equal(rb.code, 1);
  t.equal(rb.stdout, '');
  t.same(rb.stderr.trimEnd().split('\n').sort(), [
    `${bad}: devices[1].owner: user "nosuch-user-vmpi-test" does not exist on this host`,
    `${bad}: devices[1].vmpiId: 70000 is above the maximum 65535`,
    `${bad}: devices[2].socket: "${join(dir, 'a.sock')}" is already used by devices[0]; each device needs its own socket`,
    `${bad}: devices[2].vmpiId: 1 is already used by devices[0]; VMPI-ids must be unique on a host`,
    `${bad}: log.level: "loud" is not one of trace, debug, info, warn, error, fatal, silent`,
  ]);

  const missing = await run(['check-config', join(dir, 'nope.yaml')]);
  t.equal(missing.code, 1);
  t.equal(missing.stderr, `${join(dir, 'nope.yaml')}: cannot read the file: ENOENT: no such file or directory, open '${join(dir, 'nope.yaml')}'\n`);

  const schema = await run(['check-config', '--schema']);
  t.equal(schema.code, 0);
  const s = JSON.parse(schema.stdout) as { properties: Record<string, unknown> };
  t.same(Object.keys(s.properties), ['devices', 'metrics', 'log', 'ipc', 'normal', 'shimUdp', 'shimEth', 'difs', 'ipcps']);
  t.same(Object.keys((s.properties.log as { properties: object }).properties), ['level', 'format']);
});

t.test('serve: flags and a config file, metrics, permissions, SIGTERM', async (t) => {
  const cfg = file('serve.yaml', 'devices:\n  - {socket: c1.sock, vmpiId: 4, owner: root, group: root, mode: "0600"}\nlog: {level: warn}\n');
  const p = start(['serve', '--config', cfg, '--socket', 'f1.sock', '--metrics-listen', '127.0.0.1:0', '--log-level', 'info']);
  const [, url] = await p.waitLog(/"url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/);
  await p.waitLog(/"from":"--socket #1","msg":"device configured"/);
  t.equal(statSync(join(dir, 'c1.sock')).mode & 0o777, 0o600, 'mode from the config applied');
  t.equal(statSync(join(dir, 'c1.sock')).uid, 0);
  t.ok(statSync(join(dir, 'f1.sock')).isSocket());
  const m = await scrape(url!);
  t.match(m, /^vmpi_device_up\{vmpi_id="4"\} 0$/m);
  t.match(m, /^vmpi_device_up\{vmpi_id="1"\} 0$/m, 'flag device got the lowest free id');
  t.match(m, /^vmpi_build_info\{version="0\.1\.0"/m);
  p.child.kill('SIGTERM');
  const r = await p.wait();
  t.equal(r.code, 0, 'exit 0 on SIGTERM');
  t.match(r.stderr, /"signal":"SIGTERM","msg":"shutting down"/);
  t.notOk(existsSync(join(dir, 'c1.sock')), 'config socket removed');
  t.notOk(existsSync(join(dir, 'f1.sock')), 'flag socket removed');
});

t.test('vhost-user back-end conventions: --print-capabilities, --socket-path, --fd, the descriptor', async (t) => {
  for (const args of [['--print-capabilities'], ['serve', '--print-capabilities', '--bogus', 'x'], ['--print-capabilities', '--socket-path', 'nowhere.sock']]) {
    const r = await run(args);
    t.equal(r.code, 0, `${args.join(' ')}: exit 0, other arguments ignored`);
    const caps = JSON.parse(r.stdout) as { type: string; features: string[] };
    t.equal(caps.type, 'vmpi');
    t.same(caps.features, ['socket-path', 'fd', 'vmpi-id', 'max-sdu-log2', 'config', 'socket-activation', 'sd-notify', 'ipc-socket', 'metrics-listen'], 'names the conventions it follows');
    t.notOk(existsSync(join(dir, 'nowhere.sock')), 'nothing served');
  }
  const both = await run(['--socket-path', 'a.sock', '--fd', '3']);
  t.equal(both.code, 2);
  t.equal(both.stderr, 'vmpi serve: --socket-path and --fd exclude each other (vhost-user back-end conventions)\n');

  // `vmpi --socket-path=PATH` is `vmpi serve --socket PATH`.
  const p = start(['--socket-path=conv.sock', '--vmpi-id', '12', '--no-metrics', '--no-ipc']);
  await p.waitLog(/"vmpiId":12,.*"msg":"device configured"/);
  t.ok(statSync(join(dir, 'conv.sock')).isSocket(), 'serves on --socket-path');
  p.child.kill('SIGTERM');
  t.equal((await p.wait()).code, 0, 'SIGTERM ends it cleanly');

  const desc = JSON.parse(readFileSync(join(ROOT, 'qemu-configs/vhost-user/50-vmpi.json'), 'utf8')) as Record<string, unknown>;
  t.same(Object.keys(desc).sort(), ['binary', 'description', 'tags', 'type'], 'the descriptor has the fields of vhost-user.json\'s VhostUserBackend');
  t.equal(desc.type, 'vmpi', 'and the type --print-capabilities reports');
  t.equal(desc.binary, '/opt/vmpi/bin/vmpi-vhost-user');
  t.equal(statSync(join(ROOT, 'bin/vmpi-vhost-user')).mode & 0o111, 0o111, 'bin/vmpi-vhost-user is executable');
  // It runs the built CLI (dist/, made by npm run build / bootstrap.sh), as an installed host would.
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const bin = spawnSync(join(ROOT, 'bin/vmpi-vhost-user'), ['--print-capabilities'], { encoding: 'utf8', env, timeout: 30000 });
  t.equal(bin.status, 0, bin.stderr);
  t.equal((JSON.parse(bin.stdout) as { type: string }).type, 'vmpi', 'the descriptor\'s binary answers --print-capabilities');
});

t.test('serve: SIGINT, and --no-metrics', async (t) => {
  const p = start(['serve', '--socket', 'i1.sock', '--vmpi-id', '9', '--no-metrics']);
  await p.waitLog(/"msg":"device configured"/);
  t.notMatch(p.stderr, /metrics listening/);
  p.child.kill('SIGINT');
  const r = await p.wait();
  t.equal(r.code, 0);
  t.notOk(existsSync(join(dir, 'i1.sock')));
});

t.test('serve: VMPI_IPC_SOCKET places the IPC daemon, as it does for guest and tgen', async (t) => {
  const ipc = join(dir, 'env-ipc.sock');
  const p = start(['serve', '--socket', 'v1.sock', '--no-metrics'], { env: { VMPI_IPC_SOCKET: ipc } });
  await p.waitLog(/"msg":"device configured"/);
  const end = Date.now() + 10000;
  while (!existsSync(ipc) && Date.now() < end && p.child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  t.ok(existsSync(ipc) && statSync(ipc).isSocket(), `the daemon listens on $VMPI_IPC_SOCKET; stderr:\n${p.stderr}`);
  p.child.kill('SIGTERM');
  t.equal((await p.wait()).code, 0);
  t.notOk(existsSync(ipc), 'and removes it at shutdown');
});

t.test('serve: an invalid config or a failed start exits 1 and leaves no socket', async (t) => {
  const bad = file('serve-bad.json', JSON.stringify({ devices: [{ socket: 'x1.sock', vmpiId: 0 }, { socket: 'x2.sock', mode: 'rw' }] }));
  const r = await run(['serve', '--config', bad]);
  t.equal(r.code, 1);
  t.equal(r.stderr, `vmpi serve: ${bad}: devices[0].vmpiId: 0 is below the minimum 1\nvmpi serve: ${bad}: devices[1].mode: "rw" is not a quoted octal mode such as "0660"\n`);

  const dupe = await run(['serve', '--config', file('one.yaml', 'devices: [{socket: d.sock, vmpiId: 2}]\n'), '--socket', 'e.sock', '--vmpi-id', '2', '--no-metrics']);
  t.equal(dupe.code, 1);
  t.equal(dupe.stderr, 'vmpi serve: --socket #1.vmpiId: 2 is already used by devices[0]; VMPI-ids must be unique on a host\n');

  // The metrics port is taken: nothing may be left behind.
  const holder = start(['serve', '--socket', 'h.sock', '--metrics-listen', '127.0.0.1:0']);
  const [, port] = await holder.waitLog(/"url":"http:\/\/127\.0\.0\.1:(\d+)\/metrics"/);
  const clash = await run(['serve', '--socket', 'k.sock', '--metrics-listen', `127.0.0.1:${port}`]);
  t.equal(clash.code, 1);
  t.match(clash.stderr, new RegExp(`metrics: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
  t.notOk(existsSync(join(dir, 'k.sock')));
  const busy = await run(['serve', '--socket', 'h.sock', '--no-metrics']);
  t.equal(busy.code, 1, 'a socket another server listens on');
  t.match(busy.stderr, /--socket #1: another server is already listening on/);
  holder.child.kill('SIGTERM');
  t.equal((await holder.wait()).code, 0);

  const owner = await run(['serve', '--config', file('owner.yaml', 'devices: [{socket: o.sock, owner: nosuch-user-vmpi-test}]\n'), '--no-metrics']);
  t.equal(owner.code, 1);
  t.equal(owner.stderr, 'vmpi serve: devices[0].owner: user "nosuch-user-vmpi-test" does not exist on this host\n');
  t.notOk(existsSync(join(dir, 'o.sock')));
});

t.test('serve: systemd socket activation (LISTEN_FDS, LISTEN_PID)', async (t) => {
  const path = join(dir, 'act.sock');
  const fd = native.listenUnix(path, 4);
  // sh sets LISTEN_PID to its own pid and execs node, which keeps the pid, as systemd does.
  const shell = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"';
  const p = start(['serve', '--vmpi-id', '12', '--no-metrics'], { shell, stdio: ['ignore', 'pipe', 'pipe', fd] });
  native.close(fd);
  await p.waitLog(/"vmpiId":12,"socket":"fd:3","dif":"hv.vmpi-12","from":"--listen-fd 3","msg":"device configured"/);
  const c = native.connectUnix(path);
  await p.waitLog(/"msg":"front-end connected"/);
  native.close(c);
  await p.waitLog(/"msg":"front-end disconnected"/);
  p.child.kill('SIGTERM');
  const r = await p.wait();
  t.equal(r.code, 0);
  t.ok(existsSync(path), 'an inherited socket is not removed (systemd owns it)');
  rmSync(path);

  // LISTEN_PID of another process: not ours, ignored.
  const other = await run(['serve', '--no-metrics'], { LISTEN_PID: '1', LISTEN_FDS: '1' });
  t.equal(other.code, 2);
  t.equal(other.stderr, 'vmpi serve: give at least one --socket PATH, --listen-fd N or --config FILE\n');

  // An fd that is not a socket.
  const notSock = await run(['serve', '--listen-fd', '0', '--no-metrics']);
  t.equal(notSock.code, 1);
  t.equal(notSock.stderr, 'vmpi serve: --listen-fd 0: fd 0 is not a socket\n');
});

t.test('ipcp list and dif show: a look inside a running serve through its IPC socket', async (t) => {
  const ipc = join(dir, 'inspect-ipc.sock');
  const cfg = file('inspect.yaml', 'devices:\n  - {socket: ins.sock, vmpiId: 5}\nnormal: {dif: n.DIF}\n');
  const p = start(['serve', '--config', cfg, '--no-metrics', '--ipc-socket', ipc]);
  t.teardown(() => void p.child.kill('SIGKILL'));
  await p.waitLog(/"msg":"ipc: daemon listening"/);

  const list = await run(['ipcp', 'list', '--json', '--ipc-socket', ipc]);
  t.equal(list.code, 0, list.stderr);
  t.same(JSON.parse(list.stdout), {
    ipcps: [
      { dif: 'hv.vmpi-5', type: 'shim-hv', name: 'hv.vmpi-5.host', address: 5 },
      { dif: 'n.DIF', type: 'normal', name: 'n.DIF.host', address: 1 },
    ],
  }, 'the device\'s shim IPC process and the normal DIF\'s enroller');
  const table = await run(['ipcp', 'list'], { VMPI_IPC_SOCKET: ipc });
  t.equal(table.code, 0, table.stderr);
  t.equal(table.stdout, 'DIF        TYPE     NAME            ADDRESS\nhv.vmpi-5  shim-hv  hv.vmpi-5.host  5\nn.DIF      normal   n.DIF.host      1\n', 'a table ($VMPI_IPC_SOCKET found the daemon)');

  const show = await run(['dif', 'show', 'n.DIF', '--ipc-socket', ipc]);
  t.equal(show.code, 0, show.stderr);
  t.match(show.stdout, /^DIF n\.DIF: normal IPC process n\.DIF\.host, address 1\nrole enroller, max SDU \d+\n/);
  for (const part of ['Members (0):', 'Neighbours (0):', 'Lower flows (0):', 'Forwarding table (0):', 'Directory (0):', 'Flows (0):']) t.match(show.stdout, `\n${part}\n`, `the dump has ${part}`);
  const json = await run(['dif', 'show', 'n.DIF', '--json', '--ipc-socket', ipc]);
  t.equal(json.code, 0, json.stderr);
  const d = JSON.parse(json.stdout) as { dif: string; type: string; state: { role: string; rmt: { forwarding: unknown[] }; directory: { entries: unknown[] } } };
  t.same([d.dif, d.type, d.state.role, d.state.rmt.forwarding, d.state.directory.entries], ['n.DIF', 'normal', 'enroller', [], []]);
  const shim = await run(['dif', 'show', 'hv.vmpi-5', '--ipc-socket', ipc]);
  t.equal(shim.code, 0, shim.stderr);
  t.equal(shim.stdout, 'DIF hv.vmpi-5: shim-hv IPC process hv.vmpi-5.host, address 5\nrole host, VMPI-id 5, port down, channels 1..' + /channels 1\.\.(\d+)/.exec(shim.stdout)?.[1] + ', 0 bytes queued\nregistered: n.DIF.host\n\nChannels in use (0):\n', 'no VM yet: the port is down');

  const unknown = await run(['dif', 'show', 'nope.DIF', '--ipc-socket', ipc]);
  t.equal(unknown.code, 1, 'an unknown DIF exits 1');
  t.equal(unknown.stderr, 'vmpi dif: no DIF named "nope.DIF" here (hv.vmpi-5, n.DIF)\n', 'naming the DIFs there');
  t.equal(unknown.stdout, '');
  const usage = await run(['dif', 'show', '--ipc-socket', ipc]);
  t.equal(usage.code, 2);
  t.equal(usage.stderr, 'vmpi dif show: give exactly one DIF name (vmpi ipcp list shows them)\n');
  p.child.kill('SIGTERM');
  t.equal((await p.wait()).code, 0);
  const gone = await run(['ipcp', 'list', '--ipc-socket', ipc]);
  t.equal(gone.code, 1, 'no daemon: exit 1');
  t.match(gone.stderr, `vmpi ipcp: cannot reach the IPC daemon at ${ipc}: `);
});
