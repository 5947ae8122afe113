/**
 * config.test.ts — src/ops/config.ts: valid YAML and JSON files with their defaults, every kind of
 * problem with its exact message, duplicates, every problem listed at once, parse errors, flags
 * merged into a file, and VMPI-id allocation.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, loadConfigFile, mergeServeOptions, parseConfig, parseListenAddress, type ServeFlags } from '../src/ops/config.js';

const dir = mkdtempSync(join(tmpdir(), 'vmpi-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** The problems a YAML text produces (fails the test if it is valid). */
function problems(yaml: string, opts: { checkHost?: boolean } = {}): string[] {
  try {
    parseConfig(yaml, { format: 'yaml', baseDir: '/etc/vmpi', ...opts });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected the config to be invalid');
}

const FULL_YAML = `# a complete file
devices:
  - socket: /run/vmpi/vm1.sock
    vmpiId: 1
    maxSduLog2: 12
    carrier: gpio
    owner: root
    group: 0
    mode: "0660"
  - socket: vm2.sock
metrics:
  enabled: false
  listen: "[::1]:9100"
log:
  level: debug
difs:
  - { name: normal.DIF, type: normal }
ipcps:
  - { name: shim1, type: shim-hv, dif: hv.DIF }
`;

t.test('valid YAML file, with every field', async (t) => {
  const c = loadConfigFile(file('full.yaml', FULL_YAML));
  t.same(c.devices, [
    { socket: '/run/vmpi/vm1.sock', vmpiId: 1, maxSduLog2: 12, carrier: 'gpio', owner: 'root', group: 0, mode: 0o660 },
    { socket: join(dir, 'vm2.sock'), vmpiId: undefined, maxSduLog2: 16, carrier: 'gpio', owner: undefined, group: undefined, mode: undefined },
  ]);
  t.same(c.metrics, { enabled: false, listen: { host: '::1', port: 9100 } });
  t.same(parseConfig('metrics:\n  guestTimeoutMs: 250\n  guestMaxBytes: 4096\n', { format: 'yaml' }).metrics, { enabled: true, listen: { host: '127.0.0.1', port: 19464 }, guestTimeoutMs: 250, guestMaxBytes: 4096 }, 'the guest scrape keys');
  t.same(c.log, { level: 'debug' });
  t.same(c.difs, [{ name: 'normal.DIF', type: 'normal' }]);
  t.same(c.ipcps, [{ name: 'shim1', type: 'shim-hv', dif: 'hv.DIF' }], 'placeholder objects keep their other fields');
  t.equal(loadConfigFile(file('full.yml', FULL_YAML)).devices.length, 2, '.yml works too');
});

t.test('the shipped example, qemu-configs/vmpi.example.yaml, is valid', async (t) => {
  const c = loadConfigFile(join(import.meta.dirname, '..', 'qemu-configs', 'vmpi.example.yaml'));
  t.same(c.devices.map((d) => [d.socket, d.vmpiId, d.group, d.mode]), [
    ['/run/vmpi/vm1.sock', 1, 'kvm', 0o660],
    ['/run/vmpi/vm2.sock', 2, 'kvm', 0o660],
  ]);
  t.same(c.metrics, { enabled: true, listen: { host: '127.0.0.1', port: 19464 } });
});

t.test('valid JSON file and defaults', async (t) => {
  const c = loadConfigFile(file('min.json', JSON.stringify({ devices: [{ socket: 'a.sock', owner: '1000', mode: '600' }] })));
  t.same(c.devices, [{ socket: join(dir, 'a.sock'), vmpiId: undefined, maxSduLog2: 16, carrier: 'gpio', owner: 1000, group: undefined, mode: 0o600 }], 'relative socket: from the file directory; numeric owner string becomes a number');
  t.same(c.metrics, { enabled: true, listen: { host: '127.0.0.1', port: 19464 } });
  t.same(c.log, { level: 'info' });
  t.notOk('allowUnsealedMemory' in c.devices[0]!, 'sealed guest memory is required unless a device says otherwise');
  const trusting = loadConfigFile(file('hugepages.json', JSON.stringify({ devices: [{ socket: 'h.sock', allowUnsealedMemory: true }] })));
  t.equal(trusting.devices[0]!.allowUnsealedMemory, true, 'allowUnsealedMemory: true reaches the device (hugetlbfs / memory-backend-file QEMU)');
  t.same(c.difs, []);
  t.same(c.ipcps, []);
  t.same(loadConfigFile(file('empty.yaml', '# nothing\n')), defaultConfig(), 'an empty YAML file is the defaults');
  t.same(loadConfigFile(file('empty.json', '{}')), defaultConfig());
  t.same(defaultConfig().devices, []);
});

t.test('each kind of problem, with its message', async (t) => {
  const one = (yaml: string) => problems(yaml);
  t.same(one('devices:\n  - socket: /a\n  - socket: /b\n    vmpiId: 70000\n'), ['devices[1].vmpiId: 70000 is above the maximum 65535']);
  t.same(one('devices:\n  - socket: /a\n    vmpiId: 0\n'), ['devices[0].vmpiId: 0 is below the minimum 1']);
  t.same(one('devices:\n  - socket: /a\n    vmpiId: "3"\n'), ['devices[0].vmpiId: "3" is a string, expected an integer']);
  t.same(one('devices:\n  - socket: /a\n    vmpiId: 1.5\n'), ['devices[0].vmpiId: 1.5 is a number, expected an integer']);
  t.same(one('devices:\n  - vmpiId: 2\n'), ['devices[0].socket: is required but missing']);
  t.same(one('devices:\n  - socket: ""\n'), ['devices[0].socket: "" is too short (at least 1 characters)']);
  t.same(one(`devices:\n  - socket: /${'x'.repeat(120)}\n`), [`devices[0].socket: "/${'x'.repeat(120)}" is too long (at most 107 characters)`]);
  t.same(one('devices:\n  - socket: /a\n    maxSduLog2: 21\n'), ['devices[0].maxSduLog2: 21 is above the maximum 20']);
  t.same(one('devices:\n  - socket: /a\n    maxSduLog2: 9\n'), ['devices[0].maxSduLog2: 9 is below the minimum 10']);
  t.same(one('devices:\n  - socket: /a\n    carrier: vsock\n'), ['devices[0].carrier: "vsock" is not one of gpio']);
  t.same(one('devices:\n  - socket: /a\n    sockt: /b\n'), ['devices[0].sockt: unknown field (did you mean "socket"?); known fields here: socket, vmpiId, maxSduLog2, carrier, owner, group, mode, allowUnsealedMemory, echoChannels']);
  t.same(one('devices:\n  - socket: /a\n    mode: 0660\n'), [
    'devices[0].mode: 660 is an integer, expected a quoted octal mode such as "0660" (write it quoted, mode: "0660": YAML reads an unquoted 0660 as the decimal number 660)',
  ]);
  t.same(one('devices:\n  - socket: /a\n    mode: "0986"\n'), ['devices[0].mode: "0986" is not a quoted octal mode such as "0660"']);
  t.same(one('devices:\n  - socket: /a\n    owner: "bad name"\n'), ['devices[0].owner: "bad name" is not a user or group name, or a numeric id']);
  t.same(one('devices:\n  - socket: /a\n    group: -1\n'), ['devices[0].group: -1 is below the minimum 0']);
  t.same(one('devices:\n  - socket: /a\n    group: [1]\n'), ['devices[0].group: [1] is a list, expected a user or group name, or a numeric id']);
  t.same(one('devices: {socket: /a}\n'), ['devices: {"socket":"/a"} is an object, expected a list']);
  t.same(one('metrics:\n  listen: 19464\n'), ['metrics.listen: 19464 is an integer, expected HOST:PORT such as "127.0.0.1:19464"']);
  t.same(one('metrics:\n  listen: "127.0.0.1"\n'), ['metrics.listen: "127.0.0.1" is not HOST:PORT or :PORT (for example "127.0.0.1:19464", "[::1]:19464" or ":19464")']);
  t.same(one('metrics:\n  listen: "127.0.0.1:70000"\n'), ['metrics.listen: "127.0.0.1:70000" has port 70000, above the maximum 65535']);
  t.same(one('metrics:\n  listen: "example.org:19464"\n'), ['metrics.listen: "example.org:19464" has host "example.org": use an IPv4 address, [IPv6] or localhost']);
  t.same(one('metrics:\n  enabled: "yes"\n'), ['metrics.enabled: "yes" is a string, expected a boolean']);
  t.same(one('metrics:\n  guestTimeoutMs: 5\n'), ['metrics.guestTimeoutMs: 5 is below the minimum 10']);
  t.same(one('metrics:\n  guestMaxBytes: 99999999\n'), ['metrics.guestMaxBytes: 99999999 is above the maximum 16777216']);
  t.same(one('metrics:\n  guestTimeoutMs: "1s"\n'), ['metrics.guestTimeoutMs: "1s" is a string, expected an integer']);
  t.same(one('log:\n  level: loud\n'), ['log.level: "loud" is not one of trace, debug, info, warn, error, fatal, silent']);
  t.same(one('difs:\n  - name: a\n'), ['difs[0].type: is required but missing']);
  t.same(one('ipcps: {}\n'), ['ipcps: {} is an object, expected a list']);
  // A YAML complex key (the config fuzz target found it): quoted, so the problem stays one line.
  const complex = one('? [a, b]:\n: 1\n');
  t.same(complex, ['"{\\n  ? [ a, b ]\\n  :\\n}": unknown field; known fields here: devices, metrics, log, ipc, normal, shimUdp, shimEth, difs, ipcps'], 'the key quoted, its newlines escaped');
  t.notOk(complex[0]!.includes('\n'), 'one line');
  t.same(one('devcies: []\n'), ['devcies: unknown field (did you mean "devices"?); known fields here: devices, metrics, log, ipc, normal, shimUdp, shimEth, difs, ipcps']);
  t.same(one('- 1\n'), ['(top level): [1] is a list, expected an object']);
  t.same(one('just a string\n'), ['(top level): "just a string" is a string, expected an object']);
});

t.test('duplicates', async (t) => {
  t.same(problems('devices:\n  - {socket: /a, vmpiId: 4}\n  - {socket: /b, vmpiId: 4}\n  - {socket: /c, vmpiId: 4}\n'), [
    'devices[1].vmpiId: 4 is already used by devices[0] (and by devices[2]); VMPI-ids must be unique on a host',
  ]);
  t.same(problems('devices:\n  - {socket: /run/a.sock}\n  - {socket: /run/../run/a.sock}\n'), [
    'devices[1].socket: "/run/a.sock" is already used by devices[0]; each device needs its own socket',
  ], 'paths compared after resolving');
  t.same(problems('devices:\n  - {socket: a.sock}\n  - {socket: /etc/vmpi/a.sock}\n'), [
    'devices[1].socket: "/etc/vmpi/a.sock" is already used by devices[0]; each device needs its own socket',
  ], 'relative and absolute spellings of one path');
  t.same(problems('difs:\n  - {name: d, type: normal}\n  - {name: d, type: normal}\nipcps:\n  - {name: i, type: x}\n  - {name: i, type: y}\n'), [
    'difs[1].name: "d" is already used by difs[0]',
    'ipcps[1].name: "i" is already used by ipcps[0]',
  ]);
});

t.test('every problem is listed at once', async (t) => {
  const p = problems(`devices:
  - socket: /run/vmpi/a.sock
    vmpiId: 1
  - socket: /run/vmpi/b.sock
    vmpiId: 70000
    mode: 0660
  - socket: /run/vmpi/a.sock
    vmpiId: 1
    carrier: vsock
  - vmpiId: "3"
    owner: nosuch-user-vmpi-test
metrics: { listen: "localhost:99999", enabled: "yes" }
log: { level: loud }
extra: 1
`, { checkHost: true });
  t.same(p.sort(), [
    'devices[1].mode: 660 is an integer, expected a quoted octal mode such as "0660" (write it quoted, mode: "0660": YAML reads an unquoted 0660 as the decimal number 660)',
    'devices[1].vmpiId: 70000 is above the maximum 65535',
    'devices[2].carrier: "vsock" is not one of gpio',
    'devices[2].socket: "/run/vmpi/a.sock" is already used by devices[0]; each device needs its own socket',
    'devices[2].vmpiId: 1 is already used by devices[0]; VMPI-ids must be unique on a host',
    'devices[3].owner: user "nosuch-user-vmpi-test" does not exist on this host',
    'devices[3].socket: is required but missing',
    'devices[3].vmpiId: "3" is a string, expected an integer',
    'extra: unknown field; known fields here: devices, metrics, log, ipc, normal, shimUdp, shimEth, difs, ipcps',
    'log.level: "loud" is not one of trace, debug, info, warn, error, fatal, silent',
    'metrics.enabled: "yes" is a string, expected a boolean',
    'metrics.listen: "localhost:99999" has port 99999, above the maximum 65535',
  ]);
  const e = t.throws(() => loadConfigFile(file('bad.yaml', 'log: {level: loud}\nmetrics: {listen: x}\n'))) as ConfigError;
  t.equal(e.message, `${join(dir, 'bad.yaml')}: log.level: "loud" is not one of trace, debug, info, warn, error, fatal, silent\n${join(dir, 'bad.yaml')}: metrics.listen: "x" is not HOST:PORT or :PORT (for example "127.0.0.1:19464", "[::1]:19464" or ":19464")`, 'the message has one line per problem, each naming the file');
});

t.test('host checks: owner and group names must exist', async (t) => {
  t.same(problems('devices:\n  - {socket: /a, owner: nosuch-user-vmpi-test, group: nosuch-group-vmpi-test}\n', { checkHost: true }), [
    'devices[0].owner: user "nosuch-user-vmpi-test" does not exist on this host',
    'devices[0].group: group "nosuch-group-vmpi-test" does not exist on this host',
  ]);
  t.doesNotThrow(() => parseConfig('devices:\n  - {socket: /a, owner: root, group: root}\n', { format: 'yaml', checkHost: true }));
  t.doesNotThrow(() => parseConfig('devices:\n  - {socket: /a, owner: nosuch-user-vmpi-test}\n', { format: 'yaml' }), 'not checked unless asked');
});

t.test('parse errors and files', async (t) => {
  const y = t.throws(() => loadConfigFile(file('syntax.yaml', 'devices: [\nlog: : x\n'))) as ConfigError;
  // The wording after the position is the yaml library's; the position and count are ours.
  t.equal(y.problems.length, 2, 'each YAML error on its own line');
  t.match(y.problems, [/^invalid YAML at line 2, column 1: \S/, /^invalid YAML at line 2, column 6: \S/]);
  for (const p of y.problems) t.notMatch(p, /at line \d+, column \d+:?$/, 'position given once');
  const dup = t.throws(() => loadConfigFile(file('dupkey.yaml', 'log: {level: info}\nlog: {level: debug}\n'))) as ConfigError;
  t.same(dup.problems, ['invalid YAML at line 2, column 1: Map keys must be unique']);
  const j = t.throws(() => loadConfigFile(file('syntax.json', '{"devices": [}'))) as ConfigError;
  t.equal(j.problems.length, 1);
  t.match(j.problems, [/^invalid JSON: \S/]);
  const nl = t.throws(() => loadConfigFile(file('nl.json', '&\n{"log": {}}'))) as ConfigError;
  t.equal(nl.problems.length, 1);
  t.notMatch(nl.problems[0], /\n/, 'a newline in the text JSON.parse quotes stays out of the one-line problem');
  const ext = t.throws(() => loadConfigFile(file('c.toml', ''))) as ConfigError;
  t.same(ext.problems, ['unknown config format ".toml": name the file *.yaml, *.yml or *.json']);
  t.equal(ext.code, 'ERR_VMPI_CONFIG', 'a typed error: callers test the code');
  t.equal(ext.message, `${join(dir, 'c.toml')}: unknown config format ".toml": name the file *.yaml, *.yml or *.json`);
  const none = t.throws(() => loadConfigFile(join(dir, 'missing.yaml'))) as ConfigError;
  t.same(none.problems, [`cannot read the file: ENOENT: no such file or directory, open '${join(dir, 'missing.yaml')}'`]);
  t.equal(none.source, join(dir, 'missing.yaml'));
});

t.test('YAML aliases: a value containing itself, and an alias bomb, are ConfigErrors', async (t) => {
  // Found by the config fuzz target (test/fuzz/targets/config.ts): both used to escape as a
  // TypeError (printing a cyclic value) and a ReferenceError (yaml's alias limit).
  t.same(problems('devices: &d [*d]\n'), ['devices[0]: contains itself through a YAML alias (*name inside its own &name); write the value out instead']);
  t.same(problems('difs: [&x {name: a, type: b, self: *x}]\n'), ['difs[0].self: contains itself through a YAML alias (*name inside its own &name); write the value out instead']);
  const bomb = 'a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n';
  const bombed = problems(bomb);
  t.equal(bombed.length, 1);
  t.match(bombed, [/^invalid YAML: .*\(more than 100 alias expansions\); write the values out instead of nesting aliases$/]);
  // Aliases that do not loop stay fine.
  const ok = parseConfig('devices: [{socket: /a.sock, owner: &o root, group: *o}]\n', { format: 'yaml' });
  t.equal(ok.devices[0]!.group, 'root');
});

t.test('listen addresses', async (t) => {
  t.same(parseListenAddress('127.0.0.1:19464'), { host: '127.0.0.1', port: 19464 });
  t.same(parseListenAddress('[::1]:0'), { host: '::1', port: 0 });
  t.same(parseListenAddress('localhost:1'), { host: 'localhost', port: 1 });
  t.throws(() => parseListenAddress('[127.0.0.1]:1'), /^has "127\.0\.0\.1" in brackets, which is not an IPv6 address$/);
  t.throws(() => parseListenAddress('::1:19464'), /^is not HOST:PORT or :PORT \(for example "127\.0\.0\.1:19464", "\[::1\]:19464" or ":19464"\)$/);
  t.same(parseListenAddress(':19464'), { host: '::', port: 19464 }, ':PORT is every address, as for Prometheus exporters');
  t.throws(() => parseListenAddress(':99999'), /^has port 99999, above the maximum 65535$/);
});

t.test('flags merged into a file', async (t) => {
  const flags = (f: Partial<ServeFlags>): ServeFlags => ({ sockets: [], vmpiIds: [], listenFds: [], ...f });
  const c = parseConfig('devices:\n  - {socket: /run/a.sock}\n  - {socket: /run/b.sock, vmpiId: 1}\nmetrics: {listen: "127.0.0.1:9000"}\nlog: {level: warn}\n', { format: 'yaml' });

  const p = mergeServeOptions(c, flags({ sockets: ['/run/c.sock'], vmpiIds: [9], listenFds: [3], maxSduLog2: 12, logLevel: 'debug', metricsListen: { host: '127.0.0.1', port: 0 } }));
  t.same(
    p.devices.map((d) => [d.where, d.vmpiId, d.socket ?? `fd:${d.listenFd}`, d.maxSduLog2]),
    [
      ['devices[0]', 2, '/run/a.sock', 16],
      ['devices[1]', 1, '/run/b.sock', 16],
      ['--socket #1', 9, '/run/c.sock', 12],
      ['--listen-fd 3', 3, 'fd:3', 12],
    ],
    'open ids get the lowest free id, never one asked for by a later device',
  );
  t.same(p.metrics, { enabled: true, listen: { host: '127.0.0.1', port: 0 } }, 'flag overrides the file');
  t.equal(p.log.level, 'debug');
  t.equal(mergeServeOptions(c, flags({ noMetrics: true })).metrics.enabled, false);
  t.equal(mergeServeOptions(c, flags({})).log.level, 'warn', 'file level without the flag');

  const noFile = mergeServeOptions(undefined, flags({ sockets: ['rel.sock'] }));
  t.same(noFile.devices.map((d) => [d.vmpiId, d.socket]), [[1, join(process.cwd(), 'rel.sock')]], 'flags alone, as before');
  t.same(noFile.metrics, { enabled: true, listen: { host: '127.0.0.1', port: 19464 } });

  const dup = t.throws(() => mergeServeOptions(c, flags({ sockets: ['/run/a.sock', '/run/d.sock'], vmpiIds: [5, 1] }))) as ConfigError;
  t.same(dup.problems, [
    '--socket #2.vmpiId: 1 is already used by devices[1]; VMPI-ids must be unique on a host',
    '--socket #1.socket: "/run/a.sock" is already used by devices[0]; each device needs its own socket',
  ]);
  const many = t.throws(() => mergeServeOptions(undefined, flags({ sockets: ['/x'], vmpiIds: [1, 2] }))) as ConfigError;
  t.same(many.problems, ['--vmpi-id: 2 values for 1 device given by --socket/--listen-fd']);
});

t.test('the normal DIF: a name is enough; difs entries of type normal say the same; errors name the field', async (t) => {
  const one = problems;
  const parse = (yaml: string) => parseConfig(yaml, { format: 'yaml' });
  t.same(parse('normal: { dif: n.DIF }\n').normal, { dif: 'n.DIF' }, 'only the DIF name');
  t.same(parse('normal: { dif: n.DIF, name: host.n, enroller: e.n, maxPduSize: 9000 }\n').normal, { dif: 'n.DIF', name: 'host.n', enroller: 'e.n', maxPduSize: 9000 });
  t.same(parse('difs:\n  - { name: n.DIF, type: normal }\n').normal, { dif: 'n.DIF' }, 'the long form');
  t.same(parse('normal: { dif: n.DIF }\ndifs:\n  - { name: n.DIF, type: normal }\n').normal, { dif: 'n.DIF' }, 'both, agreeing');
  t.equal(parse('devices: []\n').normal, undefined, 'none configured');
  t.same(one('normal: {}\n'), ['normal.dif: is required but missing']);
  t.same(one('normal: { dif: "" }\n'), ['normal.dif: "" is too short (at least 1 characters)']);
  t.same(one('normal: { dif: n.DIF, maxPduSize: 100 }\n'), ['normal.maxPduSize: 100 is below the minimum 1024']);
  t.same(one('normal: { dif: n.DIF, nmae: x }\n'), ['normal.nmae: unknown field (did you mean "name"?); known fields here: dif, name, enroller, maxPduSize, keepaliveMs, keepaliveMisses, role, acceptEnrollment, neighbours']);
  t.same(one('normal: { dif: n.DIF, name: "a/b/c/d/e" }\n'), ['normal.name: "a/b/c/d/e" is not an IPC process name: "a/b/c/d/e" has 5 components; an application name has at most 4 (apn/api/aen/aei)']);
  t.same(one('normal: { dif: a.DIF }\ndifs:\n  - { name: b.DIF, type: normal }\n'), ['difs[0].name: "b.DIF": only one normal DIF is supported, and normal.dif already declares "a.DIF"']);
});

t.test('normal DIF keepalives: keepaliveMs and keepaliveMisses, checked with errors naming the field', async (t) => {
  const one = problems;
  const parse = (yaml: string) => parseConfig(yaml, { format: 'yaml' });
  t.same(parse('normal: { dif: n.DIF, keepaliveMs: 500, keepaliveMisses: 4 }\n').normal, { dif: 'n.DIF', keepaliveMs: 500, keepaliveMisses: 4 }, 'both given');
  t.same(parse('normal: { dif: n.DIF, keepaliveMs: 2000 }\n').normal, { dif: 'n.DIF', keepaliveMs: 2000 }, 'the period alone (misses default 3)');
  t.same(one('normal: { dif: n.DIF, keepaliveMs: 5 }\n'), ['normal.keepaliveMs: 5 is below the minimum 20']);
  t.same(one('normal: { dif: n.DIF, keepaliveMs: 250.5 }\n'), ['normal.keepaliveMs: 250.5 is a number, expected an integer']);
  t.same(one('normal: { dif: n.DIF, keepaliveMs: "10s" }\n'), ['normal.keepaliveMs: "10s" is a string, expected an integer']);
  t.same(one('normal: { dif: n.DIF, keepaliveMisses: 0 }\n'), ['normal.keepaliveMisses: 0 is below the minimum 1']);
  t.same(one('normal: { dif: n.DIF, keepaliveMisses: 101 }\n'), ['normal.keepaliveMisses: 101 is above the maximum 100']);
  t.same(one('normal: { dif: n.DIF, keepaliveMs: 20, keepaliveMisses: 2 }\n'), ['normal.keepaliveMisses: 2 × keepaliveMs 20 declares a neighbour down after 40 ms of silence; allow at least 100 ms (raise keepaliveMs or keepaliveMisses)']);
});

t.test('the normal DIF as a mesh: acceptEnrollment and neighbours, each problem on one line naming the field', async (t) => {
  const one = problems;
  const parse = (yaml: string) => parseConfig(yaml, { format: 'yaml' });
  const udp = 'shimUdp: { dif: udp.lo, bind: "127.0.0.1:7300" }\n';
  t.same(
    parse(`${udp}normal:\n  dif: n.DIF\n  name: b.n\n  role: member\n  enroller: a.n\n  acceptEnrollment: true\n  neighbours:\n    - { name: c.n, dif: udp.lo }\n    - { name: d.n, dif: hv.vmpi-3 }\n`).normal,
    { dif: 'n.DIF', name: 'b.n', role: 'member', enroller: 'a.n', acceptEnrollment: true, neighbours: [{ name: 'c.n', dif: 'udp.lo' }, { name: 'd.n', dif: 'hv.vmpi-3' }] },
    'a member that enrolls others, with two further neighbours',
  );
  t.same(one('normal: { dif: n.DIF, acceptEnrollment: yes }\n'), ['normal.acceptEnrollment: "yes" is a string, expected a boolean']);
  t.same(one('normal: { dif: n.DIF, neighbours: [{ name: c.n }] }\n'), ['normal.neighbours[0].dif: is required but missing']);
  t.same(one('normal: { dif: n.DIF, neighbours: [{ name: c.n, dif: hv.vmpi-1, cost: 2 }] }\n'), ['normal.neighbours[0].cost: unknown field; known fields here: name, dif']);
  t.same(one(`${udp}normal: { dif: n.DIF, neighbours: [{ name: c.n, dif: udp.l0 }] }\n`), ['normal.neighbours[0].dif: "udp.l0" is not a lower DIF of this process; use "udp.lo" or a device\'s "hv.vmpi-<VMPI-id>"']);
  t.same(one('normal: { dif: n.DIF, neighbours: [{ name: c.n, dif: eth0 }] }\n'), ['normal.neighbours[0].dif: "eth0" is not a lower DIF of this process; use a device\'s "hv.vmpi-<VMPI-id>" (no shimUdp or shimEth DIF is configured)']);
  t.same(one('normal: { dif: n.DIF, neighbours: [{ name: "a/b/c/d/e", dif: hv.vmpi-1 }] }\n'), ['normal.neighbours[0].name: "a/b/c/d/e" is not an IPC process name: "a/b/c/d/e" has 5 components; an application name has at most 4 (apn/api/aen/aei)']);
  t.same(one('normal: { dif: n.DIF, name: b.n, neighbours: [{ name: b.n, dif: hv.vmpi-1 }] }\n'), ['normal.neighbours[0].name: "b.n" is this IPC process itself (normal.name); name another member']);
  t.same(one('normal: { dif: n.DIF, role: member, neighbours: [{ name: n.DIF.host, dif: hv.vmpi-1 }] }\n'), ['normal.neighbours[0].name: "n.DIF.host" is the enroller this member enrolls to already (normal.enroller); list further members only']);
  t.same(one('normal: { dif: n.DIF, neighbours: [{ name: c.n, dif: hv.vmpi-1 }, { name: c.n, dif: hv.vmpi-1 }] }\n'), ['normal.neighbours[1]: "c.n" over "hv.vmpi-1" is already listed at normal.neighbours[0]; list each neighbour once']);
  for (const p of one(`${udp}normal: { dif: n.DIF, name: b.n, neighbours: [{ name: b.n, dif: udp.l0 }, { name: c.n, dif: zz }, { name: c.n }] }\n`)) t.notMatch(p, /\n/, `one line: ${p}`);
});

t.test('ipc: the IPC daemon limits', async (t) => {
  const c = parseConfig('ipc:\n  maxFlowsPerUid: 16\n  maxAllocateTimeoutMs: 10000\n  unlimitedUids: [0]\n', { format: 'yaml' });
  t.same(c.ipc, { maxFlowsPerUid: 16, maxAllocateTimeoutMs: 10000, unlimitedUids: [0] });
  t.same(defaultConfig().ipc, {}, 'defaults: the daemon’s own');
  const bad = (yaml: string): string[] => {
    try {
      parseConfig(yaml, { format: 'yaml' });
      return [];
    } catch (e) {
      return (e as ConfigError).problems;
    }
  };
  t.same(bad('ipc: {maxFlowsPerUid: 0}\n'), ['ipc.maxFlowsPerUid: 0 is below the minimum 1']);
  t.same(bad('ipc: {maxFlows: 3}\n'), ['ipc.maxFlows: unknown field; known fields here: maxSessions, maxSessionsPerUid, maxFlowsPerUid, maxRegistrationsPerUid, maxAllocateTimeoutMs, idleTimeoutMs, outputHighWater, unlimitedUids, maxRingBytes']);
  t.same(parseConfig('ipc: {maxRingBytes: 0}\n', { format: 'yaml' }).ipc, { maxRingBytes: 0 }, 'maxRingBytes 0: no rings');
  t.same(bad('ipc: {maxRingBytes: -1}\n'), ['ipc.maxRingBytes: -1 is below the minimum 0']);
});

t.test('the shim DIF over UDP: shimUdp with its defaults left open; bad addresses, names and timeouts named', async (t) => {
  const parse = (text: string) => parseConfig(text, { format: 'yaml' });
  const one = (text: string): string[] => (t.throws(() => parse(text)) as ConfigError).problems;
  t.same(parse('shimUdp: { dif: udp.lo, bind: "127.0.0.1:7300" }\n').shimUdp, { dif: 'udp.lo', bind: '127.0.0.1:7300', peers: {}, allow: [] }, 'a DIF and an address are enough');
  t.same(
    parse('shimUdp:\n  dif: udp.lo\n  bind: "127.0.0.1:7300"\n  peers: { "rina-tgen": "127.0.0.1:7301" }\n  allow: ["127.0.0.1:7302"]\n  mtu: 9000\n  keepaliveMs: 500\n  keepaliveTimeoutMs: 2000\n  allocateTimeoutMs: 3000\nnormal: { dif: n.DIF, role: member }\n'),
    {
      devices: [],
      metrics: { enabled: true, listen: { host: '127.0.0.1', port: 19464 } },
      log: { level: 'info' },
      difs: [],
      ipcps: [],
      normal: { dif: 'n.DIF', role: 'member' },
      shimUdp: { dif: 'udp.lo', bind: '127.0.0.1:7300', peers: { 'rina-tgen': '127.0.0.1:7301' }, allow: ['127.0.0.1:7302'], mtu: 9000, keepaliveMs: 500, keepaliveTimeoutMs: 2000, allocateTimeoutMs: 3000 },
      ipc: {},
    },
    'every key',
  );
  t.same(
    parseConfig('shimUdp: { dif: udp.lo, bind: "127.0.0.1:7300", hostsFile: hosts, peerPort: 7300 }\n', { format: 'yaml', baseDir: '/etc/vmpi' }).shimUdp,
    { dif: 'udp.lo', bind: '127.0.0.1:7300', peers: {}, allow: [], hostsFile: '/etc/vmpi/hosts', peerPort: 7300 },
    'hostsFile relative to the config file',
  );
  t.same(one('shimUdp: { dif: udp.lo }\n'), ['shimUdp.bind: is required but missing']);
  t.same(one('shimUdp: { dif: udp.lo, bind: "localhost:7300" }\n'), ['shimUdp.bind: "localhost:7300" is not IPv4:PORT (for example "127.0.0.1:7300")']);
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:0", peers: { x: "127.0.0.1:0" } }\n'), ['shimUdp.peers["x"]: "127.0.0.1:0" has port 0: use 1..65535']);
  t.same(
    parse('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", peers: { x: "peer.example:7300" }, dnsServers: ["127.0.0.1:5353"], resolveTimeoutMs: 500, resolveCacheMs: 1000 }\n').shimUdp,
    { dif: 'udp.lo', bind: '127.0.0.1:1', peers: { x: 'peer.example:7300' }, allow: [], dnsServers: ['127.0.0.1:5353'], resolveTimeoutMs: 500, resolveCacheMs: 1000 },
    'a HOST:PORT peer (resolved by DNS) and the DNS settings',
  );
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", peers: { x: "a b:1" } }\n'), ['shimUdp.peers["x"]: "a b:1" is neither IPv4:PORT nor HOST:PORT (for example "127.0.0.1:7300" or "peer.example:7300")']);
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", peers: { "a/b/c/d/e": "127.0.0.1:2" } }\n'), [
    'shimUdp.peers: "a/b/c/d/e" is not an application name: "a/b/c/d/e" has 5 components; an application name has at most 4 (apn/api/aen/aei)',
  ]);
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", allow: ["1.2.3:4"] }\n'), ['shimUdp.allow[0]: "1.2.3:4" is not IPv4:PORT (for example "127.0.0.1:7300")']);
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", keepaliveMs: 1000, keepaliveTimeoutMs: 1500 }\n'), [
    'shimUdp.keepaliveTimeoutMs: 1500 is less than two keepalive periods (keepaliveMs 1000); make it at least 2000',
  ]);
  t.same(one('shimUdp: { dif: udp.lo, bind: "127.0.0.1:1", mtu: 70000 }\n'), ['shimUdp.mtu: 70000 is above the maximum 65507']);
  t.same(one('normal: { dif: n.DIF, role: leader }\n'), ['normal.role: "leader" is not one of enroller, member']);
});
