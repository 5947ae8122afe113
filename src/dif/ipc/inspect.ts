/**
 * inspect.ts — the daemon's side of the read-only look inside (`list_ipcps`, `inspect_dif`,
 * protocol.ts): the list of hosted IPC processes and one IPC process's plain-data snapshot
 * (core/observe.ts `inspect()`), each made to fit in one control message.
 *
 * Fitting: a result must stay under MAX_MESSAGE_BYTES whatever the IPC process holds (a big
 * directory or many flows), or the frame could not be sent. Every list in it is cut to at most
 * N items, N going down until the frame fits, and each cut is named in `truncated` (the list's
 * path, how many items it had, how many are shown). Values that are not JSON data (functions,
 * bigints, non-finite numbers, cycles, nesting deeper than MAX_DEPTH) become null or a string.
 */
import { DifError, type IpcProcess } from '../api.js';
import { describeIpcp, type IpcpDescription, type ObservableIpcp } from '../core/observe.js';
import { MAX_MESSAGE_BYTES } from './protocol.js';

/** Items kept per list, tried in turn until the answer fits. */
const LIST_CAPS = [Infinity, 1024, 256, 64, 16, 4, 0];
const MAX_DEPTH = 16;
/** Room left in a frame for the envelope ({v, op, id, …}) around the data. */
const ENVELOPE_BYTES = 1024;

export interface Truncation {
  path: string;
  total: number;
  shown: number;
}

/** A JSON copy of `v` with every list cut to `cap` items (cuts recorded in `cuts`). */
function plain(v: unknown, cap: number, path: string, depth: number, cuts: Truncation[], seen: Set<object>): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'bigint') return v.toString();
  if (typeof v !== 'object') return null;
  if (seen.has(v)) return '[cycle]';
  if (depth >= MAX_DEPTH) return '[too deep]';
  seen.add(v);
  try {
    if (v instanceof Map) v = Object.fromEntries(v);
    if (v instanceof Set) v = [...v];
    if (Array.isArray(v)) {
      const shown = Math.min(v.length, cap);
      if (shown < v.length) cuts.push({ path, total: v.length, shown });
      return v.slice(0, shown).map((x, i) => plain(x, cap, `${path}[${i}]`, depth + 1, cuts, seen));
    }
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (x === undefined || typeof x === 'function') continue;
      out[k] = plain(x, cap, path === '' ? k : `${path}.${k}`, depth + 1, cuts, seen);
    }
    return out;
  } finally {
    seen.delete(v as object);
  }
}

/**
 * `data` made to fit in one frame (wrapped by `wrap`): lists cut shorter until the JSON is under
 * the limit.
 * Throws DifError 'limit_exceeded' if even empty lists do not fit (very long strings).
 */
export function fitToFrame<T>(what: string, data: unknown, wrap: (plainData: unknown, truncated: Truncation[]) => T): T {
  const max = MAX_MESSAGE_BYTES - ENVELOPE_BYTES;
  for (const cap of LIST_CAPS) {
    const cuts: Truncation[] = [];
    const out = wrap(plain(data, cap, '', 0, cuts, new Set()), cuts);
    if (Buffer.byteLength(JSON.stringify(out)) <= max) return out;
  }
  throw new DifError('limit_exceeded', `${what} does not fit in one IPC control message (${MAX_MESSAGE_BYTES} bytes) even with its lists cut short`);
}

/** The `list_ipcps` result: every hosted IPC process (DIF, type, name, address). */
export function listIpcps(ipcps: IpcProcess[]): { ipcps: IpcpDescription[]; truncated?: Truncation[] } {
  const list = ipcps.map(describeIpcp).sort((a, b) => (a.dif < b.dif ? -1 : a.dif > b.dif ? 1 : 0));
  return fitToFrame('the list of IPC processes', list, (ipcpsData, truncated) => {
    const out: { ipcps: IpcpDescription[]; truncated?: Truncation[] } = { ipcps: ipcpsData as IpcpDescription[] };
    if (truncated.length > 0) out.truncated = truncated.map((t) => ({ ...t, path: 'ipcps' }));
    return out;
  });
}

export interface InspectResult extends IpcpDescription {
  /** The IPC process's own dump (core/observe.ts inspect()); {} for a type that has none. */
  state: Record<string, unknown>;
  /** Lists cut short to fit in one message; absent when nothing was cut. */
  truncated?: Truncation[];
}

/** The `inspect_dif` result for one hosted IPC process. */
export function inspectIpcp(ipcp: IpcProcess): InspectResult {
  const d = describeIpcp(ipcp);
  const o = ipcp as Partial<ObservableIpcp>;
  const state = typeof o.inspect === 'function' ? o.inspect.call(ipcp) : {};
  return fitToFrame(`the state of ${d.dif}'s IPC process`, state, (s, truncated) => {
    const out: InspectResult = { ...d, state: s as Record<string, unknown> };
    if (truncated.length > 0) out.truncated = truncated;
    return out;
  });
}
