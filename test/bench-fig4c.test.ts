/**
 * bench-fig4c.test.ts — the parts of `npm run bench:fig4c` that run without QEMU: the spec made
 * from the list of series classes (the first is ours), the FIG4C_… settings read from it, the
 * maker the sweep calls per key, the fig4c.{csv,svg,json} a sweep of stand-in series writes, and
 * (as root) the two-host network itself: two namespaces, each a bridge with one tap, the bridges
 * joined by a veth pair, MTU 9000 on every link, a 9000-byte frame crossing it unfragmented, and
 * nothing left after remove(); a dead run's `-a`/`-b` namespaces are removed by removeStale().
 * Nothing is timed.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Figure, readSettings } from '../bench/common/figure.js';
import { removeStale, TwoHostNet } from '../bench/common/netns.js';
import type { Measurement, Series } from '../bench/common/series.js';
import { E1000Series, VirtioNetSeries } from '../bench/fig4c/nic-series.js';
import { fig4cSpec, JUMBO_MTU, seriesMaker, type Fig4cContext, type Fig4cSeriesClass } from '../bench/fig4c/systems.js';
import { canNetns } from './helpers/netns.js';

const dir = mkdtempSync(join(tmpdir(), 'vmpi-bench-fig4c-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in series: `mbps` at every size, booted and stopped without a guest; records its calls. */
function fake(key: string, mbps: number, calls: string[] = []): Fig4cSeriesClass {
  return class implements Series {
    static readonly key = key;
    readonly key = key;
    readonly name = `${key} (stand-in)`;
    constructor(readonly ctx: Fig4cContext) {}
    start(): Promise<void> {
      calls.push(`${key} start`);
      return Promise.resolve();
    }
    measure(size: number, seconds: number): Promise<Measurement> {
      const pps = (mbps * 1e6) / 8 / size;
      return Promise.resolve({ mbps, pps, seconds, sdus: pps * seconds, bytes: (mbps * 1e6 * seconds) / 8 });
    }
    stop(): Promise<void> {
      calls.push(`${key} stop`);
      return Promise.resolve();
    }
  };
}

const ctx = (): Fig4cContext => ({ say: () => {}, net: new TwoHostNet(), mtu: JUMBO_MTU });

t.test('the spec: one system per class in the list order, FIG4C_… settings, typed errors', async (t) => {
  const real = fig4cSpec([VirtioNetSeries, E1000Series]);
  t.equal(real.id, 'fig4c');
  t.same(real.systems, ['virtio-net', 'e1000'], "the NIC series' keys, in order");
  t.match(real.guest, /MTU 9000/, 'the JSON says the NIC path has jumbo frames');
  const spec = fig4cSpec([fake('normal-dif', 1), VirtioNetSeries, E1000Series]);
  t.same(spec.systems, ['normal-dif', 'virtio-net', 'e1000'], 'a class added first is ours');
  const s = readSettings(spec, dir, { FIG4C_SIZES: '250,1000,4000', FIG4C_REPEATS: '3', FIG4C_SECONDS: '2', FIG4C_SYSTEMS: 'normal-dif,e1000' });
  t.same(s.sizes, [250, 1000, 4000]);
  t.equal(s.repeats, 3);
  t.equal(s.seconds, 2);
  t.same(s.systems, ['normal-dif', 'e1000']);
  t.same(s.directions, [null], 'VM → VM: no direction');
  t.equal(s.outDir, join(dir, 'bench-results'));
  t.same(readSettings(spec, dir, {}).systems, ['normal-dif', 'virtio-net', 'e1000'], 'default: every series');
  t.same(readSettings(spec, dir, {}).sizes.length, 17, 'default sizes 0:250:4000');
  t.throws(() => readSettings(real, dir, { FIG4C_SYSTEMS: 'normal-dif' }), { code: 'bad_system', message: /FIG4C_SYSTEMS: unknown normal-dif \(known: virtio-net, e1000\)/ }, 'not wired: unknown');
  t.throws(() => readSettings(spec, dir, { FIG4B_SIZES: '1', FIG4C_SIZES: 'x' }), { code: 'bad_sizes', message: /FIG4C_SIZES/ }, 'FIG4C_, not another figure’s prefix');
  t.throws(() => readSettings(spec, dir, { FIG4C_DIRECTION: 'to-host' }), { code: 'bad_direction' });
  t.throws(() => fig4cSpec([]), { name: 'Fig4cSystemsError', code: 'no_series' });
  t.throws(() => fig4cSpec([VirtioNetSeries, fake('virtio-net', 1)]), { name: 'Fig4cSystemsError', code: 'duplicate_key', message: /'virtio-net'/ });
});

t.test('the maker: the class of each key, constructed with the context; a key that lies is refused', async (t) => {
  const c = ctx();
  const make = seriesMaker([fake('normal-dif', 1), VirtioNetSeries, E1000Series], c);
  const v = make('virtio-net');
  t.ok(v instanceof VirtioNetSeries);
  t.equal(make('e1000').key, 'e1000');
  t.equal((make('normal-dif') as unknown as { ctx: Fig4cContext }).ctx, c, 'constructed with the context');
  t.throws(() => make('vsock'), { code: 'key_mismatch' });
  const liar = class extends (fake('x', 1) as new (ctx: Fig4cContext) => Series) {
    static readonly key = 'y';
  };
  t.throws(() => seriesMaker([liar], c)('y'), { code: 'key_mismatch', message: /calls itself 'x'/ });
});

t.test('a sweep of stand-ins writes fig4c.csv, .svg and .json with our ratios first', async (t) => {
  const out = join(dir, 'sweep');
  const calls: string[] = [];
  const classes = [fake('normal-dif', 300, calls), fake('virtio-net', 100, calls), fake('e1000', 50, calls)];
  const spec = fig4cSpec(classes);
  const settings = { ...readSettings(spec, dir, { FIG4C_SIZES: '250,1000', FIG4C_REPEATS: '2', FIG4C_SECONDS: '0.01' }), outDir: out };
  const files = await new Figure(spec, settings, () => {}).run(seriesMaker(classes, ctx()));
  t.same(files.map((f) => f.slice(out.length + 1)), ['fig4c.csv', 'fig4c.svg', 'fig4c.json']);
  t.same(calls, ['normal-dif start', 'normal-dif stop', 'virtio-net start', 'virtio-net stop', 'e1000 start', 'e1000 stop'], 'one boot per system, in order');
  const csv = readFileSync(join(out, 'fig4c.csv'), 'utf8').trim().split('\n');
  t.equal(csv[0], 'system,size,mean_mbps,ci95_low,ci95_high,repeats', "fig4b's columns");
  t.same(csv.slice(1), ['normal-dif,250,300.000,300.000,300.000,2', 'normal-dif,1000,300.000,300.000,300.000,2', 'virtio-net,250,100.000,100.000,100.000,2', 'virtio-net,1000,100.000,100.000,100.000,2', 'e1000,250,50.000,50.000,50.000,2', 'e1000,1000,50.000,50.000,50.000,2']);
  t.match(readFileSync(join(out, 'fig4c.svg'), 'utf8'), /Fig\. 4c \(reproduced\): VM → VM goodput across two hosts/);
  const json = JSON.parse(readFileSync(join(out, 'fig4c.json'), 'utf8')) as {
    complete: boolean;
    settings: { sizes: number[]; repeats: number; systems: string[]; guest: string };
    systems: { key: string; points: { size: number; meanPps: number; samples: unknown[] }[] }[];
    ratios: Record<string, { perSize: Record<string, number>; geomean: number }>;
  };
  t.equal(json.complete, true);
  t.same(json.settings.systems, ['normal-dif', 'virtio-net', 'e1000']);
  t.match(json.settings.guest, /two hosts|"host"/);
  t.equal(json.systems[1]!.points[0]!.meanPps, (100e6 / 8) / 250, 'SDU/s kept per point');
  t.equal(json.systems[1]!.points[0]!.samples.length, 2);
  t.same(Object.keys(json.ratios), ['normal-dif/virtio-net', 'normal-dif/e1000']);
  t.ok(Math.abs(json.ratios['normal-dif/virtio-net']!.geomean - 3) < 1e-9, 'geometric mean of the ratios');
  t.equal(json.ratios['normal-dif/e1000']!.perSize['1000'], 6);
});

const noNet = canNetns();

function ipJson(ns: string, ...args: string[]): { ifname: string; mtu: number; master?: string; link_netnsid?: number; linkinfo?: { info_kind?: string; info_slave_kind?: string } }[] {
  const r = spawnSync('ip', ['-n', ns, '-j', '-d', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip -n ${ns} ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ReturnType<typeof ipJson>;
}

const namespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;

t.test('the two hosts: a bridge, a tap and a veth end each, MTU 9000 everywhere, jumbo frames cross', { skip: noNet }, async (t) => {
  const net = new TwoHostNet();
  t.teardown(() => net.remove());
  net.create(JUMBO_MTU);
  t.match(net.ns, new RegExp(`^vmpi-bench-${process.pid}-a and vmpi-bench-${process.pid}-b$`));
  for (const h of net.hosts) {
    const links = ipJson(h.ns, 'link', 'show').filter((l) => l.ifname !== 'lo');
    const kind = (k: string) => links.filter((l) => l.linkinfo?.info_kind === k);
    const [bridge] = kind('bridge');
    const taps = kind('tun');
    const [veth] = kind('veth');
    t.equal(kind('bridge').length, 1, `${h.ns}: one bridge`);
    t.same(taps.map((l) => l.ifname), [h.tap], `${h.ns}: one tap, the guest's`);
    t.equal(kind('veth').length, 1, `${h.ns}: one veth end`);
    t.equal(links.length, 3, `${h.ns}: nothing else`);
    for (const l of links) t.equal(l.mtu, JUMBO_MTU, `${h.ns} ${l.ifname}: MTU ${JUMBO_MTU}`);
    t.equal(taps[0]!.master, bridge!.ifname, `${h.ns}: the tap is in the bridge`);
    t.equal(veth!.master, bridge!.ifname, `${h.ns}: the veth end is in the bridge`);
    t.type(veth!.link_netnsid, 'number', `${h.ns}: its peer is in another namespace`);
  }
  // Addresses on the bridges (this test's only): one 9000-byte IP packet A → B and back. The
  // bridge never fragments: a frame longer than any link's MTU on the way (bridge port, veth
  // peer) is dropped, so the echo coming back says every link carries it whole.
  const [a, b] = net.hosts;
  for (const [h, addr] of [[a, '10.199.0.1'], [b, '10.199.0.2']] as const) {
    t.equal(spawnSync('ip', ['-n', h.ns, 'addr', 'add', `${addr}/24`, 'dev', ipJson(h.ns, 'link', 'show', 'type', 'bridge')[0]!.ifname]).status, 0);
  }
  const ping = spawnSync('ip', ['netns', 'exec', a.ns, 'busybox', 'ping', '-c', '1', '-W', '10', '-s', String(JUMBO_MTU - 28), '10.199.0.2'], { encoding: 'utf8' });
  t.equal(ping.status, 0, `a ${JUMBO_MTU}-byte packet crosses bridge → veth → bridge (sent whole: the bridges are at MTU ${JUMBO_MTU}, checked above):\n${ping.stdout}${ping.stderr}`);
  t.match(ping.stdout, new RegExp(`${JUMBO_MTU - 20} bytes from 10\\.199\\.0\\.2`), 'the whole echo came back');
  net.remove();
  for (const h of net.hosts) t.notOk(namespaces().includes(h.ns), `${h.ns} removed`);
});

t.test("removeStale: a dead run's host namespaces (-a, -b) go, a live run's stay", { skip: noNet }, async (t) => {
  // A pid that is not running now (pid_max on this machine bounds the search).
  let dead = 0;
  for (let p = 32000; p > 300 && !dead; p--) {
    try {
      process.kill(p, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') dead = p;
    }
  }
  const names = [`vmpi-bench-${dead}-a`, `vmpi-bench-${dead}-b`, `vmpi-bench-${process.pid}-z`];
  for (const n of names) spawnSync('ip', ['netns', 'add', n]);
  t.teardown(() => {
    for (const n of names) spawnSync('ip', ['netns', 'del', n]);
  });
  const removed = removeStale();
  t.ok(removed.includes(names[0]!) && removed.includes(names[1]!), `removed ${removed.join(', ')}`);
  t.notOk(removed.includes(names[2]!), "this process's namespace is kept");
  t.notOk(namespaces().includes(names[0]!));
  t.ok(namespaces().includes(names[2]!));
});
