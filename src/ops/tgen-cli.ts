/**
 * tgen-cli.ts — what `vmpi tgen server|client|plot` runs once cli.ts has parsed the flags:
 * connect to the IPC daemon, run the traffic generator (src/dif/tgen.ts), print one line per run
 * and write the sweep's CSV and SVG.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { IpcClient } from '../dif/ipc/client.js';
import { DEFAULT_TGEN_APP, TgenClient, parseSweepCsv, runSweep, startTgenServer, sweepCsv, sweepSeries, sweepSvg, type RunResult } from '../dif/tgen.js';

export interface TgenCommon {
  ipcSocket?: string;
  dif?: string;
  app?: string;
}

export interface TgenClientArgs extends TgenCommon {
  src?: string;
  size: number;
  durationMs: number;
  count?: number;
  reliable: boolean;
  sweep?: { sizes: number[]; repeats: number; csv?: string; svg?: string; label: string; title?: string };
}

type Out = (line: string) => void;

const fmtRun = (r: RunResult): string =>
  `size ${r.size}: sent ${r.sent} SDUs (${r.refused} waits for room); server got ${r.sdus} SDUs, ${r.bytes} bytes in ${(r.elapsedNs / 1e9).toFixed(3)} s: ${r.mbps.toFixed(2)} Mbit/s`;

/** The DIF to use: the one given, else the daemon's only one. */
async function pickDif(client: IpcClient, dif: string | undefined): Promise<string> {
  if (dif !== undefined) return dif;
  const difs = await client.listDifs();
  if (difs.length === 1) return difs[0]!.name;
  throw new Error(`give --dif NAME: the IPC daemon offers ${difs.length === 0 ? 'no DIF' : difs.map((d) => d.name).join(', ')}`);
}

/** Serve until `stop` resolves (a signal). */
export async function tgenServer(args: TgenCommon, stop: Promise<unknown>, out: Out): Promise<number> {
  const client = await IpcClient.connect(args.ipcSocket);
  try {
    const dif = await pickDif(client, args.dif);
    const app = args.app ?? DEFAULT_TGEN_APP;
    const server = await startTgenServer(client, dif, app, {
      onRun: (r) => out(`flow ${r.flow} (${r.remoteApp}) run ${r.run} size ${r.size}: ${r.sdus} SDUs, ${r.bytes} bytes in ${(r.elapsedNs / 1e9).toFixed(3)} s: ${r.mbps.toFixed(2)} Mbit/s`),
      onFlowEnd: (n, t) => out(`flow ${n} ended: ${t.sdus} SDUs, ${t.bytes} bytes${t.unexpected ? `, ${t.unexpected} unexpected` : ''}`),
    });
    out(`tgen server: ${app} registered in ${dif}`);
    await Promise.race([stop, new Promise<void>((resolve) => client.once('close', () => resolve()))]);
    if (client.closed) throw new Error('the IPC daemon connection closed');
    await server.close();
    return 0;
  } finally {
    client.close();
  }
}

export async function tgenClient(args: TgenClientArgs, out: Out): Promise<number> {
  const client = await IpcClient.connect(args.ipcSocket);
  try {
    const dif = await pickDif(client, args.dif);
    const tg = await TgenClient.open(client, dif, args.app ?? DEFAULT_TGEN_APP, {
      ...(args.src === undefined ? {} : { src: args.src }),
      qos: args.reliable ? { reliable: true, inOrder: true } : {},
    });
    try {
      if (!args.sweep) {
        const r = await tg.run({ sduSize: args.size, durationMs: args.durationMs, ...(args.count === undefined ? {} : { count: args.count }) });
        out(fmtRun(r));
        return 0;
      }
      const sw = args.sweep;
      const rows = await runSweep(tg, {
        sizes: sw.sizes,
        repeats: sw.repeats,
        durationMs: args.durationMs,
        onRun: (r, i) => out(`  [${i + 1}/${sw.repeats}] ${fmtRun(r)}`),
      });
      for (const r of rows) out(`size ${r.size}: mean ${r.mean.toFixed(2)} Mbit/s, 95% CI [${r.low.toFixed(2)}, ${r.high.toFixed(2)}] over ${r.n} runs`);
      if (sw.csv) {
        writeFileSync(sw.csv, sweepCsv(rows));
        out(`wrote ${sw.csv}`);
      }
      if (sw.svg) {
        writeFileSync(sw.svg, sweepSvg([sweepSeries(sw.label, rows)], sw.title));
        out(`wrote ${sw.svg}`);
      }
      return 0;
    } finally {
      await tg.close();
    }
  } finally {
    client.close();
  }
}

/** Plot several sweep CSVs (LABEL=FILE) into one SVG. */
export function tgenPlot(inputs: { label: string; file: string }[], svg: string, title: string | undefined, out: Out): number {
  const series = inputs.map((i) => sweepSeries(i.label, parseSweepCsv(readFileSync(i.file, 'utf8'))));
  writeFileSync(svg, sweepSvg(series, title));
  out(`wrote ${svg}`);
  return 0;
}
