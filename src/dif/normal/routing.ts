/**
 * routing.ts — the normal DIF's link-state routing for one IPCP: its neighbours, the lower-flow
 * database (lfdb.ts) flooded between members, shortest paths (spf.ts), and the forwarding table
 * (destination address → port) it hands to the RMT whenever it changes.
 *
 * Owns: flooding (every new or newer entry goes to all neighbours but the one it came from; a new
 * neighbour gets the whole database), periodic re-advertisement of our own entries with a higher
 * seqnum, ageing out of entries nobody refreshes, withdrawal of both directions of an adjacency
 * when a neighbour goes away (N-1 flow lost, or keepalives missed), re-origination of our own
 * entries when the DIF holds a newer copy than we do (after a restart, or another member's
 * withdrawal of an adjacency we still have), and the callbacks that let flows across a lost
 * neighbour or to an unreachable member end with a cause.
 *
 * I/O: messages leave through `send(portId, msg)` as typed objects (routing-msg.ts encodes them)
 * and arrive through `receive`/`receiveBytes`. Timers are on the injected Clock. docs/NORMAL-DIF-ROUTING.md.
 *
 * Path limits: each adjacency we originate carries its N-1 flow's max PDU (`neighbourUp`'s
 * `link.maxPdu`); a neighbour that reads them (`link.limits`) gets kind-3 updates, any other kind 1.
 * After each SPF run, `pathMaxPdu(dst)` is the smallest link limit on any shortest path to dst (the
 * path PDUs take hop by hop is one of them), Infinity where no link on them states a limit.
 *
 * Message size: the database (to a new neighbour) and every flood are cut into as many LFDB
 * updates as it takes for each to fit the neighbour's N-1 flow in one MGMT PDU (PCI, CDAP
 * envelope and all: `entriesPerUpdate`); an update larger than the link would be dropped by the
 * RMT (too_big) and the neighbour would never converge. Each update stands alone.
 */
import type { Clock, TimerHandle } from './clock.js';
import { Lfdb, MAX_SEQNUM, checkLowerFlow, compareLowerFlow, type LowerFlow } from './lfdb.js';
import { Neighbours } from './neighbours.js';
import { cdapValueBudget } from './cdap.js';
import { ROUTING_ENVELOPE } from './mgmt-pdu.js';
import { PCI_LEN } from './pci.js';
import { MAX_ENTRIES_PER_LIMITS_MSG, MAX_ENTRIES_PER_MSG, RoutingMsgError, decodeRoutingMessage, entriesThatFit, type RoutingMessage } from './routing-msg.js';
import { shortestPaths, type Graph } from './spf.js';
import { CodedError } from '../../sys/coded-error.js';

/**
 * LFDB entries per update to a neighbour whose N-1 flow carries PDUs of up to `maxPdu` bytes:
 * as many as fit one MGMT PDU (PCI, CDAP envelope, update) within it, at least 1 (a link too
 * small for one entry cannot be helped: its PDU is dropped and counted by the RMT), at most the
 * kind's maximum. Unknown `maxPdu`: the kind's maximum.
 */
export function entriesPerUpdate(maxPdu: number | undefined, limits: boolean): number {
  const cap = limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG;
  if (maxPdu === undefined) return cap;
  return Math.max(1, entriesThatFit(cdapValueBudget(ROUTING_ENVELOPE, maxPdu - PCI_LEN), limits));
}

function withLimit(e: LowerFlow, maxPdu: number | undefined): LowerFlow {
  if (maxPdu !== undefined) e.maxPdu = maxPdu;
  return e;
}

export type NeighbourDownCause = 'flow-lost' | 'keepalive' | 'removed';

export interface RoutingOptions {
  clock: Clock;
  /** This IPCP's address (nonzero). */
  address: number;
  /** Send a routing message to the neighbour on this port. false/throw: not sent (counted; the periodic refresh repairs). */
  send: (portId: number, msg: RoutingMessage) => boolean | void;
  /** The forwarding table changed (destination → port); install it in the RMT. */
  onForwardingTable?: (table: ReadonlyMap<number, number>) => void;
  /** A neighbour went away: end the flows whose N-1 path was its port, with this cause. */
  onNeighbourDown?: (addr: number, portId: number, cause: NeighbourDownCause) => void;
  /** Members that were reachable and no longer are: end the flows to them. */
  onUnreachable?: (addrs: number[]) => void;
  /** Re-advertise our own entries every this many ms (default 30 000). */
  refreshMs?: number;
  /** Entries not refreshed for this long are deleted (default 900 000). */
  maxAgeMs?: number;
  /** Keepalive period and misses (defaults 10 000 ms, 3). */
  keepaliveMs?: number;
  keepaliveMisses?: number;
  /** Bound on LFDB entries (default 16 384). */
  maxEntries?: number;
}

export class RoutingError extends CodedError<'ERR_ROUTING_CONFIG' | 'ERR_ROUTING_NEIGHBOUR'> {
  override name = 'RoutingError';
}

export interface RoutingStats {
  msgsRx: number;
  msgsTx: number;
  /** Messages that could not be decoded, or came from a port that is no neighbour. */
  msgsBad: number;
  msgsFromStranger: number;
  sendFailed: number;
  entriesNew: number;
  entriesUpdated: number;
  entriesRefreshed: number;
  entriesStale: number;
  /** Entries refused because the LFDB was at its bound. */
  entriesRefused: number;
  entriesExpired: number;
  /** Our own entries re-originated because the DIF held a newer copy. */
  reoriginated: number;
  recomputes: number;
  neighboursDown: number;
  callbackErrors: number;
}

export interface RoutingSnapshot {
  address: number;
  neighbours: { addr: number; portId: number; cost: number; lastHeard: number }[];
  lfdb: (LowerFlow & { age: number })[];
  forwarding: [number, number][];
  stats: RoutingStats;
}

interface Adjacency {
  portId: number;
  cost: number;
  /** Largest PDU our N-1 flow to the neighbour carries (undefined: unknown). */
  maxPdu: number | undefined;
  /** The neighbour reads kind-3 LFDB updates (link limits). */
  limits: boolean;
  /** Entries per LFDB update to it, so that each fits its N-1 flow (entriesPerUpdate). */
  perUpdate: number;
}

/** What routing is told about the N-1 flow to a neighbour. */
export interface LinkInfo {
  /** Largest PDU the N-1 flow carries. */
  maxPdu?: number;
  /** The neighbour reads LFDB updates with link limits (said at enrollment). */
  limits?: boolean;
}

export class Routing {
  readonly address: number;
  readonly stats: RoutingStats = {
    msgsRx: 0, msgsTx: 0, msgsBad: 0, msgsFromStranger: 0, sendFailed: 0, entriesNew: 0, entriesUpdated: 0, entriesRefreshed: 0, entriesStale: 0,
    entriesRefused: 0, entriesExpired: 0, reoriginated: 0, recomputes: 0, neighboursDown: 0, callbackErrors: 0,
  };
  private readonly clock: Clock;
  private readonly lfdb: Lfdb;
  private readonly adj = new Map<number, Adjacency>();
  private readonly byPort = new Map<number, number>();
  private readonly live: Neighbours;
  private forwarding = new Map<number, number>();
  private pathLimits = new Map<number, number>();
  private readonly refreshMs: number;
  private readonly maxAgeMs: number;
  private refreshTimer: TimerHandle | undefined;
  private ageTimer: TimerHandle | undefined;
  private stopped = false;

  constructor(private readonly opts: RoutingOptions) {
    if (!Number.isInteger(opts.address) || opts.address < 1 || opts.address > 0xffffffff) throw new RoutingError('ERR_ROUTING_CONFIG', `routing address ${opts.address} must be a nonzero u32 (enroll first)`);
    this.address = opts.address;
    this.clock = opts.clock;
    this.refreshMs = opts.refreshMs ?? 30_000;
    this.maxAgeMs = opts.maxAgeMs ?? 900_000;
    if (!(this.refreshMs > 0) || !(this.maxAgeMs > this.refreshMs * 2)) throw new RoutingError('ERR_ROUTING_CONFIG', `refresh ${this.refreshMs} ms / max age ${this.maxAgeMs} ms: need refresh > 0 and max age > 2 × refresh, or live entries age out`);
    this.lfdb = new Lfdb(opts.maxEntries);
    this.live = new Neighbours({
      clock: opts.clock,
      intervalMs: opts.keepaliveMs,
      misses: opts.keepaliveMisses,
      sendKeepalive: (_addr, portId) => this.sendMsg(portId, { kind: 'keepalive', address: this.address }),
      onDown: (addr) => this.neighbourDown(addr, 'keepalive'),
    });
    this.refreshTimer = this.clock.setTimer(this.refreshMs, () => this.refresh());
    this.ageTimer = this.clock.setTimer(this.ageCheckMs(), () => this.age());
  }

  // ---- neighbours ---------------------------------------------------------------------------

  /** An N-1 flow to neighbour `addr` is up on `portId` (after enrollment). */
  neighbourUp(addr: number, portId: number, cost = 1, link: LinkInfo = {}): void {
    if (this.stopped) return;
    if (!Number.isInteger(addr) || addr < 1 || addr > 0xffffffff || addr === this.address) throw new RoutingError('ERR_ROUTING_NEIGHBOUR', `neighbour address ${addr} must be a nonzero u32 other than ours (${this.address})`);
    if (!Number.isInteger(cost) || cost < 1 || cost > 0xffff) throw new RoutingError('ERR_ROUTING_NEIGHBOUR', `cost ${cost} to neighbour ${addr} is not an integer in 1..65535`);
    const maxPdu = link.maxPdu;
    if (maxPdu !== undefined && (!Number.isInteger(maxPdu) || maxPdu < 1 || maxPdu > 0xffffffff)) throw new RoutingError('ERR_ROUTING_NEIGHBOUR', `max PDU ${maxPdu} of the link to neighbour ${addr} is not a nonzero u32`);
    const other = this.byPort.get(portId);
    if (other !== undefined && other !== addr) throw new RoutingError('ERR_ROUTING_NEIGHBOUR', `port ${portId} already leads to neighbour ${other}; take it down first`);
    const old = this.adj.get(addr);
    if (old) this.byPort.delete(old.portId);
    this.adj.set(addr, { portId, cost, maxPdu, limits: link.limits === true, perUpdate: entriesPerUpdate(maxPdu, link.limits === true) });
    this.byPort.set(portId, addr);
    this.live.add(addr, portId);
    const own = this.originate(addr);
    this.sendAll(portId);
    this.flood([own], portId);
    this.recompute();
  }

  /** The neighbour is gone (its N-1 flow was lost, or it was removed): withdraw both directions. */
  neighbourDown(addr: number, cause: NeighbourDownCause = 'flow-lost'): void {
    const a = this.adj.get(addr);
    if (!a) return;
    this.adj.delete(addr);
    this.byPort.delete(a.portId);
    this.live.remove(addr);
    this.stats.neighboursDown++;
    const withdrawn: LowerFlow[] = [this.originate(addr)];
    const theirs = this.lfdb.get(addr, this.address);
    if (theirs?.up && theirs.seqnum < MAX_SEQNUM) {
      const t = withLimit({ from: addr, to: this.address, cost: theirs.cost, seqnum: theirs.seqnum + 1, up: false }, theirs.maxPdu);
      this.lfdb.merge(t, this.clock.now());
      withdrawn.push(t);
    }
    this.flood(withdrawn, undefined);
    this.recompute();
    this.callback(() => this.opts.onNeighbourDown?.(addr, a.portId, cause));
  }

  // ---- messages -----------------------------------------------------------------------------

  /** Bytes of a routing message from the neighbour on `portId`. Never throws. */
  receiveBytes(portId: number, bytes: Uint8Array): void {
    let msg: RoutingMessage;
    try {
      msg = decodeRoutingMessage(bytes);
    } catch (e) {
      if (!(e instanceof RoutingMsgError)) throw e;
      this.stats.msgsBad++;
      return;
    }
    this.receive(portId, msg);
  }

  receive(portId: number, msg: RoutingMessage): void {
    if (this.stopped) return;
    const from = this.byPort.get(portId);
    if (from === undefined) {
      this.stats.msgsFromStranger++;
      return;
    }
    this.stats.msgsRx++;
    this.live.heard(from);
    if (msg.kind === 'keepalive') return;
    const now = this.clock.now();
    const onward: LowerFlow[] = [];
    const back: LowerFlow[] = [];
    let changed = false;
    for (const e of msg.entries) {
      try {
        checkLowerFlow(e);
      } catch {
        this.stats.msgsBad++;
        continue;
      }
      if (e.from === this.address) {
        const fix = this.ownCopy(e);
        if (fix) back.push(fix);
        continue;
      }
      const cur = this.lfdb.get(e.from, e.to);
      const topo = !cur || cur.up !== e.up || cur.cost !== e.cost || cur.maxPdu !== e.maxPdu;
      const r = this.lfdb.merge(e, now);
      if (r === 'new' || r === 'updated') {
        if (r === 'new') this.stats.entriesNew++;
        else this.stats.entriesUpdated++;
        onward.push(e);
        if (topo) changed = true;
      } else if (r === 'refreshed') this.stats.entriesRefreshed++;
      else if (r === 'stale') this.stats.entriesStale++;
      else this.stats.entriesRefused++;
    }
    if (onward.length > 0) this.flood(onward, portId);
    if (back.length > 0) this.flood(back, undefined);
    if (changed || back.length > 0) this.recompute();
  }

  /** Someone holds a copy of our own entry `e`: if it is not older than ours, re-originate above it. */
  private ownCopy(e: LowerFlow): LowerFlow | undefined {
    const cur = this.lfdb.get(this.address, e.to);
    if (cur && compareLowerFlow(e, cur) <= 0) return undefined;
    if (e.seqnum >= MAX_SEQNUM) return undefined; // cannot go above it; it ages out (see docs)
    this.stats.reoriginated++;
    const a = this.adj.get(e.to);
    const fix: LowerFlow = a ? withLimit({ from: this.address, to: e.to, cost: a.cost, seqnum: e.seqnum + 1, up: true }, a.maxPdu) : { from: this.address, to: e.to, cost: e.cost, seqnum: e.seqnum + 1, up: false };
    this.lfdb.merge(fix, this.clock.now());
    return fix;
  }

  // ---- origination, flooding ----------------------------------------------------------------

  /** (Re)write our entry towards `to` with the next seqnum: up if it is a neighbour, else a withdrawal. */
  private originate(to: number): LowerFlow {
    const cur = this.lfdb.get(this.address, to);
    const a = this.adj.get(to);
    const seqnum = Math.min(MAX_SEQNUM, (cur?.seqnum ?? 0) + 1);
    const e: LowerFlow = a ? withLimit({ from: this.address, to, cost: a.cost, seqnum, up: true }, a.maxPdu) : { from: this.address, to, cost: cur?.cost ?? 1, seqnum, up: false };
    if (cur && cur.seqnum === seqnum) {
      // Seqnum exhausted (u32): overwrite in place; the rest of the DIF keeps its copy until it ages out.
      cur.cost = e.cost;
      cur.up = e.up;
      if (e.maxPdu !== undefined) cur.maxPdu = e.maxPdu;
      else delete cur.maxPdu;
      cur.updatedAt = this.clock.now();
    } else this.lfdb.merge(e, this.clock.now());
    return e;
  }

  private flood(entries: LowerFlow[], exceptPort: number | undefined): void {
    for (const a of this.adj.values()) if (a.portId !== exceptPort) this.sendEntries(a.portId, entries);
  }

  /** The whole database to one (new) neighbour. */
  private sendAll(portId: number): void {
    const all: LowerFlow[] = [];
    for (const e of this.lfdb.entries()) all.push(withLimit({ from: e.from, to: e.to, cost: e.cost, seqnum: e.seqnum, up: e.up }, e.maxPdu));
    this.sendEntries(portId, all);
  }

  /**
   * Kind 3 (with link limits) to a neighbour that reads it, kind 1 to any other, cut into updates
   * that each fit the neighbour's N-1 flow. Each update is self-contained (entries merge one by
   * one), so the loss or reordering of one of them loses or delays only its own entries.
   */
  private sendEntries(portId: number, entries: LowerFlow[]): void {
    const to = this.byPort.get(portId);
    const a = to === undefined ? undefined : this.adj.get(to);
    const limits = a?.limits === true;
    const per = a?.perUpdate ?? (limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG);
    for (let i = 0; i < entries.length; i += per) this.sendMsg(portId, limits ? { kind: 'lfdb', entries: entries.slice(i, i + per), limits: true } : { kind: 'lfdb', entries: entries.slice(i, i + per) });
  }

  private sendMsg(portId: number, msg: RoutingMessage): void {
    try {
      if (this.opts.send(portId, msg) === false) this.stats.sendFailed++;
      else this.stats.msgsTx++;
    } catch {
      this.stats.sendFailed++;
    }
  }

  // ---- timers -------------------------------------------------------------------------------

  private ageCheckMs(): number {
    return Math.max(1, Math.floor(this.maxAgeMs / 10));
  }

  private refresh(): void {
    this.refreshTimer = this.clock.setTimer(this.refreshMs, () => this.refresh());
    const own: LowerFlow[] = [];
    for (const to of this.adj.keys()) own.push(this.originate(to));
    if (own.length > 0) this.flood(own, undefined);
  }

  private age(): void {
    this.ageTimer = this.clock.setTimer(this.ageCheckMs(), () => this.age());
    // Our own up entries are refreshed by us; everything else (our withdrawals included) ages out.
    const gone = this.lfdb.expire(this.clock.now(), this.maxAgeMs, (e) => e.from === this.address && e.up);
    this.stats.entriesExpired += gone.length;
    if (gone.some((e) => e.up)) this.recompute();
  }

  // ---- shortest paths → forwarding table ----------------------------------------------------

  private recompute(): void {
    this.stats.recomputes++;
    const graph = this.lfdb.graph();
    const { nextHop, dist } = shortestPaths(graph, this.address);
    this.pathLimits = this.limitsOver(graph, dist);
    const table = new Map<number, number>();
    for (const [dst, hop] of nextHop) {
      const a = this.adj.get(hop);
      if (a) table.set(dst, a.portId);
    }
    const old = this.forwarding;
    let same = old.size === table.size;
    if (same) for (const [d, p] of table) if (old.get(d) !== p) (same = false);
    if (same) return;
    this.forwarding = table;
    const lost: number[] = [];
    for (const d of old.keys()) if (!table.has(d)) lost.push(d);
    this.callback(() => this.opts.onForwardingTable?.(table));
    if (lost.length > 0) this.callback(() => this.opts.onUnreachable?.(lost.sort((x, y) => x - y)));
  }

  /**
   * Per destination, the smallest link limit on any of its shortest paths (the DAG `dist` defines):
   * nodes in order of distance, each taking the minimum over the shortest-path edges into it.
   */
  private limitsOver(graph: Graph, dist: ReadonlyMap<number, number>): Map<number, number> {
    const lim = new Map<number, number>([[this.address, Infinity]]);
    const order = [...dist].sort((x, y) => x[1] - y[1] || x[0] - y[0]);
    for (const [u, du] of order) {
      const lu = lim.get(u);
      const edges = graph.get(u);
      if (lu === undefined || !edges) continue;
      for (const [v, c] of edges) {
        if (dist.get(v) !== du + c) continue;
        let l = Math.min(lu, this.lfdb.linkLimit(u, v));
        if (u === this.address) l = Math.min(l, this.adj.get(v)?.maxPdu ?? Infinity);
        lim.set(v, Math.min(lim.get(v) ?? Infinity, l));
      }
    }
    lim.delete(this.address);
    return lim;
  }

  /** The largest PDU the path to `dst` carries (Infinity: no link on it states a limit; undefined: no route). */
  pathMaxPdu(dst: number): number | undefined {
    return this.forwarding.has(dst) ? (this.pathLimits.get(dst) ?? Infinity) : undefined;
  }

  private callback(fn: () => void): void {
    try {
      fn();
    } catch {
      this.stats.callbackErrors++;
    }
  }

  // ---- inspection, shutdown -----------------------------------------------------------------

  forwardingTable(): ReadonlyMap<number, number> {
    return this.forwarding;
  }

  neighbours(): number[] {
    return [...this.adj.keys()].sort((a, b) => a - b);
  }

  snapshot(): RoutingSnapshot {
    const now = this.clock.now();
    return {
      address: this.address,
      neighbours: [...this.adj].sort((x, y) => x[0] - y[0]).map(([addr, a]) => ({ addr, portId: a.portId, cost: a.cost, lastHeard: this.live.get(addr)?.lastHeard ?? now })),
      lfdb: this.lfdb.snapshot(now),
      forwarding: [...this.forwarding].sort((x, y) => x[0] - y[0]),
      stats: { ...this.stats },
    };
  }

  /** Stop all timers; further input is ignored. */
  stop(): void {
    this.stopped = true;
    this.clock.clearTimer(this.refreshTimer);
    this.clock.clearTimer(this.ageTimer);
    this.live.stop();
  }
}
