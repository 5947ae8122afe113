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

/** An IPC process as acceptAll() uses it (any type: shim, normal). */
export interface Accepting<F, R extends { accept(): F }> {
  register(app: string, onFlowRequest: (req: R) => void): unknown;
}

/**
 * Register `app` and accept every request (acceptAll: the shim's; normal/ipcp-harness.ts has n.DIF's); `next()` resolves with the next accepted flow, or
 * rejects if none is accepted within `ms` (default `defaultMs`).
 */
export function acceptEvery<F, R extends { accept(): F }>(ipcp: Accepting<F, R>, app: string, defaultMs = 2000): { flows: F[]; requests: R[]; next(ms?: number): Promise<F> } {
  const flows: F[] = [];
  const requests: R[] = [];
  const waiters: Array<(f: F) => void> = [];
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
    next(ms = defaultMs) {
      if (taken < flows.length) return Promise.resolve(flows[taken++]!);
      return within(new Promise<F>((resolve) => waiters.push(resolve)), `a flow request for ${app} accepted`, ms);
    },
  };
}

/** acceptAll for a shim IPC process. */
export function acceptAll(ipcp: ShimHvIpcp, app: string): { flows: Flow[]; requests: FlowRequest[]; next(ms?: number): Promise<Flow> } {
  return acceptEvery<Flow, FlowRequest>(ipcp, app);
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

/** `p`, or a rejection naming `what` did not happen after `ms` (every wait in a test has a bound). */
export function within<T>(p: Promise<T>, what: string, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** The next SDU of `flow` (or null at its end), bounded. */
export function readWithin(flow: { read(): Promise<Uint8Array | null> }, what = 'an SDU read', ms = 2000): Promise<Uint8Array | null> {
  return within(flow.read(), what, ms);
}
