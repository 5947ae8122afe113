/**
 * ring-flow.test.ts — flows on the 'ring' data path (src/dif/ipc/ring.ts) through the real
 * daemon, client and shim IPC processes over a port pair: negotiation (a client that does not
 * ask, as an older one, and a daemon out of ring memory keep 'socket'), SDUs both ways in order
 * with 0-byte and max-SDU ones, 'sdus' batches, backpressure when the application stops reading
 * (nothing lost, the bridge bounded), a hostile application breaking its ring (its flow ends
 * with a cause, the daemon carries on), and a silent daemon restart under a live application
 * (the ring's memfd comes back from the fd store and the flow carries on).
 */
import t, { type Test } from 'tap';
import type { Flow, SduBatch } from '../../src/dif/api.js';
import { IpcClient, type ClientFlow, type ClientFlowRequest, type ClientRegistration } from '../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { FlowBridge } from '../../src/dif/ipc/datapath.js';
import { ipcSnapshotFlows, parseIpcDaemonSnapshot } from '../../src/dif/ipc/snapshot.js';
import { ShimHvIpcp } from '../../src/dif/shim-hv/ipcp.js';
import type { Session } from '../../src/dif/ipc/daemon.js';
import { RECORD_BELL } from '../../src/dif/ipc/record.js';
import { native } from '../../src/sys/native.js';
import { DIF, ipcSetup, nextEvent, pattern, until, within, type IpcSetup } from './helpers.js';

async function ringClient(t: Test, s: IpcSetup | { hostDaemon: IpcDaemon }, rings = true): Promise<IpcClient> {
  const c = await IpcClient.connect(s.hostDaemon.socketPath, { rings });
  t.teardown(() => c.close());
  return c;
}

function acceptInto(reg: ClientRegistration, into: ClientFlow[]): void {
  reg.on('request', (req: ClientFlowRequest) => void req.accept().then((f) => into.push(f)));
}

/** A flow from the guest IPC process to host application `app` of `client`: [guest end, application end]. */
async function flowTo(s: IpcSetup, client: IpcClient, app: string): Promise<[Flow, ClientFlow]> {
  const reg = await client.register(DIF, app);
  const got: ClientFlow[] = [];
  acceptInto(reg, got);
  const g = await s.guestIpcp.allocateFlow('peer/1', app);
  await until(() => got.length > 0, 'the host application got the flow');
  return [g, got[0]!];
}

function bridgeOf(session: Session): FlowBridge {
  const links = [...(session as unknown as { flows: Map<number, { link: unknown }> }).flows.values()].map((f) => f.link);
  return links.find((l): l is FlowBridge => l instanceof FlowBridge)!;
}

/** SDU number `i`: sizes cycle through 0..maxSdu (0-byte and max-SDU ones included); bytes 0..3 carry `i`. */
function numbered(i: number, maxSdu: number): Uint8Array {
  const size = i % 7 === 3 ? 0 : i % 11 === 5 ? maxSdu : (i * 37) % (maxSdu + 1);
  const b = new Uint8Array(size).fill(i & 0xff);
  if (size >= 4) new DataView(b.buffer).setUint32(0, i);
  return b;
}

function firstWrong(got: Uint8Array[], maxSdu: number): string | null {
  for (let i = 0; i < got.length; i++) {
    const want = numbered(i, maxSdu);
    if (Buffer.compare(got[i]!, want) !== 0) return `SDU ${i}: ${got[i]!.byteLength} bytes, expected ${want.byteLength}`;
  }
  return null;
}

t.test("negotiation: 'ring' only for a client that asks, and within the daemon's ring memory", async (t) => {
  const s = ipcSetup(t);
  const old = await ringClient(t, s, false);
  const [, a] = await flowTo(s, old, 'old');
  t.equal(a.datapath, 'socket', "a client that does not ask (an older one) keeps 'socket'");
  const nu = await ringClient(t, s);
  const [, b] = await flowTo(s, nu, 'new');
  t.equal(b.datapath, 'ring', "a client that reads rings gets 'ring'");
  t.equal(s.hostDaemon.stats.ringFlows, 1, 'one ring held');
  t.ok(s.hostDaemon.stats.ringBytes > 2 << 20, 'its memory counted');
  b.deallocate('done');
  await until(() => s.hostDaemon.stats.ringFlows === 0, 'the ring released with its flow');
  t.equal(s.hostDaemon.stats.ringBytes, 0);

  const capped = ipcSetup(t, { daemon: { maxRingBytes: 0 } });
  const c = await ringClient(t, capped);
  const [, f] = await flowTo(capped, c, 'capped');
  t.equal(f.datapath, 'socket', "past the daemon's ring memory: 'socket'");
  t.equal(capped.hostDaemon.stats.ringsRefused, 1, 'counted');
});

t.test('both ways over the ring: in order, whole, 0-byte and max-SDU SDUs, batches', async (t) => {
  const s = ipcSetup(t);
  const client = await ringClient(t, s);
  const [g, h] = await flowTo(s, client, 'both');
  t.equal(h.datapath, 'ring');
  const maxSdu = h.qos.maxSdu;
  const N = 3000;
  // application → guest
  const atGuest: Uint8Array[] = [];
  const gReader = (async () => {
    while (atGuest.length < N) {
      const x = await g.read();
      if (x === null) return;
      atGuest.push(x);
    }
  })();
  for (let i = 0; i < N; ) {
    while (i < N && h.write(numbered(i, maxSdu))) i++;
    if (i < N) await within(nextEvent(h, 'drain', "'drain'"), `'drain' after ${i}`, 10_000);
  }
  await within(gReader, `all ${N} at the guest (got ${atGuest.length})`, 20_000);
  t.equal(firstWrong(atGuest, maxSdu), null, 'application → guest: in order, each whole');
  // guest → application, as 'sdus' batches
  const atApp: Uint8Array[] = [];
  let batches = 0;
  let lent = 0;
  const ringBuffer = (h as unknown as { ring: { map: { buffer: ArrayBuffer } } }).ring.map.buffer;
  h.on('sdus', (b: SduBatch) => {
    batches++;
    // Borrowed views of the ring itself: no copy into a private buffer on the way to a listener.
    if (b.count > 0 && b.sdu(0).buffer === ringBuffer) lent++;
    for (let i = 0; i < b.count; i++) atApp.push(b.sdu(i).slice());
  });
  // The guest's flow takes everything at once (its receive budget drops the excess): pace it.
  for (let i = 0; i < N; ) {
    const to = Math.min(N, i + 50);
    while (i < to) g.write(numbered(i++, maxSdu));
    await until(() => atApp.length >= i - 50, `the application got ${i - 50}`, 10_000);
  }
  await until(() => atApp.length >= N, `all ${N} at the application (got ${atApp.length})`, 20_000);
  t.equal(firstWrong(atApp, maxSdu), null, 'guest → application: in order, each whole');
  t.ok(batches < N, `in batches (${batches} for ${N} SDUs)`);
  t.equal(lent, batches, 'every batch lent straight from the ring');
  t.equal(h.txLost, 0);
  t.equal(h.badRecords, 0);
});

t.test('the application stops reading: the ring fills, the bridge stops taking from the flow, nothing lost', async (t) => {
  const s = ipcSetup(t);
  const sp = nextEvent<[Session]>(s.hostDaemon, 'session', "the daemon's session", 10_000).then(([x]) => x);
  const client = await ringClient(t, s);
  const session = await sp;
  const [g, h] = await flowTo(s, client, 'stall');
  const bridge = bridgeOf(session);
  const maxSdu = h.qos.maxSdu;
  // The guest writes more than the ring (4 MiB, ~8200 of these SDUs of 500 bytes on average) and
  // the client's read-ahead (256 SDUs) hold, and less than its flow's receive budget (8 MiB,
  // 4096 SDUs); the application reads nothing.
  const N = 11000;
  for (let i = 0; i < N; i++) g.write(numbered(i, 1000));
  await until(() => (bridge as unknown as { outBlocked: boolean }).outBlocked, 'the bridge waits for room in the ring', 10_000);
  t.ok(bridge.stats.toApp < N, `the bridge stopped taking from the flow (${bridge.stats.toApp} of ${N} in the ring)`);
  t.ok((bridge as unknown as { pending: unknown[] }).pending.length <= 1, 'the bridge holds at most one SDU beyond the ring');
  // Now read everything.
  const got: Uint8Array[] = [];
  while (got.length < N) {
    const x = await within(h.read(), `SDU ${got.length}`, 10_000);
    if (x === null) break;
    got.push(x);
  }
  t.equal(got.length, N, 'every SDU');
  t.equal(firstWrong(got, 1000), null, 'in order');
  t.equal(bridge.stats.lost, 0, 'nothing lost in the bridge');
  t.ok(maxSdu >= 1000);
});

t.test("a hostile application breaks its ring: its flow ends with a cause, the daemon carries on", async (t) => {
  const s = ipcSetup(t);
  const client = await ringClient(t, s);
  const [g, h] = await flowTo(s, client, 'evil');
  const ended = nextEvent<[string]>(h, 'deallocated', "the application's flow ending", 10_000);
  // Publish a producer index far past the ring, then ring the doorbell (RECORD_BELL) by hand.
  const ring = (h as unknown as { ring: { map: { u32: Uint32Array } } }).ring;
  ring.map.u32[(256 + 1024) >> 2] = 0x40000000;
  native.sendMsg((h as unknown as { fd: number }).fd, new Uint8Array([RECORD_BELL]), 0, 1, null);
  const [reason] = await ended;
  t.match(reason, /ring is broken: the peer's producer index .* out of range/, 'the application is told why');
  t.equal(s.hostDaemon.stats.bridgeAborts.ring_broken, 1, 'counted');
  await until(() => g.state === 'deallocated', 'the peer flow ended too', 5000);
  // The daemon still serves: a new flow works.
  const [g2, h2] = await flowTo(s, client, 'after');
  await h2.send(pattern(100, 1));
  t.same(await within(g2.read(), 'an SDU on a new flow'), pattern(100, 1));
});

/** The silent restart of restore.test.ts (kill without a word, resume from the snapshots on the same fds). */
function restart(t: Test, s: IpcSetup): { daemon: IpcDaemon; summary: ReturnType<IpcDaemon['resume']> } {
  const { state, fds } = s.hostDaemon.snapshot();
  const daemonSnap = JSON.parse(JSON.stringify(state)) as unknown;
  const shimSnap = JSON.parse(JSON.stringify(s.hostIpcp.snapshot())) as unknown;
  const listenFd = s.hostDaemon.listeningFd;
  s.hostDaemon.abandon();
  s.hostIpcp.detach('killed');
  const kept = ipcSnapshotFlows(parseIpcDaemonSnapshot(daemonSnap)).get(DIF) ?? new Set<number>();
  const shim = ShimHvIpcp.restore({ port: s.pair.host, role: 'host', keepFlows: (p) => kept.has(p) }, shimSnap);
  const daemon = new IpcDaemon({ socketPath: s.hostDaemon.socketPath });
  t.teardown(() => {
    daemon.close();
    shim.close();
  });
  daemon.addIpcp(shim);
  const summary = daemon.resume(daemonSnap, (role) => fds.get(role), (_dif, portId) => shim.reclaimFlow(portId));
  shim.endUnclaimed();
  daemon.listen(listenFd);
  return { daemon, summary };
}

t.test('a silent daemon restart: the ring flow resumes from its memfd under the live application', async (t) => {
  const s = ipcSetup(t);
  const client = await ringClient(t, s);
  const [g, h] = await flowTo(s, client, 'R');
  t.equal(h.datapath, 'ring');
  await h.send(pattern(100, 1));
  t.same(await within(g.read(), 'before'), pattern(100, 1));
  const snapFlows = (s.hostDaemon.snapshot().state.sessions[0]!.flows[0] as { ring?: string }).ring;
  t.match(snapFlows, /^s\d+\.f\d+\.ring$/, "the snapshot names the ring's memfd");
  const r = restart(t, s);
  t.match(r.summary, { sessions: 1, flows: 1, flowsLost: 0 }, 'the flow resumed');
  t.equal(r.daemon.stats.ringFlows, 1, 'its ring mapped again');
  // Written while no daemon ran... and after: both arrive, in order.
  await h.send(pattern(200, 2));
  t.same(await within(g.read(), 'after the restart, application → guest'), pattern(200, 2));
  await g.send(pattern(300, 3));
  t.same(await within(h.read(), 'after the restart, guest → application'), pattern(300, 3));
  for (let i = 0; i < 500; i++) g.write(pattern(1000, i));
  let bad = 0;
  for (let i = 0; i < 500; i++) if (Buffer.compare((await within(h.read(), `SDU ${i}`))!, pattern(1000, i)) !== 0) bad++;
  t.equal(bad, 0, "500 more after the restart, in order");
});
