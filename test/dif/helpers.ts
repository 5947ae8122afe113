/**
 * helpers.ts — a host and a guest shim IPC process over an in-memory port pair, plus small
 * waiting helpers, for the shim DIF tests.
 */
import type { Test } from 'tap';
import { ShimHvIpcp, type ShimHvFlow as Flow, type ShimHvFlowRequest as FlowRequest, type ShimHvIpcpOptions } from '../../src/dif/shim-hv/ipcp.js';
import { createPortPair, type PortPair, type PortPairOptions } from './port-pair.js';

export interface Setup {
  pair: PortPair;
  host: ShimHvIpcp;
  guest: ShimHvIpcp;
}

export function setup(
  t: Test,
  opts: { pair?: PortPairOptions; host?: Partial<ShimHvIpcpOptions>; guest?: Partial<ShimHvIpcpOptions> } = {},
): Setup {
  const pair = createPortPair(opts.pair);
  const host = new ShimHvIpcp({ port: pair.host, role: 'host', ...opts.host });
  const guest = new ShimHvIpcp({ port: pair.guest, role: 'guest', ...opts.guest });
  t.teardown(() => {
    host.close();
    guest.close();
  });
  return { pair, host, guest };
}

/** Register `app` and accept every request; `next()` resolves with the next accepted flow. */
export function acceptAll(ipcp: ShimHvIpcp, app: string): { flows: Flow[]; requests: FlowRequest[]; next(): Promise<Flow> } {
  const flows: Flow[] = [];
  const requests: FlowRequest[] = [];
  const waiters: Array<(f: Flow) => void> = [];
  let taken = 0;
  ipcp.register(app, (req) => {
    requests.push(req);
    const f = req.accept();
    flows.push(f);
    const w = waiters.shift();
    if (w) {
      taken++;
      w(f);
    }
  });
  return {
    flows,
    requests,
    next() {
      if (taken < flows.length) return Promise.resolve(flows[taken++]!);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Let the link deliver everything in flight (a few turns of the event loop). */
export async function settle(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await tick();
}

/** Wait until `cond()` holds (fails after `ms`). */
export async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
