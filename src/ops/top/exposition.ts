/**
 * top/exposition.ts — a parser for the Prometheus text exposition format (version 0.0.4, what
 * `GET /metrics` of `vmpi serve` returns), for `vmpi top`.
 *
 * Owns: turning the text into samples (metric name, labels, value). Comments (# HELP, # TYPE) are
 * skipped; label values have their escapes (\\, \", \n) undone; values may be floats, NaN, +Inf
 * or -Inf; an optional timestamp after the value is ignored. A line that does not parse is
 * counted and skipped (one odd line from a newer server must not blank the view), and the
 * number of samples is bounded so a runaway endpoint cannot grow this process without bound.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Parsed {
  samples: Sample[];
  /** Lines that were neither comments, blank, nor a well-formed sample. */
  malformed: number;
  /** The first malformed line (cut to 200 characters), to show what went wrong. */
  firstMalformed?: string;
  /** True when maxSamples was reached and the rest was not read. */
  truncated: boolean;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parse one sample line; null when it is not one. */
export function parseSampleLine(line: string): Sample | null {
  const m = NAME.exec(line);
  if (!m) return null;
  const name = m[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (line[i] === '}') {
        i++;
        break;
      }
      const ln = LABEL_NAME.exec(line.slice(i));
      if (!ln) return null;
      i += ln[0].length;
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (line[i] !== '=') return null;
      i++;
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (line[i] !== '"') return null;
      i++;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) return null;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i + 1];
          if (e === 'n') value += '\n';
          else if (e === '\\' || e === '"') value += e;
          else if (e === undefined) return null;
          else value += '\\' + e;
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      i++; // the closing quote
      labels[ln[0]] = value;
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') return null;
    }
  }
  if (line[i] !== ' ' && line[i] !== '\t') return null;
  const rest = line.slice(i).trim().split(/[ \t]+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === '') return null;
  const value = parseValue(rest[0]!);
  if (value === null) return null;
  if (rest.length === 2 && !/^-?\d+$/.test(rest[1]!)) return null;
  return { name, labels, value };
}

function parseValue(s: string): number | null {
  if (s === 'NaN') return Number.NaN;
  if (s === '+Inf' || s === 'Inf') return Number.POSITIVE_INFINITY;
  if (s === '-Inf') return Number.NEGATIVE_INFINITY;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return null;
  return Number(s);
}

/** Parse a whole exposition. At most `maxSamples` samples are kept (default 200 000). */
export function parseExposition(text: string, maxSamples = 200_000): Parsed {
  const out: Parsed = { samples: [], malformed: 0, truncated: false };
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = line.trimStart();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    if (out.samples.length >= maxSamples) {
      out.truncated = true;
      break;
    }
    const s = parseSampleLine(trimmed);
    if (s) out.samples.push(s);
    else {
      out.malformed++;
      out.firstMalformed ??= trimmed.slice(0, 200);
    }
  }
  return out;
}
