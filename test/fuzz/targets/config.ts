/**
 * config.ts — fuzz target: config file text (YAML or JSON) → parseConfig (src/ops/config.ts).
 *
 * Inputs: near-valid configs (devices, metrics, log, difs) with hostile field values, printed as
 * YAML or JSON, then mutated as text: YAML anchors and aliases (cycles, alias bombs), tags
 * (!!binary, !!set, !!omap, unknown ones), merge keys, deep nesting, complex keys, random
 * characters. Only ConfigError may escape, and an accepted config must have the promised shape.
 */
import { isAbsolute } from 'node:path';
import fc from 'fast-check';
import { stringify as yamlStringify } from 'yaml';
import { ConfigError, LOG_LEVELS, parseConfig, type ConfigFormat } from '../../../src/ops/config.js';
import { InvariantError, type FuzzTarget } from '../runner.js';

export interface ConfigInput {
  format: ConfigFormat;
  text: string;
}

const scalar: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, 0, -1, 1, 16, 20, 65535, 65536, 0o660, '0660', '660', '0999', 'gpio', 'root', '0', '4294967295', 4294967294, 4294967295, 1.5, '127.0.0.1:9464', '[::1]:0', 'localhost:99999', ':80', '[x]:1', 'a'.repeat(200), '', '__proto__'),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 30 }),
  fc.stringMatching(/^\/[a-z/]{0,20}\.sock$/),
);
const value: fc.Arbitrary<unknown> = fc.oneof({ weight: 5, arbitrary: scalar }, { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) }, { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }) });

const deviceKeys = ['socket', 'vmpiId', 'maxSduLog2', 'carrier', 'owner', 'group', 'mode', 'sokcet', '__proto__'];
const device = fc.record(
  {
    socket: fc.oneof(fc.stringMatching(/^[a-z/]{1,30}\.sock$/), value),
    vmpiId: fc.oneof(fc.integer({ min: 0, max: 70000 }), value),
    maxSduLog2: fc.oneof(fc.integer({ min: 8, max: 22 }), value),
    carrier: fc.oneof(fc.constant('gpio'), value),
    owner: value,
    group: value,
    mode: value,
    extra: fc.array(fc.tuple(fc.constantFrom(...deviceKeys), value), { maxLength: 2 }),
  },
  { requiredKeys: ['socket', 'extra'] },
).map(({ extra, ...d }) => {
  const o: Record<string, unknown> = { ...d };
  for (const [k, v] of extra) Object.defineProperty(o, k, { value: v, enumerable: true, configurable: true, writable: true });
  return o;
});
const named = fc.record({ name: fc.oneof(fc.constantFrom('a', 'b'), value), type: fc.oneof(fc.constant('shim-hv'), value) }, { requiredKeys: [] });
const configObject = fc.record(
  {
    devices: fc.oneof({ weight: 5, arbitrary: fc.array(device, { maxLength: 4 }) }, { weight: 1, arbitrary: value }),
    metrics: fc.oneof(fc.record({ enabled: fc.oneof(fc.boolean(), value), listen: fc.oneof(fc.constantFrom('127.0.0.1:9464', '[::1]:0', 'localhost:1'), value) }, { requiredKeys: [] }), value),
    log: fc.oneof(fc.record({ level: fc.oneof(fc.constantFrom(...LOG_LEVELS), value) }, { requiredKeys: [] }), value),
    difs: fc.oneof(fc.array(named, { maxLength: 3 }), value),
    ipcps: fc.oneof(fc.array(named, { maxLength: 3 }), value),
    bogus: value,
  },
  { requiredKeys: [] },
);

/** YAML-level edits a hostile or careless author makes. */
const yamlEdit: fc.Arbitrary<(text: string) => string> = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(
    (t: string) => `base: &b {socket: /x.sock}\n${t}`,
    (t: string) => t.replace(/^devices:/m, 'devices: &d'),
    (t: string) => t.replace(/^(\s*)- socket:/m, '$1- &dev\n$1  self: *dev\n$1  socket:'),
    (t: string) => `${t}\nx: &x [*x]`,
    (t: string) => `${t}\ndifs: &l [{name: a, type: b, self: *l}]`,
    (t: string) => `a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n${t}`,
    (t: string) => `<<: {log: {level: debug}}\n${t}`,
    (t: string) => `? [a, b]\n: c\n${t}`,
    (t: string) => t.replace(/: (\S+)$/m, ': !!binary aGVsbG8='),
    (t: string) => t.replace(/: (\S+)$/m, ': !!set {a, b}'),
    (t: string) => t.replace(/: (\S+)$/m, ': !!omap [a: 1]'),
    (t: string) => t.replace(/: (\S+)$/m, ': !unknown x'),
    (t: string) => t.replace(/: (\S+)$/m, ': !!int 0x1f'),
    (t: string) => t.replace(/: (\S+)$/m, ': !!float .nan'),
    (t: string) => `%YAML 1.1\n---\n${t}`,
    (t: string) => `${t}\n---\nlog: {level: info}`,
    (t: string) => `__proto__: {devices: []}\n${t}`,
    (t: string) => `${t}\n${t}`,
  ) },
  // Deep nesting: yaml runs out of stack past ~1000 levels (reported as invalid YAML); slow, so rarer.
  { weight: 1, arbitrary: fc.nat({ max: 3000 }).map((n) => (t: string) => `${t}\nipcps: ${'['.repeat(n)}${']'.repeat(n)}`) },
  { weight: 1, arbitrary: fc.nat({ max: 2000 }).map((n) => (t: string) => `${t}\ndifs: [${'{a: '.repeat(n)}1${'}'.repeat(n)}]`) },
);

const textEdit: fc.Arbitrary<(text: string) => string> = fc.oneof(
  fc.tuple(fc.nat(), fc.string({ maxLength: 4, unit: fc.constantFrom('&', '*', '!', '{', '[', ':', '-', '?', '|', '>', '\n', ' ', '"', "'", '#', '%', '@', '`', ',', '\t', '\u0000', '\ufeff', '\ud800', 'a', '1') })).map(
    ([at, s]) =>
      (t: string) => {
        const i = t.length ? at % (t.length + 1) : 0;
        return t.slice(0, i) + s + t.slice(i);
      },
  ),
  fc.nat().map((at) => (t: string) => t.slice(0, t.length ? at % (t.length + 1) : 0)),
);

/** Configs the schema accepts, so the accepted path and its invariants get exercised too. */
const validObject = fc.record(
  {
    devices: fc.uniqueArray(
      fc.record(
        {
          socket: fc.stringMatching(/^[a-z]{1,8}\.sock$/),
          vmpiId: fc.integer({ min: 1, max: 65535 }),
          maxSduLog2: fc.integer({ min: 10, max: 20 }),
          carrier: fc.constant('gpio'),
          owner: fc.oneof(fc.nat({ max: 0xfffffffe }), fc.constantFrom('root', 'kvm', 'libvirt-qemu', '0')),
          mode: fc.constantFrom('0660', '600', '0777'),
        },
        { requiredKeys: ['socket'] },
      ),
      { maxLength: 3, selector: (d) => d.socket },
    ),
    metrics: fc.record({ enabled: fc.boolean(), listen: fc.constantFrom('127.0.0.1:9464', '[::1]:0', 'localhost:65535') }, { requiredKeys: [] }),
    log: fc.record({ level: fc.constantFrom(...LOG_LEVELS) }),
  },
  { requiredKeys: [] },
);

const arbitrary: fc.Arbitrary<ConfigInput> = fc.oneof(
  { weight: 2, arbitrary: fc.tuple(validObject, fc.boolean(), fc.array(yamlEdit, { maxLength: 1 })).map(([o, json, ye]) => (json ? { format: 'json' as const, text: JSON.stringify(o) } : { format: 'yaml' as const, text: ye.reduce((t, f) => f(t), yamlStringify(o)) })) },
  {
    weight: 3,
    arbitrary: fc.tuple(configObject, fc.array(yamlEdit, { maxLength: 2 }), fc.array(textEdit, { maxLength: 2 })).map(([o, ye, te]) => ({
      format: 'yaml' as const,
      text: te.reduce((t, f) => f(t), ye.reduce((t, f) => f(t), yamlStringify(o))),
    })),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(configObject, fc.array(textEdit, { maxLength: 2 })).map(([o, te]) => ({ format: 'json' as const, text: te.reduce((t, f) => f(t), JSON.stringify(o)) })),
  },
  { weight: 1, arbitrary: fc.record({ format: fc.constantFrom('yaml' as const, 'json' as const), text: fc.string({ maxLength: 200 }) }) },
);

/** An accepted config must have the shape VmpiConfig promises. */
function checkConfig(c: ReturnType<typeof parseConfig>): void {
  const fail = (m: string): never => {
    throw new InvariantError(`accepted config: ${m}`);
  };
  for (const d of c.devices) {
    if (typeof d.socket !== 'string' || !isAbsolute(d.socket)) fail(`socket ${String(d.socket)} is not an absolute path`);
    if (d.vmpiId !== undefined && (!Number.isInteger(d.vmpiId) || d.vmpiId < 1 || d.vmpiId > 65535)) fail(`vmpiId ${d.vmpiId}`);
    if (!Number.isInteger(d.maxSduLog2)) fail(`maxSduLog2 ${d.maxSduLog2}`);
    if (d.mode !== undefined && (!Number.isInteger(d.mode) || d.mode < 0 || d.mode > 0o777)) fail(`mode ${d.mode}`);
  }
  if (!LOG_LEVELS.includes(c.log.level)) fail(`log level ${String(c.log.level)}`);
  if (typeof c.metrics.enabled !== 'boolean') fail('metrics.enabled is not a boolean');
  if (!Number.isInteger(c.metrics.listen.port) || c.metrics.listen.port < 0 || c.metrics.listen.port > 65535) fail(`metrics port ${c.metrics.listen.port}`);
  // The config is plain data: it must print (logs, check-config) without throwing.
  JSON.stringify(c);
}

export const configTarget: FuzzTarget<ConfigInput> = {
  name: 'config',
  description: 'config text (YAML/JSON, near-valid + YAML tricks + text mutations) → parseConfig',
  arbitrary,
  // Refused the right way: a ConfigError with its code and at least one problem, each one
  // non-empty line (check-config prints them one per line, with the file name in front).
  expected: (e) => e instanceof ConfigError && e.code === 'ERR_VMPI_CONFIG' && e.problems.length > 0 && e.problems.every((p) => p !== '' && !p.includes('\n')),
  examples: [
    // Escaped as a TypeError (a cyclic value printed) and a ReferenceError (yaml's alias limit).
    { format: 'yaml', text: 'devices: &d [*d]\n' },
    // JSON.parse's message quoted the text around the error with its newline: two lines.
    { format: 'json', text: '&\n{"metrics":"/.sock","log":{}}' },
    { format: 'yaml', text: 'a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n' },
  ],
  run({ format, text }) {
    checkConfig(parseConfig(text, { format, source: 'fuzz.yaml', baseDir: '/etc/vmpi' }));
  },
};
