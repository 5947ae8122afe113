/**
 * tgen.test.ts — the traffic generator over the IPC API (two daemons, shim IPC processes on an
 * in-memory port pair): single runs, a short sweep with its CSV and SVG, the statistics, the plot,
 * and the `vmpi tgen` command (help, a client run in a child process, plot).
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_TGEN_APP, TgenClient, decodeControl, encodeControl, meanCi95, parseSizes, parseSweepCsv, runSweep, startTgenServer, sweepCsv, sweepSeries, sweepSvg, tQuantile975, type ServerRunEvent } from '../../src/dif/tgen.js';
import { linearRegression, niceTicks, renderSvgPlot } from '../../src/dif/plot.js';
import { DIF, ipcSetup, within } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-tgen-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A rough well-formedness check: one root, every tag closed in order, attributes quoted. */
function checkXml(t: Test, xml: string): void {
  t.match(xml, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg /);
  const body = xml.replace(/^<\?xml[^>]*\?>/, '');
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let roots = 0;
  let ok = true;
  while ((m = tag.exec(body)) !== null) {
    if (m[6] !== undefined) {
      ok = false;
      break;
    }
    if (m[5] !== undefined) {
      if (/&(?!(lt|gt|amp|quot|apos);)/.test(m[5])) ok = false;
      continue;
    }
    const [, close, name, , selfClose] = m;
    if (close) {
      if (stack.pop() !== name) ok = false;
    } else {
      if (stack.length === 0) roots++;
      if (!selfClose) stack.push(name!);
    }
  }
  t.ok(ok && stack.length === 0 && roots === 1, 'the SVG is well-formed XML with one root');
}

t.test('control SDUs never look like data', async (t) => {
  for (const size of [0, 10, 30, 31, 32, 33, 100]) {
    const c = encodeControl({ t: 'start', run: 1, size }, size);
    t.not(c.byteLength, size);
    t.same(decodeControl(c), { t: 'start', run: 1, size });
  }
  t.equal(decodeControl(new Uint8Array(0)), null);
  t.equal(decodeControl(new TextEncoder().encode('TGN1{"t":"nope","run":1}')), null);
});

t.test('single runs: by count and by duration, goodput measured at the server', async (t) => {
  const s = ipcSetup(t);
  const srv = await s.hostClient();
  const cli = await s.guestClient();
  const runs: ServerRunEvent[] = [];
  const server = await startTgenServer(srv, DIF, DEFAULT_TGEN_APP, { onRun: (r) => runs.push(r) });
  const tg = await TgenClient.open(cli, DIF);
  const r = await tg.run({ sduSize: 100, count: 500 });
  t.equal(r.sent, 500);
  t.equal(r.sdus, 500, 'the server counted every SDU');
  t.equal(r.bytes, 50000);
  // The server's clock is the arrival of its reads: over the ring all 500 SDUs (and START) can
  // come in one read, and then no time passed by that clock (mbps 0 by definition); the
  // duration run below is the one that measures goodput.
  t.ok(r.elapsedNs >= 0 && (r.elapsedNs > 0 ? r.mbps > 0 : r.mbps === 0), `elapsed ${r.elapsedNs} ns, ${r.mbps} Mb/s`);
  t.equal(runs.length, 1);
  t.equal(runs[0]!.size, 100);
  const z = await tg.run({ sduSize: 0, count: 100 });
  t.equal(z.sdus, 100, '0-byte SDUs are counted');
  t.equal(z.mbps, 0);
  const d = await tg.run({ sduSize: 1400, durationMs: 100 });
  t.ok(d.sent > 0 && d.sdus === d.sent && d.mbps > 0, `duration run: ${d.sent} sent, ${d.sdus} counted, ${d.mbps.toFixed(1)} Mbit/s`);
  await t.rejects(tg.run({ sduSize: 1 << 20, count: 1 }), /outside/);
  await tg.close();
  await server.close();
  t.equal(server.flows, 1);
});

t.test('a short sweep writes the CSV and an SVG that parses', async (t) => {
  const s = ipcSetup(t);
  const srv = await s.hostClient();
  const cli = await s.guestClient();
  const server = await startTgenServer(srv, DIF, 'tg');
  const tg = await TgenClient.open(cli, DIF, 'tg');
  const rows = await runSweep(tg, { sizes: [0, 1000], repeats: 2, durationMs: 200 });
  await tg.close();
  await server.close();
  t.equal(rows.length, 2);
  t.same(rows.map((r) => [r.size, r.n, r.values.length]), [
    [0, 2, 2],
    [1000, 2, 2],
  ]);
  t.ok(rows[1]!.mean > 0 && rows[1]!.low <= rows[1]!.mean && rows[1]!.mean <= rows[1]!.high);
  const csv = sweepCsv(rows);
  const lines = csv.trim().split('\n');
  t.equal(lines[0], 'size,mean_mbps,ci95_low,ci95_high,repeats');
  t.equal(lines.length, 3);
  t.match(lines[1], /^0,0\.000,0\.000,0\.000,2$/);
  t.match(lines[2], /^1000,\d+\.\d{3},-?\d+\.\d{3},\d+\.\d{3},2$/);
  t.same(parseSweepCsv(csv).map((r) => r.size), [0, 1000]);
  const svg = sweepSvg([sweepSeries('shim-hv', rows)]);
  checkXml(t, svg);
  t.match(svg, /SDU size \[bytes\]/);
  t.match(svg, /Goodput \[Mbit\/s\]/);
  t.match(svg, /stroke-dasharray/, 'a regression line');
});

t.test('statistics and plot helpers', async (t) => {
  t.equal(tQuantile975(1), 12.706);
  t.equal(tQuantile975(19), 2.093);
  t.ok(Math.abs(tQuantile975(40) - 2.021) < 0.002, `t(40) ≈ 2.021 (${tQuantile975(40)})`);
  t.ok(Math.abs(tQuantile975(120) - 1.98) < 0.002);
  const ci = meanCi95([10, 12, 14]);
  t.equal(ci.mean, 12);
  t.ok(Math.abs(ci.high - ci.mean - 4.303 * 2 / Math.sqrt(3)) < 1e-9);
  t.same(meanCi95([5]), { mean: 5, low: 5, high: 5, n: 1 });
  t.same(parseSizes('0:4000:250').length, 17);
  t.same(parseSizes('0,1000'), [0, 1000]);
  t.throws(() => parseSizes('0:10:0'));
  t.throws(() => parseSizes('a,b'));
  const reg = linearRegression([
    { x: 0, y: 1 },
    { x: 1, y: 3 },
    { x: 2, y: 5 },
  ])!;
  t.same([reg.slope, reg.intercept, reg.r2], [2, 1, 1]);
  t.equal(linearRegression([{ x: 1, y: 1 }]), null);
  t.same(niceTicks(0, 4000, 8), [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]);
  const svg = renderSvgPlot({
    title: 'Fig. 4a <host → VM> & "friends"',
    xLabel: 'x',
    yLabel: 'y',
    series: ['shim-hv', 'TCP', 'UDP'].map((name, k) => ({ name, points: [0, 1000, 2000].map((x) => ({ x, y: x * (k + 1), yLow: x * (k + 1) - 5, yHigh: x * (k + 1) + 5 })) })),
  });
  checkXml(t, svg);
  t.equal(svg.match(/class="series"/g)?.length, 3, 'three series');
  t.match(svg, /&lt;host → VM&gt; &amp; &quot;friends&quot;/);
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), ...args], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<Run>((res) => child.on('close', (code) => res({ code, stdout, stderr })));
  return within(done, `vmpi ${args.join(' ')} to exit`, 60_000).catch((e: unknown) => {
    child.kill('SIGKILL');
    throw e;
  });
}

t.test('vmpi tgen: help, a client run against a daemon, plot', async (t) => {
  t.setTimeout(180_000);
  const help = await runCli(['tgen', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Usage: vmpi tgen server/);
  t.match(help.stdout, /--sweep/);
  const bad = await runCli(['tgen', 'fly']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown mode "fly"/);
  const bad2 = await runCli(['tgen', 'client', '--csv', 'x.csv']);
  t.equal(bad2.code, 2);
  t.match(bad2.stderr, /needs --sweep/);

  const s = ipcSetup(t, { timeoutMs: 150_000 });
  const srv = await s.hostClient();
  const runs: ServerRunEvent[] = [];
  const server = await startTgenServer(srv, DIF, DEFAULT_TGEN_APP, { onRun: (r) => runs.push(r) });
  const one = await runCli(['tgen', 'client', '--ipc-socket', s.guestDaemon.socketPath, '--size', '500', '--count', '200']);
  t.equal(one.code, 0, one.stderr);
  t.match(one.stdout, /^size 500: sent 200 SDUs .*server got 200 SDUs, 100000 bytes in .* Mbit\/s$/m);
  const csv = join(dir, 'cli.csv');
  const svg = join(dir, 'cli.svg');
  const sw = await runCli(['tgen', 'client', '--ipc-socket', s.guestDaemon.socketPath, '--dif', DIF, '--sweep', '--sizes', '0,1000', '--repeats', '2', '--duration', '0.1', '--csv', csv, '--svg', svg]);
  t.equal(sw.code, 0, sw.stderr);
  t.match(sw.stdout, /^size 1000: mean .* Mbit\/s, 95% CI \[.*\] over 2 runs$/m);
  t.equal(readFileSync(csv, 'utf8').split('\n')[0], 'size,mean_mbps,ci95_low,ci95_high,repeats');
  checkXml(t, readFileSync(svg, 'utf8'));
  await server.close();
  t.equal(runs.length, 5, 'the server saw the single run and the 2 × 2 of the sweep');

  writeFileSync(join(dir, 'b.csv'), 'size,mean_mbps,ci95_low,ci95_high,repeats\n0,1,0.5,1.5,3\n1000,10,9,11,3\n');
  const plot = await runCli(['tgen', 'plot', '--svg', join(dir, 'both.svg'), `vmpi=${csv}`, `other=${join(dir, 'b.csv')}`]);
  t.equal(plot.code, 0, plot.stderr);
  const both = readFileSync(join(dir, 'both.svg'), 'utf8');
  checkXml(t, both);
  t.equal(both.match(/class="series"/g)?.length, 2);
});
