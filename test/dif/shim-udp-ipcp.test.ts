/**
 * The shim IPC process over UDP (src/dif/shim-udp/ipcp.ts): two in-process IPC processes over
 * real UDP sockets on 127.0.0.1 (ephemeral ports): the allocation / release state machine
 * (accept, reject, unknown application, unresolved name, timeout, duplicate requests), SDUs of
 * 0..1400 bytes intact both ways, the loss of the peer (a flow ends with cause 'peer' within
 * keepaliveTimeoutMs + keepaliveMs), and datagrams from strangers, malformed, oversize or for
 * unknown flows dropped and counted, with an unread flow's queue bounded in bytes.
 */
import { createSocket, type Socket } from 'node:dgram';
import t, { type Test } from 'tap';
import { DifError, type Flow } from '../../src/dif/api.js';
import { ShimUdpIpcp, ShimUdpError, type ShimUdpOptions } from '../../src/dif/shim-udp/ipcp.js';
import { decodeMessage, encodeData, encodeMessage, type WireMessage } from '../../src/dif/shim-udp/wire.js';

async function pair(t: Test, opts: Partial<ShimUdpOptions> = {}): Promise<{ a: ShimUdpIpcp; b: ShimUdpIpcp }> {
  const a = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', ...opts });
  const b = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', ...opts });
  t.teardown(() => {
    a.close();
    b.close();
  });
  b.addPeer('srv', a.localAddress);
  a.allowAddress(b.localAddress);
  return { a, b };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref())]);
}

async function raw(t: Test): Promise<{ sock: Socket; addr: string; got: WireMessage[] }> {
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  const got: WireMessage[] = [];
  sock.on('message', (m) => got.push(decodeMessage(m)));
  return { sock, addr: `127.0.0.1:${sock.address().port}`, got };
}

const sendRaw = (s: Socket, to: ShimUdpIpcp, buf: Uint8Array): Promise<void> => {
  const [host, port] = to.localAddress.split(':');
  return new Promise((r) => s.send(buf, Number(port), host, () => r()));
};

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('allocate, SDUs of 0..1400 bytes intact both ways, release', async (t) => {
  const { a, b } = await pair(t);
  let served: Flow | undefined;
  a.register('srv', (req) => {
    served = req.accept();
  });
  const flow = await within(b.allocateFlow('cli', 'srv'), 3000, 'allocation');
  t.equal(flow.state, 'allocated');
  t.equal(flow.qos.maxSdu, 1467, 'max SDU = MTU 1472 − 5');
  await until('the server flow', () => served !== undefined);
  const sizes = Array.from({ length: 15 }, (_, i) => i * 100);
  for (const n of sizes) {
    const sdu = Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff);
    t.ok(flow.write(sdu));
    const got = await within(served!.read(), 2000, `SDU of ${n}`);
    t.same(Buffer.from(got!), Buffer.from(sdu), `${n} bytes intact a←b`);
    served!.write(sdu);
    const back = await within(flow.read(), 2000, `SDU of ${n} back`);
    t.same(Buffer.from(back!), Buffer.from(sdu), `${n} bytes intact a→b`);
  }
  t.throws(() => flow.write(new Uint8Array(1468)), { code: 'sdu_too_large' });
  const ended = new Promise<[string, string]>((r) => served!.once('deallocated', (reason, cause) => r([reason, cause])));
  flow.deallocate('done');
  const [reason, cause] = await within(ended, 2000, 'the peer sees the release');
  t.equal(cause, 'peer');
  t.match(reason, /deallocated by the peer: done/);
  t.equal(a.flows().length + b.flows().length, 0, 'no flows left');
  t.equal(b.counters().resolutions?.resolved, 1);
  t.equal(a.counters().allocations.incoming.allocated, 1);
  t.equal(b.counters().allocations.outgoing.allocated, 1);
});

t.test('reject, unknown application, unresolved name, QoS the shim cannot give, timeout', async (t) => {
  const { a, b } = await pair(t, { allocateTimeoutMs: 300, retryMs: 100 });
  a.register('srv', (req) => req.reject('not today'));
  await t.rejects(b.allocateFlow('cli', 'srv'), { code: 'rejected', peerReason: 'not today' });
  a.unregister('srv');
  await t.rejects(b.allocateFlow('cli', 'srv'), { code: 'rejected', peerReason: 'unknown application' });
  await t.rejects(b.allocateFlow('cli', 'nobody'), { code: 'rejected', message: /peers table/ });
  t.same(b.counters().resolutions, { resolved: 2, unresolved: 1 });
  await t.rejects(b.allocateFlow('cli', 'srv', { reliable: true }), { code: 'invalid_qos' });
  await t.rejects(b.allocateFlow('cli', 'srv', { maxSdu: 5000 }), { code: 'invalid_qos' });
  // A peer that never answers: a bound socket that reads nothing.
  const { addr } = await raw(t);
  b.addPeer('void', addr);
  const t0 = Date.now();
  await t.rejects(b.allocateFlow('cli', 'void'), { code: 'timeout', message: /no answer from 127\.0\.0\.1:\d+ within 300 ms/ });
  t.ok(Date.now() - t0 < 1500, 'within the allocation timeout');
  t.equal(b.counters().allocations.outgoing.timeout, 1);
  // The application does not answer: the request is refused when the responder's timeout ends.
  a.register('slow', () => {});
  b.addPeer('slow', a.localAddress);
  await t.rejects(b.allocateFlow('cli', 'slow', {}, { timeoutMs: 2000 }), { code: 'rejected', message: /did not answer/ });
  t.equal(b.flows().length, 0);
});

t.test('a lost answer: the resent ALLOC_REQ gets the same flow, one flow only', async (t) => {
  const { a } = await pair(t);
  const r = await raw(t);
  a.allowAddress(r.addr);
  const accepted: Flow[] = [];
  a.register('srv', (req) => accepted.push(req.accept()));
  const req = encodeMessage({ kind: 'alloc_req', src: 42, reliable: false, inOrder: false, maxSdu: 0, difName: 'udp.test', srcApp: 'x', dstApp: 'srv' });
  await sendRaw(r.sock, a, req);
  await sendRaw(r.sock, a, req);
  await until('two answers', () => r.got.length >= 2);
  t.equal(accepted.length, 1, 'one flow');
  const [m1, m2] = r.got;
  t.same(m1, m2, 'the same answer twice');
  t.match(m1, { kind: 'alloc_resp', dst: 42, accept: true });
  // A KEEPALIVE naming a flow id the peer does not have: answered with DEALLOC.
  await sendRaw(r.sock, a, encodeMessage({ kind: 'keepalive', dst: 999, src: 43 }));
  await until('the DEALLOC', () => r.got.length >= 3);
  t.match(r.got[2], { kind: 'dealloc', dst: 43, src: 999 });
  // DEALLOC from the requester ends the flow.
  const src = m1!.kind === 'alloc_resp' ? m1!.src : 0;
  await sendRaw(r.sock, a, encodeMessage({ kind: 'dealloc', dst: src, src: 42, reason: 'bye' }));
  await until('the flow ends', () => accepted[0]!.state === 'deallocated');
  t.equal(accepted[0]!.deallocationReason, 'deallocated by the peer: bye');
});

t.test('loss of the peer: the flow ends with cause peer within keepaliveTimeoutMs + keepaliveMs', async (t) => {
  const { a, b } = await pair(t, { keepaliveMs: 100, keepaliveTimeoutMs: 400 });
  a.register('srv', (req) => void req.accept());
  const flow = await within(b.allocateFlow('cli', 'srv'), 3000, 'allocation');
  // Idle but alive: keepalives keep it up past the timeout.
  await new Promise((r) => setTimeout(r, 700));
  t.equal(flow.state, 'allocated', 'an idle flow with a live peer stays');
  const t0 = Date.now();
  const ended = new Promise<[string, string]>((r) => flow.once('deallocated', (reason, cause) => r([reason, cause])));
  a.detach('crash'); // the peer's process dies: no word on the wire
  const [reason, cause] = await within(ended, 2000, 'the flow ends');
  const took = Date.now() - t0;
  t.equal(cause, 'peer');
  t.match(reason, /sent nothing for 400 ms \(keepalive timeout\)/);
  t.ok(took <= 400 + 100 + 150, `ended after ${took} ms`);
  t.equal(b.stats.peersLost, 1);
});

t.test('strangers, malformed, oversize, unknown flows: dropped and counted; an unread flow is bounded', async (t) => {
  const { a, b } = await pair(t, { mtu: 1000, rxQueueBytes: 20_000, rxQueueLimit: 100_000 });
  let served: Flow | undefined;
  a.register('srv', (req) => {
    served = req.accept();
  });
  const flow = await within(b.allocateFlow('cli', 'srv'), 3000, 'allocation');
  await until('the server flow', () => served !== undefined);
  const stranger = await raw(t);
  await sendRaw(stranger.sock, a, encodeMessage({ kind: 'alloc_req', src: 1, reliable: false, inOrder: false, maxSdu: 0, difName: 'udp.test', srcApp: 'x', dstApp: 'srv' }));
  const r = await raw(t);
  a.allowAddress(r.addr);
  await sendRaw(r.sock, a, Buffer.of(0x99, 1, 2));
  await sendRaw(r.sock, a, Buffer.alloc(1001, 1));
  await sendRaw(r.sock, a, encodeData(12345, Buffer.of(1)));
  await sendRaw(r.sock, a, encodeData(1, Buffer.of(1))); // a's flow id 1 exists, but its peer is b, not r
  await until('drops counted', () => {
    const d = a.counters().datagramDrops!;
    return d.unknown_peer === 1 && d.malformed === 1 && d.oversize === 1 && d.unknown_flow + d.stale >= 2;
  });
  t.equal(stranger.got.length, 0, 'a stranger gets no answer');
  t.equal(a.flows().length, 1, 'and no flow');
  // Nobody reads `served`: what b sends is bounded at 20 000 bytes queued.
  const sdu = new Uint8Array(900);
  let sent = 0;
  for (let i = 0; i < 100; i++) {
    if (flow.write(sdu)) sent++;
    else await new Promise<void>((res) => flow.once('drain', () => res()));
  }
  await until('budget drops', () => (a.counters().rxBudgetDrops?.flow_bytes ?? 0) > 0);
  t.ok(a.rxQueuedBytes <= 20_000, `queued ${a.rxQueuedBytes} bytes`);
  t.ok(sent > 0);
  t.equal(served!.state, 'allocated', 'the flow survives it all');
});

t.test('bind failures and bad options are typed errors', async (t) => {
  const a = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0' });
  t.teardown(() => a.close());
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: a.localAddress }), { name: 'ShimUdpError', code: 'bind_failed', message: /EADDRINUSE.*another process/ });
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', mtu: 70_000 }), ShimUdpError);
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', peers: { x: 'nowhere' } }), { code: 'invalid_config' });
  t.throws(() => a.addPeer('y', '1.2.3.4:0'), { code: 'invalid_config' });
  await t.rejects(a.allocateFlow('a', 'b'), DifError);
});

t.test('a hostile allowed peer: random datagrams of every kind change nothing they should not', async (t) => {
  const { a, b } = await pair(t, { maxPendingRequests: 4, allocateTimeoutMs: 200 });
  let accepted = 0;
  a.register('srv', (req) => {
    accepted++;
    if (accepted % 2 === 0) req.accept();
  });
  const good = await within(b.allocateFlow('cli', 'srv').catch(() => b.allocateFlow('cli', 'srv')), 3000, 'a flow before');
  const r = await raw(t);
  a.allowAddress(r.addr);
  let seed = 99;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const kinds: WireMessage['kind'][] = ['data', 'alloc_req', 'alloc_resp', 'dealloc', 'keepalive'];
  for (let i = 0; i < 3000; i++) {
    const id = (): number => [1, 2, 3, rnd(10) + 1, rnd(0xffffffff) + 1][rnd(5)]!;
    const kind = kinds[rnd(kinds.length)]!;
    let m: WireMessage;
    if (kind === 'data') m = { kind, dst: id(), sdu: new Uint8Array(rnd(1500)) };
    else if (kind === 'alloc_req') m = { kind, src: id(), reliable: rnd(4) === 0, inOrder: false, maxSdu: rnd(2000), difName: rnd(5) === 0 ? 'other' : 'udp.test', srcApp: `x${rnd(3)}`, dstApp: rnd(2) ? 'srv' : 'nope' };
    else if (kind === 'alloc_resp') m = { kind, dst: id(), src: id(), accept: rnd(2) === 0, reason: 'r' };
    else if (kind === 'dealloc') m = { kind, dst: rnd(3) === 0 ? 0 : id(), src: id(), reason: 'r' };
    else m = { kind, dst: id(), src: id() };
    const buf = encodeMessage(m);
    if (rnd(10) === 0 && buf.byteLength > 1) buf[rnd(buf.byteLength)] ^= 0xff;
    await sendRaw(r.sock, a, buf);
  }
  await new Promise((res) => setTimeout(res, 300));
  // The flow between a and b, whose ids the stranger guessed at from another address, lives on.
  t.equal(good.state, 'allocated', 'the good flow survives');
  good.write(Uint8Array.of(1, 2, 3));
  const served = a.flows().find((f) => f.remoteApp.processName === 'cli');
  t.ok(served, 'its other end too');
  const pendingNow = (a.inspect().flows as { state: string }[]).filter((f) => f.state === 'incoming').length;
  t.ok(pendingNow <= 4, `requests waiting for the application stay bounded (${pendingNow})`);
  t.ok(a.flows().length <= 1024);
  const d = a.counters().datagramDrops!;
  t.ok(d.malformed + d.oversize + d.unknown_flow + d.stale + d.no_registration + d.limit > 0, `drops ${JSON.stringify(d)}`);
  // And it still allocates.
  const again = await within(b.allocateFlow('cli', 'srv').catch(() => b.allocateFlow('cli', 'srv')), 3000, 'a flow after');
  t.equal(again.state, 'allocated');
});

t.test('names from a hosts file, at the peers\' well-known port', async (t) => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { parseHosts } = await import('../../src/dif/shim-udp/ipcp.js');
  t.same(parseHosts('# c\n127.0.0.1 Srvhost alias # x\n::1 v6only\nbad line\n10.0.0.300 nope\n'), [['srvhost', '127.0.0.1'], ['alias', '127.0.0.1']]);
  const dir = mkdtempSync(join(tmpdir(), 'shim-udp-hosts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0' });
  t.teardown(() => a.close());
  const hosts = join(dir, 'hosts');
  writeFileSync(hosts, '127.0.0.1 srvhost\n');
  const port = Number(a.localAddress.split(':')[1]);
  const b = await ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', hostsFile: hosts, peerPort: port });
  t.teardown(() => b.close());
  a.allowAddress(b.localAddress);
  a.register('srvhost/1', (req) => void req.accept());
  const f = await within(b.allocateFlow('cli', 'srvhost/1'), 3000, 'allocation by host name');
  t.equal(f.state, 'allocated');
  await t.rejects(b.allocateFlow('cli', 'otherhost'), { code: 'rejected', message: /nor a host name of its hosts file/ });
  await t.rejects(ShimUdpIpcp.open({ difName: 'udp.test', bind: '127.0.0.1:0', hostsFile: join(dir, 'missing'), peerPort: 7 }), { code: 'invalid_config', message: /hostsFile.*ENOENT/ });
});
