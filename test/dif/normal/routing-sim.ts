/**
 * routing-sim.ts — a simulated DIF for the routing tests: Routing instances joined by simulated
 * N-1 flows on one ManualClock, messages encoded to bytes and delivered in a seeded random order
 * (so reordering across links is exercised), plus the global shortest-path oracle the converged
 * forwarding tables are compared with. Port id of the flow from a to b, at a: PORT_BASE + b.
 */
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { ROUTING_CLASS, ROUTING_NAME, encodeMgmtPdu } from '../../../src/dif/normal/mgmt-pdu.js';
import { encodeRoutingMessage } from '../../../src/dif/normal/routing-msg.js';
import { Routing, type NeighbourDownCause, type RoutingOptions } from '../../../src/dif/normal/routing.js';

export const PORT_BASE = 1000;

import { mulberry32 } from '../../helpers/rng.js';
export { mulberry32 };

export interface SimEvent {
  at: number;
  node: number;
  kind: 'down' | 'unreachable';
  addr?: number;
  cause?: NeighbourDownCause;
  addrs?: number[];
}

export class SimNet {
  readonly clock = new ManualClock();
  readonly nodes = new Map<number, Routing>();
  /** Directed link costs: "a>b" → cost of a's flow to b. */
  readonly links = new Map<string, number>();
  readonly events: SimEvent[] = [];
  private inflight: { from: number; to: number; bytes: Uint8Array }[] = [];
  readonly rand: () => number;
  messages = 0;
  /** Every message sent: from, to, and its kind byte (1 LFDB, 2 keepalive, 3 LFDB with link limits). */
  readonly sent: { from: number; to: number; kind: number }[] = [];
  /**
   * With `enforceMaxPdu`, a message whose MGMT PDU (as ipcp-mgmt.ts sends it) is larger than its
   * link's maxPdu is dropped, as the RMT drops it (too_big), and counted here.
   */
  enforceMaxPdu = false;
  tooBig = 0;
  /** With `enforceMaxPdu`: the largest MGMT PDU delivered or dropped, per directed link "a>b". */
  readonly largest = new Map<string, number>();
  private readonly linkMaxPdu = new Map<string, number>();

  constructor(
    readonly seed: number,
    readonly opts: Partial<RoutingOptions> = {},
  ) {
    this.rand = mulberry32(seed);
  }

  addNode(addr: number): Routing {
    const r = new Routing({
      refreshMs: 30_000,
      maxAgeMs: 900_000,
      keepaliveMs: 10_000,
      keepaliveMisses: 3,
      ...this.opts,
      clock: this.clock,
      address: addr,
      send: (portId, msg) => {
        const bytes = encodeRoutingMessage(msg);
        this.inflight.push({ from: addr, to: portId - PORT_BASE, bytes });
        this.sent.push({ from: addr, to: portId - PORT_BASE, kind: bytes[1]! });
        return true;
      },
      onNeighbourDown: (n, _p, cause) => this.events.push({ at: this.clock.now(), node: addr, kind: 'down', addr: n, cause }),
      onUnreachable: (addrs) => this.events.push({ at: this.clock.now(), node: addr, kind: 'unreachable', addrs }),
    });
    this.nodes.set(addr, r);
    return r;
  }

  /** `maxPdu`: the link's N-1 flow limit, told to both ends; `limits`: whether a and b read kind 3 (default: both, when maxPdu is given). */
  link(a: number, b: number, costAB = 1, costBA = costAB, info: { maxPdu?: number; limits?: [boolean, boolean] } = {}): void {
    this.links.set(`${a}>${b}`, costAB);
    this.links.set(`${b}>${a}`, costBA);
    const [la, lb] = info.limits ?? [info.maxPdu !== undefined, info.maxPdu !== undefined];
    if (info.maxPdu !== undefined) {
      this.linkMaxPdu.set(`${a}>${b}`, info.maxPdu);
      this.linkMaxPdu.set(`${b}>${a}`, info.maxPdu);
    }
    // Each end is told whether the OTHER reads kind 3, and a member that does not (an old one) knows no limit.
    this.nodes.get(a)!.neighbourUp(b, PORT_BASE + b, costAB, { ...(la ? { maxPdu: info.maxPdu } : {}), limits: lb && la });
    this.nodes.get(b)!.neighbourUp(a, PORT_BASE + a, costBA, { ...(lb ? { maxPdu: info.maxPdu } : {}), limits: la && lb });
  }

  /** The N-1 flow between a and b is lost; both ends notice. */
  unlink(a: number, b: number): void {
    this.links.delete(`${a}>${b}`);
    this.links.delete(`${b}>${a}`);
    this.nodes.get(a)?.neighbourDown(b, 'flow-lost');
    this.nodes.get(b)?.neighbourDown(a, 'flow-lost');
  }

  neighboursOf(a: number): number[] {
    const out: number[] = [];
    for (const k of this.links.keys()) {
      const [x, y] = k.split('>').map(Number) as [number, number];
      if (x === a) out.push(y);
    }
    return out.sort((x, y) => x - y);
  }

  /** The member leaves: its N-1 flows are lost (its neighbours notice), it stops. */
  leave(a: number): void {
    for (const b of this.neighboursOf(a)) this.unlink(a, b);
    this.nodes.get(a)!.stop();
    this.nodes.delete(a);
  }

  /** The member vanishes silently (VM frozen): flows stay "up" but carry nothing; only keepalives notice. */
  crash(a: number): void {
    this.nodes.get(a)!.stop();
    this.nodes.delete(a);
    for (const b of this.neighboursOf(a)) {
      this.links.delete(`${a}>${b}`);
      this.links.delete(`${b}>${a}`);
    }
  }

  /** Deliver every message in flight (and those they cause), in a seeded random order. */
  settle(maxMessages = 2_000_000): void {
    let n = 0;
    while (this.inflight.length > 0) {
      if (++n > maxMessages) throw new Error(`routing did not settle within ${maxMessages} messages (seed ${this.seed})`);
      const i = Math.floor(this.rand() * this.inflight.length);
      const m = this.inflight[i]!;
      this.inflight[i] = this.inflight[this.inflight.length - 1]!;
      this.inflight.pop();
      const dst = this.nodes.get(m.to);
      if (!dst || !this.links.has(`${m.from}>${m.to}`)) continue;
      if (this.enforceMaxPdu) {
        const key = `${m.from}>${m.to}`;
        const size = encodeMgmtPdu(m.from, 0, { op: 'M_WRITE', invokeId: 0, objClass: ROUTING_CLASS, objName: ROUTING_NAME, value: m.bytes }).length;
        this.largest.set(key, Math.max(this.largest.get(key) ?? 0, size));
        if (size > (this.linkMaxPdu.get(key) ?? Infinity)) {
          this.tooBig++;
          continue;
        }
      }
      this.messages++;
      dst.receiveBytes(PORT_BASE + m.from, m.bytes);
    }
  }

  /** Let `ms` of simulated time pass in steps, settling after each. */
  run(ms: number, step = 1000): void {
    for (let t = 0; t < ms; t += step) {
      this.clock.advance(Math.min(step, ms - t));
      this.settle();
    }
  }

  /** Every live node's forwarding table, as dst → next-hop address. */
  tables(): Map<number, Map<number, number>> {
    const out = new Map<number, Map<number, number>>();
    for (const [a, r] of this.nodes) out.set(a, new Map([...r.forwardingTable()].map(([d, p]) => [d, p - PORT_BASE])));
    return out;
  }

  /** The oracle: all-pairs shortest paths (Floyd–Warshall) over the live links, lowest-address tie-break. */
  expected(): Map<number, Map<number, number>> {
    return globalNextHops([...this.nodes.keys()], this.links);
  }
}

export function globalNextHops(nodes: number[], links: ReadonlyMap<string, number>): Map<number, Map<number, number>> {
  const idx = new Map(nodes.map((a, i) => [a, i]));
  const n = nodes.length;
  const D: number[][] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 0 : Infinity)));
  const nbrs: [number, number][][] = Array.from({ length: n }, () => []);
  for (const [k, c] of links) {
    const [x, y] = k.split('>').map(Number) as [number, number];
    const i = idx.get(x);
    const j = idx.get(y);
    if (i === undefined || j === undefined || !links.has(`${y}>${x}`)) continue;
    D[i]![j] = Math.min(D[i]![j]!, c);
    nbrs[i]!.push([j, c]);
  }
  for (let k = 0; k < n; k++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (D[i]![k]! + D[k]![j]! < D[i]![j]!) D[i]![j] = D[i]![k]! + D[k]![j]!;
  const out = new Map<number, Map<number, number>>();
  for (let s = 0; s < n; s++) {
    const m = new Map<number, number>();
    for (let d = 0; d < n; d++) {
      if (d === s || D[s]![d] === Infinity) continue;
      let best = Infinity;
      for (const [nb, c] of nbrs[s]!) if (c + D[nb]![d]! === D[s]![d] && nodes[nb]! < best) best = nodes[nb]!;
      m.set(nodes[d]!, best);
    }
    out.set(nodes[s]!, m);
  }
  return out;
}

export function sorted(m: Map<number, Map<number, number>>): Record<number, [number, number][]> {
  const o: Record<number, [number, number][]> = {};
  for (const [a, t] of [...m].sort((x, y) => x[0] - y[0])) o[a] = [...t].sort((x, y) => x[0] - y[0]);
  return o;
}
