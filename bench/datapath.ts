/**
 * datapath.ts — vhost-user data-path benchmark: VhostUserServer + loopback device in this process,
 * the test front-end (test/frontend, QEMU's and the guest driver's role) in a child process, so
 * the two sides run on two cores like QEMU and a back-end would.
 *
 * For each buffer size (64, 256, 1500, 4000, 65536 bytes) the front-end pushes buffers for a fixed
 * time through queue 1 (guest → host), the loopback device copies each into a queue-0 buffer
 * (host → guest), and the front-end counts round trips. Event-driven on both sides (kick and call
 * eventfds with VIRTIO_RING_F_EVENT_IDX), no busy polling. Prints a table (size, round trips/s,
 * Gb/s of one-way payload) and writes bench-results/datapath.json.
 *
 * If `dpdk-testpmd` is on PATH, DPDK runs the same sizes for comparison: one testpmd with the vhost
 * PMD (back-end) and one with virtio-user (front-end), io forwarding, busy-polling, one forwarding
 * core each. Sizes above 9000 bytes are n/a for DPDK (virtio-user limit). testpmd's figures swing
 * 2–3× from run to run on this shared machine, so the two are interleaved: per size, --repeats
 * pairs (5 by default with DPDK), each pair one run of ours and one of testpmd back to back (ours
 * first in even pairs, testpmd first in odd ones, so neither always has the warmer machine). Printed:
 * the medians, their ratio (ours ÷ testpmd) and its spread, the min–max of the per-pair ratios
 * (bench/common/compare.ts), with the load average. Goal (issue #15): ≥ 0.5× at 64 B, ≥ 0.8× at
 * 4000 B. testpmd is in Debian 12's dpdk-dev: VMPI_BENCH_DPDK=1 bash scripts/setup-system.sh.
 *
 * Our front-end stays connected for the whole run (one child process, measuring on request), idle
 * while testpmd runs; our server is idle then too.
 *
 * Usage: node dist/bench/datapath.js [--seconds 3] [--sizes 64,256,...] [--queue-size 256]
 *        [--repeats N] [--no-dpdk]
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setLogLevel } from '../src/sys/log.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { LoopbackDevice } from '../test/frontend/loopback-device.js';
import { LoopbackFrontend, type LoopbackResult } from './common/loopback.js';
import { median, pairedRatio, type PairedRatio } from './common/compare.js';

const SELF = fileURLToPath(import.meta.url);
/** Project root: works from bench/ (tsx) and dist/bench/ (built). */
const ROOT = SELF.includes(`${join('dist', 'bench')}`) ? resolve(dirname(SELF), '..', '..') : resolve(dirname(SELF), '..');

interface Options {
  seconds: number;
  sizes: number[];
  queueSize: number;
  dpdk: boolean;
  /** Runs per size (pairs with testpmd); undefined: 5 when DPDK is compared, else 1. */
  repeats: number | undefined;
}

type SizeResult = LoopbackResult;

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 3, sizes: [64, 256, 1500, 4000, 65536], queueSize: 256, dpdk: true, repeats: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--sizes') o.sizes = v().split(',').map(Number);
    else if (a === '--queue-size') o.queueSize = Number(v());
    else if (a === '--no-dpdk') o.dpdk = false;
    else if (a === '--repeats') o.repeats = Number(v());
    else throw new Error(`unknown argument ${a} (use --seconds N, --sizes a,b,c, --queue-size N, --repeats N, --no-dpdk)`);
  }
  if (!(o.seconds > 0) || o.seconds > 60) throw new Error('--seconds must be in (0, 60]');
  if (o.sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 65536)) throw new Error('--sizes must be integers in 1..65536');
  if (o.repeats !== undefined && !(Number.isInteger(o.repeats) && o.repeats >= 1 && o.repeats <= 50)) throw new Error('--repeats must be an integer in 1..50');
  return o;
}

// ---------------------------------------------------------------------------------------------
// Front-end (child process): the loopback measurement lives in common/loopback.ts (bench:host-stack
// measures it too, as its baseline). It connects once, then measures a size on each request.

type ToFrontend = { size: number } | { close: true };
type FromFrontend = { ready: true } | { result: SizeResult } | { error: string };

async function runFrontend(path: string, o: Options): Promise<void> {
  const send = (m: FromFrontend): void => void process.send!(m);
  const fe = await LoopbackFrontend.connect(path, Math.max(...o.sizes), o.queueSize);
  send({ ready: true });
  process.on('message', (m: ToFrontend) => {
    if ('close' in m) {
      fe.close();
      process.disconnect();
      return;
    }
    fe.measure(m.size, o.seconds).then(
      (result) => send({ result }),
      (e: unknown) => send({ error: (e as Error).message }),
    );
  });
}

/** The parent's handle on the front-end child: one request at a time, every wait bounded. */
class FrontendChild {
  private waiting: ((m: FromFrontend) => void) | null = null;
  constructor(readonly child: ReturnType<typeof fork>) {
    child.on('message', (m: FromFrontend) => this.deliver(m));
    child.on('exit', (code) => this.deliver({ error: `front-end exited with code ${code} before reporting` }));
  }

  private deliver(m: FromFrontend): void {
    const w = this.waiting;
    this.waiting = null;
    w?.(m);
  }

  async next(ms: number, what: string): Promise<FromFrontend> {
    return new Promise((res) => {
      const t = setTimeout(() => this.deliver({ error: `front-end: no answer to ${what} within ${Math.round(ms / 1000)} s` }), ms);
      this.waiting = (m) => {
        clearTimeout(t);
        res(m);
      };
    });
  }

  async measure(size: number, seconds: number): Promise<SizeResult> {
    const answer = this.next((seconds * 2 + 30) * 1000, `measure ${size} B`);
    this.child.send({ size } satisfies ToFrontend);
    const m = await answer;
    if ('result' in m) return m.result;
    if ('error' in m) throw new Error(m.error);
    throw new Error(`front-end: unexpected message ${JSON.stringify(m)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// DPDK testpmd comparison

interface DpdkResult {
  size: number;
  pps: number | null;
  note?: string;
}

/** testpmd processes running now: killed if this process exits first (an error, a signal). */
const liveTestpmd = new Set<ReturnType<typeof spawn>>();
process.on('exit', () => {
  for (const p of liveTestpmd) p.kill('SIGKILL');
});

function findTestpmd(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v dpdk-testpmd || command -v testpmd'], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : null;
}

/**
 * One size through DPDK: process A = testpmd with the vhost PMD (the back-end, io forwarding on
 * its one port = loopback), process B = testpmd with virtio-user (the front-end, --tx-first then
 * io forwarding back). DPDK 22.11 cannot run both in one testpmd (virtio-user connects at probe,
 * before the vhost PMD listens), so this is the same two-process shape as ours. Each packet A
 * receives is one round trip. Both forwarding cores busy-poll.
 */
async function runTestpmd(bin: string, size: number, seconds: number, dir: string): Promise<DpdkResult> {
  if (size > 9000) return { size, pps: null, note: 'virtio-user PMD receives at most 9728-byte packets' };
  const sock = join(dir, `testpmd-${size}.sock`);
  const common = ['--no-huge', '-m', '1024', '--no-pci'];
  const fwd = ['--forward-mode=io', '--port-topology=loop', '--nb-cores=1', '--stats-period=1', '--total-num-mbufs=32768', '--burst=256'];
  if (size > 1500) fwd.push(`--mbuf-size=${Math.ceil((size + 128) / 64) * 64}`, `--max-pkt-len=${size}`);
  const a = spawn(bin, ['-l', '0,1', ...common, '--file-prefix', `vmpibenchA${process.pid}`, '--vdev', `net_vhost0,iface=${sock},queues=1`, '--', ...fwd], { stdio: ['ignore', 'pipe', 'pipe'] });
  liveTestpmd.add(a);
  a.once('exit', () => liveTestpmd.delete(a));
  let outA = '';
  let outB = '';
  a.stdout.on('data', (d: Buffer) => (outA += d.toString()));
  a.stderr.on('data', (d: Buffer) => (outA += d.toString()));
  const aExit = new Promise((r) => a.once('exit', r));
  const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  // Under load testpmd takes seconds to start (its mbuf pool, without huge pages): wait for the
  // socket, then for B's first forwarded packets, then measure `seconds` more. All bounded.
  for (let i = 0; i < 300 && !existsSync(sock); i++) await sleepMs(100);
  const b = spawn(bin, ['-l', '1,0', '--main-lcore', '1', ...common, '--file-prefix', `vmpibenchB${process.pid}`, '--vdev', `net_virtio_user0,path=${sock},queues=1`, '--', ...fwd, `--txpkts=${size}`, '--tx-first'], { stdio: ['ignore', 'pipe', 'pipe'] });
  liveTestpmd.add(b);
  b.once('exit', () => liveTestpmd.delete(b));
  b.stdout.on('data', (d: Buffer) => (outB += d.toString()));
  b.stderr.on('data', (d: Buffer) => (outB += d.toString()));
  const bExit = new Promise((r) => b.once('exit', r));
  const rxPps = (): number[] => [...outA.matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1]));
  let first = -1;
  for (let i = 0; i < 300 && first < 0 && a.exitCode === null && b.exitCode === null; i++) {
    await sleepMs(100);
    first = rxPps().findIndex((x) => x > 0);
  }
  if (first >= 0) await sleepMs((seconds + 1.2) * 1000);
  b.kill('SIGINT');
  a.kill('SIGINT');
  const hard = setTimeout(() => {
    a.kill('SIGKILL');
    b.kill('SIGKILL');
  }, 5000);
  await Promise.all([aExit, bExit]);
  clearTimeout(hard);
  rmSync(sock, { force: true });
  // A's per-second NIC statistics: Rx-pps. From the second second with traffic (the first is
  // part start-up); the median.
  const nonzero = first < 0 ? [] : rxPps().slice(first + 1).filter((x) => x > 0).sort((x, y) => x - y);
  if (nonzero.length === 0) {
    const why = (outA + outB).split('\n').filter((l) => /fail|cannot|invalid|error during|Cause/i.test(l)).slice(0, 2).join(' | ');
    return { size, pps: null, note: `no traffic measured${why ? `: ${why.trim().slice(0, 200)}` : ''}` };
  }
  return { size, pps: nonzero[Math.floor(nonzero.length / 2)]! };
}

// ---------------------------------------------------------------------------------------------
// Main (server process)

interface Row {
  size: number;
  /** Medians of the runs (ours). */
  pps: number;
  gbps: number;
  kicksPerPacket: number;
  callsPerPacket: number;
  errors: number;
  runs: SizeResult[];
  dpdkRuns: (number | null)[] | null;
  dpdkPps: number | null;
  /** median(ours) ÷ median(testpmd), with the spread of the per-pair ratios. */
  ratio: number | null;
  compared: PairedRatio | null;
  dpdkNote?: string;
  /** 1-minute load average after the size's last run. */
  load1: number;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--frontend') return runFrontend(argv[1]!, JSON.parse(argv[2]!) as Options);
  const o = parseArgs(argv);
  setLogLevel(process.env.VMPI_LOG_LEVEL ?? 'warn');
  let dpdkNote = '';
  const bin = o.dpdk ? findTestpmd() : null;
  if (!o.dpdk) dpdkNote = 'DPDK comparison disabled (--no-dpdk)';
  else if (!bin) dpdkNote = 'dpdk-testpmd not on PATH: DPDK comparison skipped (Debian 12: VMPI_BENCH_DPDK=1 bash scripts/setup-system.sh installs dpdk-dev, ~160 MB)';
  const repeats = o.repeats ?? (bin ? 5 : 1);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-bench-'));
  const path = join(dir, 'datapath.sock');
  const devices: LoopbackDevice[] = [];
  const server = new VhostUserServer({
    path,
    createDevice: () => {
      const d = new LoopbackDevice({ name: 'bench-loopback', maxQueueSize: 1024 });
      devices.push(d);
      return d;
    },
  }).listen();

  const perRun = o.seconds + Math.min(1, o.seconds / 5) + 1 + (bin ? o.seconds + 10 : 0);
  const expected = o.sizes.length * repeats * perRun + 10;
  const load0 = loadavg();
  console.log(
    `vmpi data-path benchmark: ${o.sizes.length} sizes × ${repeats} run${repeats === 1 ? '' : 's'} × ${o.seconds} s, queue size ${o.queueSize}, front-end in a child process` +
      `${bin ? `, interleaved with ${bin} (vhost PMD + virtio-user, io forwarding)` : ''} (~${Math.ceil(expected)} s); load ${load0.map((x) => x.toFixed(2)).join(' ')}`,
  );
  const child = fork(SELF, ['--frontend', path, JSON.stringify(o)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const fe = new FrontendChild(child);
  const killChild = (): void => void child.kill('SIGKILL');
  process.on('exit', killChild);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => process.exit(130));
  const ready = await fe.next(30_000, 'connect');
  if (!('ready' in ready)) throw new Error('error' in ready ? ready.error : 'front-end: no ready message');

  const rows: Row[] = [];
  for (const size of o.sizes) {
    const runs: SizeResult[] = [];
    const dpdkRuns: (number | null)[] | null = bin ? [] : null;
    let note: string | undefined;
    const testpmd = async (): Promise<void> => {
      let r = await runTestpmd(bin!, size, o.seconds, dir);
      // testpmd's start-up races now and then (virtio-user meets a half-started vhost): retry once.
      if (r.pps === null && size <= 9000) r = await runTestpmd(bin!, size, o.seconds, dir);
      dpdkRuns!.push(r.pps);
      note ??= r.note;
    };
    for (let k = 0; k < repeats; k++) {
      // Ours first in even pairs, testpmd first in odd ones.
      if (bin && k % 2 === 1) await testpmd();
      runs.push(await fe.measure(size, o.seconds));
      if (bin && k % 2 === 0) await testpmd();
      const d = dpdkRuns?.[k];
      console.log(`  ${String(size).padStart(5)} B run ${k + 1}/${repeats}: ours ${Math.round(runs[k]!.pps).toLocaleString('en-US')}/s${dpdkRuns ? `, testpmd ${d === null || d === undefined ? 'n/a' : `${Math.round(d).toLocaleString('en-US')}/s`}` : ''}; load ${loadavg()[0]!.toFixed(2)}`);
    }
    const compared = dpdkRuns ? pairedRatio(runs.map((r) => r.pps), dpdkRuns) : null;
    const m = (f: (r: SizeResult) => number): number => median(runs.map(f));
    rows.push({
      size,
      pps: m((r) => r.pps),
      gbps: m((r) => r.gbps),
      kicksPerPacket: m((r) => r.kicksPerPacket),
      callsPerPacket: m((r) => r.callsPerPacket),
      errors: runs.reduce((a, r) => a + r.errors, 0),
      runs,
      dpdkRuns,
      dpdkPps: compared?.theirsMedian ?? null,
      ratio: compared?.ratio ?? null,
      compared,
      dpdkNote: compared ? undefined : note,
      load1: loadavg()[0]!,
    });
  }
  child.send({ close: true } satisfies ToFrontend);
  await new Promise<void>((r) => {
    const hard = setTimeout(killChild, 10_000);
    child.once('exit', () => {
      clearTimeout(hard);
      r();
    });
  });
  const dev = devices[0];
  server.close();
  rmSync(dir, { recursive: true, force: true });

  const pad = (s: string, n: number): string => s.padStart(n);
  const dpdk = bin !== null;
  console.log('');
  console.log(`${pad('size', 6)} ${pad('round trips/s', 14)} ${pad('Gb/s', 8)} ${pad('kicks/pkt', 10)} ${pad('calls/pkt', 10)}${dpdk ? `${pad('testpmd pps', 13)} ${pad('ratio', 6)} ${pad('pair min–max', 13)} ${pad('pairs', 5)}` : ''} ${pad('load1', 5)}`);
  for (const r of rows) {
    let line = `${pad(String(r.size), 6)} ${pad(Math.round(r.pps).toLocaleString('en-US'), 14)} ${pad(r.gbps.toFixed(3), 8)} ${pad(r.kicksPerPacket.toFixed(3), 10)} ${pad(r.callsPerPacket.toFixed(3), 10)}`;
    if (dpdk) {
      const c = r.compared;
      line += `${pad(c ? Math.round(c.theirsMedian).toLocaleString('en-US') : 'n/a', 13)} ${pad(c ? c.ratio.toFixed(2) : 'n/a', 6)} ${pad(c ? `${c.min.toFixed(2)}–${c.max.toFixed(2)}` : 'n/a', 13)} ${pad(c ? String(c.pairs) : '0', 5)}`;
    }
    line += ` ${pad(r.load1.toFixed(2), 5)}`;
    if (r.errors) line += `  (${r.errors} wrong lengths!)`;
    console.log(line);
  }
  for (const r of rows) if (r.dpdkNote) console.log(`  testpmd ${r.size} B: ${r.dpdkNote}`);
  if (dpdkNote) console.log(`\n${dpdkNote}`);
  console.log(`Gb/s = one-way payload; a round trip is one buffer guest → host (queue 1) and back (queue 0); medians of ${repeats} run${repeats === 1 ? '' : 's'}.`);
  if (dpdk) {
    console.log('ratio = median(ours) ÷ median(testpmd); pair min–max = the spread of ours ÷ testpmd over the back-to-back pairs.');
    const goal = (size: number, want: number): string => {
      const r = rows.find((x) => x.size === size)?.compared;
      return r ? `${size} B ${r.ratio.toFixed(2)}× (goal ≥ ${want}×: ${r.ratio >= want ? 'met' : 'not met'}; pairs ${r.min.toFixed(2)}–${r.max.toFixed(2)})` : `${size} B not measured`;
    };
    console.log(`goals (issue #15): ${goal(64, 0.5)}; ${goal(4000, 0.8)}`);
  }
  const load1 = loadavg();
  console.log(`load average before ${load0.map((x) => x.toFixed(2)).join(' ')}, after ${load1.map((x) => x.toFixed(2)).join(' ')}`);

  const outDir = join(ROOT, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  const out = {
    benchmark: 'datapath',
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    loadBefore: load0,
    loadAfter: load1,
    options: { ...o, repeats },
    results: rows,
    device: dev ? { ...dev.stats } : null,
    dpdk: dpdk ? { testpmd: bin, interleaved: true } : { skipped: dpdkNote },
  };
  writeFileSync(join(outDir, 'datapath.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(`results written to ${join(outDir, 'datapath.json')}`);
  if (rows.some((r) => r.errors > 0)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
