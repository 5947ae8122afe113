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
 * core each; our ratio to it is printed. Sizes above 9000 bytes are n/a for DPDK (virtio-user limit).
 *
 * Usage: node dist/bench/datapath.js [--seconds 3] [--sizes 64,256,...] [--queue-size 256] [--no-dpdk]
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setLogLevel } from '../src/sys/log.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { LoopbackDevice } from '../test/frontend/loopback-device.js';
import { LoopbackFrontend, type LoopbackResult } from './common/loopback.js';

const SELF = fileURLToPath(import.meta.url);
/** Project root: works from bench/ (tsx) and dist/bench/ (built). */
const ROOT = SELF.includes(`${join('dist', 'bench')}`) ? resolve(dirname(SELF), '..', '..') : resolve(dirname(SELF), '..');

interface Options {
  seconds: number;
  sizes: number[];
  queueSize: number;
  dpdk: boolean;
}

type SizeResult = LoopbackResult;

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 3, sizes: [64, 256, 1500, 4000, 65536], queueSize: 256, dpdk: true };
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
    else throw new Error(`unknown argument ${a} (use --seconds N, --sizes a,b,c, --queue-size N, --no-dpdk)`);
  }
  if (!(o.seconds > 0) || o.seconds > 60) throw new Error('--seconds must be in (0, 60]');
  if (o.sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 65536)) throw new Error('--sizes must be integers in 1..65536');
  return o;
}

// ---------------------------------------------------------------------------------------------
// Front-end (child process): the loopback measurement lives in common/loopback.ts (bench:host-stack
// measures it too, as its baseline).

async function runFrontend(path: string, o: Options): Promise<SizeResult[]> {
  const fe = await LoopbackFrontend.connect(path, Math.max(...o.sizes), o.queueSize);
  const results: SizeResult[] = [];
  for (const s of o.sizes) results.push(await fe.measure(s, o.seconds));
  fe.close();
  return results;
}

// ---------------------------------------------------------------------------------------------
// DPDK testpmd comparison

interface DpdkResult {
  size: number;
  pps: number | null;
  note?: string;
}

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
  let outA = '';
  let outB = '';
  a.stdout.on('data', (d: Buffer) => (outA += d.toString()));
  a.stderr.on('data', (d: Buffer) => (outA += d.toString()));
  const aExit = new Promise((r) => a.once('exit', r));
  const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  for (let i = 0; i < 100 && !existsSync(sock); i++) await sleepMs(100);
  const b = spawn(bin, ['-l', '1,0', '--main-lcore', '1', ...common, '--file-prefix', `vmpibenchB${process.pid}`, '--vdev', `net_virtio_user0,path=${sock},queues=1`, '--', ...fwd, `--txpkts=${size}`, '--tx-first'], { stdio: ['ignore', 'pipe', 'pipe'] });
  b.stdout.on('data', (d: Buffer) => (outB += d.toString()));
  b.stderr.on('data', (d: Buffer) => (outB += d.toString()));
  const bExit = new Promise((r) => b.once('exit', r));
  await sleepMs((seconds + 1.5) * 1000);
  b.kill('SIGINT');
  a.kill('SIGINT');
  const hard = setTimeout(() => {
    a.kill('SIGKILL');
    b.kill('SIGKILL');
  }, 5000);
  await Promise.all([aExit, bExit]);
  clearTimeout(hard);
  rmSync(sock, { force: true });
  // A's per-second NIC statistics: Rx-pps. Skip the first sample (start-up); take the median.
  const pps = [...outA.matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1])).slice(2);
  const nonzero = pps.filter((x) => x > 0).sort((x, y) => x - y);
  if (nonzero.length === 0) {
    const why = (outA + outB).split('\n').filter((l) => /fail|cannot|invalid|error during|Cause/i.test(l)).slice(0, 2).join(' | ');
    return { size, pps: null, note: `no traffic measured${why ? `: ${why.trim().slice(0, 200)}` : ''}` };
  }
  return { size, pps: nonzero[Math.floor(nonzero.length / 2)]! };
}

// ---------------------------------------------------------------------------------------------
// Main (server process)

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--frontend') {
    const path = argv[1]!;
    const o = JSON.parse(argv[2]!) as Options;
    const results = await runFrontend(path, o);
    process.send!({ results });
    return;
  }
  const o = parseArgs(argv);
  setLogLevel(process.env.VMPI_LOG_LEVEL ?? 'warn');
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

  const expected = o.sizes.length * (o.seconds + Math.min(1, o.seconds / 5) + 1) + 10;
  console.log(`vmpi data-path benchmark: ${o.sizes.length} sizes × ${o.seconds} s, queue size ${o.queueSize}, front-end in a child process (~${Math.ceil(expected)} s)`);
  const child = fork(SELF, ['--frontend', path, JSON.stringify(o)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const results = await new Promise<SizeResult[]>((res, rej) => {
    const kill = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`front-end did not finish within ${Math.ceil(expected * 2)} s`));
    }, expected * 2000);
    child.on('message', (m: { results: SizeResult[] }) => {
      clearTimeout(kill);
      res(m.results);
    });
    child.on('exit', (code) => {
      clearTimeout(kill);
      rej(new Error(`front-end exited with code ${code} before reporting`));
    });
  });
  await new Promise((r) => child.once('exit', r).once('close', r));
  const dev = devices[0];
  server.close();

  let dpdk: DpdkResult[] | null = null;
  let dpdkNote = '';
  const bin = o.dpdk ? findTestpmd() : null;
  if (!o.dpdk) dpdkNote = 'DPDK comparison disabled (--no-dpdk)';
  else if (!bin) dpdkNote = 'dpdk-testpmd not on PATH: DPDK comparison skipped (Debian 12: apt-get install dpdk-dev)';
  else {
    console.log(`running ${bin} (vhost PMD + virtio-user, io forwarding) for comparison...`);
    dpdk = [];
    for (const s of o.sizes) {
      let r = await runTestpmd(bin, s, o.seconds, dir);
      // testpmd's start-up races now and then (virtio-user meets a half-started vhost): retry once.
      if (r.pps === null && s <= 9000) r = await runTestpmd(bin, s, o.seconds, dir);
      dpdk.push(r);
    }
  }
  rmSync(dir, { recursive: true, force: true });

  const rows = results.map((r) => {
    const d = dpdk?.find((x) => x.size === r.size);
    return {
      size: r.size,
      pps: r.pps,
      gbps: r.gbps,
      kicksPerPacket: r.kicksPerPacket,
      callsPerPacket: r.callsPerPacket,
      errors: r.errors,
      dpdkPps: d?.pps ?? null,
      ratio: d?.pps ? r.pps / d.pps : null,
      dpdkNote: d?.note,
    };
  });
  const pad = (s: string, n: number): string => s.padStart(n);
  console.log('');
  console.log(`${pad('size', 6)} ${pad('round trips/s', 14)} ${pad('Gb/s', 8)} ${pad('kicks/pkt', 10)} ${pad('calls/pkt', 10)}${dpdk ? `${pad('testpmd pps', 13)} ${pad('ratio', 7)}` : ''}`);
  for (const r of rows) {
    let line = `${pad(String(r.size), 6)} ${pad(Math.round(r.pps).toLocaleString('en-US'), 14)} ${pad(r.gbps.toFixed(3), 8)} ${pad(r.kicksPerPacket.toFixed(3), 10)} ${pad(r.callsPerPacket.toFixed(3), 10)}`;
    if (dpdk) line += `${pad(r.dpdkPps === null ? 'n/a' : Math.round(r.dpdkPps).toLocaleString('en-US'), 13)} ${pad(r.ratio === null ? 'n/a' : r.ratio.toFixed(3), 7)}`;
    if (r.errors) line += `  (${r.errors} wrong lengths!)`;
    console.log(line);
  }
  for (const r of rows) if (r.dpdkNote) console.log(`  testpmd ${r.size} B: ${r.dpdkNote}`);
  if (dpdkNote) console.log(`\n${dpdkNote}`);
  console.log('Gb/s = one-way payload; a round trip is one buffer guest → host (queue 1) and back (queue 0).');

  const outDir = join(ROOT, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  const out = {
    benchmark: 'datapath',
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    options: o,
    results: rows,
    device: dev ? { ...dev.stats } : null,
    dpdk: dpdk ?? { skipped: dpdkNote },
  };
  writeFileSync(join(outDir, 'datapath.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(`results written to ${join(outDir, 'datapath.json')}`);
  if (rows.some((r) => r.errors > 0)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
