/**
 * observability-configs.test.ts — the shipped Prometheus rules (qemu-configs/prometheus/) and
 * Grafana dashboard (qemu-configs/grafana/) against the real thing:
 * - `promtool check rules` accepts the rules file, and `promtool test rules` runs its unit tests
 *   (alerts firing, or not, on series as vmpi exports them);
 * - the dashboard is provisioning-ready (no __inputs, a datasource variable, every panel on it,
 *   a vmpi_id variable from label_values) and every panel expression parses (promtool, as
 *   recording rules);
 * - every metric name, label, literal label value and printed label ({{ $labels.x }}, legends)
 *   in the rules and the dashboard exists in a real scrape: a real `vmpi serve` process (its
 *   default keeper mode: restart metrics; a normal DIF; the IPC daemon with a session), one
 *   device connected by the test front-end acting as guest driver, SDUs echoed both ways and one
 *   dropped, scraped on the metrics URL its log names;
 * - a real Prometheus scraping that server with the rules loaded: every rule evaluates without
 *   error, nothing fires, every panel query and variable returns series.
 * promtool comes from Debian's prometheus package (VMPI_TEST_TOOLS=1 scripts/setup-system.sh, as
 * scripts/test.sh runs it); in CI its absence is a failure.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ROOT } from './helpers/guest.js';
import { until } from './helpers/serve.js';
import { VmpiTestDriver } from './helpers/vmpi-driver.js';
import { checkExpr, exprNames, recordedLabels, scrapeFamilies, type Families } from './helpers/promql-names.js';

const RULES = join(ROOT, 'qemu-configs', 'prometheus', 'vmpi-rules.yml');
const RULES_TEST = join(ROOT, 'qemu-configs', 'prometheus', 'vmpi-rules.test.yml');
const DASHBOARD = join(ROOT, 'qemu-configs', 'grafana', 'vmpi-dashboard.json');
const PROVISIONING = join(ROOT, 'qemu-configs', 'grafana', 'provisioning');

const havePromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
if (!havePromtool && process.env.CI) t.fail('promtool is not installed (VMPI_TEST_TOOLS=1 scripts/setup-system.sh installs Debian\'s prometheus package)');
const noPromtool = havePromtool ? false : 'promtool not installed (VMPI_TEST_TOOLS=1 bash scripts/setup-system.sh)';
const havePrometheus = spawnSync('prometheus', ['--version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
if (!havePrometheus && process.env.CI) t.fail('prometheus is not installed (VMPI_TEST_TOOLS=1 scripts/setup-system.sh installs it)');

interface Rule {
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (parseYaml(readFileSync(RULES, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface Target {
  expr: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  type: string;
  name: string;
  query: string | { query: string };
  datasource?: { type: string; uid: string };
}
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; title: string; __inputs?: unknown; panels: Panel[]; templating: { list: Variable[] } };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const targets = panels.flatMap((p) => (p.targets ?? []).map((tg) => ({ panel: p.title, ...tg })));
/** Grafana's interval variables as a PromQL duration; other variables stay (only inside label values). */
const promql = (expr: string): string => expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m');
/** `{{label}}` of a legend, `{{ $labels.label }}` of an annotation. */
const legendLabels = (s: string | undefined): string[] => [...(s ?? '').matchAll(/\{\{\s*([a-zA-Z_]\w*)\s*\}\}/g)].map((m) => m[1]!);
const annotationLabels = (a: Record<string, string> | undefined): string[] => Object.values(a ?? {}).flatMap((s) => [...s.matchAll(/\$labels\.([a-zA-Z_]\w*)/g)].map((m) => m[1]!));
const variableQuery = (v: Variable): string => (typeof v.query === 'string' ? v.query : v.query.query);

t.test('promtool check rules and the rules unit tests', { skip: noPromtool }, async (t) => {
  const check = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8', timeout: 60_000 });
  t.equal(check.status, 0, `promtool check rules: ${check.stdout}${check.stderr}`);
  t.match(check.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`), 'every rule read');
  const unit = spawnSync('promtool', ['test', 'rules', RULES_TEST], { encoding: 'utf8', timeout: 60_000, cwd: join(ROOT, 'qemu-configs', 'prometheus') });
  t.equal(unit.status, 0, `promtool test rules: ${unit.stdout}${unit.stderr}`);
  t.match(unit.stdout, /SUCCESS/);
});

t.test('every alert has a for:, a severity and an annotation that says what to do', async (t) => {
  const alerts = rules.filter((r) => r.alert);
  t.ok(alerts.length >= 10, `${alerts.length} alerts`);
  for (const a of alerts) {
    t.match(a.for, /^\d+[smh]$/, `${a.alert}: for:`);
    t.match(a.labels?.severity, /^(critical|warning|info)$/, `${a.alert}: severity`);
    t.ok((a.annotations?.summary?.length ?? 0) > 10 && (a.annotations?.description?.length ?? 0) > 60, `${a.alert}: summary and description`);
  }
  const names = alerts.map((a) => a.alert);
  for (const want of ['VmpiDeviceDownWhileConnected', 'VmpiDeviceDrops', 'VmpiDeviceBacklogFull', 'VmpiDeviceBacklogNearFull', 'VmpiIpcRefusingConnections', 'VmpiUncaughtErrors', 'VmpiRestartResumeFailures', 'VmpiRestartStateWriteErrors', 'VmpiCrashLoop', 'VmpiNormalDifRelayDrops']) {
    t.ok(names.includes(want), `alert ${want}`);
  }
  t.equal(new Set(names).size, names.length, 'alert names unique');
});

t.test('the dashboard is provisioning-ready', async (t) => {
  t.equal(dashboard.__inputs, undefined, 'no __inputs (those need a manual import)');
  t.ok(dashboard.uid && dashboard.title, 'a fixed uid (provisioned dashboards keep their URL) and a title');
  const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  const ds = vars.get('DS_PROMETHEUS');
  t.equal(ds?.type, 'datasource', 'a datasource variable');
  t.equal(ds?.query, 'prometheus', 'listing Prometheus data sources');
  const vmpiId = vars.get('vmpi_id');
  t.equal(vmpiId?.type, 'query');
  t.match(vmpiId && variableQuery(vmpiId), /^label_values\(.*, vmpi_id\)$/, 'vmpi_id from label_values');
  const dsRef = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };
  for (const p of panels.filter((p) => p.type !== 'row')) {
    t.same(p.datasource, dsRef, `${p.title}: on the datasource variable`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    for (const tg of p.targets ?? []) t.same(tg.datasource, dsRef, `${p.title}: its query on the datasource variable`);
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) t.same(v.datasource, dsRef, `variable ${v.name} on the datasource variable`);
  const ids = panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids unique');
  const exprs = targets.map((tg) => tg.expr).join('\n');
  for (const family of ['vmpi_device_sdus_total', 'vmpi_device_bytes_total', 'vmpi_device_drops_total', 'vmpi_device_rx_queue_full_total', 'vmpi_device_backlog_bytes', 'vmpi_vhost_user_connections', 'vmpi_vhost_user_disconnects_total', 'vmpi_dif_flow_allocations_total', 'vmpi_dif_flows_deallocated_total', 'vmpi_ipc_sessions', 'vmpi_ipc_connections_refused_total', 'vmpi_restarts_total', 'vmpi_restart_resume_failures_total', 'vmpi_uncaught_errors_total']) {
    t.match(exprs, new RegExp(`\\b${family}\\b`), `a panel shows ${family}`);
  }

  // The provisioning examples point Grafana at a dashboards directory and a Prometheus source.
  const provider = parseYaml(readFileSync(join(PROVISIONING, 'dashboards', 'vmpi.yaml'), 'utf8')) as { apiVersion: number; providers: { type: string; options: { path: string } }[] };
  t.equal(provider.apiVersion, 1);
  t.equal(provider.providers[0]?.type, 'file');
  t.match(provider.providers[0]?.options.path, /^\//, 'an absolute dashboards path');
  const source = parseYaml(readFileSync(join(PROVISIONING, 'datasources', 'prometheus.yaml'), 'utf8')) as { apiVersion: number; datasources: { type: string }[] };
  t.equal(source.datasources[0]?.type, 'prometheus');
});

t.test('every dashboard expression is valid PromQL (promtool, as recording rules)', { skip: noPromtool }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-dash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'dashboard-exprs.yml');
  const exprRules = targets.map((tg, i) => ({ record: `dashboard:expr_${i}`, expr: promql(tg.expr) }));
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: exprRules }] }));
  const check = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8', timeout: 60_000 });
  t.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  t.match(check.stdout, new RegExp(`SUCCESS: ${exprRules.length} rules found`), `all ${exprRules.length} panel queries parse`);
});

t.test('the name checker itself finds typos', async (t) => {
  const fams = scrapeFamilies('vmpi_device_drops_total{vmpi_id="4",reason="backlog_full"} 0\nvmpi_ipc_sessions 1\n');
  t.same(checkExpr('rate(vmpi_device_drops_total{reason="backlog_full"}[5m])', fams), []);
  t.match(checkExpr('rate(vmpi_device_drop_total[5m])', fams), [/vmpi_device_drop_total: no such metric/]);
  t.match(checkExpr('vmpi_device_drops_total{reasn="x"}', fams), [/no label "reasn"/]);
  t.match(checkExpr('vmpi_device_drops_total{reason="backlog-full"}', fams), [/no sample has that value/]);
  t.match(checkExpr('sum by (vmpi) (vmpi_device_drops_total)', fams), [/label "vmpi" \(by\/on\/group\)/]);
  t.match(checkExpr('sum by (vmpi_id) (vmpi_device_drops_total)', fams, ['reason']), [/label "reason" printed/], 'a legend label the aggregation dropped');
  t.same(checkExpr('vmpi_ipc_sessions{instance=~"$instance"} > 0 and on (instance, job) vmpi_ipc_sessions', fams), [], 'target labels and dashboard variables');
  t.same(exprNames('x{a=~"b,c}"} offset 5m or bool y[5m:1m]').selectors.map((s) => s.name), ['x', 'y'], 'strings, offsets and subqueries');
});

/** A real `vmpi serve` (keeper mode), from the sources like test/helpers/serve.ts. */
function startServe(args: string[]): { child: ChildProcess; log: () => string } {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.NOTIFY_SOCKET;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src', 'cli.ts'), 'serve', ...args, '--log-format', 'json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  return { child, log: () => log };
}

/** At the end of `t`: SIGTERM the keeper (it stops its worker), then SIGKILL whatever is left. */
function stopAtEnd(t: Test, keeper: ChildProcess): void {
  t.teardown(async () => {
    const workers = childrenOf(keeper.pid!);
    if (keeper.exitCode === null) {
      keeper.kill('SIGTERM');
      const end = Date.now() + 10_000;
      while (keeper.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      if (keeper.exitCode === null) keeper.kill('SIGKILL');
    }
    for (const w of workers) {
      try {
        process.kill(w, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  return res.text();
}

t.test('every name in the rules and the dashboard is in a real scrape of vmpi serve', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-obs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const ipcSock = join(dir, 'ipc.sock');
  const ECHO = 1024;
  writeFileSync(join(dir, 'vmpi.json'), JSON.stringify({ devices: [{ socket: sock, vmpiId: 4, echoChannels: [ECHO] }], normal: { dif: 'n.DIF' } }));
  const srv = startServe(['--config', join(dir, 'vmpi.json'), '--ipc-socket', ipcSock, '--metrics-listen', '127.0.0.1:0']);
  stopAtEnd(t, srv.child);
  await until('the metrics URL and the sockets', () => /"msg":"metrics listening"/.test(srv.log()) && existsSync(sock) && existsSync(ipcSock), 30_000, srv.log);
  const url = /"url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)","msg":"metrics listening"/.exec(srv.log())?.[1];
  t.ok(url, `metrics URL from the log: ${url}`);

  // A guest driver with traffic both ways, one SDU on a channel nobody listens on (a drop), and
  // an application connected to the IPC daemon.
  const driver = await VmpiTestDriver.connect(sock);
  t.teardown(() => driver.close());
  driver.postRx();
  await until('guest driver up', () => srv.log().includes('"msg":"guest driver up"'), 10_000, srv.log);
  let queued = 0;
  for (let i = 0; i < 20; i++) if (driver.send(ECHO, new Uint8Array(100 + i))) queued++;
  t.equal(queued, 20, '20 SDUs on the echo channel');
  t.ok(driver.send(77, new Uint8Array(3)), 'one on a channel nobody listens on');
  await until('20 echoes', () => (driver.pump(), driver.received.length >= 20), 10_000, srv.log);
  const app: Socket = connect(ipcSock);
  app.on('error', () => undefined);
  t.teardown(() => app.destroy());
  await until('an IPC session', () => app.readyState === 'open', 5000, srv.log);

  // Scrape until the traffic and the session show (the device counts once per kick round).
  const ready = (x: string) => /^vmpi_ipc_sessions 1$/m.test(x) && /^vmpi_device_sdus_total\{vmpi_id="4",direction="to_guest"\} 20$/m.test(x);
  let text = '';
  for (const end = Date.now() + 10_000; !ready(text); await new Promise((r) => setTimeout(r, 100))) {
    if (Date.now() > end) throw new Error(`timed out waiting for the traffic and the IPC session in the scrape:\n${text}`);
    text = await scrape(url!);
  }
  const fams: Families = scrapeFamilies(text);
  t.match(text, /^vmpi_device_drops_total\{vmpi_id="4",reason="unbound_channel"\} 1$/m, 'the drop counted');
  t.match(text, /^vmpi_restart_info\{holder="keeper"\} 1$/m, 'restart metrics present (keeper mode)');
  t.match(text, /^vmpi_dif_enrolled\{dif="n\.DIF"\} 1$/m, 'normal DIF metrics present');
  // `up` is the one series Prometheus writes itself, per target: the host (job vmpi) and each
  // guest found through this server's own /sd/guests document (job vmpi-guests, PROVISIONING.md),
  // with the target labels that document gives.
  const sd = (await (await fetch(url!.replace(/\/metrics$/, '/sd/guests'), { signal: AbortSignal.timeout(5000) })).json()) as { targets: string[]; labels?: Record<string, string> }[];
  t.ok(sd.length >= 1, `/sd/guests lists the configured device (${JSON.stringify(sd)})`);
  const up = new Map([['job', new Set(['vmpi', 'vmpi-guests'])], ['instance', new Set(['127.0.0.1:19464'])]]);
  for (const g of sd) for (const [k, v] of Object.entries(g.labels ?? {})) if (!k.startsWith('__')) (up.get(k) ?? up.set(k, new Set()).get(k)!).add(v);
  fams.set('up', up);

  // Recording rules become families for the expressions after them.
  for (const r of rules) {
    const where = r.record ?? r.alert!;
    t.same(checkExpr(r.expr, fams, annotationLabels(r.annotations)), [], `rule ${where}: every name and label exists`);
    if (r.record) fams.set(r.record, recordedLabels(r.expr, fams));
  }
  for (const tg of targets) t.same(checkExpr(promql(tg.expr), fams, legendLabels(tg.legendFormat)), [], `panel "${tg.panel}": ${tg.expr}`);
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const m = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(variableQuery(v));
    t.ok(m, `variable ${v.name}: label_values(selector, label)`);
    if (!m) continue;
    t.same(checkExpr(m[1]!, fams, [m[2]!]), [], `variable ${v.name}: ${variableQuery(v)}`);
  }

  // The same server scraped by a real Prometheus with the rules loaded: every rule evaluates
  // without error, and every panel query and variable returns series.
  t.test('a real Prometheus: rules healthy, every panel query returns series', { skip: havePrometheus ? false : 'prometheus not installed' }, async (t) => {
    const prom = await startPrometheus(t, dir, new URL(url!).host);
    const q = async (expr: string): Promise<unknown[]> => {
      const r = (await (await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`, { signal: AbortSignal.timeout(5000) })).json()) as { status: string; error?: string; data?: { result: unknown[] } };
      if (r.status !== 'success') throw new Error(`${expr}: ${r.error}`);
      return r.data!.result;
    };
    // Three scrapes (a rate needs two) and a rule evaluation after them.
    await pollFor('three scrapes of vmpi', async () => (await q('count_over_time(up{job="vmpi"}[5m]) >= 3 and up{job="vmpi"} == 1')).length === 1, 30_000);
    await pollFor('the recording rules', async () => (await q('vmpi:device_sdus:rate5m')).length > 0 && (await q('vmpi:device_backlog_fill:ratio')).length > 0, 15_000);
    type RuleState = { name: string; health: string; lastError?: string };
    const ruleStates = async (): Promise<RuleState[]> =>
      ((await (await fetch(`${prom}/api/v1/rules`, { signal: AbortSignal.timeout(5000) })).json()) as { data: { groups: { rules: RuleState[] }[] } }).data.groups.flatMap((g) => g.rules);
    await pollFor('every rule evaluated once', async () => (await ruleStates()).every((r) => r.health !== 'unknown'), 15_000);
    const evaluated = await ruleStates();
    t.equal(evaluated.length, rules.length, 'Prometheus loaded every rule');
    for (const r of evaluated) t.equal(r.health, 'ok', `rule ${r.name} evaluates${r.lastError ? `: ${r.lastError}` : ''}`);
    t.same(await q('ALERTS{alertstate="firing"}'), [], 'nothing firing on a healthy server');
    const live = (expr: string) => promql(expr).replace(/\$(\{)?(instance|vmpi_id|dif)\}?/g, '.*');
    for (const tg of targets) t.ok((await q(live(tg.expr))).length > 0, `panel "${tg.panel}" has data: ${tg.expr}`);
    for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) {
      const [, sel, label] = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(variableQuery(v))!;
      t.ok((await q(`count by (${label}) (${live(sel!)})`)).length > 0, `variable ${v.name} has values`);
    }
  });
});

/** Poll an async condition every 200 ms; fail naming `what` after `ms`. */
async function pollFor(what: string, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A free loopback port (closed again: Prometheus takes it a moment later). */
async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Prometheus on loopback scraping `target` (host:port) every second, with the rules file; its base URL. */
async function startPrometheus(t: Test, dir: string, target: string): Promise<string> {
  const port = await freePort();
  const cfg = join(dir, 'prometheus.yml');
  writeFileSync(cfg, JSON.stringify({ global: { scrape_interval: '1s', evaluation_interval: '1s' }, rule_files: [RULES], scrape_configs: [{ job_name: 'vmpi', static_configs: [{ targets: [target] }] }] }));
  const child = spawn('prometheus', [`--config.file=${cfg}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  t.teardown(async () => {
    if (child.exitCode !== null) return;
    child.kill('SIGTERM');
    const end = Date.now() + 10_000;
    while (child.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const base = `http://127.0.0.1:${port}`;
  await pollFor('Prometheus ready', async () => child.exitCode === null && (await fetch(`${base}/-/ready`, { signal: AbortSignal.timeout(2000) })).status === 200, 30_000).catch((e: Error) => {
    throw new Error(`${e.message}; prometheus log:\n${log.slice(-3000)}`);
  });
  return base;
}

t.test('a real crash loop: Prometheus sees vmpi_restarts_total grow across worker kills and VmpiCrashLoop fires', { skip: havePrometheus ? false : 'prometheus not installed', timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-obs-loop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  // A fixed port: each new worker listens on it again, so Prometheus keeps one target.
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/metrics`;
  const srv = startServe(['--socket', sock, '--vmpi-id', '6', '--no-ipc', '--metrics-listen', `127.0.0.1:${port}`]);
  stopAtEnd(t, srv.child);
  await until('the metrics server and the socket', () => /"msg":"metrics listening"/.test(srv.log()) && existsSync(sock), 30_000, srv.log);
  const driver = await VmpiTestDriver.connect(sock);
  t.teardown(() => driver.close());
  driver.postRx();
  await until('guest driver up', () => srv.log().includes('"msg":"guest driver up"'), 10_000, srv.log);
  const prom = await startPrometheus(t, dir, `127.0.0.1:${port}`);
  const q = async (expr: string): Promise<unknown[]> =>
    ((await (await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(expr)}`, { signal: AbortSignal.timeout(5000) })).json()) as { data: { result: unknown[] } }).data.result;
  await pollFor('two scrapes', async () => (await q('count_over_time(vmpi_restarts_total[5m]) >= 2')).length === 1, 30_000);

  const restarts = /^vmpi_restarts_total (\d+)$/m;
  for (let k = 1; k <= 4; k++) {
    const [worker] = childrenOf(srv.child.pid!);
    t.ok(worker, `restart ${k}: the keeper has a worker`);
    process.kill(worker!, 'SIGKILL');
    let text = '';
    await pollFor(`restart ${k} counted by the new worker`, async () => {
      text = await scrape(url);
      return Number(restarts.exec(text)?.[1]) === k;
    }, 20_000).catch((e: Error) => {
      throw new Error(`${e.message}; serve log:\n${srv.log().slice(-3000)}`);
    });
    t.match(text, new RegExp(`^vmpi_restart_connections_resumed_total ${k}$`, 'm'), `restart ${k}: the front-end connection resumed (counted over every worker)`);
    t.match(text, /^vmpi_device_up\{vmpi_id="6"\} 1$/m, `restart ${k}: the device is up again`);
    // Past the keeper's crash-loop guard window (2 s after resuming), and scraped in between.
    await new Promise((r) => setTimeout(r, 2200));
  }
  await pollFor('VmpiCrashLoop firing', async () => (await q('ALERTS{alertname="VmpiCrashLoop",alertstate="firing"}')).length === 1, 20_000);
  t.pass('VmpiCrashLoop fired from the real counter');
  t.same(await q('ALERTS{alertname="VmpiRestartResumeFailures"}'), [], 'every resume worked: no resume-failure alert');
});
