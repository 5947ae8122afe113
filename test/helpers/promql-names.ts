/**
 * promql-names.ts — what a PromQL expression names, for checking dashboards and rule files
 * against a real scrape: its selectors (metric name and label matchers) and the labels it groups
 * or matches on (by, without, on, ignoring, group_left, group_right). A small tokenizer, not a
 * parser: it knows strings, durations, ranges and the keywords, which is all the checks need
 * (promtool parses the expressions for real).
 *
 * Also the other half: a scrape (text exposition) as families with the label values their
 * samples carry, and `checkExpr`, which lists every name or label an expression uses that the
 * scrape does not have.
 */

export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
}

export interface Selector {
  /** Metric name ('' for a selector without one: `{__name__=~"…"}`). */
  name: string;
  matchers: Matcher[];
}

export interface ExprNames {
  selectors: Selector[];
  /** Labels of by (...) clauses. */
  by: string[];
  /** Labels of without (...) clauses. */
  without: string[];
  /** Labels of on (...), ignoring (...), group_left (...), group_right (...). */
  matching: string[];
}

type Tok = { k: 'id' | 'str' | 'num' | 'p'; v: string };

const MATCHING = new Set(['on', 'ignoring', 'group_left', 'group_right']);
/** Aggregation operators: `sum by (l) (…)` puts the clause between the name and its parenthesis. */
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'Inf', 'NaN', 'start', 'end']);

function tokenize(expr: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '#') {
      while (i < expr.length && expr[i] !== '\n') i++;
    } else if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      let v = '';
      while (j < expr.length && expr[j] !== c) {
        if (expr[j] === '\\' && c !== '`') {
          v += expr[j + 1] ?? '';
          j += 2;
        } else v += expr[j++];
      }
      if (j >= expr.length) throw new Error(`unterminated string in: ${expr}`);
      out.push({ k: 'str', v });
      i = j + 1;
    } else if (/[0-9.]/.test(c)) {
      const m = /^[0-9.][0-9a-zA-Z.+]*/.exec(expr.slice(i))![0];
      out.push({ k: 'num', v: m });
      i += m.length;
    } else if (/[a-zA-Z_:]/.test(c)) {
      const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(expr.slice(i))![0];
      out.push({ k: 'id', v: m });
      i += m.length;
    } else {
      const two = expr.slice(i, i + 2);
      const op = ['=~', '!~', '!=', '==', '>=', '<='].includes(two) ? two : c;
      out.push({ k: 'p', v: op });
      i += op.length;
    }
  }
  return out;
}

/** The selectors and grouping/matching labels of one PromQL expression. */
export function exprNames(expr: string): ExprNames {
  const t = tokenize(expr);
  const r: ExprNames = { selectors: [], by: [], without: [], matching: [] };
  const labelList = (i: number, into: string[]): number => {
    // t[i] is '(': labels separated by commas up to ')'.
    let j = i + 1;
    for (; j < t.length && t[j]!.v !== ')'; j++) if (t[j]!.k === 'id') into.push(t[j]!.v);
    return j + 1;
  };
  const matchers = (i: number, sel: Selector): number => {
    // t[i] is '{'.
    let j = i + 1;
    while (j < t.length && t[j]!.v !== '}') {
      if (t[j]!.v === ',') {
        j++;
        continue;
      }
      const label = t[j];
      const op = t[j + 1];
      const value = t[j + 2];
      if (label?.k !== 'id' || op?.k !== 'p' || !['=', '!=', '=~', '!~'].includes(op.v) || value?.k !== 'str') throw new Error(`cannot read the label matchers at token ${j} of: ${expr}`);
      sel.matchers.push({ label: label.v, op: op.v as Matcher['op'], value: value.v });
      j += 3;
    }
    return j + 1;
  };
  let i = 0;
  while (i < t.length) {
    const tok = t[i]!;
    const next = t[i + 1];
    if (tok.k === 'id') {
      if ((tok.v === 'by' || tok.v === 'without') && next?.v === '(') {
        i = labelList(i + 1, tok.v === 'by' ? r.by : r.without);
      } else if (MATCHING.has(tok.v)) {
        i = next?.v === '(' ? labelList(i + 1, r.matching) : i + 1;
      } else if (next?.v === '(' || AGGREGATIONS.has(tok.v) || KEYWORDS.has(tok.v)) {
        i++; // a function, an aggregation or a keyword
      } else {
        const sel: Selector = { name: tok.v, matchers: [] };
        r.selectors.push(sel);
        i = next?.v === '{' ? matchers(i + 1, sel) : i + 1;
      }
    } else if (tok.v === '{') {
      const sel: Selector = { name: '', matchers: [] };
      r.selectors.push(sel);
      i = matchers(i, sel);
    } else if (tok.v === '[') {
      while (i < t.length && t[i]!.v !== ']') i++;
      i++;
    } else {
      i++;
    }
  }
  return r;
}

/** Families of a scrape: metric name → label name → values seen on its samples. */
export type Families = Map<string, Map<string, Set<string>>>;

/** Parse the sample lines of a text exposition (comments and # TYPE lines are not samples). */
export function scrapeFamilies(text: string): Families {
  const fams: Families = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m) continue;
    const fam = fams.get(m[1]!) ?? new Map<string, Set<string>>();
    fams.set(m[1]!, fam);
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const set = fam.get(l[1]!) ?? new Set<string>();
      fam.set(l[1]!, set);
      set.add(l[2]!);
    }
  }
  return fams;
}

/** Labels the Prometheus server adds to every scraped series (target labels). */
export const TARGET_LABELS = ['job', 'instance'];

/**
 * What in `expr` the scrape (plus `extra` families, e.g. recording rules) does not have: unknown
 * metric names, labels that no sample of the selected family carries, literal label values
 * (`=`, `!=`, `=~` without template variables) that match no sample, grouping labels on none of
 * the expression's families, and `uses` (labels a legend or annotation prints) that the result
 * cannot carry. An empty list: everything named exists.
 */
export function checkExpr(expr: string, fams: Families, uses: string[] = []): string[] {
  const problems: string[] = [];
  const n = exprNames(expr);
  const selected = new Set<string>(TARGET_LABELS);
  for (const s of n.selectors) {
    if (s.name === '') {
      problems.push(`a selector without a metric name in: ${expr}`);
      continue;
    }
    const fam = fams.get(s.name);
    if (!fam) {
      problems.push(`${s.name}: no such metric in the scrape`);
      continue;
    }
    for (const l of fam.keys()) selected.add(l);
    for (const m of s.matchers) {
      if (TARGET_LABELS.includes(m.label)) continue;
      const values = fam.get(m.label);
      if (!values) {
        problems.push(`${s.name}: no label "${m.label}" (it has: ${[...fam.keys()].join(', ') || 'none'})`);
        continue;
      }
      if (m.value.includes('$')) continue; // a dashboard variable
      const re = m.op === '=~' ? new RegExp(`^(?:${m.value})$`) : null;
      const hit = [...values].some((v) => (re ? re.test(v) : v === m.value));
      if ((m.op === '=' || m.op === '!=' || m.op === '=~') && !hit) problems.push(`${s.name}{${m.label}${m.op}"${m.value}"}: no sample has that value (values: ${[...values].join(', ')})`);
    }
  }
  for (const l of [...n.by, ...n.without, ...n.matching]) if (!selected.has(l)) problems.push(`label "${l}" (by/on/group) is on none of ${n.selectors.map((s) => s.name).join(', ')}`);
  // What the result carries: the by-labels (plus what group_left/right copies) when aggregated.
  const result = n.by.length > 0 ? new Set([...n.by, ...n.matching]) : new Set([...selected].filter((l) => !n.without.includes(l)));
  for (const u of uses) if (!result.has(u)) problems.push(`label "${u}" printed by a legend or annotation is not on the result of: ${expr}`);
  return [...new Set(problems)];
}

/** The labels of a recording rule's output: those of its families (or its by-labels), for `extra` families. */
export function recordedLabels(expr: string, fams: Families): Map<string, Set<string>> {
  const n = exprNames(expr);
  const out = new Map<string, Set<string>>();
  const keep = n.by.length > 0 ? new Set([...n.by, ...n.matching]) : null;
  for (const s of n.selectors) {
    for (const [l, v] of fams.get(s.name) ?? []) {
      if ((keep && !keep.has(l)) || n.without.includes(l)) continue;
      const set = out.get(l) ?? new Set<string>();
      for (const x of v) set.add(x);
      out.set(l, set);
    }
  }
  return out;
}
