/**
 * config/messages.ts — problems as one line each: an ajv error becomes `field.path: what is wrong`
 * (with the bad value, the expected type, a "did you mean" for a misspelt field, the octal-mode
 * hint), plus the small value helpers the checks share.
 */
import type { ErrorObject } from 'ajv';
import type { ConfigFormat } from './types.js';

export function formatAjvError(e: ErrorObject, format: ConfigFormat): string {
  const path = jsonPointerToPath(e.instancePath);
  const at = path || '(top level)';
  const value = show(e.data);
  const hint = isRecord(e.parentSchema) && typeof e.parentSchema.errorHint === 'string' ? e.parentSchema.errorHint : undefined;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return `${join(path, String(p.missingProperty))}: is required but missing`;
    case 'additionalProperties': {
      const field = String(p.additionalProperty);
      const known = isRecord(e.parentSchema) && isRecord(e.parentSchema.properties) ? Object.keys(e.parentSchema.properties) : [];
      const guess = closest(field, known);
      return `${join(path, field)}: unknown field${guess ? ` (did you mean "${guess}"?)` : ''}; known fields here: ${known.join(', ')}`;
    }
    case 'maximum':
      return `${at}: ${value} is above the maximum ${String(p.limit)}`;
    case 'minimum':
      return `${at}: ${value} is below the minimum ${String(p.limit)}`;
    case 'type': {
      const want = String(p.type).split(',').map(article).join(' or ');
      const octal =
        path.endsWith('.mode') && typeof e.data === 'number' && /^[0-7]{3}$/.test(String(e.data))
          ? format === 'json'
            ? ` (write it as a string, "mode": "0${e.data}": a JSON number is decimal)`
            : ` (write it quoted, mode: "0${e.data}": YAML reads an unquoted 0${e.data} as the decimal number ${e.data})`
          : '';
      return `${at}: ${value} is ${describe(e.data)}, expected ${hint ?? want}${octal}`;
    }
    case 'enum':
      return `${at}: ${value} is not one of ${(p.allowedValues as unknown[]).map((v) => String(v)).join(', ')}`;
    case 'pattern':
      return `${at}: ${value} is not ${hint ?? `matching ${String(p.pattern)}`}`;
    case 'minLength':
      return `${at}: ${value} is too short (at least ${String(p.limit)} characters)`;
    case 'maxLength':
      return `${at}: ${value} is too long (at most ${String(p.limit)} characters)`;
    default:
      return `${at}: ${value} ${e.message ?? 'is invalid'}`;
  }
}

/** "/devices/1/vmpiId" → "devices[1].vmpiId". */
function jsonPointerToPath(ptr: string): string {
  let out = '';
  for (const raw of ptr.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(seg) ? `[${seg}]` : out ? `.${seg}` : seg;
  }
  return out;
}

function join(path: string, field: string): string {
  // A key that is not a plain name (a YAML complex key stringified over several lines, spaces,
  // control characters) is quoted, so the problem stays one line and says where it is.
  const f = /^[\w$-]+$/.test(field) ? field : JSON.stringify(field);
  return path ? `${path}.${f}` : f;
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === undefined) return 'undefined';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  if (typeof v === 'object') return 'an object';
  return article(typeof v);
}

function article(t: string): string {
  const word = t === 'object' ? 'an object' : t === 'array' ? 'a list' : t === 'integer' ? 'an integer' : t === 'null' ? 'null' : `a ${t}`;
  return word;
}

export function dedupe(lines: string[]): string[] {
  return [...new Set(lines)];
}

/** The first line of a yaml error message, without the position it repeats. */
export function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The known name within edit distance 2 of `word`, if any. */
function closest(word: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}
