/**
 * spf.ts — shortest paths for the normal DIF's routing: Dijkstra from this IPCP over the graph the
 * lower-flow database describes, giving the next hop (a neighbour's address) per destination.
 *
 * Deterministic tie-break, so every run and every member agrees: when several shortest paths lead
 * to a destination, the next hop is the LOWEST neighbour address that begins one of them. Costs
 * must be integers ≥ 1 (the LFDB refuses others), which makes that rule exact: every predecessor
 * on a shortest path is settled before the node it leads to.
 */

/** Adjacency: from → (to → cost). */
export type Graph = ReadonlyMap<number, ReadonlyMap<number, number>>;

export interface SpfResult {
  /** destination → next hop address (destinations other than the source that are reachable). */
  nextHop: Map<number, number>;
  /** destination → path cost (the source itself at 0). */
  dist: Map<number, number>;
}

/** A binary min-heap of [dist, addr] pairs, ordered by dist then addr. */
class Heap {
  private readonly d: number[] = [];
  private readonly a: number[] = [];
  get size(): number {
    return this.d.length;
  }
  private less(i: number, j: number): boolean {
    return this.d[i]! < this.d[j]! || (this.d[i] === this.d[j] && this.a[i]! < this.a[j]!);
  }
  private swap(i: number, j: number): void {
    [this.d[i], this.d[j]] = [this.d[j]!, this.d[i]!];
    [this.a[i], this.a[j]] = [this.a[j]!, this.a[i]!];
  }
  push(dist: number, addr: number): void {
    this.d.push(dist);
    this.a.push(addr);
    for (let i = this.d.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.d[0]!, this.a[0]!];
    const ld = this.d.pop()!;
    const la = this.a.pop()!;
    if (this.d.length > 0) {
      this.d[0] = ld;
      this.a[0] = la;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.d.length && this.less(l, m)) m = l;
        if (r < this.d.length && this.less(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/** Dijkstra from `source` over `graph`. */
export function shortestPaths(graph: Graph, source: number): SpfResult {
  const dist = new Map<number, number>([[source, 0]]);
  const nextHop = new Map<number, number>();
  const done = new Set<number>();
  const heap = new Heap();
  heap.push(0, source);
  while (heap.size > 0) {
    const [du, u] = heap.pop();
    if (done.has(u) || du !== dist.get(u)) continue;
    done.add(u);
    const edges = graph.get(u);
    if (!edges) continue;
    for (const [v, c] of edges) {
      if (done.has(v)) continue;
      const dv = du + c;
      // Leaving the source, the next hop is v itself; further on it is inherited from u.
      const hop = u === source ? v : nextHop.get(u)!;
      const old = dist.get(v);
      if (old === undefined || dv < old) {
        dist.set(v, dv);
        nextHop.set(v, hop);
        heap.push(dv, v);
      } else if (dv === old && hop < nextHop.get(v)!) {
        nextHop.set(v, hop);
      }
    }
  }
  return { nextHop, dist };
}
