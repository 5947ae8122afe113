/**
 * ipc.test.ts — the IPC daemon and its client library end to end: two daemons, each hosting a
 * shim IPC process, the two joined by an in-memory port pair; applications connect to the
 * daemons' sockets and move SDUs through the per-flow SOCK_SEQPACKET fds.
 */
import t from 'tap';
import { DifError } from '../../src/dif/api.js';
import type { ClientFlow, ClientFlowRequest } from '../../src/dif/ipc/client.js';
import { FramedConn } from '../../src/dif/ipc/conn.js';
import { native } from '../../src/sys/native.js';
import { parseDaemonMessage } from '../../src/dif/ipc/protocol.js';
import { DIF, ipcSetup, nextEvent, pattern, rawSession, until, within } from './helpers.js';

const SIZES = Array.from({ length: 17 }, (_, i) => i * 250); // 0..4000

async function collect(flow: ClientFlow, n: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  while (out.length < n) {
    const sdu = await within(flow.read(), `SDU ${out.length + 1} of ${n} on flow ${flow.portId}`);
    if (sdu === null) break;
    out.push(sdu);
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

// Both data paths: the shared-memory ring (the default) and the socket alone (an older client).
for (const rings of [true, false]) {
  t.test(`register, allocate, SDUs of 0..4000 bytes both ways, two flows at once (${rings ? 'ring' : 'socket'} data path)`, async (t) => {
    const s = ipcSetup(t);
    const a = await s.hostClient({ rings });
    const b = await s.guestClient({ rings });
    t.same(await a.listDifs(), [{ name: DIF, address: 7 }]);

    const reg = await a.register(DIF, 'server/1');
    t.ok(s.hostIpcp.isRegistered('server/1'), 'registered in the IPC process');
    const accepted: ClientFlow[] = [];
    reg.on('request', (req: ClientFlowRequest) => {
      t.equal(req.remoteApp.processName, 'client');
      void req.accept().then((f) => accepted.push(f));
    });

    const [f1, f2] = await within(
      Promise.all([
        b.allocate(DIF, 'server/1', { src: 'client/1', qos: { reliable: true, inOrder: true } }),
        b.allocate(DIF, 'server/1', { src: 'client/2', qos: { maxSdu: 4000 } }),
      ]),
      'both allocations answered',
    );
    await until(() => accepted.length === 2, 'two accepted flows');
    t.equal(f1.qos.reliable, true);
    t.equal(f2.qos.maxSdu, 4000);
    t.equal(f1.remoteApp.processName, 'server');
    t.equal(f1.datapath, rings ? 'ring' : 'socket', 'no data files on this port: the daemon bridges a socketpair (and a ring when asked)');
    const byRemote = (inst: string) => accepted.find((f) => f.remoteApp.processInstance === inst)!;
    const a1 = byRemote('1');
    const a2 = byRemote('2');
    t.equal(a1.datapath, rings ? 'ring' : 'socket', "the accepting end's data path too");
    t.equal(s.hostIpcp.flows().length, 2);

    // Both directions on both flows at once.
    const sent1 = SIZES.map((n, i) => pattern(n, i));
    const sent2 = SIZES.map((n, i) => pattern(n, 100 + i));
    const back1 = SIZES.map((n, i) => pattern(n, 200 + i));
    const back2 = SIZES.map((n, i) => pattern(n, 300 + i));
    const recv = Promise.all([collect(a1, SIZES.length), collect(a2, SIZES.length), collect(f1, SIZES.length), collect(f2, SIZES.length)]);
    for (let i = 0; i < SIZES.length; i++) {
      await f1.send(sent1[i]!);
      await f2.send(sent2[i]!);
      await a1.send(back1[i]!);
      await a2.send(back2[i]!);
    }
    const [r1, r2, rb1, rb2] = await within(recv, 'every SDU on both flows both ways', 10_000);
    t.ok(r1.length === SIZES.length && r1.every((x, i) => sameBytes(x, sent1[i]!)), 'flow 1 client → server intact and in order');
    t.ok(r2.length === SIZES.length && r2.every((x, i) => sameBytes(x, sent2[i]!)), 'flow 2 client → server intact and in order');
    t.ok(rb1.length === SIZES.length && rb1.every((x, i) => sameBytes(x, back1[i]!)), 'flow 1 server → client intact');
    t.ok(rb2.length === SIZES.length && rb2.every((x, i) => sameBytes(x, back2[i]!)), 'flow 2 server → client intact');
    t.equal(r1[0]!.byteLength, 0, 'a 0-byte SDU arrives as a 0-byte SDU');
    t.equal(f1.stats.txSdus, SIZES.length);
    t.equal(a1.stats.rxBytes, SIZES.reduce((x, y) => x + y, 0));

    // 'data' events work too.
    const got: number[] = [];
    a1.on('data', (sdu) => got.push(sdu.byteLength));
    f1.write(new Uint8Array(3));
    f1.write(new Uint8Array(0));
    await until(() => got.length === 2, 'data events');
    t.same(got, [3, 0]);
    t.equal(a1.stats.rxSdus, SIZES.length + 2, 'nothing else arrived');

    t.throws(() => f2.write(new Uint8Array(4001)), { code: 'sdu_too_large' });
  });
}

t.test('deallocate from either side ends the peer application reads', async (t) => {
  const s = ipcSetup(t);
  const a = await s.hostClient();
  const b = await s.guestClient();
  const reg = await a.register(DIF, 'srv');
  const nextAccepted = async (): Promise<ClientFlow> => (await within(reg.next(), 'the flow request at the server'))!.accept();

  // Allocator deallocates: what it wrote first still arrives, then the reads end.
  const p1 = nextAccepted();
  const f = await b.allocate(DIF, 'srv', { src: 'cli' });
  const g = await within(p1, 'the accepted flow');
  f.write(pattern(100, 1));
  f.write(pattern(0, 2));
  const ended = nextEvent<[string, string]>(g, 'deallocated', "the acceptor's flow ending");
  f.deallocate('bye now');
  t.equal(f.state, 'deallocated');
  t.throws(() => f.write(new Uint8Array(1)), { code: 'flow_deallocated' }, 'write after deallocate');
  t.equal(await within(f.read(), 'the end of reads at the deallocated end'), null, 'the deallocated end reads null');
  const rest = await collect(g, 10);
  t.same(rest.map((x) => x.byteLength), [100, 0], 'SDUs written before deallocate arrive');
  t.same(await ended, ['bye now', 'peer'], 'the peer learns the reason');
  t.equal(await within(g.read(), "the end of the acceptor's reads"), null);
  t.throws(() => g.write(new Uint8Array(1)), { code: 'flow_deallocated' });
  await until(() => s.hostIpcp.flows().length === 0 && s.guestIpcp.flows().length === 0, 'flows gone from both IPC processes');

  // Acceptor deallocates.
  const p2 = nextAccepted();
  const f2 = await b.allocate(DIF, 'srv', { src: 'cli' });
  const g2 = await within(p2, 'the second accepted flow');
  g2.write(pattern(10, 3));
  g2.deallocate('server done');
  const r = await collect(f2, 10);
  t.same(r.map((x) => x.byteLength), [10]);
  t.equal(f2.state, 'deallocated');
  t.equal(f2.deallocationReason, 'server done');
  f2.deallocate(); // idempotent
  t.equal(await within(f2.read(), 'the end of reads after deallocate'), null, 'nothing more to read');
});

t.test('reject with a reason; unknown application', async (t) => {
  const s = ipcSetup(t);
  const a = await s.hostClient();
  const b = await s.guestClient();
  const reg = await a.register(DIF, 'picky');
  reg.on('request', (req) => void req.reject('not today'));
  const e = await b.allocate(DIF, 'picky', { src: 'x' }).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(e instanceof DifError);
  t.equal((e as DifError).code, 'rejected');
  t.equal((e as DifError).peerReason, 'not today');

  const u = await b.allocate(DIF, 'nobody', { src: 'x' }).then(
    () => null,
    (err: unknown) => err as DifError,
  );
  t.equal(u?.code, 'rejected');
  t.equal(u?.peerReason, 'unknown application');

  // Iterator form; settled twice.
  const reg2 = await a.register(DIF, 'iter');
  const alloc = b.allocate(DIF, 'iter', { src: 'y' }).catch((err: unknown) => err as DifError);
  const it = reg2[Symbol.asyncIterator]();
  const first = await within(it.next(), 'a request through the async iterator');
  t.equal(first.done, false);
  const req = first.value as ClientFlowRequest;
  await req.reject('go away');
  await t.rejects(req.accept(), { code: 'request_settled' });
  await it.return();
  t.match(await within(alloc, 'the rejected allocation'), { code: 'rejected', peerReason: 'go away' });
});

t.test('API misuse', async (t) => {
  const s = ipcSetup(t);
  const a = await s.hostClient();
  const b = await s.guestClient();
  await t.rejects(b.allocate(DIF, 'bad//name/x/y', { src: 'x' }), { code: 'invalid_name' }, 'bad destination name (client side)');
  await t.rejects(b.request({ op: 'allocate', dif: DIF, src: 'ok', dst: ' padded' }), { code: 'invalid_name' }, 'bad name reaching the daemon');
  await t.rejects(b.allocate('no.such.dif', 'x', { src: 'x' }), { code: 'unknown_dif' });
  await t.rejects(a.register('no.such.dif', 'x'), { code: 'unknown_dif' });
  await t.rejects(b.allocate(DIF, 'x', { src: 'x', qos: { maxSdu: 1 << 20 } }), { code: 'invalid_qos' });
  await a.register(DIF, 'dup');
  await t.rejects(a.register(DIF, 'dup'), { code: 'already_registered' }, 'same client twice');
  const c = await s.hostClient();
  await t.rejects(c.register(DIF, 'dup'), { code: 'already_registered' }, 'another client');
  await t.rejects(c.request({ op: 'unregister', dif: DIF, app: 'dup' }), { code: 'not_registered' }, 'not its registration');
  await t.rejects(c.request({ op: 'accept', request: 99 }), { code: 'request_settled' });
  await t.rejects(c.request({ op: 'deallocate', flow: 99 }), { code: 'flow_deallocated' });
});

t.test('client disconnect: its flows are deallocated and its registrations dropped', async (t) => {
  const s = ipcSetup(t);
  const a = await s.hostClient();
  const b = await s.guestClient();
  const reg = await a.register(DIF, 'svc');
  await a.register(DIF, 'svc2');
  const acc = reg.next().then((r) => r!.accept());
  const f = await b.allocate(DIF, 'svc', { src: 'c' });
  await within(acc, 'the accepted flow');
  const dealloc = nextEvent<[string, string]>(f, 'deallocated', "the allocator's flow ending");
  const ended = nextEvent<[string]>(reg, 'end', 'the registration ending');
  a.close();
  t.equal((await dealloc)[1], 'peer', 'the peer application sees its flow end');
  t.equal(await within(f.read(), 'the end of reads'), null);
  t.same(await ended, ['disconnected from the IPC daemon']);
  await until(() => !s.hostIpcp.isRegistered('svc') && !s.hostIpcp.isRegistered('svc2'), 'registrations dropped');
  await until(() => s.hostDaemon.sessionCount === 0, 'session gone');
  await t.rejects(b.allocate(DIF, 'svc', { src: 'c' }), { code: 'rejected', peerReason: 'unknown application' });
  await t.rejects(a.listDifs(), { code: 'disconnected' });

  // An application that goes away while a request waits for its answer: the requester is refused.
  const a2 = await s.hostClient();
  const reg2 = await a2.register(DIF, 'slow');
  const pending = b.allocate(DIF, 'slow', { src: 'c' });
  await within(reg2.next(), 'the request at the slow application');
  a2.close();
  await t.rejects(within(pending, 'the refusal of the waiting request'), { code: 'rejected', peerReason: 'application disconnected' });

  // The daemon going away ends the client's flows.
  const a3 = await s.hostClient();
  const reg3 = await a3.register(DIF, 'svc3');
  const acc3 = reg3.next().then((r) => r!.accept());
  const f3 = await b.allocate(DIF, 'svc3', { src: 'c' });
  const g3 = await within(acc3, 'the accepted flow');
  const gone = nextEvent<[string, string]>(g3, 'deallocated', 'the flow ending with the daemon');
  s.hostDaemon.close();
  t.equal((await gone)[1], 'closed');
  t.equal(await within(g3.read(), 'the end of reads at the acceptor'), null);
  t.equal(await within(f3.read(), 'the end of reads at the allocator'), null, 'and the remote application sees the flow end');
});

t.test('backpressure: a full link makes the application writes return false, nothing is lost', async (t) => {
  const s = ipcSetup(t, { pair: { capacity: 4 } });
  const a = await s.hostClient();
  const b = await s.guestClient();
  const reg = await a.register(DIF, 'sink');
  const acc = reg.next().then((r) => r!.accept());
  const f = await b.allocate(DIF, 'sink', { src: 'src', qos: { reliable: true, inOrder: true } });
  const g = await acc;
  // More than a flow ring (4 MiB) holds, so that the ring data path fills too.
  const N = 12000;
  let received = 0;
  let inOrder = true;
  const reader = (async () => {
    for await (const sdu of g) {
      if (new DataView(sdu.buffer, sdu.byteOffset).getUint32(0) !== received) inOrder = false;
      if (++received === N) break;
    }
  })();
  let refused = 0;
  const buf = new Uint8Array(1000);
  for (let i = 0; i < N; i++) {
    new DataView(buf.buffer).setUint32(0, i);
    if (!f.write(buf)) {
      refused++;
      await f.send(buf);
    }
  }
  await within(reader, `all ${N} SDUs at the reader (got ${received} so far)`, 15_000);
  t.equal(received, N, 'every SDU arrived');
  t.ok(inOrder, 'in order');
  t.ok(refused > 0, `write() returned false ${refused} times`);
  t.ok(s.pair.guest.stats.refused > 0, 'the link itself was full at times');
});

t.test('malformed daemon messages are refused with a reason', async (t) => {
  const s = ipcSetup(t);
  const { fd, conn, raw, next } = rawSession(t, s.hostDaemon.socketPath);
  const closed = nextEvent<[string]>(conn, 'close', 'the daemon closing the connection', 5000);
  raw('{not json');
  t.match(await next(), { op: 'error', id: null, code: 'malformed', message: /not JSON/ });
  raw(Buffer.from([0xff, 0xfe]));
  t.match(await next(), { code: 'malformed', message: /not JSON/ });
  raw('[1,2]');
  t.match(await next(), { code: 'malformed', message: /JSON object/ });
  raw('{"v":2,"op":"list_difs","id":5}');
  t.match(await next(), { op: 'error', id: 5, code: 'malformed', message: /unsupported protocol version 2/ });
  raw('{"op":"list_difs","id":6}');
  t.match(await next(), { id: 6, code: 'malformed', message: /version/ });
  raw('{"v":1,"op":"fly","id":7}');
  t.match(await next(), { id: 7, code: 'malformed', message: /unknown op/ });
  raw('{"v":1,"op":"register","id":8,"dif":"x"}');
  t.match(await next(), { id: 8, code: 'malformed', message: /missing field "app"/ });
  raw('{"v":1,"op":"allocate","id":9,"dif":"x","src":"a","dst":"b","qos":{"maxSdu":-1}}');
  t.match(await next(), { id: 9, code: 'malformed', message: /maxSdu/ });
  raw('{"v":1,"op":"allocate","id":10,"dif":"x","src":"a","dst":"b","qos":{"fast":true}}');
  t.match(await next(), { id: 10, code: 'malformed', message: /unknown QoS field "fast"/ });
  raw('{"v":1,"op":"list_difs","id":0}');
  t.match(await next(), { id: null, code: 'malformed', message: /"id"/ });
  raw('{"v":1,"op":"list_difs","id":11}');
  t.match(await next(), { op: 'result', id: 11, difs: [{ name: DIF }] }, 'the connection is still usable');
  t.equal(s.hostDaemon.stats.malformed, 10, 'each malformed message counted once');

  // A frame length that cannot be right: answered, then the connection is closed.
  const bad = Buffer.alloc(4);
  bad.writeUInt32BE(0x7fffffff, 0);
  native.sendMsg(fd, bad, 0, 4, null);
  t.match(await next(), { code: 'malformed', message: /frame length/ });
  t.match((await closed)[0], /closed/);

  // Sending fds to the daemon ends the connection.
  const fd2 = native.connectUnix(s.hostDaemon.socketPath);
  const c2 = new FramedConn(fd2, 8);
  const closed2 = nextEvent<[string]>(c2, 'close', 'the daemon closing a connection that sent fds', 5000);
  const [x, y] = native.socketpairSeqpacket();
  const frame = Buffer.from('\0\0\0\x02{}');
  native.sendMsg(fd2, frame, 0, frame.byteLength, [x]);
  native.close(x);
  native.close(y);
  t.match((await closed2)[0], /peer closed/);
  await until(() => s.hostDaemon.sessionCount === 0, 'sessions gone');
});

t.test('stale socket files are replaced, live ones are not', async (t) => {
  const s = ipcSetup(t);
  const { IpcDaemon } = await import('../../src/dif/ipc/daemon.js');
  const other = new IpcDaemon({ socketPath: s.hostDaemon.socketPath });
  t.throws(() => other.listen(), { name: 'SocketPathError', code: 'socket_in_use' });
  // A socket file nobody listens on.
  const { join } = await import('node:path');
  const stalePath = join(s.dir, 'stale.sock');
  const lfd = native.listenUnix(stalePath, 1);
  native.close(lfd);
  const d = new IpcDaemon({ socketPath: stalePath, mode: 0o600 });
  d.listen();
  const { statSync, existsSync } = await import('node:fs');
  t.equal(statSync(stalePath).mode & 0o777, 0o600);
  d.close();
  t.notOk(existsSync(stalePath), 'the socket file is removed on close');
});

t.test('a flow result says what its fd is', async (t) => {
  const flow = { flow: 1, portId: 3, dif: DIF, localApp: 'a', remoteApp: 'b', qos: { reliable: false, inOrder: false, maxSdu: 100 } };
  const parse = (f: Record<string, unknown>) => parseDaemonMessage({ v: 1, op: 'result', id: 1, flow: f });
  t.match(parse(flow), { flow: { datapath: 'socket' } }, 'absent (older daemons): the socketpair');
  t.match(parse({ ...flow, datapath: 'vmpi_file' }), { flow: { datapath: 'vmpi_file' } });
  t.throws(() => parse({ ...flow, datapath: 'rdma' }), { message: /unknown flow datapath "rdma"/ });
});
