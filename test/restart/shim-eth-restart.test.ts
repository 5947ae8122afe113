/**
 * shim-eth-restart.test.ts — a flow over the shim DIF over Ethernet across a restart of the
 * server at one end: two `vmpi serve` processes, each in a network namespace of its own that
 * this test creates (joined by a veth pair, removed in teardown), A in its default keeper mode,
 * B with `--restart off`, each with a shim-eth IPC process on its veth end
 * (test/helpers/two-serves.ts). An IPC client on A registers an echo application, one on B
 * allocates a flow to it.
 *   - A's worker is killed (SIGKILL) and the keeper starts a new one, which opens the interface
 *     again (a new AF_PACKET socket: shim-eth keeps no fd in the store), resumes A's IPC session
 *     and the shim-eth flow it held (same flow ids, peer MAC, port-id): the flow carries SDUs of
 *     0..1400 B both ways again, neither application saw it end, and a new flow works.
 *   - A restart that outlasts B's keepalive timeout (the keeper is stopped while no worker runs):
 *     B's flow ends with cause 'peer' (keepalive timeout); A's resumed flow, which B forgot, ends
 *     with cause 'peer' too as soon as B answers its first frame with a DEALLOC ("no such flow"),
 *     well before A's own keepalive timeout, instead of living on.
 * The first round is test/helpers/shim-restart.ts (shared with shim-udp-restart.test.ts).
 * Frames only travel on the veth pair inside the namespaces this test creates.
 */
import t, { type Test } from 'tap';
import { canNetns, netns, uniqueName, veth } from '../helpers/netns.js';
import { workerPid } from '../helpers/restart.js';
import { until } from '../helpers/serve.js';
import { bounded, echoAtA, echoOnce, keptFlowsSurvive, logAfter, sdu } from '../helpers/shim-restart.js';
import { twoServes, type TwoServes } from '../helpers/two-serves.js';

const DIF = 'eth.lan';

/** Namespaces and a veth pair between them, both serves with shim-eth on their end (A under the keeper). */
async function serves(t: Test, prefix: string, keepaliveTimeoutMs: { a: number; b: number }): Promise<TwoServes> {
  const nsA = netns(t, 'vmpira');
  const nsB = netns(t, 'vmpirb');
  const ifA = uniqueName('ra');
  const ifB = uniqueName('rb');
  veth(nsA, ifA, nsB, ifB);
  const eth = { dif: DIF, keepaliveMs: 200, allocateTimeoutMs: 5000 };
  return twoServes(
    t,
    prefix,
    { shimEth: { ...eth, keepaliveTimeoutMs: keepaliveTimeoutMs.a, interface: ifA } },
    { shimEth: { ...eth, keepaliveTimeoutMs: keepaliveTimeoutMs.b, interface: ifB } },
    [{ netns: nsA, restart: 'keeper' }, { netns: nsB }],
  );
}

t.test('a shim-eth flow held by an IPC session survives a restart of its server', { skip: canNetns() }, async (t) => {
  // A long keepalive timeout at B: it must not give the flow up while A restarts (seconds under load).
  const s = await serves(t, 'shim-eth-restart', { a: 20_000, b: 20_000 });
  await keptFlowsSurvive(t, s, DIF, 'shim-eth');
});

t.test('a restart longer than the peer keepalive timeout ends the flow at both ends with a cause', { skip: canNetns() }, async (t) => {
  const TIMEOUT_B = 1500;
  const TIMEOUT_A = 10_000;
  const s = await serves(t, 'shim-eth-restart-long', { a: TIMEOUT_A, b: TIMEOUT_B });
  const { cb, served } = await echoAtA(t, s, DIF);
  const flow = await cb.allocate(DIF, 'echo', { src: 'checker' });
  t.same(Buffer.from((await echoOnce(flow, sdu(100), 'echo before the restart'))!), Buffer.from(sdu(100)), 'echo before the restart');
  await until('the flow served', () => served.length === 1, 10_000, s.both);
  const bEnded = new Promise<[string, string]>((r) => flow.once('deallocated', (reason: string, cause: string) => r([reason, cause])));
  const aEnded = new Promise<[string, string, number]>((r) => served[0]!.once('deallocated', (reason: string, cause: string) => r([reason, cause, Date.now()])));
  await new Promise((r) => setTimeout(r, 300)); // the state written after the last change

  const keeper = s.a.child.pid!;
  const log = logAfter(s, s.a.log().split('\n').length);
  // No worker for longer than B's keepalive timeout: the keeper is stopped before its worker dies.
  process.kill(keeper, 'SIGSTOP');
  let stopped = true;
  t.teardown(() => {
    if (stopped) process.kill(keeper, 'SIGCONT');
  });
  process.kill(workerPid(keeper), 'SIGKILL');
  const [br, bc] = await bounded(bEnded, TIMEOUT_B + 5000, `B's flow end while A has no worker; ${s.both()}`);
  t.equal(bc, 'peer', `B's flow ended with cause peer: ${br}`);
  t.match(br, /keepalive timeout/, "B's reason names the keepalive timeout");
  process.kill(keeper, 'SIGCONT');
  stopped = false;

  await until('a new worker resumed the IPC sessions', () => log.lines().some((l) => l.includes('ipc: sessions resumed')), 60_000, s.both);
  const resumedAt = Date.now();
  t.match(log.json('shim-eth: resumed'), { flowsKept: 1 }, 'A kept the flow for its session (it cannot know B gave it up)');
  const [ar, ac, at] = await bounded(aEnded, TIMEOUT_A, `A's resumed flow end; ${s.both()}`);
  t.equal(ac, 'peer', `A's resumed flow ended with cause peer: ${ar}`);
  t.match(ar, /no such flow/, "A's reason: B answered that it has no such flow");
  t.ok(at - resumedAt < TIMEOUT_A, `A's flow ended ${at - resumedAt} ms after the resume, before its own keepalive timeout (${TIMEOUT_A} ms)`);

  const f2 = await cb.allocate(DIF, 'echo', { src: 'after' });
  t.same(Buffer.from((await echoOnce(f2, sdu(64), 'a new flow'))!), Buffer.from(sdu(64)), 'a new flow works after the restart');
});
