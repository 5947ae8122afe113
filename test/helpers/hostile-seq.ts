/**
 * hostile-seq.ts — the hostile-sequence harness (issue #9's "Done when"), shared by
 * bench/hostile.ts (which reports timing) and test/vhost-user-hostile-seq.test.ts (which asserts
 * survival and integrity only).
 *
 * One server process (hostile-seq-server.ts) with two VMPI devices, A and B, on two sockets.
 * This process plays a well-behaved VM on B: SDUs of the hostile-seq-format.ts format stream
 * guest → host through B's tx ring, event-driven (kick and call eventfds, EVENT_IDX), and the
 * server checks every one. An attacker process (hostile-attacker.ts) runs N hostile cases against
 * A, each a fresh connection, each followed by a probe that A still answers. The run is three
 * periods: baseline (no attack), attack, recovery; B's completed SDUs are counted per window.
 * The server's RSS is sampled from /proc every 50 ms.
 *
 * CPU placement (`cpus`): with 'shared' every process may run on every CPU as equals, so on a
 * small or busy machine the attacker's own work (its sends, polls and fds: 0.1-0.2 of a core)
 * takes CPU time from the server and from B's sender, and part of B's drop measures the
 * machine, not the server. 'split' (when there are at least 2 CPUs and taskset(1)) gives the attacker one CPU of
 * its own and keeps the server and B's sender on the others, as a hostile VM has vCPUs of its
 * own: what the server itself spends on the attack still comes out of B's share. 'nice' leaves
 * every process on every CPU but runs the attacker at nice 19, so its work yields to theirs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserFrontend } from '../frontend/frontend.js';
import type { DriverQueue } from '../frontend/driver-queue.js';
import { GuestMemoryImage } from '../frontend/guest-memory.js';
import { writeSdu } from './hostile-seq-format.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const TSX = import.meta.resolve('tsx');

export interface HostileSeqOptions {
  cases: number;
  seed: number;
  /** A case (its stream and the probe after it) taking longer than this is a hang. */
  caseBoundMs: number;
  /** Traffic on B before the baseline, not counted (default 1000 ms). */
  warmupMs?: number;
  baselineMs: number;
  recoveryMs: number;
  windowMs: number;
  /** SDU size in bytes (without the 4-byte VMPI frame header). */
  sduSize?: number;
  queueSize?: number;
  /** Pause of the attacker between cases (default 0: as fast as it can). */
  gapMs?: number;
  /** The whole attack period may take at most this long. */
  attackLimitMs?: number;
  /** Where the processes run (see the header; default 'shared'). */
  cpus?: CpuPlacement;
  log?: (line: string) => void;
}

export type CpuPlacement = 'shared' | 'split' | 'nice';

export interface HostileSeqResult {
  cases: number;
  casesRun: number;
  /** Cases over the bound (the attacker stops at the first). */
  hangs: string[];
  /** The attacker found the server not accepting or not answering. */
  dead: string | null;
  /** How the server process ended, if it did before we stopped it. */
  serverExit: string | null;
  caseMs: { median: number; p99: number; max: number };
  attackMs: number;
  rssBytes: { before: number; peak: number; after: number };
  /** B's completed SDUs per second, one entry per window. */
  windows: { baseline: number[]; attack: number[]; recovery: number[] };
  sdusPerSec: { baseline: number; attack: number; recovery: number };
  ratioAttack: number;
  ratioRecovery: number;
  integrity: { completed: number; serverOk: number; serverBad: number; firstBad: string | null; stalled: boolean };
  /** internalErrors: A's connections that ended with an untyped exception (a bug, though contained). */
  attacked: { connections: number; disconnects: number; internalErrors: number; firstInternalError: string | null };
  /** Cores each process used per period (server, this process = B's sender, attacker). */
  cpu: { baseline: Record<string, number>; attack: Record<string, number>; recovery: Record<string, number> };
  /** The CPUs each process was allowed, or the attacker's 'nice' (null: all of them, placement 'shared' or not possible). */
  placement: { server: string; sender: string; attacker: string } | null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a process has used so far. */
function cpuOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/** CPU use (cores) of each process over a period. */
function cpuMeter(pids: Record<string, number>): () => Record<string, number> {
  const t0 = performance.now();
  const c0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuOf(p)]));
  return () => {
    const dt = (performance.now() - t0) / 1000;
    return Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, Math.round(((cpuOf(p) - c0[k]!) / dt) * 100) / 100]));
  };
}

/** The CPUs this process may run on (/proc/self/status Cpus_allowed_list, e.g. "0-3,6"). */
function allowedCpus(): number[] {
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (!m) return [];
    return m[1]!.split(',').flatMap((r) => {
      const [a, b] = r.split('-').map(Number);
      return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => a! + i);
    });
  } catch {
    return [];
  }
}

/** Pin every thread of process `pid` to `cpus` (a taskset list); false when taskset is missing or failed. */
function pin(pid: number, cpus: string): boolean {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0;
}

class Child {
  readonly proc: ChildProcess;
  out = '';
  err = '';
  exit: string | null = null;
  private lineCb: ((line: string) => void) | null = null;
  private partial = '';
  /** `cpus`: a taskset list the process (and every thread it starts) is confined to, or 'nice' (nice 19). */
  constructor(script: string, arg: unknown, logLevel: string, cpus?: string) {
    const argv = [process.execPath, '--import', TSX, join(HERE, script), JSON.stringify(arg)];
    if (cpus === 'nice') argv.unshift('nice', '-n', '19');
    else if (cpus !== undefined) argv.unshift('taskset', '-c', cpus);
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, VMPI_LOG_LEVEL: logLevel } });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString();
      this.partial += d.toString();
      const lines = this.partial.split('\n');
      this.partial = lines.pop()!;
      for (const l of lines) this.lineCb?.(l);
      if (this.out.length > 1 << 20) this.out = this.out.slice(-(1 << 16));
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.err = (this.err + d.toString()).slice(-8000)));
    this.proc.on('exit', (code, signal) => (this.exit = `exited with code ${code}, signal ${signal}; stderr: ${this.err.slice(-1500)}`));
  }
  onLine(cb: (line: string) => void): void {
    this.lineCb = cb;
  }
  async waitLine(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.out);
      if (m) return m;
      if (this.exit) throw new Error(`waiting for ${re}: ${this.exit}`);
      if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${re}`);
      await sleep(5);
    }
  }
  async stop(): Promise<void> {
    if (this.exit) return;
    this.proc.stdin!.end();
    const end = Date.now() + 5000;
    while (!this.exit && Date.now() < end) await sleep(10);
    if (!this.exit) this.proc.kill('SIGKILL');
  }
}

/** The well-behaved VM on B: keeps B's tx ring full of checked SDUs. */
class Sender {
  completed = 0;
  private seq = 0;
  private sending = true;
  private pumping = false;
  private readonly slots: number[] = [];
  private readonly free: number[] = [];
  private readonly frame: Uint8Array;
  constructor(
    private readonly tx: DriverQueue,
    private readonly mem: GuestMemoryImage,
    size: number,
    queueSize: number,
  ) {
    this.frame = new Uint8Array(4 + size);
    new DataView(this.frame.buffer).setUint32(0, 1, true); // channel 1
    for (let i = 0; i < queueSize; i++) {
      this.slots.push(mem.alloc(this.frame.length, 64));
      this.free.push(i);
    }
    tx.onCall(() => this.pump());
  }
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        this.tx.harvest((token) => {
          this.completed++;
          this.free.push(token);
        });
        if (this.sending) {
          while (this.free.length > 0) {
            const slot = this.free.pop()!;
            writeSdu(this.frame.subarray(4), this.seq++);
            this.mem.write(this.slots[slot]!, this.frame);
            this.tx.addBuffer(this.slots[slot]!, this.frame.length, false, slot);
          }
          this.tx.publish();
        }
        if (!this.tx.enableCalls()) return;
      }
    } finally {
      this.pumping = false;
    }
  }
  get outstanding(): number {
    return this.tx.outstanding;
  }
  stop(): void {
    this.sending = false;
  }
}

export async function runHostileSequence(o: HostileSeqOptions): Promise<HostileSeqResult> {
  const log = o.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-hostile-seq-'));
  // 'split': the last allowed CPU is the attacker's, the others the server's and this process's.
  const all = allowedCpus();
  let placement: HostileSeqResult['placement'] = null;
  if (o.cpus === 'nice') placement = { server: 'all', sender: 'all', attacker: 'nice' };
  else if (o.cpus === 'split') {
    if (all.length < 2) log(`cpus 'split' needs at least 2 CPUs (have ${all.length}): every process shares them`);
    else {
      const victim = all.slice(0, -1).join(',');
      if (pin(process.pid, victim)) placement = { server: victim, sender: victim, attacker: String(all.at(-1)) };
      else log("cpus 'split': taskset failed; every process shares the CPUs");
    }
  }
  const server = new Child('hostile-seq-server.ts', { dir, names: ['A', 'B'], maxConnections: { A: 32 } }, process.env.HOSTILE_SERVER_LOG_LEVEL ?? 'warn', placement && placement.server !== 'all' ? placement.server : undefined);
  let attacker: Child | null = null;
  let fe: VhostUserFrontend | null = null;
  let mem: GuestMemoryImage | null = null;
  let queues: DriverQueue[] = [];
  let rssTimer: NodeJS.Timeout | null = null;
  try {
    await server.waitLine(/^READY$/m, 30_000);
    const pid = server.proc.pid!;
    let rssPeak = rssOf(pid);
    rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, rssOf(pid))), 50);

    mem = new GuestMemoryImage(16 * 2 ** 20, 'vmpi-hostile-seq-B');
    fe = new VhostUserFrontend(join(dir, 'B.sock'), { timeoutMs: 5000 });
    const queueSize = o.queueSize ?? 256;
    const hs = await fe.handshake({ memory: mem, queues: [0, 1].map((index) => ({ index, size: queueSize })) });
    queues = hs.queues;
    const sender = new Sender(hs.queues[1]!, mem, o.sduSize ?? 1024, queueSize);
    sender.pump();
    // The attacker starts (and generates its cases) before the baseline: only its attack counts.
    attacker = new Child('hostile-attacker.ts', { path: join(dir, 'A.sock'), cases: o.cases, seed: o.seed, boundMs: o.caseBoundMs, gapMs: o.gapMs ?? 0 }, 'silent', placement?.attacker);
    await attacker.waitLine(/^READY$/m, 60_000);

    const windowsFor = async (ms: number, until?: () => boolean): Promise<number[]> => {
      const rates: number[] = [];
      const end = Date.now() + ms;
      while (Date.now() < end && !(until?.() ?? false)) {
        const c0 = sender.completed;
        const t0 = performance.now();
        await sleep(o.windowMs);
        rates.push(((sender.completed - c0) * 1000) / (performance.now() - t0));
      }
      return rates;
    };

    // Warm-up (JIT, first ring laps), not counted.
    await windowsFor(o.warmupMs ?? 1000);
    log(`baseline: ${o.baselineMs} ms`);
    const pids = { server: pid, sender: process.pid };
    let meter = cpuMeter(pids);
    const baseline = await windowsFor(o.baselineMs);
    const cpuBaseline = { ...meter(), attacker: 0 };
    const rssBefore = rssOf(pid);
    rssPeak = rssBefore;

    log(`attack: ${o.cases} cases against A`);
    const caseMs: number[] = [];
    const hangs: string[] = [];
    let dead: string | null = null;
    let done = false;
    let attackerCpu = 0;
    let lastProgress = Date.now();
    const t0 = Date.now();
    const att = attacker;
    att.onLine((line) => {
      const [word, i, ms] = line.split(' ');
      if (word === 'CASE') {
        caseMs.push(Number(ms));
        lastProgress = Date.now();
        if (Number(i) % 100 === 99) log(`  ${Number(i) + 1} cases`);
      } else if (word === 'HANG') {
        hangs.push(line.slice(5));
      } else if (word === 'DEAD') {
        dead = line.slice(5);
      } else if (word === 'DONE') {
        attackerCpu = Number(i);
        done = true;
      }
    });
    att.proc.stdin!.write('GO\n');
    meter = cpuMeter(pids);
    const attackLimit = o.attackLimitMs ?? 600_000;
    const attack = await windowsFor(attackLimit, () => {
      if (done || hangs.length || dead || att.exit) return true;
      // The attacker itself stuck (e.g. in a blocking call): counts as a hang of the current case.
      if (Date.now() - lastProgress > o.caseBoundMs + 5000) {
        hangs.push(`case ${caseMs.length}: no progress for ${Date.now() - lastProgress} ms`);
        return true;
      }
      return false;
    });
    const attackMs = Date.now() - t0;
    const cpuAttack = { ...meter(), attacker: Math.round((attackerCpu / (attackMs / 1000)) * 100) / 100 };
    if (!done && !hangs.length && !dead) {
      if (att.exit) dead = `attacker ${att.exit}`;
      else hangs.push(`attack period over its limit of ${attackLimit} ms after ${caseMs.length} cases`);
    }
    await att.stop();
    const rssPeakAttack = rssPeak;

    log(`recovery: ${o.recoveryMs} ms`);
    meter = cpuMeter(pids);
    const recovery = await windowsFor(o.recoveryMs);
    const cpuRecovery = { ...meter(), attacker: 0 };
    const rssAfter = rssOf(pid);

    sender.stop();
    const drainEnd = Date.now() + 5000;
    while (sender.outstanding > 0 && Date.now() < drainEnd) {
      sender.pump();
      await sleep(5);
    }
    const stalled = sender.outstanding > 0;
    type Stats = { devices: Record<string, { ok: number; bad: number; firstBad: string | null; connections: number; disconnects: number; internalErrors: number; firstInternalError: string | null }> };
    let serverStats = null as Stats | null;
    if (!server.exit) {
      const mark = server.out.length;
      server.proc.stdin!.write('STATS\n');
      const end = Date.now() + 5000;
      while (!serverStats && Date.now() < end && !server.exit) {
        const m = /^STATS (.*)$/m.exec(server.out.slice(mark));
        if (m) serverStats = JSON.parse(m[1]!) as Stats;
        else await sleep(5);
      }
    }
    const b = serverStats?.devices.B;
    const a = serverStats?.devices.A;
    const sdusPerSec = { baseline: median(baseline), attack: median(attack), recovery: median(recovery) };
    return {
      cases: o.cases,
      casesRun: caseMs.length,
      hangs,
      dead,
      serverExit: server.exit,
      caseMs: { median: median(caseMs), p99: quantile(caseMs, 0.99), max: caseMs.length ? Math.max(...caseMs) : 0 },
      attackMs,
      rssBytes: { before: rssBefore, peak: rssPeakAttack, after: rssAfter },
      windows: { baseline, attack, recovery },
      sdusPerSec,
      ratioAttack: sdusPerSec.baseline > 0 ? sdusPerSec.attack / sdusPerSec.baseline : 0,
      ratioRecovery: sdusPerSec.baseline > 0 ? sdusPerSec.recovery / sdusPerSec.baseline : 0,
      integrity: { completed: sender.completed, serverOk: b?.ok ?? -1, serverBad: b?.bad ?? -1, firstBad: b ? b.firstBad : 'no STATS from the server', stalled },
      attacked: { connections: a?.connections ?? -1, disconnects: a?.disconnects ?? -1, internalErrors: a?.internalErrors ?? -1, firstInternalError: a ? a.firstInternalError : 'no STATS from the server' },
      cpu: { baseline: cpuBaseline, attack: cpuAttack, recovery: cpuRecovery },
      placement,
    };
  } finally {
    if (rssTimer) clearInterval(rssTimer);
    for (const q of queues) q.close();
    fe?.close();
    mem?.close();
    await attacker?.stop();
    await server.stop();
    if (placement && placement.sender !== 'all') pin(process.pid, all.join(','));
    rmSync(dir, { recursive: true, force: true });
  }
}
