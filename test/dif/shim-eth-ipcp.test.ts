/**
 * The shim IPC process over Ethernet's state machines (src/dif/shim-eth/ipcp.ts) on a fake
 * segment (test/helpers/fake-eth.ts; the real packet socket is in test/shim-eth-serve.test.ts):
 * resolution by request/reply and its bounded, expiring cache, allocation, data, release,
 * rejection, timeouts, a hostile peer's frames dropped by reason, the interface going down, a
 * silent peer, the send queue (batches, a full device queue), and a restore from a snapshot.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { ShimEthIpcp, ShimEthError, FRAME_OVERHEAD, type ShimEthOptions } from '../../src/dif/shim-eth/ipcp.js';
import { buildFrame, encodeArp, parseMac, writeEthHeader, ETHERTYPE_RINA } from '../../src/dif/shim-eth/wire.js';
import { encodeMessage } from '../../src/dif/shim-udp/wire.js';
import type { Flow, FlowRequest } from '../../src/dif/api.js';
import { FakeHub, FakeLink } from '../helpers/fake-eth.js';

function make(t: Test, hub: FakeHub, opts: Partial<ShimEthOptions> = {}, mtu?: number): { ipcp: ShimEthIpcp; link: FakeLink } {
  const link = hub.link({ mtu });
  const ipcp = ShimEthIpcp.open({ difName: 'eth.test', interface: link.ifname, link, retryMs: 50, ...opts });
  t.teardown(() => ipcp.close());
  return { ipcp, link };
}

const acceptAll = (r: FlowRequest): void => void r.accept();
const next = (f: Flow, ms = 2000): Promise<Uint8Array | null> => Promise.race([f.read(), new Promise<null>((r) => setTimeout(() => r(null), ms))]);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** `p`, or a failure after `ms` (a timer that also keeps the event loop alive: the IPC process's own timers do not). */
const bounded = <T>(p: Promise<T>, ms = 5000): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
};

t.test('resolve, allocate, data both ways, cache hit, release', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { retryMs: 5000 });
  const b = make(t, hub);
  let served: Flow | undefined;
  b.ipcp.register('srv', (r) => {
    served ??= r.accept();
    if (r.state === 'waiting') r.accept();
  });
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  t.equal(f.state, 'allocated');
  t.equal(f.qos.maxSdu, 1500 - FRAME_OVERHEAD, 'max SDU from the MTU');
  t.equal(a.ipcp.stats.arpRequestsSent, 1, 'one resolution request');
  t.equal(b.ipcp.stats.arpRequestsAnswered, 1);
  for (const n of [0, 1, 100, f.qos.maxSdu]) {
    const sdu = Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff);
    t.ok(f.write(sdu));
    t.same(Buffer.from((await next(served!))!), Buffer.from(sdu), `${n} bytes a → b`);
    served!.write(sdu);
    t.same(Buffer.from((await next(f))!), Buffer.from(sdu), `${n} bytes b → a`);
  }
  t.throws(() => f.write(new Uint8Array(f.qos.maxSdu + 1)), { code: 'sdu_too_large' });
  const f2 = await a.ipcp.allocateFlow('cli', 'srv');
  t.equal(a.ipcp.stats.arpRequestsSent, 1, 'the second flow used the cache');
  t.equal(a.ipcp.stats.cacheHits, 1);
  t.equal(a.ipcp.flows().length, 2, 'two flows between the same two MACs');
  const ended = new Promise<[string, string]>((r) => served!.once('deallocated', (reason, cause) => r([reason, cause])));
  f.deallocate('done');
  t.match(await bounded(ended), [/deallocated by the peer: done/, 'peer']);
  t.equal(f2.state, 'allocated', 'the other flow stays');
  const st = a.ipcp.inspect();
  t.match(st, { interface: a.link.ifname, mtu: 1500, cache: [{ name: 'srv', mac: b.ipcp.mac }] });
  t.equal(a.ipcp.counters().resolutions?.resolved, 2);
});

t.test('an application nobody has: the allocation times out, the resolution is dropped', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { allocateTimeoutMs: 200 });
  make(t, hub);
  await t.rejects(a.ipcp.allocateFlow('cli', 'nobody'), { code: 'timeout', message: /answered for nobody/ });
  t.ok(a.ipcp.stats.arpRequestsSent >= 3, `requests resent every retryMs (${a.ipcp.stats.arpRequestsSent})`);
  t.equal(a.ipcp.stats.unresolved, 1);
  t.same(a.ipcp.inspect().resolving, [], 'nothing left resolving');
  const sent = a.ipcp.stats.arpRequestsSent;
  await sleep(150);
  t.equal(a.ipcp.stats.arpRequestsSent, sent, 'no more requests');
});

t.test('rejected by the application, refused QoS, limits on resolutions', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { maxPendingResolutions: 2, allocateTimeoutMs: 300 });
  const b = make(t, hub);
  b.ipcp.register('srv', (r) => r.reject('go away'));
  await t.rejects(a.ipcp.allocateFlow('cli', 'srv'), { code: 'rejected', peerReason: 'go away' });
  await t.rejects(a.ipcp.allocateFlow('cli', 'srv', { reliable: true }), { code: 'invalid_qos' });
  await t.rejects(a.ipcp.allocateFlow('cli', 'srv', { maxSdu: 1494 }), { code: 'invalid_qos' });
  await t.rejects(a.ipcp.allocateFlow('cli', 'x'.repeat(300)), { code: 'invalid_name' });
  const p1 = a.ipcp.allocateFlow('cli', 'n1');
  const p2 = a.ipcp.allocateFlow('cli', 'n2');
  const p3 = a.ipcp.allocateFlow('cli', 'n1'); // joins n1's resolution
  await t.rejects(a.ipcp.allocateFlow('cli', 'n3'), { code: 'limit_exceeded', message: /maxPendingResolutions/ });
  t.equal(a.ipcp.inspect().resolving instanceof Array ? (a.ipcp.inspect().resolving as unknown[]).length : -1, 2);
  await Promise.allSettled([p1, p2, p3]);
  const ac = new AbortController();
  const p4 = a.ipcp.allocateFlow('cli', 'n4', {}, { signal: ac.signal });
  ac.abort();
  await t.rejects(p4, { code: 'aborted' });
  t.same(a.ipcp.inspect().resolving, []);
});

t.test('hostile frames are dropped by reason; the cache does not grow from what peers send', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { resolveCacheSize: 2 });
  const b = make(t, hub);
  b.ipcp.register('srv', acceptAll);
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  const me = a.link.mac;
  const them = b.link.mac;
  const drops = a.ipcp.stats.drops;
  const arp = (op: 'request' | 'reply', senderMac: Uint8Array, senderName: string, targetName: string): Uint8Array => encodeArp({ op, senderMac, senderName, targetMac: me, targetName });
  a.link.deliver(new Uint8Array(10));
  a.link.deliver(buildFrame(me, them, undefined, new Uint8Array([0x77])));
  a.link.deliver(buildFrame(me, them, undefined, arp('reply', them, 'srv', 'cli')).subarray(0, 30));
  const lenBad = buildFrame(me, them, undefined, new Uint8Array([1, 2, 3]));
  lenBad[15] = 200;
  a.link.deliver(lenBad);
  t.equal(drops.malformed, 4, 'short frame, unknown kind, truncated resolution, bad length');
  a.link.deliver(buildFrame(me, them, undefined, arp('request', parseMac('02:00:00:00:00:99'), 'cli', 'x')));
  t.equal(drops.malformed, 5, 'a sender hardware address that is not the source');
  for (let i = 0; i < 50; i++) a.link.deliver(buildFrame(me, them, undefined, arp('reply', them, `spam${i}`, 'cli')));
  t.equal(drops.unsolicited, 50, 'replies nobody asked for');
  t.ok((a.ipcp.inspect().cache as unknown[]).length <= 2, 'the cache stays within resolveCacheSize');
  a.link.deliver(buildFrame(me, them, undefined, new Uint8Array(0), 9999));
  t.equal(drops.unknown_flow, 1, 'data for a flow id never given out');
  a.link.deliver(buildFrame(parseMac('02:00:00:00:00:77'), them, undefined, new Uint8Array(1), 1));
  t.equal(drops.not_for_us, 1, "another host's unicast");
  a.link.deliver(buildFrame(me, them, undefined, new Uint8Array(4)), 1501 + 16, 0);
  t.equal(drops.oversize, 1, 'a frame over the MTU (cut by the socket)');
  a.link.deliver(buildFrame(me, them, undefined, new Uint8Array(4), 1), 30, 3);
  t.equal(drops.not_for_us, 2, 'OTHERHOST: a VLAN tag no VLAN device took');
  const other = new Uint8Array(30);
  writeEthHeader(other, me, them, 0x88b5);
  a.link.deliver(other);
  t.equal(drops.not_for_us, 3, 'another ethertype');
  a.link.deliver(buildFrame(me, them, undefined, encodeMessage({ kind: 'keepalive', dst: 12345, src: 1 })));
  t.equal(drops.unknown_flow, 2);
  t.equal(f.state, 'allocated', 'the flow lives on');
  // Requests for unregistered names are ignored, not answered.
  b.link.deliver(buildFrame(parseMac('ff:ff:ff:ff:ff:ff'), me, undefined, encodeArp({ op: 'request', senderMac: me, senderName: 'cli', targetMac: new Uint8Array(6), targetName: 'unknown' })));
  t.equal(b.ipcp.stats.arpRequestsIgnored, 1);
  void ETHERTYPE_RINA;
});

t.test('allow: frames from other MACs are dropped as unknown_peer', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { allow: ['02:00:00:00:00:63'], allocateTimeoutMs: 200 });
  const b = make(t, hub);
  b.ipcp.register('srv', acceptAll);
  await t.rejects(a.ipcp.allocateFlow('cli', 'srv'), { code: 'timeout' });
  t.ok(a.ipcp.stats.drops.unknown_peer >= 1, 'the reply came from a MAC not allowed');
  t.throws(() => ShimEthIpcp.open({ difName: 'eth.test', interface: 'x', link: hub.link(), allow: ['nope'] }), { name: 'ShimEthError', code: 'invalid_config', message: /allow: "nope" is not a MAC/ });
});

t.test('cache entries expire', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { resolveCacheMs: 50 });
  const b = make(t, hub);
  b.ipcp.register('srv', acceptAll);
  (await a.ipcp.allocateFlow('cli', 'srv')).deallocate();
  await sleep(100);
  (await a.ipcp.allocateFlow('cli', 'srv')).deallocate();
  t.equal(a.ipcp.stats.arpRequestsSent, 2, 'resolved again after expiry');
  t.equal(a.ipcp.stats.cacheHits, 0);
});

t.test('the interface goes down: flows end with port_down, allocations refused, then work again', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub);
  const b = make(t, hub);
  b.ipcp.register('srv', acceptAll);
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  const ended = new Promise<[string, string]>((r) => f.once('deallocated', (reason, cause) => r([reason, cause])));
  a.link.down();
  t.match(await bounded(ended), [/went down/, 'port_down']);
  await t.rejects(a.ipcp.allocateFlow('cli', 'srv'), { code: 'port_down' });
  a.link.up();
  await sleep(1100); // the keepalive tick notices
  const g = await a.ipcp.allocateFlow('cli', 'srv');
  t.equal(g.state, 'allocated', 'a new flow after the link is up');
});

t.test('a silent peer: the flow ends with cause peer within the keepalive bound', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { keepaliveMs: 50, keepaliveTimeoutMs: 200 });
  const b = make(t, hub, { keepaliveMs: 50, keepaliveTimeoutMs: 200 });
  b.ipcp.register('srv', acceptAll);
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  await sleep(300);
  t.equal(f.state, 'allocated', 'keepalives keep an idle flow');
  const t0 = Date.now();
  const ended = new Promise<[string, string]>((r) => f.once('deallocated', (reason, cause) => r([reason, cause])));
  b.ipcp.detach();
  t.match(await bounded(ended), [/keepalive timeout/, 'peer']);
  t.ok(Date.now() - t0 <= 200 + 50 + 100, `within ${Date.now() - t0} ms`);
});

t.test('a full device queue: the frames wait in the send queue, write returns false once it is full, then drain; nothing is lost', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { txBatch: 4 });
  const b = make(t, hub);
  let served: Flow | undefined;
  b.ipcp.register('srv', (r) => void (served = r.accept()));
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  await sleep(20);
  a.link.refuse = 1e9;
  for (let i = 0; i < 4; i++) t.equal(f.write(Uint8Array.of(i)), true, `SDU ${i} taken while the device is full`);
  t.equal(f.write(Uint8Array.of(4)), false, 'every slot waits: refused');
  t.ok(a.ipcp.stats.txFull > 0, 'counted');
  await sleep(10);
  const drained = new Promise<void>((r) => f.once('drain', r));
  a.link.refuse = 0;
  await bounded(drained);
  t.equal(f.write(Uint8Array.of(5)), true);
  const got: number[] = [];
  for (let i = 0; i < 5; i++) got.push((await next(served!))![0]!);
  t.same(got, [0, 1, 2, 3, 5], 'the frames that waited arrive, in order');
});

t.test('frames written in one tick leave in one send call, control frames in order with data', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub);
  const b = make(t, hub);
  let served: Flow | undefined;
  b.ipcp.register('srv', (r) => void (served = r.accept()));
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  await sleep(20);
  const calls = a.ipcp.stats.txCalls;
  a.link.batches.length = 0;
  for (let i = 0; i < 40; i++) t.equal(f.write(Uint8Array.of(i)), true);
  f.deallocate('done'); // its DEALLOC is queued after the 40 SDUs
  await sleep(20);
  t.same(a.link.batches, [41], 'one call for the 40 data frames and the DEALLOC');
  t.equal(a.ipcp.stats.txCalls, calls + 1);
  const got: number[] = [];
  for (;;) {
    const sdu = await next(served!, 500);
    if (!sdu) break;
    got.push(sdu[0]!);
  }
  t.equal(got.length, 40, 'every SDU arrived before the DEALLOC ended the flow');
  t.equal(served!.state, 'deallocated');
});

t.test('txBatch 1: one send call per frame, at once', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { txBatch: 1 });
  const b = make(t, hub);
  b.ipcp.register('srv', acceptAll);
  const f = await a.ipcp.allocateFlow('cli', 'srv');
  await sleep(20);
  a.link.batches.length = 0;
  for (let i = 0; i < 5; i++) f.write(Uint8Array.of(i));
  t.same(a.link.batches, [1, 1, 1, 1, 1], 'sent synchronously, one by one');
  t.throws(() => ShimEthIpcp.open({ difName: 'eth.test', interface: 'x', link: hub.link(), txBatch: 0 }), { code: 'invalid_config', message: /txBatch must be an integer 1\.\.256/ });
});

t.test('bad options', async (t) => {
  const hub = new FakeHub();
  for (const [opts, re] of [
    [{ mtu: 9000 }, /mtu must be an integer 64\.\.1500/],
    [{ vlan: 4095 }, /vlan must be/],
    [{ keepaliveMs: 100, keepaliveTimeoutMs: 150 }, /keepaliveTimeoutMs/],
  ] as const) {
    t.throws(() => ShimEthIpcp.open({ difName: 'eth.test', interface: 'x', link: hub.link(), ...opts }), { code: 'invalid_config', message: re });
  }
  // Refused after the link opened (the checks that need its MTU): the link is closed again, not leaked.
  for (const [opts, re] of [
    [{ mtu: 9000 }, /mtu must be/],
    [{ rxQueueBytes: 100 }, /rxQueueBytes must be an integer 2986\.\./],
    [{ rxQueueTotalBytes: 100 }, /rxQueueTotalBytes must be/],
    [{ rxQueueLimit: 0 }, /rxQueueLimit must be/],
  ] as const) {
    const link = hub.link();
    t.throws(() => ShimEthIpcp.open({ difName: 'eth.test', interface: 'x', link, ...opts }), { code: 'invalid_config', message: re });
    t.ok(link.isClosed, `the link is closed after ${Object.keys(opts)[0]} was refused`);
  }
  // No such interface here (the packet socket needs CAP_NET_RAW: without it the open fails sooner, alike typed).
  try {
    ShimEthIpcp.open({ difName: 'eth.test', interface: 'nosuchif9' }).close();
    t.fail('opened a missing interface');
  } catch (e) {
    t.ok(e instanceof ShimEthError && e.code === 'no_interface', `${(e as Error).message}`);
    t.match((e as Error).message, /nosuchif9.*ENODEV.*no such interface in this network namespace/);
  }
});

t.test('random frames from a hostile peer: no fault, state within its bounds', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub, { resolveCacheSize: 4, maxPendingRequests: 4, maxFlows: 16 });
  const me = a.link.mac;
  const peer = parseMac('02:00:00:00:00:42');
  a.ipcp.register('srv', () => {}); // requests wait, unanswered: they must stay bounded
  const name = fc.constantFrom('srv', 'cli', 'x', '', 'a/b/c/d/e', 'é', 'n\u0000ul', 'z'.repeat(300));
  const message = fc.oneof(
    fc.uint8Array({ maxLength: 80 }),
    fc.record({ op: fc.constantFrom('request' as const, 'reply' as const), s: name, d: name, mac: fc.boolean() }).map(({ op, s, d, mac }) => {
      try {
        return encodeArp({ op, senderMac: mac ? peer : parseMac('02:00:00:00:00:43'), senderName: s, targetMac: me, targetName: d });
      } catch {
        return new Uint8Array([0]);
      }
    }),
    fc.record({ src: fc.integer({ min: 1, max: 1000 }), d: name, dif: fc.constantFrom('eth.test', 'other') }).map(({ src, d, dif }) => {
      try {
        return encodeMessage({ kind: 'alloc_req', src, reliable: false, inOrder: false, maxSdu: 0, difName: dif, srcApp: 'cli', dstApp: d });
      } catch {
        return new Uint8Array([0x10]);
      }
    }),
    fc.record({ kind: fc.constantFrom('keepalive' as const, 'dealloc' as const), dst: fc.integer({ min: 0, max: 50 }), src: fc.integer({ min: 0, max: 50 }) }).map(({ kind, dst, src }) => {
      try {
        return encodeMessage(kind === 'keepalive' ? { kind, dst: dst || 1, src: src || 1 } : { kind, dst, src: src || 1, reason: 'x' });
      } catch {
        return new Uint8Array([0x12]);
      }
    }),
  );
  const frame = fc.record({ msg: message, mangle: fc.option(fc.tuple(fc.nat(100), fc.nat(255))), cut: fc.option(fc.nat(120)), type: fc.constantFrom(0, 1, 3) }).map(({ msg, mangle, cut, type }) => {
    const f = buildFrame(me, peer, undefined, msg.byteLength > 0 ? msg : new Uint8Array([1]));
    if (mangle) f[mangle[0] % f.byteLength] = mangle[1];
    return { f: cut === null ? f : f.subarray(0, Math.min(cut, f.byteLength)), type };
  });
  fc.assert(
    fc.property(fc.array(frame, { maxLength: 30 }), (frames) => {
      for (const { f, type } of frames) a.link.deliver(f, f.byteLength, type);
      const st = a.ipcp.inspect();
      return a.ipcp.stats.faults === 0 && (st.cache as unknown[]).length <= 4 && (st.flows as unknown[]).length <= 16;
    }),
    { numRuns: 300 },
  );
  t.equal(a.ipcp.stats.faults, 0, 'no frame made the IPC process throw');
  t.ok(a.ipcp.stats.drops.malformed > 0, 'malformed frames were counted');
});

t.test('restart: a kept flow runs on with a new IPC process on the same interface; another ends at the peer at once', async (t) => {
  const hub = new FakeHub();
  const a = make(t, hub);
  const b = make(t, hub);
  const served: Flow[] = [];
  a.ipcp.register('srv', (r) => void served.push(r.accept()));
  const keep = await b.ipcp.allocateFlow('cli', 'srv');
  const lose = await b.ipcp.allocateFlow('cli2', 'srv');
  const snap = JSON.parse(JSON.stringify(a.ipcp.snapshot()));
  const keptPort = served[0]!.portId;
  a.ipcp.detach();
  a.link.isClosed = true;
  const loseEnded = new Promise<string>((r) => lose.once('deallocated', (reason: string) => r(reason)));
  // The same interface (same MAC) opened again by the next process.
  const link2 = new FakeLink(hub, a.link.mac, 1500, undefined, a.link.ifname);
  hub.links.push(link2);
  const a2 = ShimEthIpcp.open({ difName: 'eth.test', interface: link2.ifname, link: link2, retryMs: 50, resume: snap, keepFlows: (p) => p === keptPort });
  t.teardown(() => a2.close());
  t.same(a2.restored, { flowsKept: 1, flowsEnded: 1, askedGivenUp: 0, requestsRefused: 0 });
  t.match(await bounded(loseEnded, 2000), /the server at the other end restarted/);
  const f = a2.reclaimFlow(keptPort)!;
  keep.write(Uint8Array.of(9));
  t.same([...(await next(f))!], [9], 'B → A on the kept flow');
  f.write(Uint8Array.of(8));
  t.same([...(await next(keep))!], [8], 'A → B');
  // Another interface's snapshot (its MAC) is refused.
  t.throws(() => ShimEthIpcp.open({ difName: 'eth.test', interface: 'x', link: hub.link(), resume: snap }), { code: 'state_invalid', message: /this one is at/ });
});
