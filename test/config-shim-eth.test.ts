/**
 * The `shimEth` config section (src/ops/config/: schema + checks): what is kept, the defaults
 * left open for the IPC process, and each bad value named with what to do.
 */
import t from 'tap';
import { parseConfig, type ConfigError } from '../src/ops/config.js';

const parse = (text: string) => parseConfig(text, { format: 'yaml' });
const one = (text: string): string[] => (t.throws(() => parse(text)) as ConfigError).problems;

t.test('shimEth: kept as given, defaults left open', async (t) => {
  t.same(parse('shimEth: { dif: eth.v100, interface: eth0.100 }\n').shimEth, { dif: 'eth.v100', interface: 'eth0.100' }, 'a DIF and an interface are enough');
  t.same(
    parse('shimEth:\n  dif: eth.v100\n  name: eth.v100.a\n  interface: eth0\n  vlan: 100\n  allow: ["02:00:00:00:00:01"]\n  mtu: 9000\n  keepaliveMs: 200\n  keepaliveTimeoutMs: 1000\n  allocateTimeoutMs: 3000\n  resolveCacheSize: 16\n  resolveCacheMs: 5000\n').shimEth,
    { dif: 'eth.v100', name: 'eth.v100.a', interface: 'eth0', vlan: 100, allow: ['02:00:00:00:00:01'], mtu: 9000, keepaliveMs: 200, keepaliveTimeoutMs: 1000, allocateTimeoutMs: 3000, resolveCacheSize: 16, resolveCacheMs: 5000 },
  );
});

t.test('shimEth: bad values named', async (t) => {
  t.same(one('shimEth: { dif: eth.x }\n'), ['shimEth.interface: is required but missing']);
  t.same(one('shimEth: { dif: eth.x, interface: "a/b" }\n'), ['shimEth.interface: "a/b" is not an interface name such as "eth0.100" (at most 15 bytes, no "/", ":" or spaces)']);
  t.match(one('shimEth: { dif: eth.x, interface: "averyveryverylongname" }\n')[0], /shimEth\.interface: .*15/);
  t.match(one('shimEth: { dif: eth.x, interface: eth0, vlan: 4095 }\n')[0], /shimEth\.vlan: 4095 is above the maximum 4094/);
  t.same(one('shimEth: { dif: eth.x, interface: eth0.100, vlan: 100 }\n'), [
    'shimEth.vlan: 100 with "eth0.100", which looks like a VLAN interface already (its kernel tags the frames): give the parent interface with vlan, or the VLAN interface alone',
  ]);
  t.same(one('shimEth: { dif: eth.x, interface: eth0, allow: ["02:00:00:00:00"] }\n'), ['shimEth.allow[0]: "02:00:00:00:00" is not a MAC address (for example "02:00:00:00:00:01")']);
  t.same(one('shimEth: { dif: eth.x, interface: eth0, keepaliveMs: 1000, keepaliveTimeoutMs: 1500 }\n'), ['shimEth.keepaliveTimeoutMs: 1500 is less than two keepalive periods (keepaliveMs 1000); make it at least 2000']);
  t.same(one('shimEth: { dif: eth.x, interface: eth0, name: "a/b/c/d/e" }\n'), ['shimEth.name: "a/b/c/d/e" is not an IPC process name: "a/b/c/d/e" has 5 components; an application name has at most 4 (apn/api/aen/aei)']);
  t.match(one('shimEth: { dif: eth.x, interface: eth0, bind: x }\n')[0], /shimEth: unknown field "bind"|shimEth\.bind: unknown field/);
});
