/**
 * ipcp-harness.ts — the normal DIF's integration topology for tests, all in one process:
 * VM1 —shim— host —shim— VM2, each shim DIF a real shim-hv IPC process pair over an in-memory
 * VMPI port pair, and normal IPC processes of "n.DIF" on top (the host's is the enroller and
 * relays between the VMs). Helpers to accept flows and to wait with a bound.
 */
import type { Test } from 'tap';
import type { Flow, FlowRequest } from '../../../src/dif/api.js';
import { NormalIpcp, type NormalIpcpOptions } from '../../../src/dif/normal/ipcp.js';
import { ShimHvIpcp } from '../../../src/dif/shim-hv/ipcp.js';
import { createPortPair, type PortPair } from '../port-pair.js';
import { acceptEvery, until, within as withinWhat } from '../helpers.js';

export const DIF = 'n.DIF';

export interface Topology {
  pair1: PortPair;
  pair2: PortPair;
  host: NormalIpcp;
  vm1: NormalIpcp;
  vm2: NormalIpcp;
  shims: ShimHvIpcp[];
}

export async function topology(t: Test, opts: { capacity?: number; maxSdu?: number; member?: Partial<NormalIpcpOptions>; host?: Partial<NormalIpcpOptions> } = {}): Promise<Topology> {
  const pair1 = createPortPair({ vmpiId: 1, capacity: opts.capacity, maxSdu: opts.maxSdu });
  const pair2 = createPortPair({ vmpiId: 2, capacity: opts.capacity, maxSdu: opts.maxSdu });
  const h1 = new ShimHvIpcp({ port: pair1.host, role: 'host' });
  const h2 = new ShimHvIpcp({ port: pair2.host, role: 'host' });
  const g1 = new ShimHvIpcp({ port: pair1.guest, role: 'guest' });
  const g2 = new ShimHvIpcp({ port: pair2.guest, role: 'guest' });
  const host = new NormalIpcp({ difName: DIF, name: 'host.n', role: 'enroller', lower: [h1, h2], ...opts.host });
  const vm1 = new NormalIpcp({ difName: DIF, name: 'vm1.n', role: 'member', enroll: { lower: g1, enrollerName: 'host.n' }, retryMs: 50, ...opts.member });
  const vm2 = new NormalIpcp({ difName: DIF, name: 'vm2.n', role: 'member', enroll: { lower: g2, enrollerName: 'host.n' }, retryMs: 50, ...opts.member });
  const shims = [h1, h2, g1, g2];
  t.teardown(() => {
    for (const n of [vm1, vm2, host]) n.close();
    for (const s of shims) s.close();
  });
  await until(() => vm1.isEnrolled && vm2.isEnrolled, 'both VMs enrolled', 5000);
  await until(() => routes(vm1).includes(vm2.address) && routes(vm2).includes(vm1.address), 'routes between the VMs', 5000);
  return { pair1, pair2, host, vm1, vm2, shims };
}

/** Destination addresses this IPCP has a next hop for. */
export function routes(n: NormalIpcp): number[] {
  const rmt = n.snapshot().rmt as { forwarding: [number, number][] };
  return rmt.forwarding.map(([d]) => d);
}

/** Register `app` in n.DIF and accept every request (test/dif/helpers.ts); `next()` waits up to 5 s by default. */
export function acceptAll(ipcp: NormalIpcp, app: string): { flows: Flow[]; requests: FlowRequest[]; next(ms?: number): Promise<Flow> } {
  return acceptEvery<Flow, FlowRequest>(ipcp, app, 5000);
}

/** The directory of `n` knows `app` (registrations flood asynchronously). */
export function knows(n: NormalIpcp, app: string): boolean {
  const d = n.snapshot().directory as { entries: { app: { processName: string }; removed: boolean }[] };
  return d.entries.some((e) => e.app.processName === app && !e.removed);
}

/** `p`, or a rejection after `ms` (test/dif/helpers.ts `within`, the argument order these tests use). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withinWhat(p, what, ms);
}
