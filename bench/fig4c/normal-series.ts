/**
 * normal-series.ts — Fig. 4c's own system (inter-host VM → VM goodput): a normal DIF over
 * shim-hv + shim-eth + shim-hv as users run it, on the topology of test/helpers/two-hosts.ts (two
 * "hosts" = network namespaces joined by a veth with MTU 9000, each its own `vmpi serve` and one
 * Node guest; the shim DIF over Ethernet between the hosts, VLAN 100 tagged by the shim).
 * VM-B runs `vmpi tgen server`; VM-A a small driver on the client library that keeps one tgen
 * flow (the flow-control QoS cube: in order, no retransmission) and does one tgen run per request
 * from the bench. Goodput is measured by the tgen server in VM-B. A Series (../common/series.ts).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ROOT, type Guest } from '../../test/helpers/guest.js';
import { GUEST_CLI, runInBackground, TwoHosts, writeGuestFile } from '../../test/helpers/two-hosts.js';
import { BOOT_MS, GUEST_MEM_MB, type Measurement, type Series } from '../common/series.js';
import { GuestProfiler } from '../common/guest-prof.js';
import type { Fig4cContext } from './systems.js';

const NORMAL_DIF = 'n.DIF';

/**
 * FIG4C_PROFILE=1: each host's `vmpi serve` runs with --cpu-prof, its profile written at the end
 * of the series (a clean SIGTERM exit) into FIG4C_PROFILE_DIR (default bench-results/fig4c-prof/),
 * as serve-<namespace>.cpuprofile (read with bench/fig4c/prof-top.ts); and the guests' Node
 * processes (`vmpi guest`, the tgen server in VM-B, the driver in VM-A) are profiled as in
 * Fig. 4b (../common/guest-prof.ts): CPU per SDU of each guest after every run, the profiles'
 * summaries and the guests' EFCP counters at the series' end.
 */
const PROFILE = process.env.FIG4C_PROFILE === '1';
const profiler = new GuestProfiler(PROFILE);
/** The guests' metrics listener (on only with FIG4C_PROFILE=1: the EFCP counters at the end). */
const GUEST_METRICS = '127.0.0.1:19464';
if (PROFILE) {
  const dir = resolve(process.env.FIG4C_PROFILE_DIR ?? join(ROOT, 'bench-results', 'fig4c-prof'));
  mkdirSync(dir, { recursive: true });
  process.env.VMPI_SERVE_CPU_PROF_DIR = dir;
}
const CMD = '/tmp/fig4c-cmd';

/** In VM-A: one tgen flow over n.DIF, one run per CMD written by the bench. */
const DRIVER_JS = `
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
import { DEFAULT_TGEN_APP, TgenClient } from '/opt/vmpi/dist/src/dif/tgen.js';
const out = (tag, v) => console.log('FIG4C-' + tag + ' ' + JSON.stringify(v));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
let tg = null;
const end = Date.now() + 180000;
let last = '';
while (tg === null) {
  try {
    tg = await TgenClient.open(c, '${NORMAL_DIF}', DEFAULT_TGEN_APP, { src: 'fig4c/1', qos: { reliable: false, inOrder: true } });
  } catch (e) {
    last = e.code + ': ' + e.message;
    if (Date.now() > end) { out('ERROR', { id: 0, msg: 'no tgen flow: ' + last }); process.exit(1); }
    await sleep(1000);
  }
}
out('READY', { qos: tg.flow?.qos ?? null });
for (;;) {
  if (!existsSync('${CMD}')) { await sleep(20); continue; }
  const [id, size, ms] = readFileSync('${CMD}', 'utf8').trim().split(' ').map(Number);
  rmSync('${CMD}');
  try {
    const r = await tg.run({ sduSize: size, durationMs: ms, reportTimeoutMs: 10000 });
    out('RESULT', { id, mbps: r.mbps, sdus: r.sdus, bytes: r.bytes, elapsedNs: r.elapsedNs, sent: r.sent });
  } catch (e) {
    out('ERROR', { id, msg: String(e && e.message || e) });
  }
}
`;

/** The VMPI device counters of one serve's metrics (vmpi_device_*_total, by vmpi_id and label): name → value. */
export function deviceCounters(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics.matchAll(/^vmpi_device_(sdus|calls|kicks|rx_queue_full)_total\{vmpi_id="(\d+)"(?:,direction="(\w+)")?\} (\d+(?:\.\d+)?)$/gm)) {
    out.set(`${m[2]}.${m[1]}${m[3] ? `.${m[3]}` : ''}`, Number(m[4]));
  }
  return out;
}

/**
 * What each host's VMPI device did over a run, per SDU of it: SDUs per host-to-guest call
 * (interrupt) and per guest kick, times the guest's rx buffers were all full. A host that hands
 * its guest fewer SDUs per interrupt costs the guest more per SDU (under TCG an interrupt and the
 * wake-up behind it are dear), so this is where Fig. 4b's one relay and 4c's two differ.
 */
export function deviceDeltas(before: Map<string, number>[], after: Map<string, number>[], sdus: number): string {
  const cells: string[] = [];
  for (let h = 0; h < after.length; h++) {
    const d = (k: string) => (after[h]!.get(k) ?? 0) - (before[h]!.get(k) ?? 0);
    const ids = new Set([...after[h]!.keys()].map((k) => k.split('.')[0]!));
    for (const id of ids) {
      const toG = d(`${id}.sdus.to_guest`);
      const fromG = d(`${id}.sdus.from_guest`);
      const calls = d(`${id}.calls`);
      const kicks = d(`${id}.kicks`);
      const per = (n: number, by: number) => (by > 0 ? (n / by).toFixed(1) : '-');
      cells.push(`host-${h === 0 ? 'A' : 'B'} vm ${id}: to guest ${toG} SDUs in ${calls} calls (${per(toG, calls)}/call), from guest ${fromG} in ${kicks} kicks (${per(fromG, kicks)}/kick), rx full ${d(`${id}.rx_queue_full`)}`);
    }
  }
  return cells.length ? cells.join('; ') : `no device counters (serve metrics unreachable; ${sdus} SDUs)`;
}

export class NormalInterHostSeries implements Series {
  static readonly key = 'normal-dif';
  readonly key = 'normal-dif';
  readonly name = 'normal DIF over shim-hv + shim-eth (802.1Q, MTU 9000) + shim-hv (vmpi-tgen, flow control, no retransmission)';
  private th: TwoHosts | null = null;
  private runs = 0;

  private readonly say: (s: string) => void;

  /** The two-host network of the context is not used: the topology makes (and removes) its own namespaces. */
  constructor(ctx: Pick<Fig4cContext, 'say'> = { say: () => {} }) {
    this.say = ctx.say;
  }

  async start(): Promise<void> {
    this.th = await TwoHosts.start({
      shim: 'eth', name: 'vmpi-fig4c', vmIds: [91, 92], memMb: GUEST_MEM_MB, guestTimeoutMs: 0, bootMs: BOOT_MS, logLevel: 'warn', say: this.say, serveMetrics: true,
      ...(PROFILE ? { guestNode: { prepare: (g: Guest) => profiler.install(g), nodeCmd: () => profiler.nodeCmd() }, guestMetrics: GUEST_METRICS } : {}),
    });
    const [vmA, vmB] = [this.th.a.guest, this.th.b.guest];
    const srv = await vmB.exec(`(${profiler.nodeCmd()} ${GUEST_CLI} tgen server --dif ${NORMAL_DIF} >/tmp/vmpi-tgen.log 2>&1 &)`, 30_000);
    if (srv.rc !== 0) throw new Error(`tgen server did not start in VM-B:\n${srv.out}`);
    await writeGuestFile(vmA, '/tmp/fig4c-driver.mjs', DRIVER_JS);
    const from = runInBackground(vmA, '/tmp/fig4c-driver.mjs', profiler.nodeCmd());
    await Promise.race([
      vmA.waitJson('FIG4C-READY', 240_000, from),
      vmA.waitJson<{ msg: string }>('FIG4C-ERROR', 240_000, from).then((e) => Promise.reject(new Error(`VM-A driver: ${e.msg}\n${this.th?.logs() ?? ''}`))),
    ]);
  }

  async measure(size: number, seconds: number): Promise<Measurement> {
    const g: Guest = this.th!.a.guest;
    const guests = [g, this.th!.b.guest];
    const cpu0 = await profiler.snapshot(guests);
    const dev0 = [deviceCounters(this.th!.a.metrics()), deviceCounters(this.th!.b.metrics())];
    const id = ++this.runs;
    const ms = Math.round(seconds * 1000);
    const from = g.mark;
    const w = await g.exec(`echo "${id} ${size} ${ms}" > ${CMD}.new && mv ${CMD}.new ${CMD}`, 30_000);
    if (w.rc !== 0) throw new Error(`cannot send the run request to VM-A:\n${w.out}`);
    const m = await g.waitFor(new RegExp(`FIG4C-(RESULT|ERROR) (\\{"id":${id},[^\\r\\n]*\\})\\r?\\n`), ms + 60_000, from);
    const v = JSON.parse(m[2]!) as { msg?: string; mbps: number; sdus: number; bytes: number; elapsedNs: number; sent: number };
    if (m[1] === 'ERROR') throw new Error(`VM-A tgen run: ${v.msg}`);
    this.say(`devices ${size} B, ${v.sdus} SDUs: ${deviceDeltas(dev0, [deviceCounters(this.th!.a.metrics()), deviceCounters(this.th!.b.metrics())], v.sdus)}`);
    await profiler.report(guests, cpu0, v.sdus, size, this.say, ['VM-A', 'VM-B']);
    const secs = v.elapsedNs / 1e9;
    return { mbps: v.mbps, pps: secs > 0 ? v.sdus / secs : 0, seconds: secs, sdus: v.sdus, bytes: v.bytes, sentPps: v.sent / seconds };
  }

  /**
   * The shim-eth counters of both host serves (`vmpi dif show --json`): frames each way, send
   * calls, full device queues, send errors, and the drops by reason that are not zero, so a loss
   * on the host↔host leg shows in the bench's output.
   */
  private ethCounters(th: TwoHosts): void {
    for (const [name, side] of [['host-A', th.a], ['host-B', th.b]] as const) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'dif', 'show', 'eth.v100', '--ipc-socket', side.ipcSocket, '--json'], { encoding: 'utf8', timeout: 20_000 });
      try {
        const st = (JSON.parse(r.stdout) as { state: { stats: Record<string, unknown> & { drops: Record<string, number>; rxBudgetDrops: Record<string, number> } } }).state.stats;
        const nz = (o: Record<string, number>): string => Object.entries(o).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
        this.say(`shim-eth ${name}: tx ${String(st.txFrames)} frames in ${String(st.txCalls)} calls, rx ${String(st.rxFrames)}, txFull ${String(st.txFull)}, txErrors ${String(st.txErrors)}; drops: ${nz(st.drops)}; rx budget drops: ${nz(st.rxBudgetDrops)}`);
      } catch {
        this.say(`shim-eth ${name}: no counters (${(r.stderr || r.stdout || String(r.error)).trim().slice(0, 200)})`);
      }
    }
  }

  /**
   * The host serves' normal DIF relay counters (`vmpi dif show n.DIF --json`: the RMT's forwarded
   * and dropped PDUs, what waits in its port queues now), so a relay that drops or queues shows.
   */
  private relayCounters(th: TwoHosts): void {
    for (const [name, side] of [['host-A', th.a], ['host-B', th.b]] as const) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'dif', 'show', NORMAL_DIF, '--ipc-socket', side.ipcSocket, '--json'], { encoding: 'utf8', timeout: 20_000 });
      try {
        const state = (JSON.parse(r.stdout) as { state: { maxSdu: number; lowerFlows?: { dif: string; maxSdu: number }[]; rmt: { stats: Record<string, unknown>; ports: { id: number; queuedPdus: number; blocked: boolean }[] } } }).state;
        const rmt = state.rmt;
        this.say(`normal DIF ${name}: max SDU ${state.maxSdu}; lower flows ${(state.lowerFlows ?? []).map((f) => `${f.dif} max SDU ${f.maxSdu}`).join(', ')}`);
        const st = Object.entries(rmt.stats).filter(([, v]) => typeof v === 'number' ? v > 0 : Object.values(v as Record<string, number>).some((x) => x > 0));
        const ports = rmt.ports.map((p) => `${p.id}:${p.queuedPdus}${p.blocked ? ' blocked' : ''}`).join(' ');
        this.say(`normal DIF relay ${name}: ${st.map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(', ') || 'all zero'}; ports (queued PDUs) ${ports}`);
      } catch {
        this.say(`normal DIF relay ${name}: no counters (${(r.stderr || r.stdout || String(r.error)).trim().slice(0, 200)})`);
      }
    }
  }

  /**
   * FIG4C_PROFILE=1: each guest's EFCP and RMT counters that are not zero (window stalls, losses,
   * queues), from its metrics as its host's serve fetches them through the VMPI
   * (GET /metrics/guest/<vmpi-id>).
   */
  private guestCounters(th: TwoHosts): void {
    for (const [name, side, id] of [['VM-A', th.a, 91], ['VM-B', th.b, 92]] as const) {
      const text = side.metrics(`/metrics/guest/${id}`);
      const lines = text.split('\n').filter((l) => /^vmpi_dif_(efcp|rmt)/.test(l) && !/ 0$/.test(l));
      if (!text) this.say(`${name}: no guest metrics`);
      for (const l of lines) this.say(`${name} ${l}`);
    }
  }

  async stop(): Promise<void> {
    const th = this.th;
    this.th = null;
    if (th) {
      this.ethCounters(th);
      this.relayCounters(th);
      if (PROFILE) {
        this.guestCounters(th);
        await profiler.collect(th.a.guest, 'VM-A', this.say);
        await profiler.collect(th.b.guest, 'VM-B', this.say);
      }
      await Promise.all([th.a.guest.stop(), th.b.guest.stop()]);
      await th.close();
    }
  }
}
