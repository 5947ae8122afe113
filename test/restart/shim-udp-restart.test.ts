/**
 * shim-udp-restart.test.ts — a flow over the shim DIF over UDP survives a restart of the server
 * at one end: A runs `vmpi serve` in its default keeper mode, B with `--restart off`, both with a
 * shim-udp IPC process on loopback (test/helpers/two-serves.ts). An IPC client on A registers an
 * echo application, one on B allocates a flow to it; A's worker is killed (SIGKILL) and the
 * keeper starts a new one, which binds the same port again, resumes A's IPC session and the
 * shim-udp flow it held (same flow ids, peer, port-id): the flow carries SDUs both ways again,
 * neither client saw it end, and a new flow works. A flow held by nobody after the restart (its
 * client went away while no worker ran) ends at B with the restart reason, not by keepalive.
 */
import t from 'tap';
import { IpcClient } from '../../src/dif/ipc/client.js';
import type { ClientFlow } from '../../src/dif/ipc/client-flow.js';
import { until } from '../helpers/serve.js';
import { workerPid } from '../helpers/restart.js';
import { freePort, twoServes } from '../helpers/two-serves.js';

const bounded = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
};

async function echoOnce(flow: ClientFlow, sdu: Uint8Array, what: string): Promise<Uint8Array | null> {
  flow.write(sdu);
  return bounded(flow.read(), 10_000, what);
}

t.test('a shim-udp flow held by an IPC session survives a restart of its server', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // A long keepalive timeout: B must not give the flow up while A restarts (seconds under load).
  const udp = { dif: 'udp.lo', keepaliveMs: 300, keepaliveTimeoutMs: 20_000 };
  const s = await twoServes(
    t,
    'shim-udp-restart',
    { shimUdp: { ...udp, bind: `127.0.0.1:${pa}`, allow: [`127.0.0.1:${pb}`] } },
    { shimUdp: { ...udp, bind: `127.0.0.1:${pb}`, peers: { echo: `127.0.0.1:${pa}` } } },
    [{ restart: 'keeper' }, {}],
  );
  const ca = await IpcClient.connect(s.sockA);
  t.teardown(() => ca.close());
  const cb = await IpcClient.connect(s.sockB);
  t.teardown(() => cb.close());
  const reg = await ca.register('udp.lo', 'echo');
  const served: ClientFlow[] = [];
  reg.on('request', (req) => {
    void req.accept().then((f) => {
      served.push(f);
      f.on('data', (sdu) => f.write(sdu));
    });
  });
  const flow = await cb.allocate('udp.lo', 'echo', { src: 'checker' });
  const other = await cb.allocate('udp.lo', 'echo', { src: 'other' });
  const sdu = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + n) & 0xff);
  t.same(Buffer.from((await echoOnce(flow, sdu(100), 'echo before the restart'))!), Buffer.from(sdu(100)), 'echo before the restart');
  await until('both flows served', () => served.length === 2, 10_000, s.both);
  const endedA: string[] = [];
  const endedB: string[] = [];
  served[0]!.once('deallocated', (r: string) => endedA.push(r));
  flow.once('deallocated', (r: string) => endedB.push(r));
  const otherEnded = new Promise<string>((r) => other.once('deallocated', (reason: string) => r(reason)));
  await new Promise((r) => setTimeout(r, 300)); // the state written after the last change

  const before = s.a.log().split('\n').length;
  const worker = workerPid(s.a.child.pid!);
  process.kill(worker, 'SIGKILL');
  // The flow of 'other' loses its holder while no worker runs: its session's socket closes.
  served[1]!.deallocate();
  const after = (): string[] => s.a.log().split('\n').slice(before);
  await until('a new worker resumed the IPC sessions', () => after().some((l) => l.includes('ipc: sessions resumed')), 60_000, s.both);
  const resumed = after().find((l) => l.includes('shim-udp: resumed'));
  t.match(resumed && JSON.parse(resumed), { flowsKept: 2 }, 'both flows were kept for the resumed session');
  t.match(JSON.parse(after().find((l) => l.includes('ipc: sessions resumed'))!), { flows: 2, flowsLost: 0 }, 'the session got both flows back');

  for (const n of [0, 1, 500, 1400]) {
    const back = await echoOnce(flow, sdu(n), `echo of ${n} B after the restart`);
    t.same(back && Buffer.from(back), Buffer.from(sdu(n)), `${n} B both ways on the same flow after the restart`);
  }
  t.equal(flow.state, 'allocated', "B's flow never ended");
  t.same(endedA, [], "A's application never saw its flow end");
  t.same(endedB, [], "B's application never saw its flow end");

  const f2 = await cb.allocate('udp.lo', 'echo', { src: 'after' });
  t.same(Buffer.from((await echoOnce(f2, sdu(64), 'a new flow'))!), Buffer.from(sdu(64)), 'a new flow works after the restart');
  t.match(await bounded(otherEnded, 15_000, 'the flow whose holder left'), /deallocated by the peer/, 'the flow nobody held any more ended at B by a DEALLOC, before any keepalive timeout');
});
