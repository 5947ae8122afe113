/**
 * top/flows.ts — the flow rows of `vmpi top`, read from the IPC daemon's inspection of each IPC
 * process (`inspect_dif`, the same state `vmpi dif show` prints).
 *
 * Owns: picking the flows out of each IPC process type's state (shim-hv: its channels; shim-udp:
 * its flows; normal: the flow allocator's flows), tolerant of parts a daemon does not send, and
 * their rates when the state carries per-flow counters (a `stats` object with txSdus, txBytes,
 * rxSdus, rxBytes; the shim DIF's channels do): a flow without them still gets its row, who talks
 * to whom, and the per-DIF rows (from the metrics) carry the traffic. Flows are not metrics
 * labels (they come and go without bound), which is why their counters come this way.
 */
import { counterRate, NO_RATE, type Rate } from './snapshot.js';

export interface FlowCounters {
  txSdus: number;
  txBytes: number;
  rxSdus: number;
  rxBytes: number;
}

export interface FlowInfo {
  dif: string;
  type: string;
  /** Port-id, channel or flow id: unique within the DIF. */
  id: string;
  state: string;
  local: string;
  remote: string;
  counters?: FlowCounters;
}

export interface FlowRow extends FlowInfo {
  rxSdus: Rate;
  rxBytes: Rate;
  txSdus: Rate;
  txBytes: Rate;
}

/** The least an inspection answer has: DIF, IPC process type, state. */
export interface InspectionLike {
  dif: string;
  type: string;
  state: Record<string, unknown>;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const s = (v: unknown): string => (v === undefined || v === null ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
const app = (v: unknown): string => {
  if (typeof v === 'string') return v;
  const o = obj(v);
  return typeof o.apn === 'string' ? [o.apn, o.api, o.aen, o.aei].filter((x) => typeof x === 'string' && x !== '').join('|') : s(v);
};

function counters(v: unknown): FlowCounters | undefined {
  const o = obj(v);
  const k = ['txSdus', 'txBytes', 'rxSdus', 'rxBytes'] as const;
  if (!k.every((x) => typeof o[x] === 'number')) return undefined;
  return { txSdus: o.txSdus as number, txBytes: o.txBytes as number, rxSdus: o.rxSdus as number, rxBytes: o.rxBytes as number };
}

/** The flows in one IPC process's inspection (an unknown type: none). */
export function flowsOf(d: InspectionLike): FlowInfo[] {
  const st = obj(d.state);
  const base = { dif: d.dif, type: d.type };
  if (d.type === 'shim-hv') {
    return list(st.channels).map((c) => {
      const o = obj(c);
      return { ...base, id: o.portId === undefined ? `ch ${s(o.channel)}` : s(o.portId), state: s(o.state), local: app(o.localApp), remote: app(o.remoteApp), counters: counters(o.stats) };
    });
  }
  if (d.type === 'shim-udp') {
    return list(st.flows).map((f) => {
      const o = obj(f);
      return { ...base, id: s(o.portId ?? o.id), state: s(o.state), local: app(o.localApp), remote: `${app(o.remoteApp)}${o.peer === undefined ? '' : ` @${s(o.peer)}`}`, counters: counters(o.stats) };
    });
  }
  if (d.type === 'normal') {
    return list(obj(st.flowAllocator).flows).map((f) => {
      const o = obj(f);
      const initiator = o.initiator === true;
      return {
        ...base,
        id: s(o.portId ?? o.name ?? o.localCep),
        state: s(o.state ?? 'allocated'),
        local: app(initiator ? o.srcApp : o.dstApp),
        remote: `${app(initiator ? o.dstApp : o.srcApp)}${o.remoteAddr === undefined ? '' : ` @${s(o.remoteAddr)}`}`,
        counters: counters(o.stats),
      };
    });
  }
  return [];
}

/** Flow rows with rates against the previous poll's flows (matched by DIF and id). */
export function flowRates(prev: readonly FlowInfo[] | undefined, cur: readonly FlowInfo[], elapsedS: number): FlowRow[] {
  const before = new Map(prev?.map((f) => [`${f.dif}\0${f.id}`, f]));
  return cur.map((f) => {
    const p = before.get(`${f.dif}\0${f.id}`)?.counters;
    const c = f.counters;
    if (!p || !c) return { ...f, rxSdus: NO_RATE, rxBytes: NO_RATE, txSdus: NO_RATE, txBytes: NO_RATE };
    return {
      ...f,
      rxSdus: counterRate(p.rxSdus, c.rxSdus, elapsedS),
      rxBytes: counterRate(p.rxBytes, c.rxBytes, elapsedS),
      txSdus: counterRate(p.txSdus, c.txSdus, elapsedS),
      txBytes: counterRate(p.txBytes, c.txBytes, elapsedS),
    };
  });
}
