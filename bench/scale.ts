/**
 * scale.ts — `npm run bench:scale`: aggregate throughput of one `vmpi serve` with 1, 2, 4, 8, 16
 * devices, each driven by its own test front-end process, and (SCALE_SOAK_SECONDS) the server's
 * memory over a long run at full rate.
 *
 * Processes:
 *   server      (child)  the real server: `node dist/src/cli.js serve --restart off --no-ipc
 *                        --echo-channel 1024 --socket … ×N` (src/ops/serve.ts: VmpiHost, one
 *                        VmpiDevice, shim IPC process and EchoResponder per device, metrics on
 *                        127.0.0.1, any port). --restart off: one process, so its CPU and RSS are
 *                        the server's (the keeper would add a second, idle one)
 *   front-end   (child ×N) bench:datapath's front-end (bench/common/loopback.ts) on one device
 *                        each, every tx buffer led by the le32 VMPI channel 1024, so the device's
 *                        echo sends each SDU back: one round trip = one SDU guest → host and back
 *   this process          orders the windows and reads /proc/<pid>/stat and /status
 * Every device is connected for the whole run; a count of n drives the first n, the others idle.
 *
 * Layouts (SCALE_SERVERS, default 1,2): besides one server with every device, k servers with
 * device i on server i mod k: one process per group of devices, the multi-core design that needs
 * no change to the server (docs/SCALE.md). Every layout is up for the whole run (its own devices
 * and front-ends) and the sweeps interleave them, so their ratio is measured under the same load.
 * CPU and RSS of a layout are the sums over its servers.
 *
 * Per layout, count and size: a 1 s warm-up, then SCALE_SECONDS measured at every driven front-end while
 * this process reads the server's and the front-ends' CPU time over the same window. Printed per
 * cell (medians of SCALE_REPEATS interleaved sweeps): aggregate round trips/s and Gb/s (one-way
 * payload), fairness (slowest ÷ fastest device), server CPU (% of one core) and µs of server CPU
 * per SDU round trip, the front-ends' CPU, server RSS, and the 1-minute load average.
 *
 * Flag sets (SCALE_SERVER_FLAG_SETS, e.g. `none;--max-semi-space-size=2`): every layout once per
 * set of server Node flags, interleaved the same way, so a V8 flag's effect on throughput and RSS
 * is a ratio under the same load; the table has a column per set and the RSS peak of each.
 *
 * Soak (SCALE_SOAK_SECONDS=N): the largest count at full rate for N seconds, alternating the
 * sizes every SCALE_SOAK_INTERVAL, the server's RSS sampled every interval; start, peak, end and
 * least-squares slope. Goal (issue #15): < 150 MB and flat.
 *
 * Settings: bench/common/scale-settings.ts. Writes bench-results/scale.json (or scale-soak.json).
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoopbackFrontend, type LoopbackResult } from './common/loopback.js';
import { median, trend } from './common/compare.js';
import { readScaleSettings, type ScaleSettings } from './common/scale-settings.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = SELF.includes(join('dist', 'bench')) ? resolve(dirname(SELF), '..', '..') : resolve(dirname(SELF), '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const ECHO_CHANNEL = 1024;
const WARMUP_MS = 1000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const say = (s: string): void => console.log(s);
const load1 = (): number => loadavg()[0]!;
const loadText = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

// ---------------------------------------------------------------------------------------------
// Front-end (child process)

type ToFrontend = { cmd: 'measure'; size: number; seconds: number; warmupMs: number } | { cmd: 'close' };
type FromFrontend = { ready: true } | { result: LoopbackResult } | { error: string };

async function frontendMain(path: string, maxSize: number, queueSize: number): Promise<void> {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, ECHO_CHANNEL, true);
  const send = (m: FromFrontend): void => void process.send!(m);
  let fe: LoopbackFrontend;
  try {
    fe = await LoopbackFrontend.connect(path, maxSize, queueSize, header);
  } catch (e) {
    send({ error: `connect ${path}: ${(e as Error).message}` });
    process.disconnect();
    return;
  }
  send({ ready: true });
  process.on('message', (m: ToFrontend) => {
    if (m.cmd === 'close') {
      fe.close();
      process.disconnect();
      return;
    }
    fe.measure(m.size, m.seconds, m.warmupMs).then(
      (result) => send({ result }),
      (e: unknown) => send({ error: (e as Error).message }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// /proc readings

const CLK_TCK = ((): number => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout.trim());
  return r.status === 0 && n > 0 ? n : 100;
})();

/** CPU seconds (user + system) of a process, from /proc/<pid>/stat; 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Resident set size in bytes, from /proc/<pid>/status (VmRSS). */
function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS line: is ${pid} a live process?`);
  return Number(m[1]) * 1024;
}

/** RssAnon (the heap, buffers: the server's own) and RssShmem (guest memory pages it touched). */
function rssSplit(pid: number): { anon: number; shmem: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)\\s+kB`, 'm').exec(st)?.[1] ?? Number.NaN) * 1024;
  return { anon: kb('RssAnon'), shmem: kb('RssShmem') };
}

const mb = (b: number): string => (b / 1024 / 1024).toFixed(1);

// ---------------------------------------------------------------------------------------------
// Children

class Frontend {
  private waiting: ((m: FromFrontend) => void) | null = null;
  private constructor(
    readonly child: ChildProcess,
    readonly index: number,
  ) {
    child.on('message', (m: FromFrontend) => {
      const w = this.waiting;
      this.waiting = null;
      w?.(m);
    });
    child.on('exit', (code) => {
      const w = this.waiting;
      this.waiting = null;
      w?.({ error: `front-end ${index} exited with code ${code}` });
    });
  }

  static async start(index: number, path: string, maxSize: number, queueSize: number): Promise<Frontend> {
    const child = fork(SELF, ['--frontend', path, String(maxSize), String(queueSize)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    liveChildren.add(child);
    child.once('exit', () => liveChildren.delete(child));
    const fe = new Frontend(child, index);
    const m = await fe.next(30_000, 'connect');
    if ('error' in m) throw new Error(m.error);
    return fe;
  }

  /** The next message, or an error after `ms`. */
  next(ms: number, what: string): Promise<FromFrontend> {
    return new Promise((res) => {
      const t = setTimeout(() => {
        this.waiting = null;
        res({ error: `front-end ${this.index}: no answer to ${what} within ${ms / 1000} s` });
      }, ms);
      this.waiting = (m) => {
        clearTimeout(t);
        res(m);
      };
    });
  }

  async measure(size: number, seconds: number, warmupMs: number): Promise<LoopbackResult> {
    const answer = this.next(warmupMs + seconds * 1000 + 30_000, `measure ${size} B`);
    this.child.send({ cmd: 'measure', size, seconds, warmupMs } satisfies ToFrontend);
    const m = await answer;
    if ('error' in m) throw new Error(m.error);
    if (!('result' in m)) throw new Error(`front-end ${this.index}: unexpected message ${JSON.stringify(m)}`);
    return m.result;
  }

  close(): void {
    if (this.child.connected) this.child.send({ cmd: 'close' } satisfies ToFrontend);
  }
}

const liveChildren = new Set<ChildProcess>();

/** Wait for a child's exit; SIGKILL it after `ms`. */
async function exited(c: ChildProcess, ms: number): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const hard = setTimeout(() => c.kill('SIGKILL'), ms);
  await new Promise((r) => c.once('exit', r));
  clearTimeout(hard);
}

function killAll(): void {
  for (const c of liveChildren) c.kill('SIGKILL');
}

async function startServer(sockets: string[], dir: string, nodeFlags: readonly string[]): Promise<ChildProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm run bench:scale does)`);
  const args = [...nodeFlags, CLI, 'serve', '--restart', 'off', '--no-ipc', '--metrics-listen', '127.0.0.1:0', '--log-level', 'warn', '--echo-channel', String(ECHO_CHANNEL), ...sockets.flatMap((s) => ['--socket', s])];
  const server = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], cwd: dir, env: { ...process.env, NOTIFY_SOCKET: '' } });
  liveChildren.add(server);
  let exited: number | null | undefined;
  server.once('exit', (code) => {
    exited = code;
    liveChildren.delete(server);
  });
  for (let i = 0; i < 300; i++) {
    if (exited !== undefined) throw new Error(`vmpi serve exited with code ${exited} before its sockets were there`);
    if (sockets.every((s) => existsSync(s))) return server;
    await sleep(100);
  }
  throw new Error('vmpi serve did not create its sockets within 30 s');
}

// ---------------------------------------------------------------------------------------------
// Windows

interface Cell {
  /** Server processes the devices are spread over. */
  servers: number;
  /** The servers' Node flag set ('' = none beyond the common SCALE_SERVER_NODE_FLAGS). */
  flags: string;
  devices: number;
  size: number;
  /** Sum over the driven devices. */
  pps: number;
  gbps: number;
  /** Slowest device ÷ fastest (1 = fair). */
  fairness: number;
  minPps: number;
  maxPps: number;
  /** Server CPU over the window, % of one core. */
  serverCpuPct: number;
  /** µs of server CPU per round trip (one SDU guest → host and its echo back). */
  serverUsPerSdu: number;
  /** The driven front-ends' CPU together, % of one core. */
  frontendCpuPct: number;
  /** Summed over the layout's servers; and the largest one's. */
  serverRss: number;
  serverRssMax: number;
  load1: number;
  errors: number;
}

/** One layout: its servers (one or more `vmpi serve`) and one front-end per device. */
interface Layout {
  servers: ChildProcess[];
  fes: Frontend[];
  /** Its flag set, as Cell.flags. */
  flags: string;
  /** The largest summed RSS and RssAnon read at the end of its windows. */
  peakRss: number;
  peakAnon: number;
}

const pids = (l: Layout): number[] => l.servers.map((p) => p.pid!);
const layoutCpu = (l: Layout): number => pids(l).reduce((a, p) => a + cpuSeconds(p), 0);
const layoutRss = (l: Layout): number[] => pids(l).map(rssBytes);

async function measureWindow(l: Layout, n: number, size: number, seconds: number, warmupMs: number): Promise<Cell> {
  const fes = l.fes.slice(0, n);
  const pending = fes.map((f) => f.measure(size, seconds, warmupMs));
  await sleep(warmupMs);
  const s0 = layoutCpu(l);
  const f0 = fes.reduce((a, f) => a + cpuSeconds(f.child.pid!), 0);
  const t0 = process.hrtime.bigint();
  await sleep(seconds * 1000);
  const s1 = layoutCpu(l);
  const f1 = fes.reduce((a, f) => a + cpuSeconds(f.child.pid!), 0);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const rss = layoutRss(l);
  l.peakRss = Math.max(l.peakRss, rss.reduce((a, b) => a + b, 0));
  l.peakAnon = Math.max(l.peakAnon, pids(l).reduce((a, p) => a + rssSplit(p).anon, 0));
  const results = await Promise.all(pending);
  const pps = results.map((r) => r.pps);
  const total = pps.reduce((a, b) => a + b, 0);
  return {
    servers: l.servers.length,
    flags: l.flags,
    devices: fes.length,
    size,
    pps: total,
    gbps: results.reduce((a, r) => a + r.gbps, 0),
    fairness: Math.min(...pps) / Math.max(...pps),
    minPps: Math.min(...pps),
    maxPps: Math.max(...pps),
    serverCpuPct: ((s1 - s0) / wall) * 100,
    serverUsPerSdu: total > 0 ? ((s1 - s0) / (total * wall)) * 1e6 : Number.NaN,
    frontendCpuPct: ((f1 - f0) / wall) * 100,
    serverRss: rss.reduce((a, b) => a + b, 0),
    serverRssMax: Math.max(...rss),
    load1: load1(),
    errors: results.reduce((a, r) => a + r.errors, 0),
  };
}

/** The median cell of repeats (each field's median; the errors summed). */
function medianCell(cells: Cell[]): Cell {
  const m = (f: (c: Cell) => number): number => median(cells.map(f));
  return {
    servers: cells[0]!.servers,
    flags: cells[0]!.flags,
    devices: cells[0]!.devices,
    size: cells[0]!.size,
    pps: m((c) => c.pps),
    gbps: m((c) => c.gbps),
    fairness: m((c) => c.fairness),
    minPps: m((c) => c.minPps),
    maxPps: m((c) => c.maxPps),
    serverCpuPct: m((c) => c.serverCpuPct),
    serverUsPerSdu: m((c) => c.serverUsPerSdu),
    frontendCpuPct: m((c) => c.frontendCpuPct),
    serverRss: m((c) => c.serverRss),
    serverRssMax: m((c) => c.serverRssMax),
    load1: m((c) => c.load1),
    errors: cells.reduce((a, c) => a + c.errors, 0),
  };
}

const pad = (s: string | number, n: number): string => String(s).padStart(n);

const flagText = (f: string): string => (f === '' ? 'none' : f);

function printTable(cells: Cell[]): void {
  const fw = Math.max(5, ...cells.map((c) => flagText(c.flags).length));
  const withFlags = new Set(cells.map((c) => c.flags)).size > 1;
  say('');
  say(`${withFlags ? `${flagText('flags').padEnd(fw)} ` : ''}${pad('servers', 7)} ${pad('devices', 7)} ${pad('size', 5)} ${pad('round trips/s', 13)} ${pad('Gb/s', 7)} ${pad('fair', 5)} ${pad('srv CPU%', 8)} ${pad('µs/SDU', 7)} ${pad('FE CPU%', 7)} ${pad('RSS MB', 6)} ${pad('load1', 5)}`);
  for (const c of cells) {
    let line = `${withFlags ? `${flagText(c.flags).padEnd(fw)} ` : ''}${pad(c.servers, 7)} ${pad(c.devices, 7)} ${pad(c.size, 5)} ${pad(Math.round(c.pps).toLocaleString('en-US'), 13)} ${pad(c.gbps.toFixed(3), 7)} ${pad(c.fairness.toFixed(2), 5)} ${pad(c.serverCpuPct.toFixed(0), 8)} ${pad(c.serverUsPerSdu.toFixed(2), 7)} ${pad(c.frontendCpuPct.toFixed(0), 7)} ${pad(mb(c.serverRss), 6)} ${pad(c.load1.toFixed(2), 5)}`;
    if (c.errors) line += `  (${c.errors} wrong lengths!)`;
    say(line);
  }
  say('round trip = one SDU guest → host and its echo back; Gb/s = one-way payload; fair = slowest ÷ fastest device;');
  say('µs/SDU = server CPU per round trip; CPU% = % of one core; CPU and RSS summed over the servers; medians of the repeats.');
}

// ---------------------------------------------------------------------------------------------
// Main

async function sweep(s: ScaleSettings, layouts: Layout[]): Promise<Cell[]> {
  const raw = new Map<string, Cell[]>();
  for (let rep = 0; rep < s.repeats; rep++) {
    // The order of the counts turns each sweep, so no count always runs first (or last); the
    // layouts alternate within each count and size, their order swapped every other sweep.
    const order = s.devices.map((_, i) => s.devices[(i + rep) % s.devices.length]!);
    for (const n of order) {
      for (const size of s.sizes) {
        for (const l of rep % 2 === 0 ? layouts : [...layouts].reverse()) {
          const c = await measureWindow(l, n, size, s.seconds, WARMUP_MS);
          const key = `${c.flags}/${c.servers}/${n}/${size}`;
          raw.set(key, [...(raw.get(key) ?? []), c]);
          say(`  sweep ${rep + 1}/${s.repeats}: ${c.flags ? `[${c.flags}] ` : ''}${c.servers} server${c.servers === 1 ? ' ' : 's'} ${pad(n, 2)} devices ${pad(size, 5)} B  ${pad(Math.round(c.pps).toLocaleString('en-US'), 11)} round trips/s  server ${c.serverCpuPct.toFixed(0)}%  load ${c.load1.toFixed(2)}`);
        }
      }
    }
  }
  const cells: Cell[] = [];
  for (const l of layouts) for (const n of s.devices) for (const size of s.sizes) cells.push(medianCell(raw.get(`${l.flags}/${l.servers.length}/${n}/${size}`)!));
  return cells;
}

interface SoakSample {
  t: number;
  rss: number;
  /** Summed RssAnon and RssShmem of the layout's servers. */
  anon: number;
  shmem: number;
  serverCpuPct: number;
  load1: number;
}

async function soak(s: ScaleSettings, l: Layout): Promise<{ samples: SoakSample[]; windows: Cell[] }> {
  const samples: SoakSample[] = [];
  const windows: Cell[] = [];
  const start = Date.now();
  let lastCpu = layoutCpu(l);
  let lastT = start;
  const sample = (): void => {
    const now = Date.now();
    const cpu = layoutCpu(l);
    const split = pids(l).map(rssSplit);
    const x: SoakSample = { t: (now - start) / 1000, rss: layoutRss(l).reduce((a, b) => a + b, 0), anon: split.reduce((a, b) => a + b.anon, 0), shmem: split.reduce((a, b) => a + b.shmem, 0), serverCpuPct: now > lastT ? ((cpu - lastCpu) / ((now - lastT) / 1000)) * 100 : 0, load1: load1() };
    lastCpu = cpu;
    lastT = now;
    samples.push(x);
    say(`  t=${pad(x.t.toFixed(0), 4)} s  RSS ${pad(mb(x.rss), 6)} MB (anon ${pad(mb(x.anon), 6)}, guest memory ${pad(mb(x.shmem), 5)})  server CPU ${pad(x.serverCpuPct.toFixed(0), 3)}%  load ${x.load1.toFixed(2)}`);
  };
  sample();
  const timer = setInterval(sample, s.soakInterval * 1000);
  try {
    for (let k = 0; Date.now() - start < s.soakSeconds * 1000; k++) {
      const left = s.soakSeconds - (Date.now() - start) / 1000;
      const secs = Math.max(0.5, Math.min(s.soakInterval, left));
      windows.push(await measureWindow(l, l.fes.length, s.sizes[k % s.sizes.length]!, secs, 100));
    }
  } finally {
    clearInterval(timer);
  }
  sample();
  return { samples, windows };
}

/** Start a layout: `k` servers, device i on server i mod k, and one connected front-end per device. */
async function startLayout(k: number, n: number, dir: string, maxSize: number, queueSize: number, nodeFlags: readonly string[], set: number, flags: string): Promise<Layout> {
  const sockets = Array.from({ length: n }, (_, i) => join(dir, `f${set}-s${k}-dev${i}.sock`));
  const servers: ChildProcess[] = [];
  for (let j = 0; j < k; j++) servers.push(await startServer(sockets.filter((_, i) => i % k === j), dir, nodeFlags));
  const idle = servers.map((p) => rssBytes(p.pid!));
  const fes: Frontend[] = [];
  for (let i = 0; i < n; i++) fes.push(await Frontend.start(i, sockets[i]!, maxSize, queueSize));
  await sleep(500);
  const l: Layout = { servers, fes, flags, peakRss: 0, peakAnon: 0 };
  const connected = layoutRss(l);
  say(`${flags ? `[${flags}] ` : ''}${k} server${k === 1 ? '' : 's'} (pid ${pids(l).join(', ')}): RSS ${idle.map(mb).join(' + ')} MB with no front-end, ${connected.map(mb).join(' + ')} MB with ${n} devices connected and idle`);
  return l;
}

async function stopLayout(l: Layout): Promise<void> {
  for (const f of l.fes) f.close();
  await Promise.all(l.fes.map((f) => exited(f.child, 10_000)));
  for (const p of l.servers) p.kill('SIGTERM');
  await Promise.all(l.servers.map((p) => exited(p, 5000)));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--frontend') return frontendMain(argv[1]!, Number(argv[2]), Number(argv[3]));
  const s = readScaleSettings();
  const n = Math.max(...s.devices);
  const maxSize = Math.max(...s.sizes);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-scale-'));
  process.on('exit', () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(130));
  const soaking = s.soakSeconds > 0;
  const kinds = soaking ? [s.servers[0]!] : s.servers;
  const sets = soaking ? [s.serverFlagSets[0]!] : s.serverFlagSets;
  const mode = soaking
    ? `soak: ${n} devices on ${kinds[0]} server${kinds[0] === 1 ? '' : 's'} at full rate for ${s.soakSeconds} s, RSS every ${s.soakInterval} s`
    : `counts ${s.devices.join(',')} × sizes ${s.sizes.join(',')} B × ${s.seconds} s on ${kinds.join(' and ')} server${kinds.length === 1 && kinds[0] === 1 ? '' : 's'}, ${s.repeats} interleaved sweeps`;
  const setsText = sets.length > 1 || sets[0]!.length > 0 ? `; server flag sets ${sets.map((f) => flagText(f.join(' '))).join(' | ')}` : '';
  say(`vmpi scale benchmark: vmpi serve (--restart off), ${n} devices, one front-end process each; ${mode}; queue size ${s.queueSize}${s.serverNodeFlags.length ? `; server node flags ${s.serverNodeFlags.join(' ')}` : ''}${setsText}; ${cpus().length} CPUs; load ${loadText()}`);
  const layouts: Layout[] = [];
  for (const [j, set] of sets.entries()) for (const k of kinds) layouts.push(await startLayout(k, n, dir, maxSize, s.queueSize, [...s.serverNodeFlags, ...set], j, set.join(' ')));

  const outDir = join(ROOT, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  const common = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, settings: s };
  let failed = false;
  if (soaking) {
    const { samples, windows } = await soak(s, layouts[0]!);
    // The first sample is taken before the traffic starts (the idle server): the trend is of the
    // samples at full rate.
    const busy = samples.slice(1);
    const tr = trend(busy.map((x) => ({ x: x.t, y: x.rss })));
    const growth = tr.slope * s.soakSeconds;
    const flat = Math.abs(growth) < Math.max(5 * 1024 * 1024, 0.05 * tr.start);
    const under = tr.peak < 150 * 1024 * 1024;
    const pps = median(windows.map((w) => w.pps));
    const perMin = (tr.slope / 1024 / 1024) * 60;
    say('');
    say(`soak ${n} devices, ${s.soakSeconds} s, ${busy.length} samples at full rate (idle before: ${mb(samples[0]!.rss)} MB): RSS start ${mb(tr.start)} MB, peak ${mb(tr.peak)} MB, end ${mb(tr.end)} MB; slope ${perMin >= 0 ? '+' : ''}${perMin.toFixed(3)} MB/min (fitted ${mb(growth)} MB over the run)`);
    const anon = trend(busy.map((x) => ({ x: x.t, y: x.anon })));
    say(`  of it RssAnon (heap and buffers, without the guest memory mapped from the front-ends): start ${mb(anon.start)} MB, peak ${mb(anon.peak)} MB, end ${mb(anon.end)} MB, slope ${((anon.slope / 1024 / 1024) * 60).toFixed(3)} MB/min`);
    say(`  peak < 150 MB: ${under ? 'yes' : 'NO'}; flat (fitted growth < max(5 MB, 5% of start)): ${flat ? 'yes' : 'NO'}`);
    say(`  median aggregate ${Math.round(pps).toLocaleString('en-US')} round trips/s over ${windows.length} windows (sizes ${s.sizes.join(',')} B alternating); server CPU median ${median(busy.map((x) => x.serverCpuPct)).toFixed(0)}%; load ${loadText()}`);
    writeFileSync(join(outDir, 'scale-soak.json'), JSON.stringify({ benchmark: 'scale-soak', ...common, devices: n, servers: kinds[0], trend: tr, anonTrend: anon, fittedGrowth: growth, flat, under150MB: under, samples, windows }, null, 2) + '\n');
    say(`results written to ${join(outDir, 'scale-soak.json')}`);
    failed = windows.some((w) => w.errors > 0);
  } else {
    const loadBefore = loadavg();
    const cells = await sweep(s, layouts);
    printTable(cells);
    say(`load average before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadText()}`);
    const first = sets[0]!.join(' ');
    const cellOf = (f: string, k: number, d: number, size: number): Cell => cells.find((c) => c.flags === f && c.servers === k && c.devices === d && c.size === size)!;
    const cell = (k: number, d: number, size: number): Cell => cellOf(first, k, d, size);
    say('');
    for (const k of kinds) {
      say(`cost growth on ${k} server${k === 1 ? '' : 's'}: server µs per SDU against ${s.devices[0]} device${s.devices[0] === 1 ? '' : 's'}:`);
      for (const size of s.sizes) say(`  ${pad(size, 5)} B: ${s.devices.map((d) => `${d}: ${(cell(k, d, size).serverUsPerSdu / cell(k, s.devices[0]!, size).serverUsPerSdu).toFixed(2)}×`).join('  ')}`);
    }
    for (const k of kinds.slice(1)) {
      say(`${k} servers ÷ ${kinds[0]} (same run, interleaved): aggregate round trips/s, and server µs per SDU`);
      for (const size of s.sizes) say(`  ${pad(size, 5)} B: ${s.devices.map((d) => `${d}: ${(cell(k, d, size).pps / cell(kinds[0]!, d, size).pps).toFixed(2)}× (${(cell(k, d, size).serverUsPerSdu / cell(kinds[0]!, d, size).serverUsPerSdu).toFixed(2)}×)`).join('  ')}`);
    }
    for (const set of sets.slice(1)) {
      const f = set.join(' ');
      say(`[${f}] ÷ [${flagText(first)}] (same run, interleaved): aggregate round trips/s, and server µs per SDU`);
      for (const k of kinds) for (const size of s.sizes) say(`  ${k} server${k === 1 ? ' ' : 's'} ${pad(size, 5)} B: ${s.devices.map((d) => `${d}: ${(cellOf(f, k, d, size).pps / cellOf(first, k, d, size).pps).toFixed(2)}× (${(cellOf(f, k, d, size).serverUsPerSdu / cellOf(first, k, d, size).serverUsPerSdu).toFixed(2)}×)`).join('  ')}`);
    }
    const peaks = layouts.map((l) => ({ flags: l.flags, servers: l.servers.length, peakRss: l.peakRss, peakAnon: l.peakAnon }));
    say('RSS peak per layout (read at the end of every window): ' + peaks.map((p) => `${p.flags ? `[${p.flags}] ` : ''}${p.servers} server${p.servers === 1 ? '' : 's'} ${mb(p.peakRss)} MB (anon ${mb(p.peakAnon)})`).join('; '));
    writeFileSync(join(outDir, 'scale.json'), JSON.stringify({ benchmark: 'scale', ...common, loadBefore, loadAfter: loadavg(), results: cells, peaks }, null, 2) + '\n');
    say(`results written to ${join(outDir, 'scale.json')}`);
    failed = cells.some((c) => c.errors > 0);
  }
  for (const l of layouts) await stopLayout(l);
  if (failed) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
