/**
 * ipc-hop.ts — `npm run bench:ipc-hop`: the host data path's socket hop alone (what one SDU costs
 * between an application and the IPC daemon, record.ts), in one process on one SOCK_SEQPACKET
 * socketpair: `single`, one sendmsg + one recvmsg per SDU (writeRecord/readRecord, the path
 * before batching, still used for SDUs over 64 KiB); `batch`, the Outbox's sendmmsg and
 * readRecords' recvmmsg (many records per system call and per call into the addon); `packed`,
 * the same with small SDUs packed many per record (what two ends that said hello do). Both ends
 * run in this process, so CPU µs per SDU is the sum of sending and receiving. Interleaved
 * repeats, medians; the machine's load is printed beside them.
 *
 * Environment: BENCH_REPEATS (5), IPCHOP_SDUS (200000 per window), IPCHOP_SIZES (64,256,1500,4000).
 * Writes bench-results/ipc-hop.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/sys/native.js';
import { Outbox, readRecord, readRecords, RECORDS_EMPTY, writeRecord, type RecordSink } from '../src/dif/ipc/record.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = SELF.includes(join('dist', 'bench')) ? resolve(dirname(SELF), '..', '..') : resolve(dirname(SELF), '..');
const MODES = ['single', 'batch', 'packed'] as const;
type Mode = (typeof MODES)[number];

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  const n = v === undefined || v === '' ? dflt : Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive integer`);
  return n;
}

/** One window: `count` SDUs of `size` bytes through the pair; CPU and wall µs per SDU. */
function window(mode: Mode, size: number, count: number): { cpuUs: number; wallUs: number } {
  const [a, b] = native.socketpairSeqpacket();
  try {
    const sdu = new Uint8Array(size).fill(0xa5);
    let got = 0;
    const sink: RecordSink = { sdu: () => void got++, bad: () => undefined, fds: () => undefined };
    const outbox = new Outbox(a, { onSent: () => undefined, onTooLarge: () => undefined });
    if (mode === 'packed') outbox.pack();
    let sent = 0;
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    while (got < count) {
      if (mode === 'single') {
        for (let k = 0; k < 64 && sent < count && writeRecord(a, sdu) === 'sent'; k++) sent++;
        while (readRecord(b, 65536).kind === 'sdu') got++;
      } else {
        for (let k = 0; k < 64 && sent < count && outbox.offer(sdu) === 'queued'; k++) sent++;
        outbox.flush();
        while (readRecords(b, 65536, 64, sink) !== RECORDS_EMPTY);
      }
    }
    const wallNs = Number(process.hrtime.bigint() - t0);
    const c = process.cpuUsage(c0);
    return { cpuUs: (c.user + c.system) / count, wallUs: wallNs / 1000 / count };
  } finally {
    native.close(a);
    native.close(b);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

function main(): void {
  const repeats = envInt('BENCH_REPEATS', 5);
  const count = envInt('IPCHOP_SDUS', 200_000);
  const sizes = (process.env.IPCHOP_SIZES ?? '64,256,1500,4000').split(',').map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 0 || s > 65535)) throw new Error('IPCHOP_SIZES: integers in 0..65535');
  const load0 = loadavg();
  console.log(`vmpi ipc-hop benchmark: ${sizes.length} sizes × ${MODES.join('/')} × ${repeats} repeats of ${count} SDUs; load ${load0.map((x) => x.toFixed(2)).join(' ')} on ${cpus().length} CPUs`);
  const samples: Record<string, Array<{ cpuUs: number; wallUs: number }>> = {};
  window('batch', 64, 10_000); // warm-up
  window('single', 64, 10_000);
  for (let r = 0; r < repeats; r++) {
    for (const size of sizes) {
      for (const mode of MODES) (samples[`${mode}:${size}`] ??= []).push(window(mode, size, count));
    }
  }
  const rows = sizes.map((size) => {
    const m = (mode: Mode, k: 'cpuUs' | 'wallUs'): number => median(samples[`${mode}:${size}`]!.map((w) => w[k]));
    return {
      size,
      singleCpuUs: m('single', 'cpuUs'),
      batchCpuUs: m('batch', 'cpuUs'),
      packedCpuUs: m('packed', 'cpuUs'),
      singleWallUs: m('single', 'wallUs'),
      batchWallUs: m('batch', 'wallUs'),
      packedWallUs: m('packed', 'wallUs'),
    };
  });
  console.log('\nµs per SDU (median; send + receive, both in this process)');
  const f = (x: number, n: number): string => x.toFixed(3).padStart(n);
  console.log(`${'size'.padStart(6)} ${'single cpu'.padStart(11)} ${'batch cpu'.padStart(10)} ${'packed cpu'.padStart(11)} ${'single/packed'.padStart(13)} | ${'single wall'.padStart(11)} ${'batch wall'.padStart(10)} ${'packed wall'.padStart(11)}`);
  for (const r of rows) {
    console.log(
      `${String(r.size).padStart(6)} ${f(r.singleCpuUs, 11)} ${f(r.batchCpuUs, 10)} ${f(r.packedCpuUs, 11)} ${(r.singleCpuUs / r.packedCpuUs).toFixed(2).padStart(13)} | ${f(r.singleWallUs, 11)} ${f(r.batchWallUs, 10)} ${f(r.packedWallUs, 11)}`,
    );
  }
  const load1 = loadavg();
  console.log(`load average at the end: ${load1.map((x) => x.toFixed(2)).join(' ')}`);
  const outDir = join(ROOT, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'ipc-hop.json'), JSON.stringify({ benchmark: 'ipc-hop', date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg: { start: load0, end: load1 }, options: { repeats, count, sizes }, results: rows, samples }, null, 2) + '\n');
  console.log(`results written to ${join(outDir, 'ipc-hop.json')}`);
}

main();
