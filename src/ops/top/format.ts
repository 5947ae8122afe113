/**
 * top/format.ts — number formatting and the column layout of `vmpi top`'s tables.
 *
 * Owns: short, fixed-width renderings of rates (SDU/s with k/M/G suffixes, Mb/s from bytes/s,
 * "reset" for a counter that went down, "-" when there is no rate yet), durations, and fitting a
 * table into a terminal width: each column has a priority; while the table is too wide the columns
 * of the lowest priority (highest number) are left out, then the flexible column (the name) gives
 * up its extra width, and a cell too long for its column is cut with "…". A rendered line is never
 * wider than the width asked for.
 */
import type { Rate } from './snapshot.js';

/** A count per second in at most 6 characters: 0, 9.5, 950, 9.50k, 95.0k, 950k, 9.50M … */
export function fmtCount(v: number): string {
  if (!Number.isFinite(v)) return '?';
  if (v === 0) return '0';
  const abs = Math.abs(v);
  const sign = v < 0 ? '-' : '';
  for (const [scale, suffix] of [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']] as const) {
    if (abs >= scale * 0.9995) return sign + sig3(abs / scale) + suffix;
  }
  return sign + (abs < 10 ? abs.toFixed(1).replace(/\.0$/, '') : Math.round(abs).toString());
}

/** Three significant digits: 9.50, 95.0, 950 (values 1..999.5). */
function sig3(x: number): string {
  if (x < 9.995) return x.toFixed(2);
  if (x < 99.95) return x.toFixed(1);
  return Math.round(x).toString();
}

/** A count (a gauge): exact below a million, else as fmtCount. */
export function fmtInt(v: number): string {
  return Number.isInteger(v) && Math.abs(v) < 1e6 ? String(v) : fmtCount(v);
}

/** Megabits per second from bytes per second: 0.00, 1.23, 12.3, 123, 1234 … */
export function fmtMbps(bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec)) return '?';
  const mb = (bytesPerSec * 8) / 1e6;
  if (mb < 9.995) return mb.toFixed(2);
  if (mb < 99.95) return mb.toFixed(1);
  return Math.round(mb).toString();
}

/** A rate cell: the formatted value, "reset" after a counter reset, "-" without a rate. */
export function fmtRate(r: Rate, f: (v: number) => string = fmtCount): string {
  if (r.kind === 'reset') return 'reset';
  if (r.kind === 'none') return '-';
  return f(r.perSec);
}

/** Seconds as "12s", "3m04s", "2h03m", "4d02h". */
export function fmtDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export interface Column {
  header: string;
  /** Width of the column (the minimum width of a flexible one). */
  width: number;
  align: 'left' | 'right';
  /** 0 = always shown; columns of the highest number go first when the table is too wide. */
  priority: number;
  /** Takes the width left over, up to maxWidth. At most one column should be flexible. */
  flex?: boolean;
  maxWidth?: number;
}

export interface Layout {
  /** Indexes (into the column list) of the columns shown, in order. */
  shown: number[];
  /** Width of each shown column. */
  widths: number[];
  align: ('left' | 'right')[];
  /** The width every rendered line is cut to. */
  total: number;
}

const GAP = 1;

/** Fit `cols` into `total` characters (see the header). */
export function fitColumns(cols: readonly Column[], total: number, contentWidth?: (i: number) => number): Layout {
  const width = Math.max(1, Math.floor(total));
  let shown = cols.map((_, i) => i);
  const need = (idx: number[]): number => idx.reduce((n, i) => n + cols[i]!.width, 0) + GAP * Math.max(0, idx.length - 1);
  const priorities = [...new Set(cols.map((c) => c.priority))].sort((a, b) => b - a);
  for (const p of priorities) {
    if (need(shown) <= width || p === 0) break;
    shown = shown.filter((i) => cols[i]!.priority !== p);
  }
  const widths = shown.map((i) => cols[i]!.width);
  const flexAt = shown.findIndex((i) => cols[i]!.flex);
  if (flexAt >= 0) {
    const i = shown[flexAt]!;
    const c = cols[i]!;
    const spare = width - need(shown);
    const want = Math.max(c.width, Math.min(c.maxWidth ?? Number.POSITIVE_INFINITY, contentWidth ? contentWidth(i) : c.width));
    if (spare > 0) widths[flexAt] = Math.min(want, c.width + spare);
  }
  return { shown, widths, align: shown.map((i) => cols[i]!.align), total: width };
}

/** `s` cut to `w` characters, the last one "…" when something was cut. */
export function cut(s: string, w: number): string {
  if (w <= 0) return '';
  if (s.length <= w) return s;
  return w === 1 ? '…' : s.slice(0, w - 1) + '…';
}

/** One line of a table: `cells` indexed like the columns given to fitColumns. */
export function renderRow(layout: Layout, cells: readonly string[]): string {
  const parts = layout.shown.map((i, k) => {
    const w = layout.widths[k]!;
    const c = cut(cells[i] ?? '', w);
    return layout.align[k] === 'right' ? c.padStart(w) : c.padEnd(w);
  });
  return cut(parts.join(' '.repeat(GAP)).trimEnd(), layout.total);
}

/** The header line of a table. */
export function renderHeader(layout: Layout, cols: readonly Column[]): string {
  return renderRow(layout, cols.map((c) => c.header));
}
