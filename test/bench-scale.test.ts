/**
 * bench-scale.test.ts — the pure parts of bench:scale and bench:datapath's interleaved DPDK
 * comparison: the median, the paired ratio with its spread (a failed run drops its pair), the
 * soak's start/peak/end and least-squares slope (bench/common/compare.ts), and bench:scale's
 * SCALE_… settings with their typed errors (bench/common/scale-settings.ts). Nothing is timed.
 */
import t from 'tap';
import { CompareError, median, pairedRatio, trend } from '../bench/common/compare.js';
import { ScaleSettingsError, readScaleSettings } from '../bench/common/scale-settings.js';

t.test('median: odd, even, unsorted input left alone, empty refused', async (t) => {
  const v = [5, 1, 3];
  t.equal(median(v), 3);
  t.same(v, [5, 1, 3], 'the input is not sorted in place');
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([7]), 7);
  t.throws(() => median([]), CompareError);
});

t.test('pairedRatio: ratio of medians, per-pair spread, failed runs drop their pair', async (t) => {
  const r = pairedRatio([10, 20, 30, 40, 50], [20, 20, 60, 20, 100])!;
  t.equal(r.pairs, 5);
  t.equal(r.oursMedian, 30);
  t.equal(r.theirsMedian, 20);
  t.equal(r.ratio, 1.5);
  t.same(r.pairRatios, [0.5, 1, 0.5, 2, 0.5]);
  t.equal(r.min, 0.5);
  t.equal(r.max, 2);
  t.equal(r.pairMedian, 0.5);
  const dropped = pairedRatio([10, null, 30, 0], [5, 100, null, 7])!;
  t.equal(dropped.pairs, 1, 'null or zero on either side drops the pair');
  t.equal(dropped.ratio, 2);
  t.equal(pairedRatio([null], [3]), null, 'no pair left: null');
  t.throws(() => pairedRatio([1, 2], [1]), { code: 'unpaired' });
});

t.test('trend: start, peak, end and the least-squares slope', async (t) => {
  const flat = trend([0, 10, 20, 30].map((x) => ({ x, y: 100 })));
  t.same(flat, { n: 4, start: 100, peak: 100, end: 100, slope: 0 });
  const up = trend([
    { x: 0, y: 10 },
    { x: 10, y: 30 },
    { x: 20, y: 20 },
    { x: 30, y: 40 },
  ]);
  t.equal(up.peak, 40);
  t.equal(up.end, 40);
  t.ok(Math.abs(up.slope - 0.8) < 1e-12, `slope ${up.slope} is 0.8 (sxy 400 / sxx 500)`);
  t.equal(trend([{ x: 5, y: 9 }]).slope, 0, 'one sample: slope 0');
  t.throws(() => trend([]), { code: 'empty' });
  t.throws(() => trend([{ x: 0, y: Number.NaN }]), { code: 'bad_value' });
});

t.test('readScaleSettings: defaults, lists, and every bad value named', async (t) => {
  t.same(readScaleSettings({}), { devices: [1, 2, 4, 8, 16], servers: [1, 2], sizes: [64, 4000], seconds: 3, queueSize: 256, repeats: 3, soakSeconds: 0, soakInterval: 10, serverNodeFlags: [], serverFlagSets: [[]] });
  const s = readScaleSettings({ SCALE_DEVICES: '8, 1,4', SCALE_SIZES: '1500', SCALE_SECONDS: '1.5', SCALE_QUEUE_SIZE: '64', SCALE_REPEATS: '5', SCALE_SOAK_SECONDS: '600', SCALE_SOAK_INTERVAL: '10' });
  t.same(s.devices, [1, 4, 8], 'counts sorted');
  t.same(s.sizes, [1500]);
  t.same(readScaleSettings({ SCALE_SERVERS: '2,1' }).servers, [2, 1], 'layouts keep their order: the soak uses the first');
  t.equal(s.seconds, 1.5);
  t.equal(s.soakSeconds, 600);
  const bad: Record<string, string> = {
    SCALE_DEVICES: '1,0',
    SCALE_SIZES: '64,x',
    SCALE_SECONDS: '-1',
    SCALE_QUEUE_SIZE: '100',
    SCALE_REPEATS: '1.5',
    SCALE_SOAK_SECONDS: '5',
    SCALE_SERVERS: '9',
    SCALE_SERVER_NODE_FLAGS: '--max-semi-space-size=2 ; rm',
    SCALE_SERVER_FLAG_SETS: 'none;--max-semi-space-size=2;rm',
  };
  for (const [k, v] of Object.entries(bad)) {
    let err: unknown;
    try {
      readScaleSettings({ [k]: v });
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof ScaleSettingsError && err.code === 'bad_setting' && err.message.startsWith(`${k}=${v}`), `${k}=${v} is refused, the message names it: ${String(err)}`);
  }
  t.same(readScaleSettings({ SCALE_SERVER_NODE_FLAGS: ' --max-semi-space-size=2  --expose-gc ' }).serverNodeFlags, ['--max-semi-space-size=2', '--expose-gc']);
  t.same(readScaleSettings({ SCALE_SERVER_FLAG_SETS: 'none; --max-semi-space-size=1 ;--max-semi-space-size=4 --expose-gc' }).serverFlagSets, [[], ['--max-semi-space-size=1'], ['--max-semi-space-size=4', '--expose-gc']], 'flag sets, none = no flags');
  t.throws(() => readScaleSettings({ SCALE_SERVER_FLAG_SETS: 'none;none' }), /given twice/);
  t.throws(() => readScaleSettings({ SCALE_DEVICES: '2,2' }), /given twice/);
  t.throws(() => readScaleSettings({ SCALE_DEVICES: '65' }), /1\.\.64/);
});
