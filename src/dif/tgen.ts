/**
 * tgen.ts — a traffic generator in the spirit of rina-tgen (paper, Section V): a server
 * registers an application name in a DIF through the IPC API and counts the SDUs and bytes that
 * arrive on each flow; a client allocates a flow and sends a unidirectional stream of SDUs of
 * one size for a duration or a count. Goodput is measured at the server and reported back to
 * the client over the same flow. A sweep repeats runs over a range of SDU sizes and summarises
 * each size by its mean and 95% confidence interval (Student's t), written as CSV and as an SVG
 * plot (plot.ts) like the paper's Fig. 4.
 *
 * In-flow sub-protocol (the flow carries data and control; 0-byte SDUs are valid data, so no
 * length can be reserved): a control SDU is the ASCII magic "TGN1" followed by JSON. A run
 * starts with START {run, size}; from then on every SDU of exactly `size` bytes is data, and an
 * SDU of any other length is control. Control SDUs are padded with a space when their length
 * would equal `size`. STOP {run, sent, sentBytes} ends the run; the server answers REPORT
 * {run, sdus, bytes, elapsedNs, mbps} (server → client is only ever control). The client resends
 * STOP if no REPORT comes (a lossy flow may drop it); the server answers a repeated STOP with
 * the same REPORT. Goodput = data bytes × 8 / (arrival of the last data SDU − arrival of START),
 * in Mbit/s (10^6 bit/s).
 */
import type { Flow, QosRequest, SduBatch } from './api.js';
import { formatAppName } from './naming.js';
import type { IpcClient, ClientFlowRequest } from './ipc/client.js';
import { renderSvgPlot, type PlotSeries } from './plot.js';

const MAGIC = 'TGN1';
const MAGIC_BYTES = new TextEncoder().encode(MAGIC);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const DEFAULT_TGEN_APP = 'rina-tgen';

type Control =
  | { t: 'start'; run: number; size: number }
  | { t: 'stop'; run: number; sent: number; sentBytes: number }
  | { t: 'report'; run: number; sdus: number; bytes: number; elapsedNs: number; mbps: number };

export function encodeControl(msg: Control, dataSize: number): Uint8Array {
  const json = encoder.encode(JSON.stringify(msg));
  let len = MAGIC_BYTES.byteLength + json.byteLength;
  if (len === dataSize) len++;
  const out = new Uint8Array(len).fill(0x20);
  out.set(MAGIC_BYTES, 0);
  out.set(json, MAGIC_BYTES.byteLength);
  return out;
}

export function decodeControl(sdu: Uint8Array): Control | null {
  if (sdu.byteLength < MAGIC_BYTES.byteLength + 2) return null;
  for (let i = 0; i < MAGIC_BYTES.byteLength; i++) if (sdu[i] !== MAGIC_BYTES[i]) return null;
  try {
    const v = JSON.parse(decoder.decode(sdu.subarray(MAGIC_BYTES.byteLength))) as Control;
    if (typeof v !== 'object' || v === null || typeof v.run !== 'number') return null;
    if (v.t === 'start' && Number.isInteger(v.size) && v.size >= 0) return v;
    if (v.t === 'stop' || v.t === 'report') return v;
    return null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Server

export interface RunReport {
  run: number;
  sdus: number;
  bytes: number;
  elapsedNs: number;
  mbps: number;
}

export interface ServerRunEvent extends RunReport {
  /** Which accepted flow (1, 2, …). */
  flow: number;
  remoteApp: string;
  size: number;
}

export interface TgenServerOptions {
  /** Called for every finished run. */
  onRun?: (r: ServerRunEvent) => void;
  /** Called when a flow ends, with its totals. */
  onFlowEnd?: (flow: number, totals: { sdus: number; bytes: number; unexpected: number }) => void;
}

/**
 * Count one flow's SDUs and answer its runs (returns when the flow ends). SDUs are taken in
 * batches ('sdus' events: all SDUs of one read of the flow's fd in one call, as lengths into the
 * read buffer): data SDUs are counted by length without a Buffer, promise or event each, which
 * is what bench:fig4a measures in the guest; only control SDUs (another length) are looked at.
 */
export async function serveTgenFlow(flow: Flow, flowNo: number, opts: TgenServerOptions = {}): Promise<void> {
  let run: { id: number; size: number; sdus: number; bytes: number; start: number; last: number } | null = null;
  let last: RunReport | null = null;
  const totals = { sdus: 0, bytes: 0, unexpected: 0 };
  // Server → client carries only reports, so no length needs avoiding (-1).
  const reply = (r: RunReport): void => {
    try {
      flow.write(encodeControl({ t: 'report', ...r }, -1));
    } catch {
      // the flow ended meanwhile
    }
  };
  const control = (sdu: Uint8Array, now: number): void => {
    const c = decodeControl(sdu);
    if (c === null) {
      totals.unexpected++;
      return;
    }
    if (c.t === 'start') {
      run = { id: c.run, size: c.size, sdus: 0, bytes: 0, start: now, last: now };
    } else if (c.t === 'stop') {
      if (run !== null && run.id === c.run) {
        const elapsedNs = Math.round((run.last - run.start) * 1e6);
        const mbps = elapsedNs > 0 ? (run.bytes * 8 * 1000) / elapsedNs : 0;
        const report: RunReport = { run: run.id, sdus: run.sdus, bytes: run.bytes, elapsedNs, mbps };
        last = report;
        opts.onRun?.({ ...report, flow: flowNo, remoteApp: formatAppName(flow.remoteApp), size: run.size });
        run = null;
        reply(report);
      } else if (last !== null && last.run === c.run) {
        reply(last);
      }
    }
  };
  const onBatch = (batch: SduBatch): void => {
    const now = performance.now();
    const n = batch.count;
    for (let i = 0; i < n; ) {
      const r = run as { size: number; sdus: number; bytes: number; last: number } | null;
      if (r !== null) {
        // A run of data SDUs: counted by length only.
        const size = r.size;
        let k = i;
        while (k < n && batch.length(k) === size) k++;
        if (k > i) {
          r.sdus += k - i;
          r.bytes += (k - i) * size;
          r.last = now;
          totals.sdus += k - i;
          totals.bytes += (k - i) * size;
          i = k;
          continue;
        }
      }
      control(batch.sdu(i), now);
      i++;
    }
  };
  await new Promise<void>((resolve) => {
    flow.on('sdus', onBatch);
    if (flow.state === 'deallocated') resolve();
    else flow.once('deallocated', () => resolve());
  });
  flow.off('sdus', onBatch);
  opts.onFlowEnd?.(flowNo, totals);
}

export interface TgenServer {
  /** Stop accepting; flows in progress run to their end. */
  close(): Promise<void>;
  readonly flows: number;
}

/** Register `app` in `dif` and serve every incoming flow. */
export async function startTgenServer(client: IpcClient, dif: string, app: string, opts: TgenServerOptions = {}): Promise<TgenServer> {
  const reg = await client.register(dif, app);
  let flows = 0;
  const active = new Set<Promise<void>>();
  reg.on('request', (req: ClientFlowRequest) => {
    const n = ++flows;
    const p = req
      .accept()
      .then((flow) => serveTgenFlow(flow, n, opts))
      .catch(() => undefined)
      .finally(() => active.delete(p));
    active.add(p);
  });
  return {
    get flows() {
      return flows;
    },
    async close() {
      await reg.unregister().catch(() => undefined);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Client

export interface RunOptions {
  sduSize: number;
  /** Send for this long (default 1000 ms unless `count` is given). */
  durationMs?: number;
  /** Send exactly this many SDUs. */
  count?: number;
  /** How long to wait for the server's report before sending STOP again (default 2000 ms, 5 tries). */
  reportTimeoutMs?: number;
}

export interface RunResult extends RunReport {
  size: number;
  /** What the client sent. */
  sent: number;
  sentBytes: number;
  /** write() calls that returned false (backpressure). */
  refused: number;
}

export class TgenError extends Error {
  override name = 'TgenError';
}

/** SDUs per burst of a run (one writev where the flow has one). */
const BURST = 64;

/** A flow that takes many SDUs per call (ClientFlow.writev): how many it took, in order. */
interface WritevFlow {
  writev(sdus: readonly Uint8Array[]): number;
}

/** A client end: one flow to a tgen server, any number of runs on it. */
export class TgenClient {
  private nextRun = 1;
  private readonly waiters = new Map<number, (r: RunReport) => void>();
  private readonly reader: Promise<void>;

  constructor(readonly flow: Flow) {
    this.reader = (async () => {
      for await (const sdu of flow) {
        const c = decodeControl(sdu);
        if (c?.t === 'report') {
          const w = this.waiters.get(c.run);
          this.waiters.delete(c.run);
          w?.({ run: c.run, sdus: c.sdus, bytes: c.bytes, elapsedNs: c.elapsedNs, mbps: c.mbps });
        }
      }
    })();
  }

  /** Allocate a flow to the tgen server `dst` in `dif`. */
  static async open(client: IpcClient, dif: string, dst: string = DEFAULT_TGEN_APP, opts: { src?: string; qos?: QosRequest } = {}): Promise<TgenClient> {
    const flow = await client.allocate(dif, dst, { src: opts.src ?? `rina-tgen-client/${process.pid}`, qos: opts.qos ?? { reliable: true, inOrder: true } });
    return new TgenClient(flow);
  }

  /** One run: START, SDUs for the duration (or count), STOP, wait for the REPORT. */
  async run(opts: RunOptions): Promise<RunResult> {
    const size = opts.sduSize;
    if (!Number.isInteger(size) || size < 0 || size > this.flow.qos.maxSdu) throw new TgenError(`SDU size ${size} is outside 0..${this.flow.qos.maxSdu}`);
    const id = this.nextRun++;
    await this.flow.send(encodeControl({ t: 'start', run: id, size }, size));
    const data = new Uint8Array(size).fill(0xa5);
    let sent = 0;
    let refused = 0;
    const count = opts.count;
    const deadline = count === undefined ? performance.now() + (opts.durationMs ?? 1000) : Number.POSITIVE_INFINITY;
    // Bursts of BURST SDUs: one writev() where the flow has it (an IPC client's flow: the burst
    // leaves in one batch), else write() per SDU.
    const writev = (this.flow as Partial<WritevFlow>).writev?.bind(this.flow) ?? ((sdus: readonly Uint8Array[]): number => {
      let i = 0;
      while (i < sdus.length && this.flow.write(sdus[i]!)) i++;
      return i;
    });
    const burst: Uint8Array[] = new Array<Uint8Array>(BURST).fill(data);
    for (let bursts = 1; ; bursts++) {
      if (count !== undefined ? sent >= count : performance.now() >= deadline) break;
      const want = count !== undefined ? Math.min(BURST, count - sent) : BURST;
      const took = writev(want === BURST ? burst : burst.slice(0, want));
      sent += took;
      if (took < want) {
        refused++;
        await this.flow.send(data);
        sent++;
      }
      // Let timers and other I/O in (writes only wait when the socket is full).
      if ((bursts & 15) === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const report = await this.stop(id, sent, sent * size, size, opts.reportTimeoutMs ?? 2000);
    return { ...report, size, sent, sentBytes: sent * size, refused };
  }

  private async stop(id: number, sent: number, sentBytes: number, size: number, timeoutMs: number): Promise<RunReport> {
    const got = new Promise<RunReport>((resolve) => this.waiters.set(id, resolve));
    for (let attempt = 0; attempt < 5; attempt++) {
      await this.flow.send(encodeControl({ t: 'stop', run: id, sent, sentBytes }, size));
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([got, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)))]);
      clearTimeout(timer);
      if (r !== null) return r;
      if (this.flow.state !== 'allocated') break;
    }
    this.waiters.delete(id);
    throw new TgenError(`no report from the server for run ${id}${this.flow.state !== 'allocated' ? ` (flow ${this.flow.deallocationReason ?? 'deallocated'})` : ''}`);
  }

  async close(): Promise<void> {
    this.flow.deallocate('tgen done');
    await this.reader;
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/** Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30. */
const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

/** t(0.975, df): table up to 30, then the Cornish–Fisher expansion around the normal quantile. */
export function tQuantile975(df: number): number {
  if (!(df >= 1)) return Number.NaN;
  if (df <= 30) return T975[Math.floor(df) - 1]!;
  const z = 1.959963984540054;
  const z3 = z ** 3;
  const z5 = z ** 5;
  const z7 = z ** 7;
  return z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df ** 2) + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * df ** 3);
}

export interface MeanCi {
  mean: number;
  low: number;
  high: number;
  n: number;
}

/** Mean and 95% confidence interval of the mean (t-distribution); one value gives a zero-width interval. */
export function meanCi95(values: readonly number[]): MeanCi {
  const n = values.length;
  if (n === 0) return { mean: Number.NaN, low: Number.NaN, high: Number.NaN, n };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n === 1) return { mean, low: mean, high: mean, n };
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  const half = (tQuantile975(n - 1) * sd) / Math.sqrt(n);
  return { mean, low: mean - half, high: mean + half, n };
}

// ---------------------------------------------------------------------------------------------
// Sweep

export interface SweepOptions {
  sizes: readonly number[];
  /** Runs per size (default 20). */
  repeats?: number;
  /** Duration of one run in ms (default 1000). */
  durationMs?: number;
  onRun?: (r: RunResult, repeat: number) => void;
}

export interface SweepRow extends MeanCi {
  size: number;
  values: number[];
}

/** Runs every size `repeats` times on the client's flow. */
export async function runSweep(client: TgenClient, opts: SweepOptions): Promise<SweepRow[]> {
  const repeats = opts.repeats ?? 20;
  const rows: SweepRow[] = [];
  for (const size of opts.sizes) {
    const values: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const r = await client.run({ sduSize: size, durationMs: opts.durationMs ?? 1000 });
      opts.onRun?.(r, i);
      values.push(r.mbps);
    }
    rows.push({ size, values, ...meanCi95(values) });
  }
  return rows;
}

/** "0:4000:250" (from:to:step, inclusive) or "0,1000,1500". */
export function parseSizes(text: string): number[] {
  const bad = (): never => {
    throw new TgenError(`bad SDU sizes ${JSON.stringify(text)}: expected FROM:TO:STEP or a comma-separated list of byte counts`);
  };
  const num = (s: string): number => (/^\d+$/.test(s.trim()) ? Number(s.trim()) : bad());
  if (text.includes(':')) {
    const parts = text.split(':');
    if (parts.length !== 3) bad();
    const [from, to, step] = parts.map(num) as [number, number, number];
    if (step <= 0 || to < from) bad();
    const out: number[] = [];
    for (let v = from; v <= to; v += step) out.push(v);
    return out;
  }
  const list = text.split(',').map(num);
  if (list.length === 0) bad();
  return list;
}

export const SWEEP_CSV_HEADER = 'size,mean_mbps,ci95_low,ci95_high,repeats';

export function sweepCsv(rows: readonly SweepRow[]): string {
  const f = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : '');
  return [SWEEP_CSV_HEADER, ...rows.map((r) => `${r.size},${f(r.mean)},${f(r.low)},${f(r.high)},${r.n}`)].join('\n') + '\n';
}

/** Read back a sweep CSV (for plotting several systems together). */
export function parseSweepCsv(text: string): SweepRow[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines[0]?.trim() !== SWEEP_CSV_HEADER) throw new TgenError(`not a tgen sweep CSV (the header must be "${SWEEP_CSV_HEADER}")`);
  return lines.slice(1).map((l, i) => {
    const c = l.split(',').map(Number);
    if (c.length !== 5 || c.some((v, k) => Number.isNaN(v) && k !== 1)) throw new TgenError(`line ${i + 2}: expected 5 numbers`);
    return { size: c[0]!, mean: c[1]!, low: c[2]!, high: c[3]!, n: c[4]!, values: [] };
  });
}

export function sweepSeries(name: string, rows: readonly SweepRow[]): PlotSeries {
  return { name, points: rows.map((r) => ({ x: r.size, y: r.mean, yLow: r.low, yHigh: r.high })) };
}

export function sweepSvg(series: readonly PlotSeries[], title = 'Goodput vs SDU size (mean, 95% CI, linear fit)'): string {
  return renderSvgPlot({ title, xLabel: 'SDU size [bytes]', yLabel: 'Goodput [Mbit/s]', series, xMin: 0 });
}
