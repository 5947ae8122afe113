/**
 * The datagram shims' restart (src/dif/shim-datagram/snapshot.ts and resumeFrom) on shim-udp, in
 * process over real UDP sockets on 127.0.0.1: a snapshot taken, the IPC process detached (what a
 * crash does: no word to the peer), a new one opened from the snapshot on the same port. A kept
 * flow carries SDUs both ways with its ids and port-id and is reclaimed once; a flow not kept
 * ends at the peer with the restart reason at once; an allocation this end had asked for is given
 * up at the peer; flow ids go on; bad snapshots are refused with a typed error before anything
 * is bound; onStateChange follows the flow table.
 */
import t, { type Test } from 'tap';
import type { Flow } from '../../src/dif/api.js';
import { ShimUdpIpcp, type ShimUdpOptions } from '../../src/dif/shim-udp/ipcp.js';
import { DatagramStateError, parseDatagramSnapshot } from '../../src/dif/shim-datagram/snapshot.js';
import { RESTART_FLOW_LOST } from '../../src/dif/shim-datagram/ipcp.js';

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref())]);
}

async function open(t: Test, opts: Partial<ShimUdpOptions> = {}): Promise<ShimUdpIpcp> {
  const x = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', keepaliveMs: 100, keepaliveTimeoutMs: 5000, ...opts });
  t.teardown(() => x.close());
  return x;
}

t.test('a kept flow runs on after a restore; one not kept ends at the peer at once', async (t) => {
  let changes = 0;
  const a = await open(t, { onStateChange: () => changes++ });
  const b = await open(t);
  b.addPeer('srv', a.localAddress);
  a.allowAddress(b.localAddress);
  const served: Flow[] = [];
  a.register('srv', (r) => void served.push(r.accept()));
  const keep = await b.allocateFlow('cli', 'srv');
  const lose = await b.allocateFlow('cli2', 'srv');
  t.ok(changes >= 4, `onStateChange called on each change (${changes})`);
  const snap = a.snapshot();
  t.same(parseDatagramSnapshot(JSON.parse(JSON.stringify(snap))), snap, 'the snapshot survives JSON and its own check');
  t.equal(snap.flows.length, 2);
  const keptPort = served[0]!.portId;
  const nextId = snap.nextId;
  const addr = a.localAddress;
  a.detach();

  const loseEnded = new Promise<string>((r) => lose.once('deallocated', (reason: string) => r(reason)));
  const a2 = await open(t, { bind: '127.0.0.1:0', resume: JSON.parse(JSON.stringify(snap)), keepFlows: (portId, dif) => portId === keptPort && dif === 'udp.test' });
  t.equal(a2.localAddress, addr, 'bound the same port again (the config said any port)');
  t.same(a2.restored, { flowsKept: 1, flowsEnded: 1, askedGivenUp: 0, requestsRefused: 0 });
  t.match(await within(loseEnded, 2000, 'the lost flow ends at the peer'), new RegExp(RESTART_FLOW_LOST.slice(0, 20)), 'the flow nobody kept ended at the peer with the restart reason');
  const f = a2.reclaimFlow(keptPort)!;
  t.ok(f, 'the kept flow is reclaimed');
  t.equal(a2.reclaimFlow(keptPort), undefined, 'once');
  t.equal(f.portId, keptPort, 'same port-id');
  t.equal(f.state, 'allocated');
  keep.write(Uint8Array.of(1, 2, 3));
  t.same([...(await within(f.read(), 2000, 'B → A after the restore'))!], [1, 2, 3], 'B → A');
  f.write(Uint8Array.of(4, 5));
  t.same([...(await within(keep.read(), 2000, 'A → B after the restore'))!], [4, 5], 'A → B');
  t.equal(keep.state, 'allocated', "the peer's flow never ended");
  a2.register('srv', (r) => void r.accept());
  const again = await b.allocateFlow('cli3', 'srv');
  const ids = (a2.inspect().flows as { id: number; remoteApp: string }[]).filter((x) => x.remoteApp === 'cli3').map((x) => x.id);
  t.ok(ids.length === 1 && ids[0]! >= nextId, `flow ids go on from the snapshot (no reuse): ${ids[0]} >= ${nextId}`);
  again.deallocate();
});

t.test('kept flows nobody reclaims end toward the peer', async (t) => {
  const a = await open(t);
  const b = await open(t);
  b.addPeer('srv', a.localAddress);
  a.allowAddress(b.localAddress);
  a.register('srv', (r) => void r.accept());
  const flow = await b.allocateFlow('cli', 'srv');
  const snap = a.snapshot();
  a.detach();
  const ended = new Promise<string>((r) => flow.once('deallocated', (reason: string) => r(reason)));
  const a2 = await open(t, { bind: a.localAddress, resume: snap, keepFlows: () => true });
  t.equal(a2.restored?.flowsKept, 1);
  a2.endUnclaimed();
  t.match(await within(ended, 2000, 'the unclaimed flow ends'), /deallocated by the peer: the server at the other end restarted/);
});

t.test('an allocation this end had asked for is given up at the peer', async (t) => {
  const a = await open(t);
  const b = await open(t, { allocateTimeoutMs: 20_000 });
  b.addPeer('srv', a.localAddress);
  a.allowAddress(b.localAddress);
  a.register('srv', () => undefined); // never answered
  const pending = b.allocateFlow('cli', 'srv');
  pending.catch(() => undefined);
  await new Promise((r) => setTimeout(r, 200));
  const snap = b.snapshot();
  t.equal(snap.asked.length, 1, 'the allocation B asked for is in its snapshot');
  b.detach();
  await t.rejects(pending, { code: 'closed' });
  const waitingBefore = a.inspect().flows as { state: string }[];
  t.equal(waitingBefore.filter((x) => x.state === 'incoming').length, 1, 'A holds the request');
  const b2 = await open(t, { bind: b.localAddress, resume: snap });
  t.equal(b2.restored?.askedGivenUp, 1);
  await new Promise((r) => setTimeout(r, 300));
  t.equal((a.inspect().flows as { state: string }[]).filter((x) => x.state === 'incoming').length, 0, "A dropped the request when B's new process gave it up");
});

t.test('bad snapshots are refused, typed, before anything is bound', async (t) => {
  const a = await open(t);
  const good = a.snapshot();
  const cases: [unknown, string, RegExp][] = [
    [{ ...good, version: 2 }, 'state_version', /version 2/],
    [null, 'state_invalid', /not an object/],
    [{ ...good, extra: 1 }, 'state_invalid', /unknown field "extra"/],
    [{ ...good, difName: 'other' }, 'state_invalid', /this IPC process is shim-udp "udp.test"/],
    [{ ...good, ipcpType: 'shim-eth' }, 'state_invalid', /it is of shim-eth/],
    [{ ...good, nextId: 0 }, 'state_invalid', /nextId/],
    [{ ...good, flows: [{ id: 1, portId: 1, peer: '127.0.0.1:1', remoteId: 1, localApp: 'x', remoteApp: 'y', maxSdu: 10 }, { id: 1, portId: 2, peer: '127.0.0.1:1', remoteId: 2, localApp: 'x', remoteApp: 'y', maxSdu: 10 }] }, 'state_invalid', /appears twice/],
  ];
  for (const [resume, code, re] of cases) {
    await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', resume }), { code, message: re, constructor: DatagramStateError }, re.source);
  }
  // Another IPC process's snapshot (its address): refused after the bind, the socket closed again.
  const other = await open(t);
  const snap = other.snapshot();
  other.detach();
  const port = snap.address.split(':')[1]!;
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', resume: { ...snap, address: `127.0.0.2:${port}` } }), { code: 'state_invalid', message: new RegExp(`at 127\\.0\\.0\\.2:${port}, this one is at 127\\.0\\.0\\.1:${port}`) });
  const again = await open(t, { bind: `127.0.0.1:${port}` });
  t.equal(again.localAddress, `127.0.0.1:${port}`, 'the refused restore let its socket go');
});
