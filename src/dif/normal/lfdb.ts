/**
 * lfdb.ts — the lower-flow database of the normal DIF's link-state routing: one entry per
 * direction of every adjacency (N-1 flow between two members) in the DIF.
 *
 * Owns: the entries {from, to, cost, seqnum, up, maxPdu?, updatedAt}, the merge rule, ageing, the
 * bound on how many entries a DIF may make us hold, the graph Dijkstra runs on, and each
 * adjacency's PDU limit (the smaller max PDU of its two directions' N-1 flows, where known).
 *
 * Merge rule (a total order, so the final state does not depend on the order updates arrive in):
 * higher seqnum wins; at equal seqnum a withdrawal beats an advertisement, then the higher cost
 * wins (two different contents under one seqnum only happen after a restart or a bug; any fixed
 * rule converges, this one errs on the side of "down"). An equal entry only refreshes the age.
 *
 * Withdrawals are entries with up=false ("tombstones"), kept until they age out so that an older
 * advertisement still circulating cannot bring the adjacency back. The graph uses an adjacency
 * only when BOTH directions are up (two-way check), so one side's withdrawal suffices.
 *
 * maxPdu (optional: members before it, and old routing messages, do not carry it) is the largest
 * PDU the N-1 flow carries, as its originator sees it. It is not part of the merge order: it
 * comes with the seqnum that carries it, and an entry heard without it under the same seqnum
 * learns it from a copy that has it.
 */
import type { Graph } from './spf.js';

/** What travels in routing messages. Addresses u32, cost 1..65535, seqnum u32. */
export interface LowerFlow {
  from: number;
  to: number;
  cost: number;
  seqnum: number;
  up: boolean;
  /** Largest PDU (bytes) the N-1 flow carries in this direction; absent: unknown (an older member). */
  maxPdu?: number;
}

export interface LfdbEntry extends LowerFlow {
  /** Clock time of the last advertisement that installed or refreshed it. */
  updatedAt: number;
}

export type MergeResult = 'new' | 'updated' | 'refreshed' | 'stale' | 'full';

export const MAX_COST = 0xffff;
export const MAX_SEQNUM = 0xffffffff;

export class LfdbError extends Error {
  override name = 'LfdbError';
  readonly code = 'ERR_LFDB_ENTRY';
}

/** Throws LfdbError if `e` is not a well-formed lower-flow entry. */
export function checkLowerFlow(e: LowerFlow): void {
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  if (!u32(e.from) || !u32(e.to) || e.from === 0 || e.to === 0 || e.from === e.to) {
    throw new LfdbError(`lower flow ${e.from}→${e.to}: addresses must be distinct nonzero u32 (0 is "this hop", never a member)`);
  }
  if (!Number.isInteger(e.cost) || e.cost < 1 || e.cost > MAX_COST) throw new LfdbError(`lower flow ${e.from}→${e.to}: cost ${e.cost} is not an integer in 1..${MAX_COST}`);
  if (!u32(e.seqnum)) throw new LfdbError(`lower flow ${e.from}→${e.to}: seqnum ${e.seqnum} is not a u32`);
  if (typeof e.up !== 'boolean') throw new LfdbError(`lower flow ${e.from}→${e.to}: up must be a boolean`);
  if (e.maxPdu !== undefined && (!u32(e.maxPdu) || e.maxPdu === 0)) throw new LfdbError(`lower flow ${e.from}→${e.to}: maxPdu ${e.maxPdu} is not a nonzero u32`);
}

/** -1, 0, 1: how `a` orders against `b` under the merge rule (same from/to assumed). */
export function compareLowerFlow(a: LowerFlow, b: LowerFlow): number {
  if (a.seqnum !== b.seqnum) return a.seqnum < b.seqnum ? -1 : 1;
  if (a.up !== b.up) return a.up ? -1 : 1;
  if (a.cost !== b.cost) return a.cost < b.cost ? -1 : 1;
  return 0;
}

export class Lfdb {
  private readonly byFrom = new Map<number, Map<number, LfdbEntry>>();
  private count = 0;

  constructor(
    /** Most entries held (a DIF larger than this is a configuration problem; new keys are refused). */
    readonly maxEntries = 16384,
  ) {}

  get size(): number {
    return this.count;
  }

  get(from: number, to: number): LfdbEntry | undefined {
    return this.byFrom.get(from)?.get(to);
  }

  /** Merge one (already checked) entry heard at time `now`. */
  merge(e: LowerFlow, now: number): MergeResult {
    let m = this.byFrom.get(e.from);
    const cur = m?.get(e.to);
    if (!cur) {
      if (this.count >= this.maxEntries) return 'full';
      if (!m) this.byFrom.set(e.from, (m = new Map()));
      const n: LfdbEntry = { from: e.from, to: e.to, cost: e.cost, seqnum: e.seqnum, up: e.up, updatedAt: now };
      if (e.maxPdu !== undefined) n.maxPdu = e.maxPdu;
      m.set(e.to, n);
      this.count++;
      return 'new';
    }
    const c = compareLowerFlow(e, cur);
    if (c < 0) return 'stale';
    cur.updatedAt = now;
    if (c === 0) {
      // The same advertisement; a copy without the limit (from an older member) learns it here.
      if (cur.maxPdu !== undefined || e.maxPdu === undefined) return 'refreshed';
      cur.maxPdu = e.maxPdu;
      return 'updated';
    }
    cur.cost = e.cost;
    cur.seqnum = e.seqnum;
    cur.up = e.up;
    if (e.maxPdu !== undefined) cur.maxPdu = e.maxPdu;
    else delete cur.maxPdu;
    return 'updated';
  }

  delete(from: number, to: number): boolean {
    const m = this.byFrom.get(from);
    if (!m?.delete(to)) return false;
    if (m.size === 0) this.byFrom.delete(from);
    this.count--;
    return true;
  }

  /** Delete entries not refreshed for `maxAgeMs`, except those `keep` says to keep (our own). Returns them. */
  expire(now: number, maxAgeMs: number, keep: (e: LfdbEntry) => boolean): LfdbEntry[] {
    const gone: LfdbEntry[] = [];
    for (const m of this.byFrom.values()) for (const e of m.values()) if (now - e.updatedAt >= maxAgeMs && !keep(e)) gone.push(e);
    for (const e of gone) this.delete(e.from, e.to);
    return gone;
  }

  *entries(): IterableIterator<LfdbEntry> {
    for (const m of this.byFrom.values()) yield* m.values();
  }

  /** The graph of adjacencies up in both directions; the cost of a direction is its own entry's. */
  graph(): Graph {
    const g = new Map<number, Map<number, number>>();
    for (const [from, m] of this.byFrom) {
      for (const e of m.values()) {
        if (!e.up || this.byFrom.get(e.to)?.get(from)?.up !== true) continue;
        let out = g.get(from);
        if (!out) g.set(from, (out = new Map()));
        out.set(e.to, e.cost);
      }
    }
    return g;
  }

  /** The largest PDU the adjacency from→to carries: the smaller of its two directions' known limits (Infinity: unknown). */
  linkLimit(from: number, to: number): number {
    const a = this.byFrom.get(from)?.get(to)?.maxPdu ?? Infinity;
    const b = this.byFrom.get(to)?.get(from)?.maxPdu ?? Infinity;
    return Math.min(a, b);
  }

  /** Plain, sorted data (deterministic: two equal databases give equal snapshots). Age relative to `now`. */
  snapshot(now: number): (LowerFlow & { age: number })[] {
    return [...this.entries()]
      .map((e) => ({ from: e.from, to: e.to, cost: e.cost, seqnum: e.seqnum, up: e.up, ...(e.maxPdu !== undefined ? { maxPdu: e.maxPdu } : {}), age: now - e.updatedAt }))
      .sort((a, b) => a.from - b.from || a.to - b.to);
  }
}
