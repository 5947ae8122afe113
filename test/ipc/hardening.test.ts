/**
 * hardening.test.ts — the IPC daemon under hostile or broken applications (issue: hardening):
 * fds sent over a flow socket, SDUs larger than a socket buffer, a client that never reads its
 * answers, per-user limits and clamped timeouts, and a throw injected into each kind of callback
 * the daemon runs (fd, timer, promise, flow event). Each time the daemon keeps serving a second,
 * well-behaved application.
 *
 * Flows here run between an application of the host daemon and the guest's shim IPC process used
 * directly (no guest daemon), so SDUs of any size reach the host daemon's bridge.
 */
import t from 'tap';
import type { Test } from 'tap';
import { DifError, type Flow } from '../../src/dif/api.js';
import type { ClientFlow, IpcClient } from '../../src/dif/ipc/client.js';
import type { Session } from '../../src/dif/ipc/daemon.js';
import { FlowBridge, writeRecord } from '../../src/dif/ipc/datapath.js';
import { encodeFrame } from '../../src/dif/ipc/protocol.js';
import { native } from '../../src/sys/native.js';
import { DIF, ipcSetup, nextEvent, pattern, until, within, type IpcSetup } from './helpers.js';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with null after `ms` without keeping the process alive (the loser of a race). */
function deadline(ms: number): Promise<null> {
  return new Promise((r) => setTimeout(() => r(null), ms).unref());
}

/** Crashes are what these tests are about: record any that would have ended the process. */
const escaped: unknown[] = [];
process.on('uncaughtException', (e) => escaped.push(e));
process.on('unhandledRejection', (e) => escaped.push(e));

function noEscapes(t: Test): void {
  t.same(escaped.map(String), [], 'no exception or rejection escaped to the process');
  escaped.length = 0;
}

/** The session the daemon made for the next connection. */
function nextSession(s: IpcSetup): Promise<Session> {
  return nextEvent<[Session]>(s.hostDaemon, 'session', "the daemon's session for a new connection", 10_000).then(([session]) => session);
}

/** A host application `app` registered in the DIF; flows come from the guest IPC process directly. */
async function hostApp(s: IpcSetup, app: string): Promise<{ client: IpcClient; session: Session; flows: ClientFlow[] }> {
  const sp = nextSession(s);
  const client = await s.hostClient();
  const session = await sp;
  const reg = await client.register(DIF, app);
  const flows: ClientFlow[] = [];
  reg.on('request', (req) => void req.accept().then((f) => flows.push(f), () => undefined));
  return { client, session, flows };
}

/** A flow from the guest IPC process to host application `app`: [guest end, host application end]. */
async function flowTo(s: IpcSetup, app: { flows: ClientFlow[] }, name: string, src: string): Promise<[Flow, ClientFlow]> {
  const before = app.flows.length;
  const g = await s.guestIpcp.allocateFlow(src, name);
  await until(() => app.flows.length > before, 'the host application got the flow');
  return [g, app.flows[app.flows.length - 1]!];
}

/** One SDU from the guest end reaches the host application, and one back. */
async function echoWorks(g: Flow, h: ClientFlow, seed: number): Promise<boolean> {
  const a = pattern(100, seed);
  const b = pattern(200, seed + 1);
  const got = h.read();
  g.write(a);
  const x = await Promise.race([got, deadline(2000)]);
  const back = g.read();
  h.write(b);
  const y = await Promise.race([back, deadline(2000)]);
  return x !== null && Buffer.compare(x, a) === 0 && y !== null && Buffer.compare(y, b) === 0;
}

function fdOf(f: ClientFlow): number {
  return (f as unknown as { fd: number }).fd;
}

/** The daemon's flow bridges of a session (for poking at their sockets). */
function bridgesOf(session: Session): FlowBridge[] {
  const flows = (session as unknown as { flows: Map<number, { link: unknown }> }).flows;
  return [...flows.values()].map((f) => f.link).filter((l): l is FlowBridge => l instanceof FlowBridge);
}

t.test('item 5: an application sending fds over its flow socket ends that flow only, fds closed', async (t) => {
  const s = ipcSetup(t);
  const app = await hostApp(s, 'victim');
  const other = await hostApp(s, 'other');
  const [gv, hv] = await flowTo(s, app, 'victim', 'peer/1');
  const [go, ho] = await flowTo(s, other, 'other', 'peer/2');
  const ended = nextEvent<[string]>(hv, 'deallocated', "the victim's flow ending").then(([reason]) => reason);

  // The fd sent is one end of a pair: once every copy of the other end is closed, ours reads EOF.
  const [mine, sent] = native.socketpairSeqpacket();
  t.teardown(() => native.close(mine));
  t.equal(native.sendMsg(fdOf(hv), Uint8Array.of(0, 1, 2, 3), 0, 4, [sent]), 4, 'the record with an fd went');
  native.close(sent);

  t.equal(await ended, 'the application sent file descriptors over its flow socket (SDUs only; the fds were closed): flow closed', 'the application is told why its flow ended');
  await until(() => gv.state === 'deallocated', 'the peer end ended too');
  await until(() => native.recvMsg(mine, new Uint8Array(8), 0, 8, 0)?.bytes === 0, 'the fd the daemon received was closed');
  t.equal(s.hostDaemon.stats.bridgeAborts.fds_on_flow_socket, 1, 'counted');
  t.ok(await echoWorks(go, ho, 1), 'the other application carries on');
  t.notOk(app.client.closed, 'the session itself stays');
  noEscapes(t);
});

t.test('item 6: SDUs larger than the default socket buffer reach the application; beyond its buffer: dropped and counted', async (t) => {
  const s = ipcSetup(t, { pair: { maxSdu: 1 << 20 } });
  const app = await hostApp(s, 'big');
  const [g, h] = await flowTo(s, app, 'big', 'peer/1');
  t.equal(h.qos.maxSdu, 1 << 20);

  const sdu = pattern(1 << 20, 3);
  const got = h.read();
  t.ok(g.write(sdu), 'the guest wrote a 1 MiB SDU');
  const r = await Promise.race([got, deadline(3000)]);
  t.ok(r !== null && Buffer.compare(r, sdu) === 0, 'a 1 MiB SDU arrives whole (socket buffers sized to the max SDU)');
  const back = pattern((1 << 20) - 5, 4);
  const gotBack = g.read();
  await within(h.send(back), 'the 1 MiB send from the application');
  const rb = await Promise.race([gotBack, deadline(3000)]);
  t.ok(rb !== null && Buffer.compare(rb, back) === 0, 'and one back from the application');

  // Unprivileged, the kernel caps the buffer below the SDU: shrink it the same way here.
  const [bridge] = bridgesOf(app.session);
  native.setSocketBuffers(bridge!.fd, 64 * 1024);
  g.write(sdu);
  g.write(pattern(10, 5));
  const small = await Promise.race([h.read(), deadline(3000)]);
  t.equal(small?.byteLength, 10, 'the SDU that cannot fit is dropped, the next one arrives');
  t.equal(bridge!.stats.tooLarge, 1, 'the drop is counted on the flow');
  t.equal(s.hostDaemon.stats.sdusTooLarge, 1, 'and in the daemon (metrics)');
  t.equal(h.state, 'allocated', 'the flow goes on');

  // The application's own writes: a typed error, not an exception from deep inside.
  native.setSocketBuffers(fdOf(h), 64 * 1024);
  const big = (() => {
    try {
      h.write(sdu);
      return null;
    } catch (e) {
      return e;
    }
  })();
  t.ok(big instanceof DifError && big.code === 'sdu_too_large', 'an application write that cannot fit its socket: sdu_too_large');

  // writeRecord reports it as such rather than throwing.
  const [a, b] = native.socketpairSeqpacket();
  t.teardown(() => {
    native.close(a);
    native.close(b);
  });
  native.setSocketBuffers(a, 64 * 1024);
  t.equal(writeRecord(a, sdu), 'too_large');
  noEscapes(t);
});

t.test('item 7: a client that never reads its answers is stopped (backpressure), not buffered', async (t) => {
  const s = ipcSetup(t);
  const sp = nextSession(s);
  const fd = native.connectUnix(s.hostDaemon.socketPath);
  t.teardown(() => native.close(fd));
  const session = await sp;
  const frame = encodeFrame({ op: 'list_difs', id: 1 });
  const LIMIT = 200_000; // ~ 6 MB of requests, ~ 14 MB of answers if the daemon took them all
  let sent = 0;
  let stuckSince = Date.now();
  let maxQueued = 0;
  while (sent < LIMIT && Date.now() - stuckSince < 500) {
    let n = 0;
    while (sent < LIMIT && native.sendMsg(fd, frame, 0, frame.byteLength, null) === frame.byteLength) {
      sent++;
      n++;
    }
    if (n > 0) stuckSince = Date.now();
    maxQueued = Math.max(maxQueued, session.queuedBytes);
    await sleep(5);
  }
  t.ok(sent < LIMIT, `the daemon stopped reading after ${sent} requests`);
  t.ok(maxQueued <= 4 * 256 * 1024, `answers queued stayed within the budget (${maxQueued} bytes)`);
  t.notOk(session.isClosed, 'the client is slowed down, not dropped');

  const other = await s.hostClient();
  t.same(await other.listDifs(), [{ name: DIF, address: 7 }], 'another application is served meanwhile');

  // Now read: every request gets its answer (nothing was dropped).
  const buf = new Uint8Array(1 << 16);
  let bytes = 0;
  const answer = encodeFrame({ op: 'result', id: 1, difs: [{ name: DIF, address: 7 }] }).byteLength;
  const end = Date.now() + 20_000;
  while (bytes < sent * answer && Date.now() < end) {
    const r = native.recvMsg(fd, buf, 0, buf.byteLength, 0);
    if (r === null) await sleep(1);
    else bytes += r.bytes;
  }
  t.equal(bytes, sent * answer, `all ${sent} answers arrived once the client read`);
  noEscapes(t);
});

t.test('item 11: credentials, per-uid limits, clamped timeouts, names owned by their session', async (t) => {
  const s = ipcSetup(t, { daemon: { limits: { maxFlowsPerUid: 2, maxRegistrationsPerUid: 2, maxSessionsPerUid: 3, maxAllocateTimeoutMs: 300 } } });
  const sp = nextSession(s);
  const a = await s.hostClient();
  const session = await sp;
  t.equal(session.uid, process.getuid!(), 'the session knows its uid (SO_PEERCRED)');
  t.equal(session.pid, process.pid);
  const b = await s.hostClient();

  // Registrations: per uid, across sessions.
  await a.register(DIF, 'a/1');
  await b.register(DIF, 'b/1');
  const regErr = await a.register(DIF, 'a/2').catch((e: unknown) => e);
  t.ok(regErr instanceof DifError && regErr.code === 'limit_exceeded', 'a third registration of the same user is refused (typed)');
  t.match((regErr as Error).message, /maxRegistrationsPerUid/);
  t.equal(s.hostDaemon.stats.limitHits.registrations, 1);
  // A name belongs to the session that registered it.
  const unreg = await b.request({ op: 'unregister', dif: DIF, app: 'a/1' }).catch((e: unknown) => e);
  t.ok(unreg instanceof DifError && unreg.code === 'not_registered', "another session cannot unregister it");
  t.ok(s.hostIpcp.isRegistered('a/1'));

  // Flows: allocated ones and allocations in progress count.
  s.guestIpcp.register('srv', (req) => req.accept());
  const f1 = await a.allocate(DIF, 'srv', { src: 'x/1' });
  await b.allocate(DIF, 'srv', { src: 'x/2' });
  const flowErr = await a.allocate(DIF, 'srv', { src: 'x/3' }).catch((e: unknown) => e);
  t.ok(flowErr instanceof DifError && flowErr.code === 'limit_exceeded', 'a third flow of the same user is refused (typed)');
  t.equal(s.guestIpcp.flows().length, 2, 'no channel was taken for it');
  f1.deallocate();
  await until(() => s.hostIpcp.flows().length === 1, 'the flow ended');
  const f4 = await a.allocate(DIF, 'srv', { src: 'x/4' });
  t.pass('after one ends, a new one is allowed');

  // Sessions: the fourth connection of the user is refused with the reason.
  const c = await s.hostClient();
  t.ok(c, 'third session');
  const d = await s.hostClient();
  const sessErr = await d.listDifs().catch((e: unknown) => e);
  t.ok(sessErr instanceof DifError && sessErr.code === 'limit_exceeded', 'a fourth session is refused with limit_exceeded');
  t.match((sessErr as Error).message, /maxSessionsPerUid/);
  t.equal(s.hostDaemon.stats.refused.max_sessions_per_uid, 1);

  // Timeouts: weeks are clamped to maxAllocateTimeoutMs (the peer never answers here).
  s.guestIpcp.register('silent', () => undefined);
  f4.deallocate();
  await until(() => s.hostIpcp.flows().length === 1, 'the flow ended');
  const t0 = Date.now();
  const slow = await c.allocate(DIF, 'silent', { src: 'x/5', timeoutMs: 14 * 24 * 3600 * 1000 }).catch((e: unknown) => e);
  t.ok(slow instanceof DifError && slow.code === 'timeout', `a two-week timeout ends as a timeout after ${Date.now() - t0} ms`);
  t.ok(Date.now() - t0 < 3000, 'clamped');
  t.equal(s.hostDaemon.stats.timeoutsClamped, 1);
  noEscapes(t);
});

t.test('idle sessions holding nothing are closed; busy ones stay', async (t) => {
  const s = ipcSetup(t, { daemon: { limits: { idleTimeoutMs: 100 } } });
  const idle = await s.hostClient();
  const busy = await s.hostClient();
  await busy.register(DIF, 'busy');
  await until(() => idle.closed, 'the idle session closed', 3000);
  t.equal(s.hostDaemon.stats.sessionsClosed.idle, 1);
  await sleep(300);
  t.notOk(busy.closed, 'a session holding a registration stays');
  t.same(await busy.listDifs(), [{ name: DIF, address: 7 }]);
});

t.test('process-level guard: a throw in each kind of callback closes only its session or flow', async (t) => {
  const armed = new Map<string, number>(); // where → victim session id
  const s = ipcSetup(t, {
    daemon: {
      limits: { idleTimeoutMs: 150 },
      faultInjection: (where, session) => {
        if (armed.get(where) !== session) return;
        armed.delete(where);
        throw new Error(`injected at ${where}`);
      },
    },
  });
  const bystander = await hostApp(s, 'bystander');
  const [gb, hb] = await flowTo(s, bystander, 'bystander', 'peer/b');
  const stillFine = async (what: string): Promise<void> => {
    t.ok(await echoWorks(gb, hb, 7), `${what}: the bystander's flow still works`);
    t.notOk(bystander.client.closed, `${what}: the bystander's session stays`);
    t.same(await bystander.client.listDifs(), [{ name: DIF, address: 7 }], `${what}: the bystander is still served`);
  };
  let n = 0;

  // fd callback of the control socket (a request).
  {
    const v = await hostApp(s, `v${n++}`);
    armed.set('session:request', v.session.id);
    const e = await v.client.listDifs().catch((err: unknown) => err);
    t.ok(e instanceof DifError && e.code === 'disconnected', 'request callback: the victim session is closed');
    t.ok(v.session.isClosed);
    await stillFine('request callback');
  }
  // timer (the idle sweep)
  {
    const v = await hostApp(s, `v${n++}`);
    armed.set('session:idle timer', v.session.id);
    await until(() => v.client.closed, 'the victim closed by the sweep');
    await stillFine('timer');
  }
  // promise (an allocation's result)
  {
    const v = await hostApp(s, `v${n++}`);
    s.guestIpcp.register(`target${n}`, (req) => req.accept());
    const flowsBefore = s.hostIpcp.flows().length;
    armed.set('session:allocation', v.session.id);
    const e = await v.client.allocate(DIF, `target${n}`, { src: 'x/1' }).catch((err: unknown) => err);
    t.ok(e instanceof DifError && e.code === 'disconnected', 'allocation promise: the victim session is closed');
    await until(() => s.hostIpcp.flows().length === flowsBefore, 'the allocated flow was not leaked');
    await stillFine('promise');
  }
  // a flow request from the peer (an IPC process callback)
  {
    const v = await hostApp(s, `v${n++}`);
    armed.set('session:flow request', v.session.id);
    const e = await s.guestIpcp.allocateFlow('peer/x', `v${n - 1}`).catch((err: unknown) => err);
    t.ok(e instanceof DifError && e.code === 'rejected', 'flow request callback: the peer is answered at once');
    await until(() => v.client.closed, 'victim closed');
    await stillFine('flow request');
  }
  // fd callback of a flow socket (the application writes)
  {
    const v = await hostApp(s, `v${n++}`);
    const [g, h] = await flowTo(s, v, `v${n - 1}`, 'peer/y');
    armed.set('bridge:flow socket', v.session.id);
    const ended = nextEvent<[string]>(h, 'deallocated', 'the victim flow ending (flow socket fault)');
    h.write(pattern(10, 1));
    t.match((await ended)[0], /^IPC daemon: internal error in the flow's data path \(flow socket\): /, 'flow socket callback: the victim flow ends with the reason');
    await until(() => g.state === 'deallocated', 'peer end too');
    t.notOk(v.client.closed, 'the victim session itself stays (the fault was the flow’s)');
    await stillFine('flow socket callback');
  }
  // flow event (an SDU from the IPC process)
  {
    const v = await hostApp(s, `v${n++}`);
    const [g, h] = await flowTo(s, v, `v${n - 1}`, 'peer/z');
    armed.set('bridge:data', v.session.id);
    const ended = nextEvent<[string]>(h, 'deallocated', 'the victim flow ending (data event fault)');
    g.write(pattern(10, 2));
    t.match((await ended)[0], /^IPC daemon: internal error in the flow's data path \(data\): /, 'flow data event: the victim flow ends');
    await stillFine('flow event');
  }
  // promise of a bridge (delivering what is left after the flow ended)
  {
    const v = await hostApp(s, `v${n++}`);
    const [g] = await flowTo(s, v, `v${n - 1}`, 'peer/w');
    armed.set('bridge:drain loop', v.session.id);
    const faults = s.hostDaemon.stats.faults;
    g.deallocate('peer done');
    await until(() => s.hostDaemon.stats.faults > faults, 'the drain loop fault was contained');
    await until(() => bridgesOf(v.session).length === 0, 'the bridge closed');
    await stillFine('bridge promise');
  }
  // the listening socket's fd callback
  {
    armed.set('accept', null as unknown as number);
    const faults = s.hostDaemon.stats.faults;
    const c = await s.hostClient();
    t.same(await c.listDifs(), [{ name: DIF, address: 7 }], 'accept callback: the connection is still accepted on the next wakeup');
    t.ok(s.hostDaemon.stats.faults > faults, 'the fault was counted');
    await stillFine('accept');
  }
  t.equal(armed.size, 0, 'every injected fault fired');
  noEscapes(t);
});

t.test('process-level guard: real objects that throw (flow write, flow read, registration) end only their owner', async (t) => {
  const s = ipcSetup(t);
  const bystander = await hostApp(s, 'bystander');
  const [gb, hb] = await flowTo(s, bystander, 'bystander', 'peer/b');

  // Flow.write throws something that is not a DifError (fd callback of the flow socket).
  const v1 = await hostApp(s, 'v1');
  const [, h1] = await flowTo(s, v1, 'v1', 'peer/1');
  const host1 = s.hostIpcp.flows().find((f) => f.remoteApp.processInstance === '1' && f.localApp.processName === 'v1')!;
  host1.write = () => {
    throw new TypeError('broken flow');
  };
  const ended1 = nextEvent<[string]>(h1, 'deallocated', 'the flow whose write threw ending');
  h1.write(pattern(5, 1));
  t.equal((await ended1)[0], "IPC daemon: internal error in the flow's data path (flow socket): broken flow", 'the flow whose write threw ends, with the reason');

  // Flow.read throws in the bridge's drain loop (a promise) after the flow ended.
  const v2 = await hostApp(s, 'v2');
  const [g2] = await flowTo(s, v2, 'v2', 'peer/2');
  const host2 = s.hostIpcp.flows().find((f) => f.localApp.processName === 'v2')!;
  host2.read = () => {
    throw new TypeError('broken read');
  };
  g2.deallocate('bye');
  await until(() => bridgesOf(v2.session).length === 0, 'the bridge of the broken flow closed');

  // A registration whose unregister throws, when its session closes (control fd callback).
  const register = s.hostIpcp.register.bind(s.hostIpcp);
  s.hostIpcp.register = (app, onRequest) => {
    const reg = register(app, onRequest);
    const real = reg.unregister.bind(reg);
    reg.unregister = () => {
      real();
      throw new TypeError('broken unregister');
    };
    return reg;
  };
  const sp = nextSession(s);
  const v3 = await s.hostClient();
  const session3 = await sp;
  await v3.register(DIF, 'v3');
  v3.close();
  await until(() => session3.isClosed, 'the session closed despite the throw');
  t.notOk(s.hostIpcp.isRegistered('v3'), 'and its name is gone');

  t.ok(await echoWorks(gb, hb, 9), 'the bystander flow still works');
  t.same(await bystander.client.listDifs(), [{ name: DIF, address: 7 }]);
  noEscapes(t);
});

t.test('resource budgets: an application that does not read holds bounded bytes at every hop', async (t) => {
  const s = ipcSetup(t, { pair: { maxSdu: 1 << 20 } });
  const app = await hostApp(s, 'slow');
  const [g, h] = await flowTo(s, app, 'slow', 'peer/1');
  const sdu = new Uint8Array(1 << 20);
  for (let i = 0; i < 40; i++) g.write(sdu); // 40 MiB from the guest, nobody reads
  await sleep(500);
  const clientBytes = (h as unknown as { rx: { bytes: number } }).rx.bytes;
  t.ok(clientBytes <= 5 << 20, `the client library read ahead ${clientBytes} bytes (at most 4 MiB + one SDU)`);
  t.ok(s.hostIpcp.rxQueuedBytes <= 8 << 20, `the daemon's flow queue holds ${s.hostIpcp.rxQueuedBytes} bytes (its 8 MiB budget)`);
  const host = s.hostIpcp.flows()[0]!;
  t.ok(host.stats.rxQueueDrops > 0, `the rest was dropped and counted (${host.stats.rxQueueDrops} SDUs: ${JSON.stringify(s.hostIpcp.stats.rxBudgetDrops)})`);
  for (let i = 0; i < 3; i++) t.equal((await within(h.read(), `kept SDU ${i + 1} when the application reads`))?.byteLength, 1 << 20);
  t.pass('and what was kept is still delivered when the application reads');
  noEscapes(t);
});

t.test('item 11: limits are per user: another uid is not held back by this one', { skip: process.getuid!() === 0 ? false : 'needs root to run a child as another user' }, async (t) => {
  const { spawn } = await import('node:child_process');
  const { chmodSync } = await import('node:fs');
  const { dirname, join } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const s = ipcSetup(t, { daemon: { mode: 0o666, limits: { maxRegistrationsPerUid: 1 } } });
  chmodSync(s.dir, 0o755);
  chmodSync(dirname(s.hostDaemon.socketPath), 0o755);
  const mine = await s.hostClient();
  await mine.register(DIF, 'root/1');
  const over = await mine.register(DIF, 'root/2').catch((e: unknown) => e);
  t.ok(over instanceof DifError && over.code === 'limit_exceeded', 'this user is at its limit');

  // Another user (nobody) registers over a raw connection: frames as protocol.ts defines them.
  const addon = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'vmpi_native.node');
  const code = `
    const n = require(${JSON.stringify(addon)});
    const fd = n.connectUnix(${JSON.stringify(s.hostDaemon.socketPath)});
    const body = Buffer.from(JSON.stringify({ v: 1, op: 'register', id: 1, dif: ${JSON.stringify(DIF)}, app: 'nobody/1' }));
    const frame = Buffer.alloc(4 + body.length); frame.writeUInt32BE(body.length, 0); body.copy(frame, 4);
    n.sendMsg(fd, frame, 0, frame.length, null);
    const buf = Buffer.alloc(4096); let got = 0; const end = Date.now() + 5000;
    const poll = () => {
      const r = n.recvMsg(fd, buf, got, buf.length - got, 0);
      if (r) got += r.bytes;
      if (got >= 4 && got >= 4 + buf.readUInt32BE(0)) { console.log(buf.subarray(4, 4 + buf.readUInt32BE(0)).toString()); setInterval(() => {}, 1000); }
      else if (Date.now() > end) { console.log('timeout'); process.exit(1); }
      else setTimeout(poll, 5);
    };
    poll();`;
  const sp = nextSession(s);
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['-e', code], { uid: 65534, gid: 65534, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const session = await Promise.race([sp, deadline(10_000)]);
  t.equal(session?.uid, 65534, 'the daemon sees the other uid');
  const closed = nextEvent(child, 'close', 'the child exiting', 10_000);
  t.teardown(() => child.kill('SIGKILL'));
  await until(() => /\n/.test(out), 'the child got its answer', 10_000);
  t.match(out, /"op":"result","id":1/, `the other user registered (${out.trim()})`);
  t.ok(s.hostIpcp.isRegistered('nobody/1'), 'its name is registered');
  child.kill('SIGTERM');
  await closed;
  await until(() => !s.hostIpcp.isRegistered('nobody/1'), 'its name goes with its session');
});

t.test('item 7: a well-behaved client pipelining many requests is slowed, never cut off or deadlocked', async (t) => {
  const s = ipcSetup(t, { daemon: { limits: { outputHighWater: 16 * 1024 } }, timeoutMs: 70_000 });
  const c = await s.hostClient();
  const N = 30_000; // ~ 1.3 MB of requests, ~ 2 MB of answers: far past both ends' budgets
  const all = Promise.all(Array.from({ length: N }, () => c.listDifs()));
  const r = await Promise.race([all, deadline(60_000)]);
  t.equal(r?.length, N, 'every request answered');
  t.notOk(c.closed);
  t.equal(s.hostDaemon.stats.sessionsClosed.output_limit, 0);
});

t.test('item 7: events a client never reads end its session at the output limit, with the cause', async (t) => {
  const s = ipcSetup(t, { daemon: { limits: { outputHighWater: 1024 } } });
  const bystander = await hostApp(s, 'bystander');
  const sp = nextSession(s);
  const fd = native.connectUnix(s.hostDaemon.socketPath);
  t.teardown(() => native.close(fd));
  const session = await sp;
  // Make the daemon's end of this connection small (as root the kernel grants it), so the
  // kernel holds few events and the daemon's own queue takes the rest.
  native.setSocketBuffers((session as unknown as { conn: { fd: number } }).conn.fd, 4096);
  const reg = encodeFrame({ op: 'register', id: 1, dif: DIF, app: 'deaf' });
  native.sendMsg(fd, reg, 0, reg.byteLength, null);
  await until(() => s.hostIpcp.isRegistered('deaf'), 'registered');
  const allocations: Promise<unknown>[] = [];
  for (let i = 0; i < 480 && !session.isClosed; i++) {
    allocations.push(s.guestIpcp.allocateFlow(`peer/${i}`, 'deaf').catch((e: unknown) => e));
    if (i % 20 === 0) await sleep(1);
  }
  await until(() => session.isClosed, 'the session closed at its output limit', 10_000);
  t.equal(s.hostDaemon.stats.sessionsClosed.output_limit, 1, 'cause: output_limit');
  t.notOk(s.hostIpcp.isRegistered('deaf'), 'its registration is gone');
  const results = await within(Promise.all(allocations), 'every peer waiting on the deaf application answered', 10_000);
  t.same(results.filter((r) => !(r instanceof DifError && r.code === 'rejected')).map(String), [], 'every peer waiting on it was answered (rejected)');
  t.same(await bystander.client.listDifs(), [{ name: DIF, address: 7 }], 'the bystander is served');
  noEscapes(t);
});

t.test('item 8: the daemon-wide session cap', async (t) => {
  const s = ipcSetup(t, { daemon: { limits: { maxSessions: 2, unlimitedUids: [process.getuid!()] } } });
  const a = await s.hostClient();
  const b = await s.hostClient();
  const c = await s.hostClient();
  const e = await c.listDifs().catch((err: unknown) => err);
  t.ok(e instanceof DifError && e.code === 'limit_exceeded', 'a third connection is refused even for an unlimited user');
  t.match((e as Error).message, /maxSessions/);
  t.equal(s.hostDaemon.stats.refused.max_sessions, 1);
  a.close();
  await until(() => s.hostDaemon.sessionCount === 1, 'one session left');
  const d = await s.hostClient();
  t.same(await d.listDifs(), [{ name: DIF, address: 7 }], 'room again after one left');
  t.same(await b.listDifs(), [{ name: DIF, address: 7 }]);
});
