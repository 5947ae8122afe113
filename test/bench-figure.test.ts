/**
 * bench-figure.test.ts — the pure parts of the figure benches (bench/common/figure.ts): the
 * settings read from <ID>_… variables (FIG4A_DIRECTION included, with a typed error for a bad
 * value) and the CSV/SVG/JSON written from saved samples (<ID>_REPLOT), with the direction as a
 * column and field for a host ↔ VM figure and none for a VM → VM one; the warm-up before a
 * system's repeats (bench/common/warmup.ts: until steady, bounded). Nothing is timed.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Figure, FigureSettingsError, figureCsv, parseDirection, readSettings, type FigureSpec } from '../bench/common/figure.js';
import type { Measurement, Series } from '../bench/common/series.js';
import { warmUp } from '../bench/common/warmup.js';

const dir = mkdtempSync(join(tmpdir(), 'vmpi-bench-figure-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const DIRECTIONAL: FigureSpec = {
  id: 'fig4a',
  title: 'unused',
  tableTitle: 'unused',
  systems: ['shim-dif', 'virtio-net', 'virtio-serial'],
  defaultSystems: ['shim-dif', 'virtio-net'],
  colors: {},
  guest: 'test',
  directions: {
    'to-guest': { title: 'host → VM', tableTitle: 'host → VM' },
    'to-host': { title: 'VM → host', tableTitle: 'VM → host' },
  },
  ratioPairs: [['shim-dif', 'virtio-serial']],
};
const PLAIN: FigureSpec = { id: 'fig4b', title: 'VM → VM', tableTitle: 'VM → VM', systems: ['normal-dif', 'virtio-net'], colors: {}, guest: 'test' };

t.test('FIG4A_DIRECTION: default, each value, both; bad values are refused with a code', async (t) => {
  t.same(readSettings(DIRECTIONAL, dir, {}).directions, ['to-guest'], 'unset: host → VM, as before');
  t.same(readSettings(DIRECTIONAL, dir, { FIG4A_DIRECTION: 'to-host' }).directions, ['to-host']);
  t.same(readSettings(DIRECTIONAL, dir, { FIG4A_DIRECTION: 'both' }).directions, ['to-guest', 'to-host']);
  t.same(parseDirection('X', ' to-guest '), ['to-guest'], 'surrounding blanks are fine');
  for (const bad of ['', 'To-Guest', 'host', 'to-guest,to-host', 'both ways']) {
    t.throws(() => readSettings(DIRECTIONAL, dir, { FIG4A_DIRECTION: bad }), { name: 'FigureSettingsError', code: 'bad_direction', message: /FIG4A_DIRECTION: unknown direction .*to-guest.*to-host.*both/ }, `'${bad}'`);
  }
  t.same(readSettings(PLAIN, dir, {}).directions, [null], 'a VM → VM figure has no direction');
  t.throws(() => readSettings(PLAIN, dir, { FIG4B_DIRECTION: 'to-host' }), { code: 'bad_direction', message: /FIG4B_DIRECTION: .*no directions/ });
});

t.test('the other settings: defaults and typed errors', async (t) => {
  const s = readSettings(DIRECTIONAL, dir, { FIG4A_SIZES: '250,1000', FIG4A_REPEATS: '3', FIG4A_SYSTEMS: 'shim-dif,virtio-serial' });
  t.same(s.sizes, [250, 1000]);
  t.equal(s.repeats, 3);
  t.equal(s.seconds, 1);
  t.same(s.systems, ['shim-dif', 'virtio-serial']);
  t.equal(s.outDir, join(dir, 'bench-results'));
  t.same(readSettings(DIRECTIONAL, dir, { FIG4A_SIZES: '0:250:500' }).sizes, [0, 250, 500]);
  t.same(readSettings(DIRECTIONAL, dir, {}).systems, ['shim-dif', 'virtio-net'], 'the default systems');
  t.throws(() => readSettings(DIRECTIONAL, dir, { FIG4A_SYSTEMS: 'shim-dif,virtio-vsock' }), { code: 'bad_system', message: /unknown virtio-vsock \(known: shim-dif, virtio-net, virtio-serial\)/ });
  t.throws(() => readSettings(DIRECTIONAL, dir, { FIG4A_SIZES: '1,x' }), { code: 'bad_sizes' });
  t.throws(() => readSettings(DIRECTIONAL, dir, { FIG4A_SIZES: '0:0:10' }), { code: 'bad_sizes' });
  t.throws(() => readSettings(DIRECTIONAL, dir, { FIG4A_REPEATS: '0' }), { code: 'bad_repeats' });
  t.ok(new FigureSettingsError('bad_sizes', 'x') instanceof Error);
});

const m = (mbps: number, size: number): Measurement => ({ mbps, pps: (mbps * 1e6) / 8 / size, seconds: 1, sdus: (mbps * 1e6) / 8 / size, bytes: (mbps * 1e6) / 8 });

function saved(systems: { key: string; direction?: string; mbps: number[] }[], directions?: string[]): string {
  const file = join(dir, `saved-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      date: '2026-12-01T18:00:00.000Z',
      durationSeconds: 10,
      settings: { sizes: [1000], repeats: 2, secondsPerMeasurement: 1, systems: [...new Set(systems.map((s) => s.key))], ...(directions ? { directions } : {}) },
      systems: systems.map((s) => ({ key: s.key, name: `${s.key} name`, ...(s.direction ? { direction: s.direction } : {}), points: [{ size: 1000, samples: s.mbps.map((v) => m(v, 1000)) }] })),
    }),
  );
  return file;
}

t.test('outputs of a run in both directions: direction column, field, one SVG each, ratios per direction', async (t) => {
  const out = join(dir, 'both');
  const fig = new Figure(DIRECTIONAL, { ...readSettings(DIRECTIONAL, dir, {}), outDir: out }, () => {});
  const files = fig.replot(
    saved(
      [
        { key: 'shim-dif', direction: 'to-guest', mbps: [100, 100] },
        { key: 'virtio-net', direction: 'to-guest', mbps: [50, 50] },
        { key: 'virtio-serial', direction: 'to-guest', mbps: [200, 200] },
        { key: 'shim-dif', direction: 'to-host', mbps: [30, 30] },
        { key: 'virtio-net', direction: 'to-host', mbps: [60, 60] },
        { key: 'virtio-serial', direction: 'to-host', mbps: [10, 10] },
      ],
      ['to-guest', 'to-host'],
    ),
  );
  t.same(files.map((f) => f.slice(out.length + 1)), ['fig4a.csv', 'fig4a.svg', 'fig4a-to-host.svg', 'fig4a.json']);
  const csv = readFileSync(join(out, 'fig4a.csv'), 'utf8').trim().split('\n');
  t.equal(csv[0], 'system,size,mean_mbps,ci95_low,ci95_high,repeats,direction', 'the direction is a trailing column');
  t.equal(csv[1], 'shim-dif,1000,100.000,100.000,100.000,2,to-guest');
  t.equal(csv[4], 'shim-dif,1000,30.000,30.000,30.000,2,to-host');
  t.match(readFileSync(join(out, 'fig4a.svg'), 'utf8'), /host → VM/);
  t.match(readFileSync(join(out, 'fig4a-to-host.svg'), 'utf8'), /VM → host/);
  const json = JSON.parse(readFileSync(join(out, 'fig4a.json'), 'utf8')) as {
    settings: { directions: string[] };
    systems: { key: string; direction: string }[];
    ratios: Record<string, { perSize: Record<string, number> }>;
    sduRateRatios: Record<string, { perSize: Record<string, number> }>;
  };
  t.same(json.settings.directions, ['to-guest', 'to-host']);
  t.same(json.systems.map((s) => `${s.key}@${s.direction}`), ['shim-dif@to-guest', 'virtio-net@to-guest', 'virtio-serial@to-guest', 'shim-dif@to-host', 'virtio-net@to-host', 'virtio-serial@to-host']);
  t.equal(json.ratios['shim-dif/virtio-net']!.perSize['1000'], 2, 'host → VM keeps the old key');
  t.equal(json.ratios['shim-dif/virtio-net@to-host']!.perSize['1000'], 0.5);
  t.equal(json.sduRateRatios['shim-dif/virtio-serial@to-guest']!.perSize['1000'], 0.5);
  t.equal(json.sduRateRatios['shim-dif/virtio-serial@to-host']!.perSize['1000'], 3);
});

t.test('a saved run from before directions replots as host → VM; a VM → VM figure has no direction', async (t) => {
  const out = join(dir, 'old');
  new Figure(DIRECTIONAL, { ...readSettings(DIRECTIONAL, dir, {}), outDir: out }, () => {}).replot(saved([{ key: 'shim-dif', mbps: [10, 12] }]));
  t.equal(readFileSync(join(out, 'fig4a.csv'), 'utf8').split('\n')[1], 'shim-dif,1000,11.000,-1.706,23.706,2,to-guest');
  t.notOk(existsSync(join(out, 'fig4a-to-host.svg')));
  const plain = join(dir, 'plain');
  new Figure(PLAIN, { ...readSettings(PLAIN, dir, {}), outDir: plain }, () => {}).replot(saved([{ key: 'normal-dif', mbps: [10, 12] }, { key: 'virtio-net', mbps: [5, 6] }]));
  const csv = readFileSync(join(plain, 'fig4b.csv'), 'utf8').split('\n');
  t.equal(csv[0], 'system,size,mean_mbps,ci95_low,ci95_high,repeats', 'fig4b keeps its columns');
  t.equal(csv[1], 'normal-dif,1000,11.000,-1.706,23.706,2');
  const json = JSON.parse(readFileSync(join(plain, 'fig4b.json'), 'utf8')) as { settings: object; systems: object[]; ratios: object };
  t.notOk('directions' in json.settings);
  t.notOk('direction' in json.systems[0]!);
  t.notOk('sduRateRatios' in json);
  t.same(Object.keys(json.ratios), ['normal-dif/virtio-net']);
  t.equal(figureCsv([], false), 'system,size,mean_mbps,ci95_low,ci95_high,repeats\n');
});

t.test('warm-up: rounds over the sizes until every rate is steady, bounded; none with 0 rounds', async (t) => {
  // A guest that warms up: its rate doubles per run until it reaches 1000 SDU/s.
  const warming = () => {
    const calls: [number, number][] = [];
    let rate = 100;
    const measure = async (size: number, secs: number): Promise<Measurement> => {
      calls.push([size, secs]);
      const r = rate;
      rate = Math.min(1000, rate * 2);
      return { mbps: (r * size * 8) / 1e6, pps: r, seconds: secs, sdus: r * secs, bytes: r * secs * size };
    };
    return { calls, measure };
  };
  const lines: string[] = [];
  const a = warming();
  const w = await warmUp(a.measure, [250, 1000], { maxRounds: 6, tolerance: 0.1, agree: 3, seconds: 0.5 }, (s) => lines.push(s));
  // Rounds: [100, 200], [400, 800], [1000, 1000] ×3 → steady in round 5 (three in a row agree).
  t.same(w.rates, [[100, 200], [400, 800], [1000, 1000], [1000, 1000], [1000, 1000]]);
  t.equal(w.rounds, 5);
  t.equal(w.steady, true);
  t.same(a.calls.slice(0, 2), [[250, 0.5], [1000, 0.5]], 'every size, in order, with the warm-up window');
  t.match(lines[3], /warm-up round 4\/6: 250 B 1000\/s, 1000 B 1000\/s$/);
  t.match(lines[4], /warm-up round 5\/6: 250 B 1000\/s, 1000 B 1000\/s \(steady\)/);

  // A JIT that warms up in steps: a plateau of two rounds, then the rate doubles. Two rounds
  // that agree stop on the plateau; three in a row (the default) wait for the top.
  const stepped = () => {
    const seq = [100, 500, 500, 1000, 1000, 1000, 1000];
    let i = 0;
    return async (size: number, secs: number): Promise<Measurement> => {
      const r = seq[Math.min(i++, seq.length - 1)]!;
      return { mbps: (r * size * 8) / 1e6, pps: r, seconds: secs, sdus: r * secs, bytes: r * secs * size };
    };
  };
  const two = await warmUp(stepped(), [1000], { maxRounds: 12, tolerance: 0.1, agree: 2, seconds: 1 }, () => {});
  t.same({ rounds: two.rounds, last: two.rates.at(-1) }, { rounds: 3, last: [500] }, 'agree 2: stopped on the plateau');
  const three = await warmUp(stepped(), [1000], { maxRounds: 12, tolerance: 0.1, agree: 3, seconds: 1 }, () => {});
  t.same({ rounds: three.rounds, steady: three.steady, last: three.rates.at(-1) }, { rounds: 6, steady: true, last: [1000] }, 'agree 3: warm');

  const b = warming();
  const bounded = await warmUp(b.measure, [250], { maxRounds: 2, tolerance: 0.1, agree: 3, seconds: 1 }, () => {});
  t.same({ rounds: bounded.rounds, steady: bounded.steady, calls: b.calls.length }, { rounds: 2, steady: false, calls: 2 }, 'bounded by maxRounds');

  const c = warming();
  t.same(await warmUp(c.measure, [250], { maxRounds: 0, tolerance: 0.1, agree: 3, seconds: 1 }, () => {}), { rounds: 0, steady: false, rates: [] }, 'no rounds: nothing measured');
  t.equal(c.calls.length, 0);

  let n = 0;
  const failing = async (): Promise<Measurement> => {
    if (n++ === 0) throw new Error('first run failed\nmore');
    return { mbps: 1, pps: 500, seconds: 1, sdus: 500, bytes: 500 };
  };
  const f: string[] = [];
  const fw = await warmUp(failing, [250], { maxRounds: 5, tolerance: 0.1, agree: 3, seconds: 1 }, (s) => f.push(s));
  t.same(fw.rates, [[Number.NaN], [500], [500], [500]], 'a failed run is not steady; the warm-up goes on');
  t.match(f[0], /warm-up round 1 size 250: first run failed$/);
});

t.test('<ID>_WARMUP and _WARMUP_TOLERANCE: defaults, values, typed errors', async (t) => {
  t.same(readSettings(PLAIN, dir, {}).warmup, { maxRounds: 12, tolerance: 0.1, agree: 3, seconds: 1 });
  t.same(readSettings(PLAIN, dir, { FIG4B_WARMUP: '0', FIG4B_SECONDS: '0.25', FIG4B_WARMUP_TOLERANCE: '0.05', FIG4B_WARMUP_AGREE: '2' }).warmup, { maxRounds: 0, tolerance: 0.05, agree: 2, seconds: 0.25 });
  for (const bad of ['1', '11', 'x']) t.throws(() => readSettings(PLAIN, dir, { FIG4B_WARMUP_AGREE: bad }), { code: 'bad_warmup', message: /FIG4B_WARMUP_AGREE must be an integer 2\.\.10/ }, bad);
  for (const bad of ['-1', '1.5', 'x', '101']) t.throws(() => readSettings(PLAIN, dir, { FIG4B_WARMUP: bad }), { name: 'FigureSettingsError', code: 'bad_warmup', message: /FIG4B_WARMUP must be an integer 0\.\.100/ }, bad);
  for (const bad of ['0', '1', 'x']) t.throws(() => readSettings(PLAIN, dir, { FIG4B_WARMUP_TOLERANCE: bad }), { code: 'bad_warmup', message: /FIG4B_WARMUP_TOLERANCE/ }, bad);
});

t.test('a sweep warms each system up until steady before its repeats: the first repeat is warm', async (t) => {
  const out = join(dir, 'warm');
  // Rate 100, 200, 400, … per run, up to 800: cold runs are slower.
  let rate = 100;
  let runs = 0;
  const series: Series = {
    key: 'normal-dif',
    name: 'warming',
    start: async () => {},
    stop: async () => {},
    measure: async (size: number, secs: number) => {
      runs++;
      const r = rate;
      rate = Math.min(800, rate * 2);
      return { mbps: (r * size * 8) / 1e6, pps: r, seconds: secs, sdus: r, bytes: r * size };
    },
  };
  const settings = { ...readSettings(PLAIN, dir, { FIG4B_SIZES: '1000', FIG4B_REPEATS: '2', FIG4B_SYSTEMS: 'normal-dif' }), outDir: out };
  await new Figure(PLAIN, settings, () => {}).run(() => series);
  const json = JSON.parse(readFileSync(join(out, 'fig4b.json'), 'utf8')) as { settings: { warmup: unknown }; systems: { warmup: { rounds: number; steady: boolean }; points: { samples: Measurement[] }[] }[] };
  t.same(json.systems[0]!.warmup, { rounds: 6, steady: true, rates: [[100], [200], [400], [800], [800], [800]] }, 'warm-up rounds in the JSON');
  t.same(json.systems[0]!.points[0]!.samples.map((s) => s.pps), [800, 800], 'both repeats warm');
  t.equal(runs, 8);
  t.same(json.settings.warmup, { maxRounds: 12, tolerance: 0.1, agree: 3, seconds: 1 });
});
