/**
 * top-tmux.test.ts — `vmpi top` against a real `vmpi serve`, the way a person uses it: the live
 * view in a detached tmux session (its own tmux server), read with `tmux capture-pane`, keys sent
 * with `tmux send-keys`; and `--once` with plain child_process.
 *
 * The device carries a known transfer: this process plays the guest driver (test/helpers/
 * vmpi-driver.ts over test/frontend) and sends SDUs of SIZE bytes on the device's echo channel at
 * RATE SDU/s (paced against the clock, catching up after a stall), so the device counts RATE SDU/s
 * from the guest and the echo RATE SDU/s to it. The rates the view shows must be within 20% of
 * what was actually sent over the last seconds. Then: s changes the sort, a resize (SIGWINCH)
 * redraws at the new width, q quits with exit status 0 and the alternate screen left; a view of
 * a server that is not there says "server unreachable, retrying" and SIGTERM ends it the same
 * clean way. Every wait is bounded. The tmux parts are skipped when tmux is not installed. And
 * `vmpi --help` lists the command.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers/guest.js';
import { until } from './helpers/serve.js';
import { VmpiTestDriver } from './helpers/vmpi-driver.js';

const haveTmux = spawnSync('tmux', ['-V'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
if (!haveTmux && process.env.CI) t.fail('tmux is not installed (VMPI_TEST_TOOLS=1 scripts/setup-system.sh installs it)');

const ECHO = 1024;
const VMPI_ID = 4;
const RATE = 200; // SDU/s
const SIZE = 1000; // bytes
const TSX = import.meta.resolve('tsx');
const CLI = join(ROOT, 'src', 'cli.ts');

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS; // without tap's loader in the child
  delete env.NOTIFY_SOCKET;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.TMUX;
  return env;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A `vmpi serve` (keeper mode) with one device that echoes channel ECHO; its metrics URL. */
async function startServe(t: Test, dir: string): Promise<{ url: string; sock: string; ipcSock: string; log: () => string; stop: () => Promise<void> }> {
  const sock = join(dir, 'vm.sock');
  const ipcSock = join(dir, 'ipc.sock');
  writeFileSync(join(dir, 'vmpi.json'), JSON.stringify({ devices: [{ socket: sock, vmpiId: VMPI_ID, echoChannels: [ECHO] }] }));
  const child = spawn(process.execPath, ['--import', TSX, CLI, 'serve', '--config', join(dir, 'vmpi.json'), '--ipc-socket', ipcSock, '--metrics-listen', '127.0.0.1:0', '--log-format', 'json'], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (log += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (log += s));
  const stop = async (): Promise<void> => {
    const workers = childrenOf(child.pid!);
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const end = Date.now() + 10_000;
      while (child.exitCode === null && Date.now() < end) await sleep(50);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    for (const w of workers) {
      try {
        process.kill(w, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  t.teardown(stop);
  await until('the metrics URL and the sockets', () => /"msg":"metrics listening"/.test(log) && existsSync(sock) && existsSync(ipcSock), 60_000, () => log);
  const url = /"url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)","msg":"metrics listening"/.exec(log)![1]!;
  return { url, sock, ipcSock, log: () => log, stop };
}

interface Traffic {
  /** SDUs actually sent per second over the last `s` seconds. */
  rate(s: number): number;
  stop(): void;
}

/** Send RATE SDUs/s of SIZE bytes on the echo channel, paced against the clock; pump the echoes. */
function startTraffic(driver: VmpiTestDriver): Traffic {
  const sdu = new Uint8Array(SIZE).fill(0x5a);
  const t0 = performance.now();
  let sent = 0;
  const history: [number, number][] = [[t0, 0]];
  const timer = setInterval(() => {
    driver.pump();
    if (driver.received.length > 1000) driver.received.length = 0; // the echoes are not checked here
    const due = Math.floor(((performance.now() - t0) / 1000) * RATE);
    while (sent < due && driver.send(ECHO, sdu)) sent++;
    // Catching up is bounded by the ring: a long stall loses what did not fit (it is measured).
    if (due - sent > RATE) sent = due - RATE;
    const now = performance.now();
    history.push([now, sent]);
    while (history.length > 2 && now - history[1]![0] > 20_000) history.shift();
  }, 5);
  return {
    rate(s: number): number {
      const now = performance.now();
      const last = history[history.length - 1]!;
      const first = history.find(([at]) => now - at <= s * 1000) ?? history[0]!;
      return (last[1] - first[1]) / ((last[0] - first[0]) / 1000);
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}

/** A tmux server of this test's own (its socket in the test's directory), no user configuration. */
class Tmux {
  constructor(readonly socket: string) {}
  run(...args: string[]): string {
    const r = spawnSync('tmux', ['-S', this.socket, '-f', '/dev/null', ...args], { encoding: 'utf8', timeout: 10_000, env: childEnv() });
    if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: status ${r.status} ${r.stderr}`);
    return r.stdout;
  }
  /** A detached session `s` of 160x40 running `cmd` in a shell. */
  start(s: string, cmd: string): void {
    this.run('new-session', '-d', '-s', s, '-x', '160', '-y', '40', cmd);
  }
  capture(s: string): string[] {
    return this.run('capture-pane', '-p', '-t', s).replace(/\n$/, '').split('\n');
  }
  fmt(s: string, f: string): string {
    return this.run('display-message', '-p', '-t', s, f).trim();
  }
  kill(): void {
    spawnSync('tmux', ['-S', this.socket, 'kill-server'], { stdio: 'ignore', timeout: 10_000 });
    rmSync(this.socket, { force: true });
  }
}

/** Poll `ok` on the pane every 200 ms for `ms`; the last capture. */
async function waitPane(tm: Tmux, s: string, what: string, ok: (lines: string[]) => boolean, ms: number): Promise<string[]> {
  const end = Date.now() + ms;
  let lines: string[] = [];
  for (;;) {
    lines = tm.capture(s);
    if (ok(lines)) return lines;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; the pane:\n${lines.join('\n')}`);
    await sleep(200);
  }
}

const ROW = new RegExp(`^\\s+${VMPI_ID} (\\S+)\\s+(up|connected|no VM)\\s+(\\S+)\\s+(\\S+)\\s+(\\S+)\\s+(\\S+)`);

interface DeviceRow {
  socket: string;
  state: string;
  rxSdus: number;
  rxMbps: number;
  txSdus: number;
  txMbps: number;
}

function deviceRow(lines: string[]): DeviceRow | undefined {
  for (const l of lines) {
    const m = ROW.exec(l);
    if (!m) continue;
    const n = (s: string): number => (s.endsWith('k') ? Number(s.slice(0, -1)) * 1000 : Number(s));
    return { socket: m[1]!, state: m[2]!, rxSdus: n(m[3]!), rxMbps: n(m[4]!), txSdus: n(m[5]!), txMbps: n(m[6]!) };
  }
  return undefined;
}

/** `node cli ARGS` without blocking this process; its status and output (killed after `ms`). */
function run(args: string[], ms: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const within = (got: number, want: number, tol = 0.2): boolean => Number.isFinite(got) && Math.abs(got - want) <= tol * want;

/**
 * A shell in the pane runs top, then says how it exited and in which tty mode it left the
 * terminal (canonical input and echo back on), and stays, as a person's shell would.
 */
function topCmd(args: string[], stdin = ''): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const node = [process.execPath, '--import', TSX, CLI, 'top', ...args].map(q).join(' ');
  return `${node}${stdin}; echo "top exited $?"; echo "tty: $(stty -a | tr -s ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' ')"; exec sleep 600`;
}

/** The pane after top exited: how it exited, the terminal as it left it. */
async function checkRestored(t: Test, tm: Tmux, s: string, how: string): Promise<void> {
  const after = await waitPane(tm, s, `top to exit on ${how}`, (l) => l.some((x) => /^top exited \d+$/.test(x)) && l.some((x) => x.startsWith('tty: ')), 15_000);
  t.ok(after.includes('top exited 0'), `${how}: exit status 0`);
  t.equal(tm.fmt(s, '#{alternate_on}'), '0', `${how}: the alternate screen left`);
  t.equal(tm.fmt(s, '#{cursor_flag}'), '1', `${how}: the cursor shown again`);
  t.ok(after.some((x) => /^tty: icanon echo\s*$/.test(x)), `${how}: the tty back in cooked mode (${after.find((x) => x.startsWith('tty: '))})`);
  t.notOk(after.some((l) => l.includes('DEVICES') || l.startsWith('vmpi top ')), `${how}: the main screen is back (the view is gone)`);
}

t.test('vmpi top under tmux and --once, against a real serve with a known transfer', { skip: haveTmux ? false : 'tmux is not installed (VMPI_TEST_TOOLS=1 bash scripts/setup-system.sh)', timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-top-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const srv = await startServe(t, dir);
  const driver = await VmpiTestDriver.connect(srv.sock, { queueSize: 256 });
  t.teardown(() => driver.close());
  driver.postRx();
  await until('guest driver up', () => srv.log().includes('"msg":"guest driver up"'), 20_000, srv.log);
  const traffic = startTraffic(driver);
  t.teardown(() => traffic.stop());
  const wantMbps = (r: number): number => (r * SIZE * 8) / 1e6;

  const tm = new Tmux(join(dir, 'tmux.sock'));
  t.teardown(() => tm.kill());
  tm.start('top', topCmd(['--url', srv.url, '--ipc-socket', srv.ipcSock, '--interval', '1']));
  await waitPane(tm, 'top', 'the view', (l) => l.some((x) => x.startsWith('vmpi top  ')), 30_000);
  t.equal(tm.fmt('top', '#{alternate_on}'), '1', 'the view is on the alternate screen');

  // Up to 30 s for a redraw whose rates match the transfer (the first polls have no rate yet).
  let row: DeviceRow | undefined;
  let actual = 0;
  let captures = 0;
  const lines = await waitPane(
    tm,
    'top',
    `the device row within 20% of ${RATE} SDU/s`,
    (l) => {
      captures++;
      row = deviceRow(l);
      actual = traffic.rate(3);
      return row !== undefined && within(row.rxSdus, actual) && within(row.txSdus, actual) && within(row.rxMbps, wantMbps(actual)) && within(row.txMbps, wantMbps(actual));
    },
    30_000,
  );
  t.comment(`device row after ${captures} captures: ${JSON.stringify(row)}, actually sent ${actual.toFixed(1)} SDU/s (${wantMbps(actual).toFixed(3)} Mb/s)`);
  t.ok(within(actual, RATE, 0.2), `the test sent about ${RATE} SDU/s (${actual.toFixed(1)})`);
  t.equal(row!.socket, 'vm.sock');
  t.equal(row!.state, 'up', 'a front-end connected, driver up');
  t.match(lines[0], /^vmpi top  http:\/\/127\.0\.0\.1:\d+\/metrics  vmpi \S+, up \d+\S*, restarts 0/, 'title: version, uptime, restarts');
  t.ok(lines.some((l) => /^hv\.vmpi-4\s+shim-hv\s+0\s/.test(l)), 'the DIF row');
  t.ok(lines.some((l) => l === 'FLOWS (0)'), 'flows from the IPC daemon (none)');
  t.match(lines[lines.length - 1] || lines[lines.length - 2], /^q quit  s sort \(id\)/, 'the keys at the bottom');
  t.ok(lines.every((l) => l.length <= 160));

  const scraped = await (await fetch(srv.url, { signal: AbortSignal.timeout(5000) })).text();
  t.match(scraped, /^vmpi_ipc_sessions 1$/m, 'the live view keeps one IPC session');
  t.notOk(/^vmpi_ipc_sessions_closed_total\{cause="[a-z_]+"\} [1-9]/m.test(scraped), `across its ${captures}+ polls, none closed`);

  tm.run('send-keys', '-t', 'top', 's');
  await waitPane(tm, 'top', 'the sort to change', (l) => l.some((x) => x.includes('sort: rx')), 10_000);
  t.pass('s cycles the sort');

  tm.run('resize-window', '-t', 'top', '-x', '72', '-y', '30');
  const narrow = await waitPane(tm, 'top', 'a redraw at 72 columns', (l) => l.some((x) => /^\s+ID\s+SOCKET\s+STATE\s+RX SDU\/s\s+RX Mb\/s\s+TX SDU\/s\s+TX Mb\/s\s+DROP\/s$/.test(x)), 10_000);
  t.ok(narrow.every((l) => l.length <= 72), 'nothing wider than the new width');
  t.ok(deviceRow(narrow), 'the device row and its rates kept at 72 columns');
  t.notOk(narrow.some((l) => l.includes('QFULL/s') || l.includes('BACKLOG')), 'the lowest-priority columns left out');
  t.equal(narrow.length, 30, '30 lines');

  tm.run('send-keys', '-t', 'top', 'q');
  await checkRestored(t, tm, 'top', 'q');

  // --once: a plain table on a pipe, two polls an interval apart.
  // --once with the endpoint from a config file (metrics.listen), as an operator would on the host.
  // Not spawnSync: this process paces the traffic while top runs.
  const cfg = join(dir, 'top.json');
  writeFileSync(cfg, JSON.stringify({ metrics: { enabled: true, listen: new URL(srv.url).host } }));
  const once = await run(['top', '--config', cfg, '--ipc-socket', srv.ipcSock, '--once', '--interval', '2', '--width', '100'], 60_000);
  const onceActual = traffic.rate(3);
  t.equal(once.status, 0, `--once exits 0 ${once.stderr}`);
  const out = once.stdout.split('\n');
  t.notMatch(once.stdout, /\x1b/, 'no terminal codes');
  t.ok(out.every((l) => l.length <= 100), '--width respected');
  const r1 = deviceRow(out);
  t.ok(r1, `a row for device ${VMPI_ID}:\n${once.stdout}`);
  t.ok(within(r1!.rxSdus, onceActual) && within(r1!.txSdus, onceActual), `--once rates ${r1!.rxSdus}/${r1!.txSdus} SDU/s within 20% of ${onceActual.toFixed(1)}`);
  t.ok(within(r1!.rxMbps, wantMbps(onceActual)), `--once ${r1!.rxMbps} Mb/s within 20% of ${wantMbps(onceActual).toFixed(3)}`);
  writeFileSync(cfg, JSON.stringify({ metrics: { enabled: false } }));
  const off = await run(['top', '--config', cfg, '--once'], 60_000);
  t.equal(off.status, 1, 'a config with metrics off: exit 1');
  t.match(off.stderr, /metrics are off in this file/);

  // The server going away under a live view: it says so, keeps the last rows, and still quits cleanly.
  tm.start('top2', topCmd(['--url', srv.url, '--ipc-socket', srv.ipcSock, '--interval', '0.5']));
  await waitPane(tm, 'top2', 'the device row', (l) => deviceRow(l) !== undefined, 30_000);
  traffic.stop();
  await srv.stop();
  const gone = await waitPane(tm, 'top2', 'the retrying line', (l) => l.some((x) => x.startsWith('server unreachable, retrying every 0.5 s')), 15_000);
  t.ok(deviceRow(gone), 'the last rows stay on screen');
  tm.run('send-keys', '-t', 'top2', 'q');
  await checkRestored(t, tm, 'top2', 'q after the server went away');
});

t.test('unreachable server: --once fails with a clear message, the live view retries and SIGTERM restores the terminal', { skip: haveTmux ? false : 'tmux is not installed (VMPI_TEST_TOOLS=1 bash scripts/setup-system.sh)', timeout: 120_000 }, async (t) => {
  // A port nothing listens on: bind one and close it.
  const { createServer } = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const url = `http://127.0.0.1:${port}/metrics`;
  const once = spawnSync(process.execPath, ['--import', TSX, CLI, 'top', '--url', url, '--once', '--interval', '0.1'], { encoding: 'utf8', timeout: 60_000, env: childEnv() });
  t.equal(once.status, 1, 'exit 1');
  t.match(once.stderr, new RegExp(`vmpi top: cannot reach the vmpi metrics endpoint at ${url.replace(/\./g, '\\.')}: ECONNREFUSED`));
  t.equal(once.stdout, '');

  const live = spawnSync(process.execPath, ['--import', TSX, CLI, 'top', '--url', url], { encoding: 'utf8', timeout: 60_000, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  t.equal(live.status, 1, 'the live view on a pipe: exit 1');
  t.match(live.stderr, /stdout is not a terminal; use --once/);

  const bad = spawnSync(process.execPath, ['--import', TSX, CLI, 'top', '--url', 'ftp://x/'], { encoding: 'utf8', timeout: 60_000, env: childEnv() });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /only http:\/\/ is supported/);
  const usage = spawnSync(process.execPath, ['--import', TSX, CLI, 'top', '--interval', '0'], { encoding: 'utf8', timeout: 60_000, env: childEnv() });
  t.equal(usage.status, 2, 'a bad --interval is a usage error');
  t.match(usage.stderr, /--interval 0: expected a number/);

  const dir = mkdtempSync(join(tmpdir(), 'vmpi-top-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tm = new Tmux(join(dir, 'tmux.sock'));
  t.teardown(() => tm.kill());
  // A long interval: after the first poll, only a resize (SIGWINCH) redraws within the test's bound.
  // stdin not a terminal (/dev/null: at its end at once): the view stays, with no keys.
  tm.start('gone', topCmd(['--url', url, '--interval', '60', '--ipc-socket', '/nonexistent/ipc.sock'], ' < /dev/null'));
  const lines = await waitPane(tm, 'gone', 'the retrying line', (l) => l.some((x) => x.startsWith('server unreachable, retrying every 60 s')), 30_000);
  t.match(lines[1], /ECONNREFUSED/, 'says why');
  t.equal(tm.fmt('gone', '#{alternate_on}'), '1');
  t.notOk(lines.some((l) => l.includes('more lines')), 'everything fits in 40 lines');
  tm.run('resize-window', '-t', 'gone', '-x', '60', '-y', '5');
  const small = await waitPane(tm, 'gone', 'the redraw on resize', (l) => l.some((x) => /^… \d+ more lines/.test(x)), 10_000);
  t.equal(small.length, 5, 'redrawn for 5 lines at once (SIGWINCH), not at the next poll');
  t.ok(small.every((l) => l.length <= 60), 'and 60 columns');
  t.match(small[4], /^q quit {2}s sort \(id\)/, 'the keys on the last line');
  const [pid] = childrenOf(Number(tm.fmt('gone', '#{pane_pid}')));
  t.ok(pid, 'top is the pane shell\'s child');
  process.kill(pid!, 'SIGTERM');
  await checkRestored(t, tm, 'gone', 'SIGTERM');
});

t.test('vmpi --help lists top; vmpi top --help', async (t) => {
  const main = await run(['--help'], 60_000);
  t.equal(main.status, 0);
  t.match(main.stdout, /^ {2}top {12}live view of a running serve/m);
  const h = await run(['top', '--help'], 60_000);
  t.equal(h.status, 0);
  t.match(h.stdout, /^Usage: vmpi top \[--url URL \| --config FILE\] \[--ipc-socket PATH\] \[--interval SECONDS\] \[--once\]/);
  t.equal(h.stderr, '');
});
