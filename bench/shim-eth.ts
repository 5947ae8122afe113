/**
 * shim-eth.ts — `npm run bench:shim-eth`: frames per second through the shim DIF over Ethernet
 * (src/dif/shim-eth/) on a real AF_PACKET socket, one send system call per frame (`txBatch` 1:
 * the send path before batching) against the send queue's sendmmsg (`txBatch` 64, the default).
 *
 * Topology: one network namespace this bench creates (`vmpi-bench-shimeth-<pid>`, removed at the
 * end and on a signal), a veth pair in it at MTU 9000, a receiver process on one end (a shim-eth
 * IPC process whose application counts the SDUs of each flow) and, per window, a sender process
 * on the other (a shim-eth IPC process with the window's txBatch that writes SDUs of one size as
 * fast as its flow takes them for SHIMETH_WINDOW_MS). The two modes are interleaved (their order
 * alternates per repeat), so load from other processes falls on both alike: compare the ratios.
 *
 * Columns per size and mode (medians of the repeats): frames/s sent and received, the sender's
 * CPU µs per frame (user + system: the send path's cost, including the veth's delivery, which the
 * kernel runs in the sender's system call), frames per send call. Ratio columns are batched ÷ one
 * per frame. The load average is printed beside them.
 *
 * Environment: BENCH_REPEATS (3), SHIMETH_SIZES (64,1500,8993), SHIMETH_WINDOW_MS (2000).
 * Writes bench-results/shim-eth.json. Needs root (network namespaces, CAP_NET_RAW).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ShimEthIpcp } from '../src/dif/shim-eth/ipcp.js';
import type { Flow } from '../src/dif/api.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '..');
const MODES = [1, 64] as const;
const DIF = 'eth.bench';

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  const n = v === undefined || v === '' ? dflt : Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive integer`);
  return n;
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

// ---------------------------------------------------------------------------------------------
// The receiver: counts the SDUs of each flow, prints one JSON line when the flow ends.

async function receiver(ifname: string): Promise<void> {
  const ipcp = ShimEthIpcp.open({ difName: DIF, interface: ifname, keepaliveMs: 1000, keepaliveTimeoutMs: 10_000 });
  ipcp.register('sink', (r) => {
    const f = r.accept();
    let got = 0;
    let bytes = 0;
    f.on('data', (sdu: Uint8Array) => {
      got++;
      bytes += sdu.byteLength;
    });
    f.once('deallocated', () => process.stdout.write(JSON.stringify({ got, bytes }) + '\n'));
  });
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  await new Promise<void>((r) => process.stdin.on('end', r).resume());
  ipcp.close();
}

// ---------------------------------------------------------------------------------------------
// The sender: one window of one size and txBatch.

async function sender(ifname: string, size: number, txBatch: number, windowMs: number): Promise<void> {
  const ipcp = ShimEthIpcp.open({ difName: DIF, interface: ifname, txBatch, keepaliveMs: 1000, keepaliveTimeoutMs: 10_000 });
  const flow: Flow = await ipcp.allocateFlow('src', 'sink', {}, { timeoutMs: 10_000 });
  const sdu = new Uint8Array(size).fill(0x5a);
  await sleep(50);
  const calls0 = ipcp.stats.txCalls;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + windowMs;
  let sent = 0;
  while (performance.now() < end) {
    // Up to 64 SDUs per turn of the event loop (what an IPC hop's batch hands the flow), then yield.
    let k = 0;
    while (k < 64 && flow.write(sdu)) k++;
    sent += k;
    if (k < 64) await new Promise<void>((r) => flow.once('drain', r));
    else await new Promise<void>((r) => setImmediate(r));
  }
  await sleep(0);
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const calls = ipcp.stats.txCalls - calls0;
  await sleep(100);
  flow.deallocate('window over');
  ipcp.close();
  await sleep(50);
  process.stdout.write(JSON.stringify({ sent, wallMs, cpuUs: c.user + c.system, calls }) + '\n');
}

// ---------------------------------------------------------------------------------------------
// The bench.

interface Window {
  size: number;
  txBatch: number;
  sentPerS: number;
  recvPerS: number;
  cpuUsPerFrame: number;
  framesPerCall: number;
  lost: number;
}

function child(ns: string, args: string[]): ReturnType<typeof spawn> {
  const env: NodeJS.ProcessEnv = { ...process.env, VMPI_LOG_LEVEL: process.env.VMPI_LOG_LEVEL ?? 'warn' };
  delete env.NODE_OPTIONS;
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', SELF, ...args], { env, stdio: ['pipe', 'pipe', 'inherit'], cwd: ROOT });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:shim-eth needs root (a network namespace and AF_PACKET sockets)');
  const repeats = envInt('BENCH_REPEATS', 3);
  const windowMs = envInt('SHIMETH_WINDOW_MS', 2000);
  const sizes = (process.env.SHIMETH_SIZES ?? '64,1500,8993').split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0 || n > 8993) throw new Error(`SHIMETH_SIZES: ${s} is not a size 0..8993`);
    return n;
  });
  const ns = `vmpi-bench-shimeth-${process.pid}`;
  const a = `vbe${process.pid % 100000}a`;
  const b = `vbe${process.pid % 100000}b`;
  const cleanup = (): void => {
    spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
  };
  process.once('SIGINT', () => (cleanup(), process.exit(130)));
  process.once('SIGTERM', () => (cleanup(), process.exit(143)));
  ip('netns', 'add', ns);
  try {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'add', a, 'mtu', '9000', 'type', 'veth', 'peer', 'name', b, 'mtu', '9000');
    ip('-n', ns, 'link', 'set', a, 'up');
    ip('-n', ns, 'link', 'set', b, 'up');
    await sleep(200);
    const recv = child(ns, ['recv', b]);
    const recvLines = createInterface({ input: recv.stdout! })[Symbol.asyncIterator]();
    const nextLine = async (what: string, ms: number): Promise<Record<string, number>> => {
      const r = await Promise.race([recvLines.next(), sleep(ms).then(() => null)]);
      if (!r || r.done) throw new Error(`the receiver gave no ${what} within ${ms} ms`);
      return JSON.parse(r.value) as Record<string, number>;
    };
    await nextLine('ready line', 60_000);
    const windows: Window[] = [];
    for (let rep = 0; rep < repeats; rep++) {
      for (const size of sizes) {
        const order = rep % 2 === 0 ? MODES : [...MODES].reverse();
        for (const txBatch of order) {
          const s = child(ns, ['send', a, String(size), String(txBatch), String(windowMs)]);
          let out = '';
          s.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
          const code = await new Promise<number | null>((r) => s.once('exit', r));
          if (code !== 0) throw new Error(`the sender (size ${size}, txBatch ${txBatch}) exited ${code}`);
          const sent = JSON.parse(out.trim().split('\n').pop()!) as { sent: number; wallMs: number; cpuUs: number; calls: number };
          const got = await nextLine('count', 30_000);
          const w: Window = {
            size,
            txBatch,
            sentPerS: sent.sent / (sent.wallMs / 1000),
            recvPerS: got.got! / (sent.wallMs / 1000),
            cpuUsPerFrame: sent.cpuUs / sent.sent,
            framesPerCall: sent.sent / Math.max(1, sent.calls),
            lost: sent.sent - got.got!,
          };
          windows.push(w);
          process.stderr.write(`rep ${rep + 1}/${repeats} size ${size} txBatch ${txBatch}: ${Math.round(w.sentPerS)} sent/s, ${Math.round(w.recvPerS)} recv/s, ${w.cpuUsPerFrame.toFixed(2)} CPU µs/frame, ${w.framesPerCall.toFixed(1)} frames/call, load ${loadavg()[0]!.toFixed(1)}\n`);
        }
      }
    }
    recv.stdin!.end();
    await Promise.race([new Promise((r) => recv.once('exit', r)), sleep(5000)]);
    recv.kill();
    const rows = sizes.map((size) => {
      const m = (txBatch: number, k: keyof Window): number => median(windows.filter((w) => w.size === size && w.txBatch === txBatch).map((w) => w[k]));
      const one = { sent: m(1, 'sentPerS'), recv: m(1, 'recvPerS'), cpu: m(1, 'cpuUsPerFrame'), perCall: m(1, 'framesPerCall') };
      const bat = { sent: m(64, 'sentPerS'), recv: m(64, 'recvPerS'), cpu: m(64, 'cpuUsPerFrame'), perCall: m(64, 'framesPerCall') };
      const ratios = { sent: bat.sent / one.sent, recv: bat.recv / one.recv, cpu: bat.cpu / one.cpu };
      return { size, perFrame: one, batched: bat, ratios };
    });
    const load = loadavg();
    console.log(`bench:shim-eth: ${repeats} repeats × ${windowMs} ms windows, interleaved; load average ${load.map((l) => l.toFixed(1)).join(' ')} on ${cpus().length} CPUs`);
    console.log('| size | mode | sent frames/s | received frames/s | sender CPU µs/frame | frames/call |');
    console.log('|---:|---|---:|---:|---:|---:|');
    for (const r of rows) {
      for (const [name, x] of [['one call per frame', r.perFrame], ['sendmmsg (64)', r.batched]] as const) {
        console.log(`| ${r.size} | ${name} | ${Math.round(x.sent)} | ${Math.round(x.recv)} | ${x.cpu.toFixed(2)} | ${x.perCall.toFixed(1)} |`);
      }
      console.log(`| ${r.size} | ratio | ${r.ratios.sent.toFixed(2)}× | ${r.ratios.recv.toFixed(2)}× | ${r.ratios.cpu.toFixed(2)}× | |`);
    }
    const out = join(ROOT, 'bench-results', 'shim-eth.json');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify({ bench: 'shim-eth', date: new Date().toISOString(), repeats, windowMs, loadavg: load, cpus: cpus().length, rows, windows }, null, 2) + '\n');
    console.log(`wrote ${out}`);
  } finally {
    cleanup();
  }
}

const [role, ...rest] = process.argv.slice(2);
const run = role === 'recv' ? receiver(rest[0]!) : role === 'send' ? sender(rest[0]!, Number(rest[1]), Number(rest[2]), Number(rest[3])) : main();
run.catch((e: unknown) => {
  console.error(`bench:shim-eth${role ? ` (${role})` : ''}: ${(e as Error).message}`);
  process.exit(1);
});
