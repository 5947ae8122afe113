/**
 * top/view.ts — the text of one `vmpi top` screen (or of `--once`'s table), from the rates
 * (snapshot.ts) and flows (flows.ts) of the last poll: plain lines, no terminal codes, none wider
 * than the width given, and at most `height` of them when a height is given (the live view).
 *
 * Owns: what the screen says and in which order — a title line (URL, version, server uptime,
 * restarts), a status line (unreachable, reset), the devices table (one row per VMPI device:
 * vmpi-id, socket name, state, rx/tx SDU/s and Mb/s, drops/s, rx-queue-full/s, backlog), the DIFs
 * table (per-DIF rates from the metrics), the flows table (from the IPC daemon), and the keys.
 * The device sort orders: id, rx, tx, drops (busiest first).
 */
import { basename } from 'node:path';
import { fitColumns, fmtDuration, fmtInt, fmtMbps, fmtRate, renderHeader, renderRow, cut, type Column } from './format.js';
import type { FlowRow } from './flows.js';
import type { DeviceRow, Rate, Rates, Snapshot } from './snapshot.js';

export const SORT_KEYS = ['id', 'rx', 'tx', 'drops'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface ViewState {
  url: string;
  snapshot?: Snapshot;
  rates?: Rates;
  /** The flows, or why there are none to show (no IPC daemon). */
  flows?: FlowRow[] | { error: string };
  /** A line to show under the title (server unreachable, retrying…). */
  status?: string;
  sort: SortKey;
  /** Unix time now (seconds), for the uptime. */
  nowS: number;
  /** Live view: the key help line at the bottom. */
  keys?: boolean;
}

const DEVICE_COLS: Column[] = [
  { header: 'ID', width: 5, align: 'right', priority: 0 },
  { header: 'SOCKET', width: 8, align: 'left', priority: 1, flex: true, maxWidth: 32 },
  { header: 'STATE', width: 9, align: 'left', priority: 0 },
  { header: 'RX SDU/s', width: 8, align: 'right', priority: 0 },
  { header: 'RX Mb/s', width: 7, align: 'right', priority: 0 },
  { header: 'TX SDU/s', width: 8, align: 'right', priority: 0 },
  { header: 'TX Mb/s', width: 7, align: 'right', priority: 0 },
  { header: 'DROP/s', width: 6, align: 'right', priority: 1 },
  { header: 'QFULL/s', width: 7, align: 'right', priority: 2 },
  { header: 'BACKLOG', width: 10, align: 'right', priority: 3 },
];

const DIF_COLS: Column[] = [
  { header: 'DIF', width: 8, align: 'left', priority: 0, flex: true, maxWidth: 24 },
  { header: 'TYPE', width: 8, align: 'left', priority: 2 },
  { header: 'FLOWS', width: 5, align: 'right', priority: 1 },
  { header: 'RX SDU/s', width: 8, align: 'right', priority: 0 },
  { header: 'RX Mb/s', width: 7, align: 'right', priority: 0 },
  { header: 'TX SDU/s', width: 8, align: 'right', priority: 0 },
  { header: 'TX Mb/s', width: 7, align: 'right', priority: 0 },
  { header: 'DROP/s', width: 6, align: 'right', priority: 1 },
];

const FLOW_COLS: Column[] = [
  { header: 'DIF', width: 10, align: 'left', priority: 0 },
  { header: 'ID', width: 6, align: 'right', priority: 0 },
  { header: 'STATE', width: 9, align: 'left', priority: 2 },
  { header: 'LOCAL', width: 10, align: 'left', priority: 0, flex: true, maxWidth: 40 },
  { header: 'REMOTE', width: 16, align: 'left', priority: 1 },
  { header: 'RX SDU/s', width: 8, align: 'right', priority: 3 },
  { header: 'TX SDU/s', width: 8, align: 'right', priority: 3 },
];

/** The state of a device: a VM connected with its driver up, connected only, or no VM. */
export function deviceState(d: DeviceRow['cur']): string {
  if (d.connections === undefined) return '-';
  if (d.connections === 0) return 'no VM';
  return d.up ? 'up' : 'connected';
}

const perSec = (r: Rate): number => (r.kind === 'rate' ? r.perSec : -1);

/** Devices in the order of `sort` (busiest first for the rate keys, then by id). */
export function sortDevices(rows: readonly DeviceRow[], sort: SortKey): DeviceRow[] {
  const byId = (a: DeviceRow, b: DeviceRow): number => Number(a.cur.id) - Number(b.cur.id);
  const key = (r: DeviceRow): number => (sort === 'rx' ? perSec(r.rates.rxBytes) : sort === 'tx' ? perSec(r.rates.txBytes) : sort === 'drops' ? perSec(r.rates.drops) : 0);
  return [...rows].sort((a, b) => key(b) - key(a) || byId(a, b));
}

function table(lines: string[], cols: Column[], rows: string[][], width: number): void {
  const layout = fitColumns(cols, width, (i) => Math.max(cols[i]!.header.length, ...rows.map((r) => (r[i] ?? '').length)));
  lines.push(renderHeader(layout, cols));
  for (const r of rows) lines.push(renderRow(layout, r));
}

/** The screen's lines (see the header). */
export function renderView(v: ViewState, width: number, height?: number): string[] {
  const w = Math.max(1, Math.floor(width));
  const lines: string[] = [];
  const snap = v.snapshot;
  const facts: string[] = [];
  if (snap?.version) facts.push(`vmpi ${snap.version}`);
  if (snap?.startTime !== undefined) facts.push(`up ${fmtDuration(v.nowS - snap.startTime)}`);
  if (snap?.restarts !== undefined) facts.push(`restarts ${snap.restarts}`);
  lines.push(cut(`vmpi top  ${v.url}${facts.length ? '  ' + facts.join(', ') : ''}`, w));
  const status = v.status ?? (v.rates?.serverRestarted ? 'the server restarted: counters that went down show "reset"' : v.rates && v.rates.elapsedS === 0 ? 'first sample: rates from the next one' : '');
  if (status !== '' || v.keys) lines.push(cut(status, w));

  const rates = v.rates;
  const devices = rates ? sortDevices(rates.devices, v.sort) : [];
  lines.push('', cut(`DEVICES (${devices.length})  rx = from the guest, tx = to the guest; sort: ${v.sort}`, w));
  table(
    lines,
    DEVICE_COLS,
    devices.map(({ cur: d, rates: r }) => [
      d.id,
      d.socket === undefined ? '-' : basename(d.socket),
      deviceState(d),
      fmtRate(r.rxSdus),
      fmtRate(r.rxBytes, fmtMbps),
      fmtRate(r.txSdus),
      fmtRate(r.txBytes, fmtMbps),
      fmtRate(r.drops),
      fmtRate(r.rxQueueFull),
      d.backlogSdus === undefined ? '-' : d.backlogMaxSdus === undefined ? fmtInt(d.backlogSdus) : `${fmtInt(d.backlogSdus)}/${fmtInt(d.backlogMaxSdus)}`,
    ]),
    w,
  );

  if (rates && rates.difs.length > 0) {
    lines.push('', `DIFS (${rates.difs.length})`);
    table(
      lines,
      DIF_COLS,
      rates.difs.map(({ cur: d, rates: r }) => [
        d.dif,
        d.type ?? '-',
        d.flowsActive === undefined ? '-' : String(d.flowsActive),
        fmtRate(r.rxSdus),
        fmtRate(r.rxBytes, fmtMbps),
        fmtRate(r.txSdus),
        fmtRate(r.txBytes, fmtMbps),
        fmtRate(r.drops),
      ]),
      w,
    );
  }

  const flows = v.flows;
  if (flows !== undefined) {
    if (Array.isArray(flows)) {
      lines.push('', `FLOWS (${flows.length})`);
      if (flows.length > 0) table(lines, FLOW_COLS, flows.map((f) => [f.dif, f.id, f.state, f.local, f.remote, fmtRate(f.rxSdus), fmtRate(f.txSdus)]), w);
    } else lines.push('', cut(`FLOWS: ${flows.error}`, w));
  }

  if (height !== undefined) {
    const h = Math.max(3, Math.floor(height));
    const room = v.keys ? h - 1 : h;
    if (lines.length > room) {
      const more = lines.length - (room - 1);
      lines.length = room - 1;
      lines.push(cut(`… ${more} more lines (a taller terminal shows them)`, w));
    }
    if (v.keys) {
      while (lines.length < h - 1) lines.push('');
      lines.push(cut(`q quit  s sort (${v.sort})`, w));
    }
  }
  return lines.map((l) => cut(l, w));
}
