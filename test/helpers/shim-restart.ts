/**
 * shim-restart.ts — the restart of a datagram shim (shim-udp, shim-eth) across real serve
 * processes, shared by test/restart/shim-udp-restart.test.ts and shim-eth-restart.test.ts: an
 * echo application registered at A (whose serve runs under the keeper), flows to it from B,
 * bounded echoes, and the whole "a flow held by an IPC session survives a restart" round
 * (keptFlowsSurvive): A's worker killed, the kept flows resumed, 0..1400 B both ways on the same
 * flow, a new flow, and a flow whose holder left while no worker ran ending at B by a DEALLOC.
 */
import type { Test } from 'tap';
import { IpcClient } from '../../src/dif/ipc/client.js';
import type { ClientFlow } from '../../src/dif/ipc/client-flow.js';
import { workerPid } from './restart.js';
import { until } from './serve.js';
import type { TwoServes } from './two-serves.js';

/** `p`, or a rejection naming `what` after `ms`. */
export function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

/** Write `sdu` on `flow` and read one SDU back (at most 10 s). */
export async function echoOnce(flow: ClientFlow, sdu: Uint8Array, what: string): Promise<Uint8Array | null> {
  flow.write(sdu);
  return bounded(flow.read(), 10_000, what);
}

/** An SDU of `n` bytes, its pattern depending on n. */
export const sdu = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + n) & 0xff);

export interface EchoPair {
  /** B's IPC client (allocates). */
  cb: IpcClient;
  /** Flows A's echo application accepted, in order. */
  served: ClientFlow[];
}

/** IPC clients on A and B (closed in teardown), an application 'echo' registered in `dif` at A. */
export async function echoAtA(t: Test, s: TwoServes, dif: string): Promise<EchoPair> {
  const ca = await IpcClient.connect(s.sockA);
  t.teardown(() => ca.close());
  const cb = await IpcClient.connect(s.sockB);
  t.teardown(() => cb.close());
  const reg = await ca.register(dif, 'echo');
  const served: ClientFlow[] = [];
  reg.on('request', (req) => {
    void req.accept().then((f) => {
      served.push(f);
      f.on('data', (d) => f.write(d));
    });
  });
  return { cb, served };
}

/** Lines of A's log written after `before` lines, and the first with `msg` as JSON. */
export function logAfter(s: TwoServes, before: number): { lines: () => string[]; json: (msg: string) => unknown } {
  const lines = (): string[] => s.a.log().split('\n').slice(before);
  return {
    lines,
    json: (msg) => {
      const l = lines().find((x) => x.includes(msg));
      return l && JSON.parse(l);
    },
  };
}

/**
 * The round: two flows from B to A's echo in `dif`; A's worker killed (SIGKILL) while the second
 * flow's holder at A lets it go; the new worker resumes both flows for the session (`shim`'s
 * "resumed" line: flowsKept 2); the first carries 0..1400 B both ways, neither end saw it end;
 * a new flow works; the second ends at B by a DEALLOC, not by a keepalive timeout. B's
 * keepalive timeout must be longer than the restart.
 */
export async function keptFlowsSurvive(t: Test, s: TwoServes, dif: string, shim: 'shim-udp' | 'shim-eth'): Promise<void> {
  const { cb, served } = await echoAtA(t, s, dif);
  const flow = await cb.allocate(dif, 'echo', { src: 'checker' });
  const other = await cb.allocate(dif, 'echo', { src: 'other' });
  t.same(Buffer.from((await echoOnce(flow, sdu(100), 'echo before the restart'))!), Buffer.from(sdu(100)), 'echo before the restart');
  await until('both flows served', () => served.length === 2, 10_000, s.both);
  const endedA: string[] = [];
  const endedB: string[] = [];
  served[0]!.once('deallocated', (r: string) => endedA.push(r));
  flow.once('deallocated', (r: string) => endedB.push(r));
  const otherEnded = new Promise<string>((r) => other.once('deallocated', (reason: string) => r(reason)));
  await new Promise((r) => setTimeout(r, 300)); // the state written after the last change

  const log = logAfter(s, s.a.log().split('\n').length);
  process.kill(workerPid(s.a.child.pid!), 'SIGKILL');
  // The flow of 'other' loses its holder while no worker runs: its session's socket closes.
  served[1]!.deallocate();
  await until('a new worker resumed the IPC sessions', () => log.lines().some((l) => l.includes('ipc: sessions resumed')), 60_000, s.both);
  t.match(log.json(`${shim}: resumed`), { flowsKept: 2 }, 'both flows were kept for the resumed session');
  t.match(log.json('ipc: sessions resumed'), { flows: 2, flowsLost: 0 }, 'the session got both flows back');

  for (const n of [0, 1, 500, 1400]) {
    const back = await echoOnce(flow, sdu(n), `echo of ${n} B after the restart`);
    t.same(back && Buffer.from(back), Buffer.from(sdu(n)), `${n} B both ways on the same flow after the restart`);
  }
  t.equal(flow.state, 'allocated', "B's flow never ended");
  t.same(endedA, [], "A's application never saw its flow end");
  t.same(endedB, [], "B's application never saw its flow end");

  const f2 = await cb.allocate(dif, 'echo', { src: 'after' });
  t.same(Buffer.from((await echoOnce(f2, sdu(64), 'a new flow'))!), Buffer.from(sdu(64)), 'a new flow works after the restart');
  t.match(await bounded(otherEnded, 15_000, 'the flow whose holder left'), /deallocated by the peer/, 'the flow nobody held any more ended at B by a DEALLOC, before any keepalive timeout');
}
