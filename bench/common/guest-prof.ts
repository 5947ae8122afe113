/**
 * guest-prof.ts — where the time goes in a normal-dif series' Node guests (Fig. 4b FIG4B_PROFILE=1,
 * Fig. 4c FIG4C_PROFILE=1): a GuestProfiler. Every Node process started with its nodeCmd() (the
 * guest's `vmpi guest`, the tgen server and client) is profiled during the measured runs only
 * (hookJs) and, at the series' end, a summary made in the guest is printed: busy time by module
 * (ipc/, normal/, shim-hv/, vmpi/, core/, node internals, GC) and the hottest functions.
 * Around every run, each guest's CPU per SDU (user/sys/softirq/idle, per Node process) is printed.
 * With `cpu` only (Fig. 4b FIG4B_CPU=1), just those CPU reports, at full speed.
 * Off by default (a disabled profiler does nothing): profiling slows the guest itself, so the
 * numbers of a profiled run are not the figure's.
 */
import type { Guest } from '../../test/helpers/guest.js';

/**
 * Preloaded into each profiled process: the profiler runs only between /tmp/prof-start and
 * /tmp/prof-stop (written around the measured runs), so Node's start under TCG, slow enough
 * already, is neither slowed further nor part of the profile. One profile per process, written
 * to /tmp/prof/<pid>.cpuprofile on stop. Sampled every `intervalUs`.
 */
const hookJs = (intervalUs: number): string => `
import { Session } from 'node:inspector';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
const s = new Session();
s.connect();
let on = false;
const t = setInterval(() => {
  if (!on && existsSync('/tmp/prof-start')) {
    on = true;
    s.post('Profiler.enable', () => s.post('Profiler.setSamplingInterval', { interval: ${intervalUs} }, () => s.post('Profiler.start')));
  } else if (on && existsSync('/tmp/prof-stop')) {
    on = false;
    clearInterval(t);
    s.post('Profiler.stop', (err, r) => {
      if (err) return;
      mkdirSync('/tmp/prof', { recursive: true });
      writeFileSync('/tmp/prof/' + process.pid + '.cpuprofile', JSON.stringify(r.profile));
    });
  }
}, 200);
t.unref();
`;

/** Summarise one .cpuprofile: self time by module and by function, over the non-idle samples. */
const SUM_JS = `
import { readFileSync } from 'node:fs';
const p = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const t = new Map();
for (let i = 0; i < p.samples.length; i++) t.set(p.samples[i], (t.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
let busy = 0, idle = 0;
const fn = new Map(), mod = new Map();
const modOf = (u) => { if (!u) return '(vm)'; if (u.startsWith('node:')) return u.split('/').slice(0, 2).join('/'); const m = /dist\\/src\\/(.*)\\/[^/]+$/.exec(u); return m ? m[1] : u.split('/').slice(-2).join('/'); };
for (const [id, us] of t) {
  const cf = byId.get(id).callFrame;
  if (cf.functionName === '(idle)') { idle += us; continue; }
  busy += us;
  const k = (cf.functionName || '(anon)') + ' ' + cf.url.split('/').slice(-2).join('/') + ':' + (cf.lineNumber + 1);
  fn.set(k, (fn.get(k) ?? 0) + us);
  const m = cf.url ? modOf(cf.url) : cf.functionName;
  mod.set(m, (mod.get(m) ?? 0) + us);
}
const pr = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => '  ' + (100 * us / busy).toFixed(1).padStart(5) + '% ' + (us / 1000).toFixed(0).padStart(7) + ' ms  ' + k).join('\\n');
console.log('PROF ' + process.argv[2] + ': busy ' + (busy / 1000).toFixed(0) + ' ms, idle ' + (idle / 1000).toFixed(0) + ' ms');
console.log('by module:\\n' + pr(mod, 14));
console.log('by function:\\n' + pr(fn, 28));
`;

/** Per guest: `cpu` line of /proc/stat (jiffies), interrupts and context switches so far, and utime+stime of each Node process, by name. */
export type CpuSnap = { total: number[]; intr: number; ctxt: number; procs: Map<string, number> }[];

const SNAP_CMD = `head -1 /proc/stat; grep -E '^(intr|ctxt) ' /proc/stat | cut -d' ' -f1,2; for p in $(pidof node); do echo "P $(cut -d' ' -f14,15 /proc/$p/stat) $(tr '\\0' ' ' < /proc/$p/cmdline | cut -c1-80)"; done`;

function parseSnap(out: string): CpuSnap[number] {
  let total: number[] = [];
  let intr = 0;
  let ctxt = 0;
  const procs = new Map<string, number>();
  for (const raw of out.split('\n')) {
    const l = raw.replace(/\r$/, '');
    if (/^cpu\s/.test(l)) total = l.trim().split(/\s+/).slice(1).map(Number);
    const c = /^(intr|ctxt) (\d+)$/.exec(l);
    if (c) {
      if (c[1] === 'intr') intr = Number(c[2]);
      else ctxt = Number(c[2]);
    }
    const m = /^P (\d+) (\d+) (.*)$/.exec(l);
    if (m) {
      const name = m[3]!.includes(' guest ') ? 'vmpi-guest' : m[3]!.includes('tgen server') ? 'tgen-server' : m[3]!.includes('driver') ? 'tgen-client' : m[3]!.trim();
      procs.set(name, (procs.get(name) ?? 0) + Number(m[1]) + Number(m[2]));
    }
  }
  return { total, intr, ctxt, procs };
}

/** One guest profiler for a series' guests; `enabled` false: every method does nothing. */
export class GuestProfiler {
  /** `cpu`: the per-run CPU reports (snapshot/report) without the profiler (no slowdown). */
  constructor(
    readonly enabled: boolean,
    readonly cpu = false,
    /** Sampling interval, µs: under TCG every sample costs; 1000 slowed the guests' relay ~10× (Fig. 4b). */
    readonly intervalUs = 1000,
  ) {}

  /** `node` with the profiler flags (or plain `node`). */
  nodeCmd(): string {
    return this.enabled ? 'node --import /tmp/prof-hook.mjs' : 'node';
  }

  /** Write the preload and the summariser into a guest (before any nodeCmd() process starts there). */
  async install(g: Guest): Promise<void> {
    if (!this.enabled) return;
    const w = (name: string, text: string) => `echo ${Buffer.from(text).toString('base64')} | base64 -d > /tmp/${name}`;
    const r = await g.exec(`mkdir -p /tmp/prof && ${w('prof-hook.mjs', hookJs(this.intervalUs))} && ${w('prof-sum.mjs', SUM_JS)}`, 30_000);
    if (r.rc !== 0) throw new Error(`cannot install the profiler in the guest:\n${r.out}`);
  }

  /** Stop the guest's profilers and print each profile's summary through `say`. */
  async collect(g: Guest, label: string, say: (s: string) => void): Promise<void> {
    if (!this.enabled) return;
    await g.exec('touch /tmp/prof-stop; sleep 5', 60_000);
    const r = await g.exec('for f in /tmp/prof/*.cpuprofile; do node /tmp/prof-sum.mjs $f; done', 300_000);
    for (const line of r.out.split('\n')) say(`${label} ${line.replace(/\r$/, '')}`);
  }

  /** CPU counters of every guest before a run (and the profilers started); empty when disabled. */
  async snapshot(guests: Guest[]): Promise<CpuSnap> {
    if (!this.enabled && !this.cpu) return [];
    const out: CpuSnap = [];
    for (const g of guests) out.push(parseSnap((await g.exec(`${this.enabled ? 'touch /tmp/prof-start; ' : ''}${SNAP_CMD}`, 30_000)).out));
    return out;
  }

  /**
   * After a run of `sdus` SDUs: each guest's CPU per SDU (µs; jiffies are 10 ms) split into user,
   * system, softirq and idle, and each Node process's share (user+system); labels[i] names guest i.
   */
  async report(guests: Guest[], before: CpuSnap, sdus: number, size: number, say: (s: string) => void, labels: readonly string[] = guests.map((_, i) => `vm${i + 1}`)): Promise<void> {
    if ((!this.enabled && !this.cpu) || sdus <= 0) return;
    for (let i = 0; i < guests.length; i++) {
      const a = before[i]!;
      const b = parseSnap((await guests[i]!.exec(SNAP_CMD, 30_000)).out);
      const d = b.total.map((v, k) => v - (a.total[k] ?? 0));
      const us = (j: number) => ((j * 10_000) / sdus).toFixed(1);
      // /proc/stat cpu: user nice system idle iowait irq softirq ...
      const cells = [`user ${us(d[0]! + d[1]!)}`, `sys ${us(d[2]!)}`, `irq+softirq ${us(d[5]! + d[6]!)}`, `idle ${us(d[3]! + d[4]!)}`];
      // Wake-ups: interrupts and context switches per 1000 SDUs (a halted TCG vCPU woken by an interrupt costs more than a read).
      cells.push(`intr/kSDU ${((1000 * (b.intr - a.intr)) / sdus).toFixed(0)}`, `ctxt/kSDU ${((1000 * (b.ctxt - a.ctxt)) / sdus).toFixed(0)}`);
      for (const [name, j] of b.procs) cells.push(`${name} ${us(j - (a.procs.get(name) ?? 0))}`);
      say(`cpu ${labels[i]!} ${size} B, ${sdus} SDUs: µs/SDU ${cells.join(', ')}`);
    }
  }
}
