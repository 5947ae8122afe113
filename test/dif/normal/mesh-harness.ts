/**
 * mesh-harness.ts — normal IPC processes of "n.DIF" joined in any graph for tests, all in one
 * process: each edge a real shim-hv IPC process pair over an in-memory VMPI port pair (its own
 * shim DIF, hv.vmpi-<id>), the `a` end on one member, the `b` end on the other. Helpers to read
 * addresses, pools, routes and relaying from the IPCPs' snapshots.
 */
import type { Test } from 'tap';
import { NormalIpcp, type NormalIpcpOptions } from '../../../src/dif/normal/ipcp.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { createPortPair, type PortPair } from '../port-pair.js';

export const DIF = 'n.DIF';

export interface Edge {
  pair: PortPair;
  /** The shim IPC process at one end (host role) and at the other (guest role). */
  a: ShimHvIpcp;
  b: ShimHvIpcp;
}

export class Mesh {
  private nextId = 10;
  readonly ipcps: NormalIpcp[] = [];
  private readonly shims: ShimHvIpcp[] = [];

  constructor(t: Test) {
    t.teardown(() => this.close());
  }

  edge(): Edge {
    const pair = createPortPair({ vmpiId: this.nextId++ });
    const a = new ShimHvIpcp({ port: pair.host, role: 'host' });
    const b = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
    this.shims.push(a, b);
    return { pair, a, b };
  }

  /** An IPCP of n.DIF (closed at teardown); members retry every 50 ms, keepalives every 200 ms. */
  ipcp(o: Omit<NormalIpcpOptions, 'difName'>): NormalIpcp {
    const n = new NormalIpcp({ difName: DIF, retryMs: 50, keepaliveMs: 200, ...o });
    this.ipcps.push(n);
    return n;
  }

  close(): void {
    for (const n of this.ipcps) n.close();
    for (const s of this.shims) s.close();
  }
}

interface Snap {
  rmt: { forwarding: [number, number][]; stats: { relayed: number } };
  enroller?: { pool?: { first: number; last: number }; members: { name: string; address: number; pool?: { first: number; last: number } }[] };
  routing?: { neighbours: { addr: number; portId: number }[] };
}

function snap(n: NormalIpcp): Snap {
  return n.snapshot() as unknown as Snap;
}

/** Destination address → port of the N-1 flow this IPCP forwards to it on. */
export function forwarding(n: NormalIpcp): Map<number, number> {
  return new Map(snap(n).rmt.forwarding);
}

export function routesTo(n: NormalIpcp, addr: number): boolean {
  return forwarding(n).has(addr);
}

/** The neighbours routing has up now. */
export function neighbours(n: NormalIpcp): number[] {
  return (snap(n).routing?.neighbours ?? []).map((x) => x.addr);
}

/** The port routing reaches neighbour `addr` on. */
export function portOf(n: NormalIpcp, addr: number): number | undefined {
  return snap(n).routing?.neighbours.find((x) => x.addr === addr)?.portId;
}

/** The block of addresses this IPCP assigns from (delegated to it, or the enroller's pool). */
export function poolOf(n: NormalIpcp): { first: number; last: number } | undefined {
  return snap(n).enroller?.pool;
}

export function relayed(n: NormalIpcp): number {
  return snap(n).rmt.stats.relayed;
}
