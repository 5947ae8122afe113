/**
 * plot.ts — a small hand-written SVG scatter plot for benchmark results, in the style of the
 * paper's Fig. 4: one or more series of points with vertical error bars (e.g. 95% confidence
 * intervals), each with its first-degree least-squares regression line, axes with round tick
 * values, grid lines, axis labels, a title and a legend. Fig. 4a compares three systems, so
 * several series share one plot, each in its own colour and marker.
 *
 * Owns only rendering and the regression; no I/O. The output is a standalone SVG 1.1 document
 * (XML declaration, viewBox, text escaped) that browsers and image viewers open as is.
 */

export interface PlotPoint {
  x: number;
  y: number;
  /** Error bar bounds (both or neither). */
  yLow?: number;
  yHigh?: number;
}

export interface PlotSeries {
  name: string;
  points: readonly PlotPoint[];
  /** CSS colour; default from a palette by series index. */
  color?: string;
  /** Draw the first-degree regression line (default true). */
  regression?: boolean;
}

export interface PlotOptions {
  title?: string;
  xLabel: string;
  yLabel: string;
  series: readonly PlotSeries[];
  width?: number;
  height?: number;
  /** Axis ranges; default from the data (y from 0 when all values are positive). */
  xMin?: number;
  xMax?: number;
  yMin?: number;
  yMax?: number;
}

export interface Regression {
  slope: number;
  intercept: number;
  /** Coefficient of determination (NaN when y is constant). */
  r2: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b'];
const MARKERS = ['circle', 'square', 'triangle', 'diamond'] as const;

/** Least squares y = slope·x + intercept; null with fewer than two distinct x values. */
export function linearRegression(points: readonly { x: number; y: number }[]): Regression | null {
  const n = points.length;
  if (n < 2) return null;
  let sx = 0;
  let sy = 0;
  for (const p of points) {
    sx += p.x;
    sy += p.y;
  }
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const p of points) {
    sxx += (p.x - mx) ** 2;
    sxy += (p.x - mx) * (p.y - my);
    syy += (p.y - my) ** 2;
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? Number.NaN : (sxy * sxy) / (sxx * syy) };
}

/** Round tick values (1, 2, 2.5, 5 × 10^k steps) covering [min, max], about `count` of them. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0];
  if (max < min) [min, max] = [max, min];
  if (max === min) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const first = Math.floor(min / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first; v <= max + step * 1e-9 || ticks.length < 2; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max - step * 1e-9) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(6)));
}

function n2(v: number): string {
  return (Math.round(v * 100) / 100).toString();
}

function marker(kind: (typeof MARKERS)[number], x: number, y: number, color: string): string {
  const r = 3.5;
  switch (kind) {
    case 'circle':
      return `<circle cx="${n2(x)}" cy="${n2(y)}" r="${r}" fill="${color}"/>`;
    case 'square':
      return `<rect x="${n2(x - r)}" y="${n2(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'triangle':
      return `<polygon points="${n2(x)},${n2(y - r - 1)} ${n2(x - r - 0.5)},${n2(y + r)} ${n2(x + r + 0.5)},${n2(y + r)}" fill="${color}"/>`;
    case 'diamond':
      return `<polygon points="${n2(x)},${n2(y - r - 1)} ${n2(x + r + 1)},${n2(y)} ${n2(x)},${n2(y + r + 1)} ${n2(x - r - 1)},${n2(y)}" fill="${color}"/>`;
  }
}

/** Render the plot as a standalone SVG document. */
export function renderSvgPlot(opts: PlotOptions): string {
  const W = opts.width ?? 800;
  const H = opts.height ?? 500;
  const m = { left: 80, right: 24, top: opts.title ? 48 : 24, bottom: 64 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;

  const all = opts.series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  const xs = all.map((p) => p.x);
  const ys = all.flatMap((p) => [p.y, p.yLow ?? p.y, p.yHigh ?? p.y].filter(Number.isFinite));
  const dataXMin = xs.length ? Math.min(...xs) : 0;
  const dataXMax = xs.length ? Math.max(...xs) : 1;
  const dataYMin = ys.length ? Math.min(...ys) : 0;
  const dataYMax = ys.length ? Math.max(...ys) : 1;
  const xTicks = niceTicks(opts.xMin ?? dataXMin, opts.xMax ?? dataXMax, 8);
  const yTicks = niceTicks(opts.yMin ?? Math.min(0, dataYMin), opts.yMax ?? dataYMax, 6);
  const x0 = opts.xMin ?? xTicks[0]!;
  const x1 = opts.xMax ?? xTicks[xTicks.length - 1]!;
  const y0 = opts.yMin ?? yTicks[0]!;
  const y1 = opts.yMax ?? yTicks[yTicks.length - 1]!;
  const sx = (x: number): number => m.left + ((x - x0) / (x1 - x0 || 1)) * pw;
  const sy = (y: number): number => m.top + ph - ((y - y0) / (y1 - y0 || 1)) * ph;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  if (opts.title) out.push(`<text x="${W / 2}" y="28" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(opts.title)}</text>`);

  // Grid and ticks.
  out.push('<g stroke="#ddd" stroke-width="1">');
  for (const v of xTicks) if (v >= x0 && v <= x1) out.push(`<line x1="${n2(sx(v))}" y1="${m.top}" x2="${n2(sx(v))}" y2="${m.top + ph}"/>`);
  for (const v of yTicks) if (v >= y0 && v <= y1) out.push(`<line x1="${m.left}" y1="${n2(sy(v))}" x2="${m.left + pw}" y2="${n2(sy(v))}"/>`);
  out.push('</g>');
  out.push('<g fill="#333">');
  for (const v of xTicks) if (v >= x0 && v <= x1) out.push(`<text x="${n2(sx(v))}" y="${m.top + ph + 20}" text-anchor="middle">${escapeXml(fmt(v))}</text>`);
  for (const v of yTicks) if (v >= y0 && v <= y1) out.push(`<text x="${m.left - 8}" y="${n2(sy(v) + 4)}" text-anchor="end">${escapeXml(fmt(v))}</text>`);
  out.push('</g>');
  // Axes.
  out.push(`<g stroke="#333" stroke-width="1.5"><line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}"/><line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}"/></g>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 18}" text-anchor="middle" font-size="14">${escapeXml(opts.xLabel)}</text>`);
  out.push(`<text x="20" y="${m.top + ph / 2}" text-anchor="middle" font-size="14" transform="rotate(-90 20 ${m.top + ph / 2})">${escapeXml(opts.yLabel)}</text>`);

  // Series: regression line under the points, error bars, markers.
  out.push(`<defs><clipPath id="plot-area"><rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}"/></clipPath></defs>`);
  const legend: string[] = [];
  opts.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const kind = MARKERS[i % MARKERS.length]!;
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    const reg = s.regression === false ? null : linearRegression(pts);
    if (reg) {
      const ax = Math.min(...pts.map((p) => p.x));
      const bx = Math.max(...pts.map((p) => p.x));
      out.push(`<line clip-path="url(#plot-area)" x1="${n2(sx(ax))}" y1="${n2(sy(reg.slope * ax + reg.intercept))}" x2="${n2(sx(bx))}" y2="${n2(sy(reg.slope * bx + reg.intercept))}" stroke="${color}" stroke-width="1.5" stroke-dasharray="6 4" opacity="0.8"/>`);
    }
    for (const p of pts) {
      if (p.yLow !== undefined && p.yHigh !== undefined && Number.isFinite(p.yLow) && Number.isFinite(p.yHigh)) {
        const x = n2(sx(p.x));
        out.push(`<g stroke="${color}" stroke-width="1.2"><line x1="${x}" y1="${n2(sy(p.yLow))}" x2="${x}" y2="${n2(sy(p.yHigh))}"/><line x1="${n2(sx(p.x) - 4)}" y1="${n2(sy(p.yLow))}" x2="${n2(sx(p.x) + 4)}" y2="${n2(sy(p.yLow))}"/><line x1="${n2(sx(p.x) - 4)}" y1="${n2(sy(p.yHigh))}" x2="${n2(sx(p.x) + 4)}" y2="${n2(sy(p.yHigh))}"/></g>`);
      }
      out.push(marker(kind, sx(p.x), sy(p.y), color));
    }
    out.push('</g>');
    const ly = m.top + 12 + i * 20;
    const lx = m.left + 16;
    const fit = reg ? ` (fit: ${Number(reg.slope.toPrecision(3))}·x ${reg.intercept < 0 ? "−" : "+"} ${Number(Math.abs(reg.intercept).toPrecision(3))})` : '';
    legend.push(`${marker(kind, lx, ly, color)}<line x1="${lx + 8}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${color}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="${lx + 36}" y="${ly + 4}">${escapeXml(s.name + fit)}</text>`);
  });
  if (legend.length > 0) {
    const lh = legend.length * 20 + 6;
    out.push(`<g class="legend"><rect x="${m.left + 6}" y="${m.top + 2}" width="${Math.min(pw - 12, 460)}" height="${lh}" fill="white" fill-opacity="0.85" stroke="#bbb"/>${legend.join('')}</g>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
