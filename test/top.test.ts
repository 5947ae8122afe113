/**
 * top.test.ts — the pure parts of `vmpi top` (src/ops/top/): the exposition parser (labels,
 * escapes, special values, timestamps, malformed lines, the sample cap), snapshots from real
 * metric names, rates between two snapshots (a counter that went down is a reset, never a
 * negative rate), number formatting, the column layout at narrow widths, and the screen text.
 * The real server under tmux is test/top-tmux.test.ts.
 */
import t from 'tap';
import { parseExposition, parseSampleLine } from '../src/ops/top/exposition.js';
import { counterRate, ratesBetween, snapshotFrom } from '../src/ops/top/snapshot.js';
import { cut, fitColumns, fmtCount, fmtDuration, fmtMbps, fmtRate, renderRow, type Column } from '../src/ops/top/format.js';
import { flowRates, flowsOf } from '../src/ops/top/flows.js';
import { renderView, sortDevices } from '../src/ops/top/view.js';
import { urlForListen } from '../src/ops/top/run.js';

t.test('exposition: names, labels, escapes, values', async (t) => {
  t.same(parseSampleLine('up 1'), { name: 'up', labels: {}, value: 1 });
  t.same(parseSampleLine('a:b_c{x="1",y="two"} 3.5'), { name: 'a:b_c', labels: { x: '1', y: 'two' }, value: 3.5 });
  t.same(parseSampleLine('m{p="a\\\\b\\"c\\nd"} 2')?.labels, { p: 'a\\b"c\nd' }, 'escapes \\\\ \\" \\n undone');
  t.same(parseSampleLine('m{p="a,b}c"} 2')?.labels, { p: 'a,b}c' }, 'commas and braces inside a quoted value');
  t.same(parseSampleLine('m{x="1",} 2')?.labels, { x: '1' }, 'a trailing comma is allowed');
  t.same(parseSampleLine('m{ x = "1" , y="2" } 2')?.labels, { x: '1', y: '2' }, 'blanks around labels');
  t.same(parseSampleLine('m{} 7')?.value, 7);
  t.equal(parseSampleLine('m 1e3')?.value, 1000);
  t.equal(parseSampleLine('m -2.5E-1')?.value, -0.25);
  t.equal(parseSampleLine('m +Inf')?.value, Infinity);
  t.equal(parseSampleLine('m -Inf')?.value, -Infinity);
  t.ok(Number.isNaN(parseSampleLine('m NaN')!.value));
  t.equal(parseSampleLine('m 5 1700000000000')?.value, 5, 'a timestamp is ignored');
  for (const bad of ['m', 'm{', 'm{x="1"', 'm{x=1} 2', 'm{x="1} 2', 'm{1x="1"} 2', 'm x', 'm 1 2 3', 'm 1 t', '9m 1', 'm{x="1"}2', 'm{x="a\\']) {
    t.equal(parseSampleLine(bad), null, `malformed: ${JSON.stringify(bad)}`);
  }

  const text = [
    '# HELP vmpi_device_sdus_total SDUs carried, by direction',
    '# TYPE vmpi_device_sdus_total counter',
    'vmpi_device_sdus_total{vmpi_id="1",direction="to_guest"} 10',
    '',
    '   vmpi_device_sdus_total{vmpi_id="1",direction="from_guest"} 20\r',
    'this is not a sample',
    'vmpi_build_info{version="1.2.3",nodejs="26.0.0"} 1',
  ].join('\n');
  const p = parseExposition(text);
  t.equal(p.samples.length, 3, 'comments and blank lines skipped, CRLF taken');
  t.equal(p.malformed, 1);
  t.equal(p.firstMalformed, 'this is not a sample');
  t.notOk(p.truncated);
  const capped = parseExposition('a 1\nb 2\nc 3\n', 2);
  t.equal(capped.samples.length, 2, 'at most maxSamples');
  t.ok(capped.truncated);
});

const EXPO = (o: { tx: number; rx: number; txB: number; rxB: number; drops?: number; start?: number; conn?: number; up?: number }): string => `
process_start_time_seconds ${o.start ?? 1000}
vmpi_build_info{version="0.1.0",nodejs="26.0.0"} 1
vmpi_restarts_total 2
vmpi_device_info{vmpi_id="3",carrier="gpio",socket="/run/vmpi/web \\"1\\".sock"} 1
vmpi_device_info{vmpi_id="12",carrier="gpio",socket="inherited-fd"} 1
vmpi_device_up{vmpi_id="3"} ${o.up ?? 1}
vmpi_device_up{vmpi_id="12"} 0
vmpi_vhost_user_connections{vmpi_id="3"} ${o.conn ?? 1}
vmpi_vhost_user_connections{vmpi_id="12"} 0
vmpi_device_sdus_total{vmpi_id="3",direction="to_guest"} ${o.tx}
vmpi_device_sdus_total{vmpi_id="3",direction="from_guest"} ${o.rx}
vmpi_device_bytes_total{vmpi_id="3",direction="to_guest"} ${o.txB}
vmpi_device_bytes_total{vmpi_id="3",direction="from_guest"} ${o.rxB}
vmpi_device_drops_total{vmpi_id="3",reason="malformed"} ${o.drops ?? 0}
vmpi_device_drops_total{vmpi_id="3",reason="backlog_full"} 1
vmpi_device_rx_queue_full_total{vmpi_id="3"} 0
vmpi_device_backlog_sdus{vmpi_id="3"} 5
vmpi_device_backlog_max_sdus{vmpi_id="3"} 4096
vmpi_dif_ipcp_info{dif="hv.vmpi-3",type="shim-hv",name="hv.vmpi-3.host"} 1
vmpi_dif_flows_active{dif="hv.vmpi-3"} 2
vmpi_dif_sdus_total{dif="hv.vmpi-3",direction="tx"} ${o.tx}
vmpi_dif_sdus_total{dif="hv.vmpi-3",direction="rx"} ${o.rx}
vmpi_dif_bytes_total{dif="hv.vmpi-3",direction="tx"} ${o.txB}
vmpi_dif_bytes_total{dif="hv.vmpi-3",direction="rx"} ${o.rxB}
`;

t.test('snapshots and rates, a reset shown as such', async (t) => {
  const a = snapshotFrom(parseExposition(EXPO({ tx: 100, rx: 1000, txB: 100_000, rxB: 1_000_000 })).samples, 10_000);
  t.same(a.devices.map((d) => d.id), ['3', '12'], 'devices in VMPI-id order (numeric)');
  const d = a.devices[0]!;
  t.equal(d.socket, '/run/vmpi/web "1".sock', 'socket label unescaped');
  t.equal(d.up, true);
  t.equal(d.connections, 1);
  t.equal(d.drops, 1, 'drops summed over reasons');
  t.equal(d.backlogMaxSdus, 4096);
  t.equal(a.startTime, 1000);
  t.equal(a.restarts, 2);
  t.equal(a.version, '0.1.0');
  t.same(a.difs.map((x) => [x.dif, x.type, x.flowsActive]), [['hv.vmpi-3', 'shim-hv', 2]]);

  const first = ratesBetween(undefined, a);
  t.equal(first.elapsedS, 0);
  t.same(first.devices[0]!.rates.rxSdus, { kind: 'none' }, 'no rate from one sample');

  const b = snapshotFrom(parseExposition(EXPO({ tx: 300, rx: 1500, txB: 300_000, rxB: 1_500_000, drops: 4 })).samples, 12_000);
  const r = ratesBetween(a, b);
  t.equal(r.elapsedS, 2);
  t.same(r.devices[0]!.rates.txSdus, { kind: 'rate', perSec: 100 });
  t.same(r.devices[0]!.rates.rxSdus, { kind: 'rate', perSec: 250 });
  t.same(r.devices[0]!.rates.rxBytes, { kind: 'rate', perSec: 250_000 });
  t.same(r.devices[0]!.rates.drops, { kind: 'rate', perSec: 2 });
  t.same(r.devices[1]!.rates.txSdus, { kind: 'none' }, 'a device without traffic counters has no rate');
  t.same(r.difs[0]!.rates.txBytes, { kind: 'rate', perSec: 100_000 });
  t.notOk(r.serverRestarted);

  // The server restarted without its state: its counters start again from 0.
  const c = snapshotFrom(parseExposition(EXPO({ tx: 5, rx: 1600, txB: 500, rxB: 1_600_000, start: 2000 })).samples, 13_000);
  const rr = ratesBetween(b, c);
  t.same(rr.devices[0]!.rates.txSdus, { kind: 'reset' }, 'a counter that went down is a reset');
  t.same(rr.devices[0]!.rates.drops, { kind: 'reset' });
  t.same(rr.devices[0]!.rates.rxSdus, { kind: 'rate', perSec: 100 }, 'one that did not is still a rate');
  t.ok(rr.serverRestarted, 'the start time moved');

  t.same(counterRate(5, 5, 1), { kind: 'rate', perSec: 0 });
  t.same(counterRate(5, 10, 0), { kind: 'none' }, 'no time elapsed: no rate');
  t.same(counterRate(undefined, 10, 1), { kind: 'none' });
  t.same(counterRate(10, undefined, 1), { kind: 'none' });
});

t.test('formatting', async (t) => {
  t.same([0, 0.25, 9.5, 12.4, 950, 999, 1000, 9499, 12_345, 950_000, 1_234_567, 5e9].map(fmtCount), ['0', '0.3', '9.5', '12', '950', '999', '1.00k', '9.50k', '12.3k', '950k', '1.23M', '5.00G']);
  t.same([0, 125_000, 1_250_000, 12_500_000, 125_000_000].map(fmtMbps), ['0.00', '1.00', '10.0', '100', '1000']);
  t.equal(fmtRate({ kind: 'reset' }), 'reset');
  t.equal(fmtRate({ kind: 'none' }), '-');
  t.equal(fmtRate({ kind: 'rate', perSec: 125_000 }, fmtMbps), '1.00');
  t.same([5, 65, 3700, 90_000 * 2].map(fmtDuration), ['5s', '1m05s', '1h01m', '2d02h']);
  t.equal(cut('abcdef', 4), 'abc…');
  t.equal(cut('abc', 4), 'abc');
  t.equal(cut('abc', 1), '…');
  t.equal(cut('abc', 0), '');
  t.equal(urlForListen({ host: '127.0.0.1', port: 19464 }), 'http://127.0.0.1:19464/metrics');
  t.equal(urlForListen({ host: '::', port: 9 }), 'http://[::1]:9/metrics', 'an any-address bind is read on loopback');
  t.equal(urlForListen({ host: '0.0.0.0', port: 9 }), 'http://127.0.0.1:9/metrics');
});

t.test('column layout at narrow widths', async (t) => {
  const cols: Column[] = [
    { header: 'ID', width: 3, align: 'right', priority: 0 },
    { header: 'NAME', width: 4, align: 'left', priority: 1, flex: true, maxWidth: 12 },
    { header: 'RATE', width: 6, align: 'right', priority: 0 },
    { header: 'EXTRA', width: 6, align: 'right', priority: 2 },
  ];
  const cells = ['7', 'a-long-socket-name.sock', '12.3k', '99'];
  const wide = fitColumns(cols, 80, () => cells[1]!.length);
  t.same(wide.shown, [0, 1, 2, 3]);
  t.equal(wide.widths[1], 12, 'the flexible column grows to its maximum');
  t.equal(renderRow(wide, cells), '  7 a-long-sock…  12.3k     99');
  const mid = fitColumns(cols, 22, () => 30);
  t.same(mid.shown, [0, 1, 2, 3], 'all fit at their minimum plus some flex');
  t.equal(mid.widths[1], 4, 'no room left to grow');
  const narrow = fitColumns(cols, 15, () => 30);
  t.same(narrow.shown, [0, 1, 2], 'the lowest-priority column goes first');
  const narrower = fitColumns(cols, 10, () => 30);
  t.same(narrower.shown, [0, 2], 'then the next; priority 0 stays');
  t.equal(renderRow(narrower, cells), '  7  12.3k');
  const tiny = fitColumns(cols, 6, () => 30);
  t.ok(renderRow(tiny, cells).length <= 6, 'a line is never wider than asked, even below the minimum');
  for (let w = 1; w <= 40; w++) {
    const l = fitColumns(cols, w, () => 30);
    t.ok(renderRow(l, cells).length <= w, `width ${w}`);
  }
});

t.test('the screen text', async (t) => {
  const a = snapshotFrom(parseExposition(EXPO({ tx: 100, rx: 1000, txB: 100_000, rxB: 1_000_000 })).samples, 10_000);
  const b = snapshotFrom(parseExposition(EXPO({ tx: 300, rx: 1500, txB: 300_000, rxB: 1_500_000, drops: 4 })).samples, 12_000);
  const rates = ratesBetween(a, b);
  const flows = flowRates(
    [{ dif: 'hv.vmpi-3', type: 'shim-hv', id: '4', state: 'allocated', local: 'srv', remote: 'cli', counters: { txSdus: 0, txBytes: 0, rxSdus: 0, rxBytes: 0 } }],
    [
      { dif: 'hv.vmpi-3', type: 'shim-hv', id: '4', state: 'allocated', local: 'srv', remote: 'cli', counters: { txSdus: 20, txBytes: 2000, rxSdus: 10, rxBytes: 1000 } },
      { dif: 'hv.vmpi-3', type: 'shim-hv', id: '5', state: 'allocated', local: 'srv', remote: 'cli2' },
    ],
    2,
  );
  const view = { url: 'http://127.0.0.1:19464/metrics', snapshot: b, rates, flows, sort: 'id' as const, nowS: 1065 };
  const lines = renderView(view, 160);
  t.match(lines[0], /^vmpi top  http:\/\/127\.0\.0\.1:19464\/metrics  vmpi 0\.1\.0, up 1m05s, restarts 2$/);
  const row3 = lines.find((l) => /^\s+3 /.test(l));
  t.ok(row3, 'a row for device 3');
  t.match(row3, /^\s+3 web "1"\.sock\s+up\s+250\s+2\.00\s+100\s+0\.80\s+2\s+0\s+5\/4096$/, 'rx 250 SDU/s 2 Mb/s, tx 100 SDU/s 0.8 Mb/s, drops 2/s');
  t.match(lines.find((l) => /^\s+12 /.test(l)), /inherited-fd\s+no VM\s+-\s+-/);
  t.ok(lines.some((l) => /^hv\.vmpi-3\s+shim-hv\s+2\s+250\s+2\.00\s+100\s+0\.80/.test(l)), 'the DIF row');
  t.ok(lines.some((l) => /^hv\.vmpi-3\s+4\s+allocated\s+srv\s+cli\s+5\s+10$/.test(l)), 'a flow with counters has rates');
  t.ok(lines.some((l) => /^hv\.vmpi-3\s+5\s+allocated\s+srv\s+cli2\s+-\s+-$/.test(l)), 'one without has none');
  t.ok(lines.every((l) => l.length <= 160));

  t.ok(renderView(view, 8).every((l) => l.length <= 8), 'a terminal narrower than any table: lines cut, never wrapped');
  for (const w of [20, 40, 60, 80, 100]) {
    const ls = renderView(view, w);
    t.ok(ls.every((l) => l.length <= w), `nothing wider than ${w}`);
    t.ok(ls.some((l) => /^\s+3 /.test(l)), `device 3 still has its row at width ${w}`);
  }
  const at60 = renderView(view, 60).find((l) => /^\s+3 /.test(l))!;
  t.match(at60, /250\s+2\.00\s+100\s+0\.80/, 'the rates stay at 60 columns');

  const short = renderView({ ...view, keys: true }, 100, 8);
  t.equal(short.length, 8, 'exactly the terminal height');
  t.match(short[6], /more lines/);
  t.match(short[7], /^q quit  s sort \(id\)$/);

  const down = renderView({ ...view, flows: { error: 'cannot reach the IPC daemon at /x' }, status: 'server unreachable, retrying every 1 s (ECONNREFUSED)' }, 100);
  t.equal(down[1], 'server unreachable, retrying every 1 s (ECONNREFUSED)');
  t.ok(down.includes('FLOWS: cannot reach the IPC daemon at /x'));

  const reset = renderView({ ...view, rates: ratesBetween(b, snapshotFrom(parseExposition(EXPO({ tx: 1, rx: 1, txB: 1, rxB: 1, start: 5000 })).samples, 13_000)) }, 160);
  t.match(reset[1], /the server restarted/);
  t.match(reset.find((l) => /^\s+3 /.test(l)), /reset\s+reset\s+reset\s+reset/);

  const busy = sortDevices(rates.devices, 'rx');
  t.same(busy.map((d) => d.cur.id), ['3', '12'], 'busiest first');
});

t.test('flows from the inspection of each IPC process type', async (t) => {
  t.same(
    flowsOf({ dif: 'hv.vmpi-1', type: 'shim-hv', state: { channels: [{ channel: 1, state: 'allocated', portId: 9, localApp: 'a', remoteApp: 'b' }, { channel: 2, state: 'incoming', localApp: 'a', remoteApp: 'c' }] } }).map((f) => [f.id, f.state, f.local, f.remote]),
    [['9', 'allocated', 'a', 'b'], ['ch 2', 'incoming', 'a', 'c']],
  );
  t.same(flowsOf({ dif: 'u', type: 'shim-udp', state: { flows: [{ id: 3, portId: 7, state: 'allocated', peer: '127.0.0.1:5', localApp: 'x', remoteApp: 'y' }] } }).map((f) => [f.id, f.remote]), [['7', 'y @127.0.0.1:5']]);
  t.same(
    flowsOf({ dif: 'n', type: 'normal', state: { flowAllocator: { flows: [{ name: 'f1', initiator: true, srcApp: 'me', dstApp: 'you', remoteAddr: 2 }] } } }).map((f) => [f.id, f.local, f.remote]),
    [['f1', 'me', 'you @2']],
  );
  t.same(flowsOf({ dif: 'n', type: 'normal', state: {} }), [], 'a part not sent: no flows, no throw');
  t.same(flowsOf({ dif: 'z', type: 'future', state: { anything: 1 } }), []);
});
