/**
 * restore.test.ts — the IPC daemon's sessions survive the death of its process (src/dif/ipc/
 * snapshot.ts): a host daemon and its shim IPC process are dropped without a word (abandon(),
 * detach(): what SIGKILL does, nothing closed), and a new daemon and shim IPC process resume
 * from their JSON snapshots on the same fds. The host application, connected throughout on the
 * same socket, notices nothing: its flows carry SDUs both ways (including one it wrote while no
 * daemon ran), its registration still receives flow requests, and a new allocation works.
 */
import t, { type Test } from 'tap';
import { DifError } from '../../src/dif/api.js';
import type { ClientFlow, ClientFlowRequest, ClientRegistration } from '../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { ipcSnapshotFlows, parseIpcDaemonSnapshot } from '../../src/dif/ipc/snapshot.js';
import { RESUME_ALLOCATION_LOST, RESUME_OUT_OF_STEP } from '../../src/dif/ipc/session.js';
import { FramedConn } from '../../src/dif/ipc/conn.js';
import { ShimHvIpcp } from '../../src/dif/shim-hv/ipcp.js';
import { native } from '../../src/sys/native.js';
import { DIF, ipcSetup, ipcFrame, pattern, until, within, type IpcSetup } from './helpers.js';

function acceptInto(reg: ClientRegistration, into: ClientFlow[]): void {
  reg.on('request', (req: ClientFlowRequest) => void req.accept().then((f) => into.push(f)));
}

function same(a: Uint8Array | null, b: Uint8Array): boolean {
  return a !== null && Buffer.compare(a, b) === 0;
}

const throughJson = <T>(v: T): unknown => JSON.parse(JSON.stringify(v));

interface Killed {
  daemonSnap: unknown;
  shimSnap: unknown;
  fds: ReturnType<IpcDaemon['snapshot']>['fds'];
  listenFd: number;
}

/** What SIGKILL leaves of the host's worker: its snapshots through JSON, its fds, nothing closed. */
function kill(s: IpcSetup): Killed {
  const { state, fds } = s.hostDaemon.snapshot();
  const killed = { daemonSnap: throughJson(state), shimSnap: throughJson(s.hostIpcp.snapshot()), fds, listenFd: s.hostDaemon.listeningFd };
  s.hostDaemon.abandon();
  s.hostIpcp.detach('killed');
  return killed;
}

/** The new worker's shim IPC process restored and its daemon built over it, not resumed yet. */
function rebuild(t: Test, s: IpcSetup, k: Killed, keepFlows: (portId: number) => boolean = () => true): { daemon: IpcDaemon; shim: ShimHvIpcp } {
  const shim = ShimHvIpcp.restore({ port: s.pair.host, role: 'host', keepFlows }, k.shimSnap);
  const daemon = new IpcDaemon({ socketPath: s.hostDaemon.socketPath });
  t.teardown(() => {
    daemon.close();
    shim.close();
  });
  daemon.addIpcp(shim);
  return { daemon, shim };
}

/**
 * Kill the host daemon and its shim IPC process silently, then resume both from their
 * snapshots on the same fds (the way src/ops/serve.ts does after a restart).
 */
function restart(t: Test, s: IpcSetup): { daemon: IpcDaemon; shim: ShimHvIpcp; summary: ReturnType<IpcDaemon['resume']> } {
  const k = kill(s);
  const kept = ipcSnapshotFlows(parseIpcDaemonSnapshot(k.daemonSnap)).get(DIF) ?? new Set<number>();
  const { daemon, shim } = rebuild(t, s, k, (p) => kept.has(p));
  const summary = daemon.resume(k.daemonSnap, (role) => k.fds.get(role), (_dif, portId) => shim.reclaimFlow(portId));
  shim.endUnclaimed();
  daemon.listen(k.listenFd);
  return { daemon, shim, summary };
}

t.test('a host application keeps its session, flows and registration across a silent daemon restart', async (t) => {
  const s = ipcSetup(t);
  const host = await s.hostClient();
  const guest = await s.guestClient();
  let hostClosed = false;
  host.on('close', () => (hostClosed = true));
  const hostReg = await host.register(DIF, 'H');
  const hostAccepted: ClientFlow[] = [];
  acceptInto(hostReg, hostAccepted);
  const guestAccepted: ClientFlow[] = [];
  acceptInto(await guest.register(DIF, 'G'), guestAccepted);

  // Flow 1: the host application asked for it; flow 2: the guest's, accepted through the registration.
  const h1 = await within(host.allocate(DIF, 'G', { src: 'H/1' }), 'flow 1');
  const g2 = await within(guest.allocate(DIF, 'H', { src: 'G/2' }), 'flow 2');
  await until(() => guestAccepted.length === 1 && hostAccepted.length === 1, 'both flows accepted');
  const g1 = guestAccepted[0]!;
  const h2 = hostAccepted[0]!;
  await h1.send(pattern(100, 1));
  t.ok(same(await within(g1.read(), 'an SDU before the restart'), pattern(100, 1)));

  // An SDU the application writes while no daemon runs waits in its flow's socket.
  const r = restart(t, s);
  t.same(r.summary, { sessions: 1, outOfStep: 0, missing: 0, flows: 2, flowsLost: 0, registrations: 1 }, 'what the daemon resumed');
  t.match(r.shim.restored, { flowsKept: 2, flowsEnded: 0 }, 'the shim IPC process kept both flows for the session');
  t.ok(r.shim.isRegistered('H'), 'the registration was made again');

  // Everything carries on.
  await h1.send(pattern(200, 2));
  t.ok(same(await within(g1.read(), 'the SDU written after the restart, host → guest on flow 1'), pattern(200, 2)));
  await g1.send(pattern(300, 3));
  t.ok(same(await within(h1.read(), 'guest → host on flow 1'), pattern(300, 3)));
  await h2.send(pattern(400, 4));
  t.ok(same(await within(g2.read(), 'host → guest on flow 2'), pattern(400, 4)));
  await g2.send(pattern(500, 5));
  t.ok(same(await within(h2.read(), 'guest → host on flow 2'), pattern(500, 5)));

  // The registration still receives, and the host application can allocate anew.
  const g3 = await within(guest.allocate(DIF, 'H', { src: 'G/3' }), 'a new flow to the host application after the restart');
  await until(() => hostAccepted.length === 2, 'accepted through the old registration');
  await g3.send(pattern(600, 6));
  t.ok(same(await within(hostAccepted[1]!.read(), 'on the new flow'), pattern(600, 6)));
  const h4 = await within(host.allocate(DIF, 'G', { src: 'H/4' }), 'a new allocation by the host application');
  await until(() => guestAccepted.length === 2, 'accepted by the guest');
  await h4.send(pattern(700, 7));
  t.ok(same(await within(guestAccepted[1]!.read(), 'on the host application’s new flow'), pattern(700, 7)));

  t.equal(h1.state, 'allocated');
  t.equal(h2.state, 'allocated');
  t.notOk(hostClosed, 'the host application never saw its session close');
  t.equal(r.daemon.sessionCount, 1);
  // Flow handles continue: the new flows did not reuse the old ones.
  t.not(h4.handle, h1.handle);
});

t.test('an SDU written while no daemon ran is delivered after the resume', async (t) => {
  const s = ipcSetup(t);
  const host = await s.hostClient();
  const guest = await s.guestClient();
  const guestAccepted: ClientFlow[] = [];
  acceptInto(await guest.register(DIF, 'G'), guestAccepted);
  const h1 = await within(host.allocate(DIF, 'G', { src: 'H/1' }), 'flow 1');
  await until(() => guestAccepted.length === 1, 'accepted');
  const k = kill(s);
  await h1.send(pattern(123, 9)); // into the flow's socket: no daemon reads it now
  const { daemon, shim } = rebuild(t, s, k);
  daemon.resume(k.daemonSnap, (role) => k.fds.get(role), (_d, p) => shim.reclaimFlow(p));
  daemon.listen(k.listenFd);
  t.ok(same(await within(guestAccepted[0]!.read(), 'the SDU of the gap'), pattern(123, 9)));
});

t.test('a flow request that reaches the restored shim IPC process before the daemon resumed waits for the registration', async (t) => {
  const s = ipcSetup(t);
  const host = await s.hostClient();
  const guest = await s.guestClient();
  const hostAccepted: ClientFlow[] = [];
  acceptInto(await host.register(DIF, 'H'), hostAccepted);
  const k = kill(s);
  const { daemon, shim } = rebuild(t, s, k);
  // The guest asks while the new worker has not resumed the host application's session yet.
  const asked = guest.allocate(DIF, 'H', { src: 'G/1' });
  await until(() => (shim.inspect().channels as unknown[]).length === 1, 'the request at the restored shim IPC process');
  daemon.resume(k.daemonSnap, (role) => k.fds.get(role), (_d, p) => shim.reclaimFlow(p));
  daemon.listen(k.listenFd);
  const g1 = await within(asked, 'the allocation answered once the registration is back');
  await until(() => hostAccepted.length === 1, 'accepted by the resumed session');
  await g1.send(pattern(50, 5));
  t.ok(same(await within(hostAccepted[0]!.read(), 'an SDU on it'), pattern(50, 5)));
});

t.test('what cannot survive is told: an allocation in progress fails, an out-of-step session is closed, an unreclaimed flow ends', async (t) => {
  const s = ipcSetup(t);
  const host = await s.hostClient();
  const guest = await s.guestClient();
  const waiting = await guest.register(DIF, 'G-slow'); // never answers
  waiting.on('request', () => undefined);
  const guestAccepted: ClientFlow[] = [];
  acceptInto(await guest.register(DIF, 'G'), guestAccepted);
  const kept = await within(host.allocate(DIF, 'G', { src: 'H/1' }), 'a flow');
  await until(() => guestAccepted.length === 1, 'accepted');
  const pending = host.allocate(DIF, 'G-slow', { src: 'H/2', timeoutMs: 20_000 });
  pending.catch(() => undefined);
  await until(() => s.hostDaemon.snapshot().state.sessions.some((x) => x.allocations.length === 1), 'the allocation in the snapshot');

  // A second application, its control stream left mid-frame (half a request read).
  const raw = native.connectUnix(s.hostDaemon.socketPath);
  await until(() => s.hostDaemon.sessionCount === 2, 'the raw session admitted');
  const frame = ipcFrame(JSON.stringify({ v: 1, op: 'list_difs', id: 1 }));
  native.sendMsg(raw, frame, 0, 5, null);
  await until(() => s.hostDaemon.snapshot().state.sessions.some((x) => x.stream === 'mid_request'), 'the half frame read');

  const k = kill(s);
  // The shim keeps the flow but nobody reclaims it: the guest's end is ended with the restart's reason.
  const { daemon, shim } = rebuild(t, s, k);
  const summary = daemon.resume(k.daemonSnap, (role) => k.fds.get(role), () => undefined);
  shim.endUnclaimed();
  daemon.listen(k.listenFd);
  t.match(summary, { sessions: 1, outOfStep: 1, flows: 0, flowsLost: 1 });

  const err = await within(pending.then(() => null, (e: unknown) => e), 'the allocation in progress answered');
  t.ok(err instanceof DifError && err.code === 'aborted' && err.message === RESUME_ALLOCATION_LOST, 'the allocation in progress fails with the restart as its reason');
  t.equal(await within(kept.read(), 'the unkept flow ends at the host application'), null);
  t.equal(await within(guestAccepted[0]!.read(), 'and at the guest'), null);
  // The raw application reads what the new daemon says, then the end of its connection.
  const conn = new FramedConn(raw, 0);
  t.teardown(() => conn.close());
  const said: Record<string, unknown>[] = [];
  conn.on('message', (m) => said.push(m));
  await until(() => conn.closed, 'the out-of-step session closed');
  t.match(said, [{ op: 'error', id: null, code: 'disconnected', message: RESUME_OUT_OF_STEP }], 'told why before the close');
  t.equal(daemon.sessionCount, 1);
  t.notOk(host.closed, 'the in-step application is still connected');
});

t.test('a snapshot of another version or malformed is refused with a typed error', async (t) => {
  t.throws(() => parseIpcDaemonSnapshot({ version: 2, lastSession: 0, sessions: [] }), { name: 'IpcStateError', code: 'state_version' });
  t.throws(() => parseIpcDaemonSnapshot({ version: 1, lastSession: 0, sessions: [{ id: 1 }] }), { name: 'IpcStateError', code: 'state_invalid' });
  t.throws(() => parseIpcDaemonSnapshot(null), { name: 'IpcStateError', code: 'state_invalid' });
  const s = ipcSetup(t);
  const d = new IpcDaemon({ socketPath: s.hostDaemon.socketPath + '.2' });
  t.throws(() => d.resume({ version: 9 }, () => undefined, () => undefined), { code: 'state_version' });
  t.equal(d.sessionCount, 0);
});
