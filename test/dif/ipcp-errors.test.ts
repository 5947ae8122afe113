/**
 * The shim IPC process when things go wrong: unknown application, no free channel, the peer
 * rejecting, allocation timeouts (including a late accept and a peer that never answers), the
 * port going down, malformed or out-of-place control messages from a raw peer, and API misuse.
 */
import t, { type Test } from 'tap';
import { DifError } from '../../src/dif/api.js';
import { NamingError } from '../../src/dif/naming.js';
import { decodeControl, encodeControl, type ControlMessage, type EncodeOptions } from '../../src/dif/shim-hv/control.js';
import { ShimHvIpcp, ShimHvProtocolError, type ShimHvFlowRequest } from '../../src/dif/shim-hv/ipcp.js';
import { acceptAll, readWithin, settle, setup, sleep, until, within } from './helpers.js';
import { createPortPair, type PortPair } from './port-pair.js';

t.test('unknown application: rejected with the reason, channel freed', async (t) => {
  const { pair, host, guest } = setup(t);
  acceptAll(host, 'server');
  const err = await guest.allocateFlow('client', 'nobody').then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof DifError, 'a DifError');
  t.match(err, { code: 'rejected', peerReason: 'unknown application' });
  t.match((err as Error).message, /nobody.*unknown application/);
  t.same(pair.guest.boundChannels, [0], 'only the control channel stays bound');
  t.equal(guest.stats.allocRejectedByPeer, 1);
  t.equal(host.stats.incomingRejected, 1);
  // A different instance of a registered process is a different application.
  await t.rejects(guest.allocateFlow('client', 'server/2'), { code: 'rejected', peerReason: 'unknown application' });
});

t.test('no free channel', async (t) => {
  const { guest, host } = setup(t, { guest: { maxChannel: 6 }, host: { maxChannel: 6 } });
  acceptAll(host, 'server');
  const flows = await Promise.all([guest.allocateFlow('c', 'server'), guest.allocateFlow('c', 'server'), guest.allocateFlow('c', 'server')]);
  t.same(
    flows.map((f) => f.channel).sort(),
    [1, 3, 5],
  );
  await t.rejects(guest.allocateFlow('c', 'server'), { name: 'DifError', code: 'no_free_channel', message: /3 guest channels of 1\.\.6/ });
  // Pending allocations hold their channel too.
  const { guest: g2, host: h2 } = setup(t, { guest: { maxChannel: 2 } });
  h2.register('slow', () => {}); // never decides
  const pending = g2.allocateFlow('c', 'slow', {}, { timeoutMs: 50 });
  await t.rejects(g2.allocateFlow('c', 'slow'), { code: 'no_free_channel' }, 'the pending request holds the only channel');
  await t.rejects(pending, { code: 'timeout' });
});

t.test('the peer application rejects, or its handler throws', async (t) => {
  const { host, guest } = setup(t);
  let seen: ShimHvFlowRequest | null = null;
  host.register('busy', (req) => {
    seen = req;
    req.reject('too busy');
  });
  host.register('buggy', () => {
    throw new Error('boom');
  });
  await t.rejects(guest.allocateFlow('client', 'busy'), { name: 'DifError', code: 'rejected', peerReason: 'too busy' });
  t.equal(seen!.state, 'rejected');
  t.throws(() => seen!.accept(), { name: 'DifError', code: 'request_settled' }, 'accept after reject');
  await t.rejects(guest.allocateFlow('client', 'buggy'), { code: 'rejected', peerReason: 'application error: boom' });
  t.same(host.flows(), []);
});

t.test('allocation timeout: the responder learns the requester gave up', async (t) => {
  const { pair, host, guest } = setup(t);
  let req: ShimHvFlowRequest | null = null;
  const cancelled = new Promise<string>((resolve) =>
    host.register('server', (r) => {
      req = r;
      r.once('cancelled', resolve);
    }),
  );
  const t0 = Date.now();
  await t.rejects(guest.allocateFlow('client', 'server', {}, { timeoutMs: 40 }), { name: 'DifError', code: 'timeout' });
  t.ok(Date.now() - t0 >= 35, 'waited for the timeout');
  t.equal(await within(cancelled, "the request's 'cancelled' after the requester timed out"), 'allocation timed out');
  t.equal(req!.state, 'cancelled');
  t.throws(() => req!.accept(), { code: 'request_settled', message: /cancelled \(allocation timed out\)/ });
  await until(() => pair.guest.boundChannels.length === 1, 'channel freed after the confirm');
  t.equal(guest.stats.allocTimedOut, 1);
  t.same(host.flows(), []);
});

t.test('allocation timeout racing a late accept', async (t) => {
  const { pair, host, guest } = setup(t);
  let req: ShimHvFlowRequest | null = null;
  host.register('server', (r) => {
    req = r;
  });
  await guest.allocateFlow('client', 'server', {}, { timeoutMs: 30 }).catch((e: unknown) => {
    t.match(e, { code: 'timeout' });
    // The application accepts just after the requester gave up (its Deallocate is in flight).
    const flow = req!.accept();
    t.equal(flow.state, 'allocated');
  });
  const hostFlow = host.flows()[0];
  t.ok(hostFlow, 'the host has the late flow for a moment');
  await until(() => hostFlow!.state === 'deallocated', 'the requester deallocates it');
  t.equal(hostFlow!.deallocationReason, 'allocation timed out');
  await until(() => pair.guest.boundChannels.length === 1 && pair.host.boundChannels.length === 1, 'channels freed');
  t.equal(guest.stats.unknownFlow, 1, 'the late ACCEPT was recognized as stale');
  t.same(guest.flows(), []);
  t.same(host.flows(), []);
});

t.test('a peer that never answers: the channel is freed after deallocateTimeoutMs', async (t) => {
  const { pair, host, guest } = setup(t, { guest: { deallocateTimeoutMs: 40 } });
  const server = acceptAll(host, 'server');
  pair.guest.pause(); // nothing the guest sends arrives (for now)
  await t.rejects(guest.allocateFlow('client', 'server', {}, { timeoutMs: 20 }), { code: 'timeout' });
  t.same(pair.guest.boundChannels.length, 2, 'closing: still bound');
  await sleep(60);
  t.same(pair.guest.boundChannels, [0], 'freed without a confirm');
  // The stale request and Deallocate finally arrive: the host accepts, then deallocates; the
  // guest ignores the stale ACCEPT and confirm. Both ends end up free.
  pair.guest.resume();
  await until(() => server.flows.length === 1 && server.flows[0]!.state === 'deallocated', 'stale flow undone');
  await settle();
  t.same(pair.host.boundChannels, [0]);
  t.same(pair.guest.boundChannels, [0]);
  t.equal(guest.stats.unknownFlow, 2, 'the stale ACCEPT and the Deallocate for the freed channel');
  // And the channel works again.
  const f = await guest.allocateFlow('client', 'server');
  t.equal(f.state, 'allocated');
});

t.test('abort signal', async (t) => {
  const { host, guest } = setup(t);
  host.register('server', () => {});
  const ac = new AbortController();
  const p = guest.allocateFlow('client', 'server', {}, { signal: ac.signal });
  ac.abort();
  await t.rejects(p, { name: 'DifError', code: 'aborted' });
  await t.rejects(guest.allocateFlow('client', 'server', {}, { signal: ac.signal }), { code: 'aborted' }, 'already aborted');
});

t.test('port down: flows end, pending allocations fail, requests are cancelled', async (t) => {
  const { pair, host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  let waitingReq: ShimHvFlowRequest | null = null;
  guest.register('undecided', (r) => {
    waitingReq = r;
  });
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  host.allocateFlow('client', 'undecided').catch(() => {});
  await until(() => waitingReq !== null, 'request reached the guest');
  host.register('slow', () => {});
  const pending = guest.allocateFlow('client', 'slow', {}, { timeoutMs: 10_000 });
  await settle();
  let reading = g.read();
  const downs: string[] = [];
  guest.on('down', (r) => downs.push(r));
  const gEnd = new Promise<[string, string]>((resolve) => g.once('deallocated', (r, c) => resolve([r, c])));

  pair.down('guest driver reset');

  t.same(await within(gEnd, "the guest flow's 'deallocated' after the port went down"), ['port down: guest driver reset', 'port_down']);
  t.equal(h.state, 'deallocated');
  t.equal(h.deallocationReason, 'port down: guest driver reset');
  t.equal(await within(reading, 'the waiting read ends with the port'), null, 'a waiting read ends');
  await t.rejects(pending, { name: 'DifError', code: 'port_down' });
  t.equal(waitingReq!.state, 'cancelled');
  t.same(downs, ['guest driver reset']);
  t.throws(() => g.write(Uint8Array.of(1)), { code: 'flow_deallocated' });
  t.same(pair.guest.boundChannels, [0], 'data channels unbound, control kept');
  t.same(pair.host.boundChannels, [0]);
  await t.rejects(guest.allocateFlow('client', 'server'), { code: 'port_down' }, 'no allocation while down');
  t.throws(() => waitingReq!.accept(), { code: 'request_settled' });

  // Registrations survive; flows work again once the link is back.
  pair.up();
  const g2 = await guest.allocateFlow('client', 'server');
  const h2 = await server.next();
  g2.write(Uint8Array.of(7));
  reading = h2.read();
  t.same(await within(reading, 'the SDU on the flow after the link came back'), Uint8Array.of(7));
  t.equal(g.stats.rxAfterDeallocate, 0);
});

t.test('a port that starts down', async (t) => {
  const pair = createPortPair({ up: false });
  const ipcp = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
  t.teardown(() => ipcp.close());
  t.equal(ipcp.isUp, false);
  await t.rejects(ipcp.allocateFlow('a', 'b'), { code: 'port_down' });
  const up = new Promise<void>((resolve) => ipcp.once('up', resolve));
  pair.up();
  await within(up, "'up' when the port comes up");
  t.equal(ipcp.isUp, true);
});

// ---------------------------------------------------------------------------------------------
// A raw peer: the host IPC process against hand-made control messages.

interface RawPeer {
  pair: PortPair;
  host: ShimHvIpcp;
  replies: ControlMessage[];
  errors: ShimHvProtocolError[];
  send(msg: ControlMessage, opts?: EncodeOptions): void;
  sendBytes(bytes: Uint8Array): void;
  sendData(channel: number, sdu: Uint8Array): void;
}

function rawPeer(t: Test, maxChannel = 1023): RawPeer {
  const pair = createPortPair();
  const host = new ShimHvIpcp({ port: pair.host, role: 'host', maxChannel });
  t.teardown(() => host.close());
  const replies: ControlMessage[] = [];
  const errors: ShimHvProtocolError[] = [];
  host.on('protocolError', (e) => errors.push(e));
  pair.guest.bind(0, (sdu) => replies.push(decodeControl(sdu)));
  return {
    pair,
    host,
    replies,
    errors,
    send: (msg, opts) => pair.guest.send(0, encodeControl(msg, opts)),
    sendBytes: (bytes) => pair.guest.send(0, bytes),
    sendData: (channel, sdu) => pair.guest.send(channel, sdu),
  };
}

const request = (channel: number, over: Partial<Extract<ControlMessage, { kind: 'allocate_request' }>> = {}): ControlMessage => ({
  kind: 'allocate_request',
  channel,
  src: { processName: 'client' },
  dst: { processName: 'server' },
  qos: { reliable: false, inOrder: false, maxSdu: 0 },
  difName: '',
  ...over,
});

t.test('malformed control messages are counted, answered when possible, never fatal', async (t) => {
  const p = rawPeer(t);
  const server = acceptAll(p.host, 'server');

  p.sendBytes(Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 0xff]));
  await settle();
  t.equal(p.host.stats.malformed.undecodable, 1, 'garbage bytes: counted');
  t.same(p.replies, [], 'garbage bytes: no answer');
  t.match(p.errors[0], { name: 'ShimHvProtocolError', reason: 'undecodable' });

  p.send(request(3), { version: 2 });
  await settle();
  t.equal(p.host.stats.malformed.unsupported_version, 1);
  t.match(p.replies, [{ kind: 'allocate_response', channel: 3, result: 'reject', reason: /version 2.*version 1/ }], 'wrong version: a REJECT naming the versions');

  p.replies.length = 0;
  p.send(request(0), { unchecked: true });
  p.send({ kind: 'deallocate', channel: 0, reason: 'x', confirm: false }, { unchecked: true });
  await settle();
  t.equal(p.host.stats.malformed.bad_channel, 2, 'channel 0: counted');
  t.same(p.replies, [], 'channel 0: no answer');

  p.send(request(5, { src: { processName: '' } }), { unchecked: true });
  await settle();
  t.equal(p.host.stats.malformed.bad_name, 1);
  t.match(p.replies, [{ kind: 'allocate_response', channel: 5, result: 'reject', reason: /malformed allocate request/ }]);

  t.same(server.flows, [], 'no flow came out of any of it');
  // Still works.
  p.replies.length = 0;
  p.send(request(7));
  await settle();
  t.match(p.replies, [{ kind: 'allocate_response', channel: 7, result: 'accept' }]);
  t.equal(server.flows.length, 1);
});

t.test('out-of-place control messages (unknown flows, wrong channels)', async (t) => {
  const p = rawPeer(t, 15);
  acceptAll(p.host, 'server');

  p.send({ kind: 'allocate_response', channel: 3, result: 'accept', reason: '' });
  await settle();
  t.equal(p.host.stats.unknownFlow, 1, 'a response to nothing');
  t.match(p.errors.at(-1), { reason: 'unknown_flow', channel: 3 });
  t.same(p.host.flows(), []);

  p.send({ kind: 'deallocate', channel: 9, reason: 'x', confirm: false });
  await settle();
  t.equal(p.host.stats.unknownFlow, 2, 'a deallocate for a free channel');
  t.match(p.replies, [{ kind: 'deallocate', channel: 9, confirm: true }], 'answered with a confirm (harmless)');
  p.replies.length = 0;
  p.send({ kind: 'deallocate', channel: 9, reason: '', confirm: true });
  await settle();
  t.same(p.replies, [], 'a stray confirm is not answered');

  p.send(request(4));
  await settle();
  t.same(p.replies, [], "a request on the host's own (even) channel is dropped, not answered");
  t.equal(p.host.stats.malformed.bad_channel, 1);

  p.send(request(17));
  await settle();
  t.match(p.replies, [{ kind: 'allocate_response', channel: 17, result: 'reject', reason: /out of range 1\.\.15/ }]);

  p.replies.length = 0;
  p.send(request(1, { difName: 'hv.other' }));
  await settle();
  t.match(p.replies, [{ channel: 1, result: 'reject', reason: /wrong DIF/ }]);

  p.replies.length = 0;
  p.send(request(1, { qos: { reliable: true, inOrder: true, maxSdu: 1 << 20 } }));
  await settle();
  t.match(p.replies, [{ channel: 1, result: 'reject', reason: /max SDU 1048576 exceeds/ }], 'QoS the DIF cannot give');

  p.replies.length = 0;
  p.send(request(1, { difName: 'hv.vmpi-7' }));
  await settle();
  t.match(p.replies, [{ channel: 1, result: 'accept' }], 'the right DIF name is fine');
  p.replies.length = 0;
  p.send(request(1));
  await settle();
  t.match(p.replies, [{ channel: 1, result: 'reject', reason: /in use/ }], 'a second request on a busy channel');
  t.equal(p.host.flows().length, 1, 'the existing flow is untouched');

  // Data on a channel with no flow: dropped by the port (unbound) — no crash.
  p.sendData(11, Uint8Array.of(1, 2, 3));
  await settle();
  t.equal(p.pair.host.stats.unbound, 1);
  t.equal(p.host.flows()[0]!.stats.rxSdus, 0);
});

t.test('SDUs on a channel whose allocation is still pending wait in the flow; it fails, they go with it', async (t) => {
  const pair = createPortPair();
  const guest = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
  t.teardown(() => guest.close());
  pair.host.bind(0, () => {}); // a host that never answers
  const p = guest.allocateFlow('c', 's', {}, { timeoutMs: 30 });
  pair.host.send(1, Uint8Array.of(1));
  await settle();
  t.equal(guest.stats.unexpectedSdus, 0, 'not unexpected: the flow may still be accepted');
  await t.rejects(p, { code: 'timeout' });
  pair.host.send(1, Uint8Array.of(2));
  await settle();
  t.equal(guest.stats.staleSdus, 1, 'after the timeout the channel is closing: stale');
  t.equal(guest.stats.unexpectedSdus, 0);
});

t.test('a deallocate before any answer ends the pending allocation', async (t) => {
  const pair = createPortPair();
  const guest = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
  t.teardown(() => guest.close());
  const seen: ControlMessage[] = [];
  pair.host.bind(0, (sdu) => {
    const m = decodeControl(sdu);
    seen.push(m);
    if (m.kind === 'allocate_request') pair.host.send(0, encodeControl({ kind: 'deallocate', channel: m.channel, reason: 'nope', confirm: false }));
  });
  await t.rejects(guest.allocateFlow('c', 's'), { code: 'rejected', peerReason: 'nope' });
  await settle();
  t.match(seen, [{ kind: 'allocate_request' }, { kind: 'deallocate', confirm: true }]);
});

t.test('a port that cannot bind a data channel', async (t) => {
  // maxChannel 2: the host has a single channel, so one leaked by a failed attempt would show.
  const { pair, host, guest } = setup(t, { host: { maxChannel: 2 } });
  const realBind = pair.host.bind.bind(pair.host);
  pair.host.bind = (channel, handler) => {
    if (channel !== 0) throw new Error('EMFILE');
    realBind(channel, handler);
  };
  let acceptError: unknown = null;
  host.register('server', (req) => {
    try {
      req.accept();
    } catch (e) {
      acceptError = e;
    }
  });
  await t.rejects(guest.allocateFlow('client', 'server'), { code: 'rejected', peerReason: 'the responder cannot open the channel' });
  t.match(acceptError, { name: 'DifError', code: 'port_down', message: /EMFILE/ });
  await t.rejects(host.allocateFlow('client', 'x'), { code: 'port_down', message: /cannot bind channel 2/ }, 'requester side');
  t.same(host.flows(), []);
  pair.host.bind = realBind;
  acceptAll(guest, 'x');
  const f = await host.allocateFlow('client', 'x');
  t.equal(f.channel, 2, 'the channel was not kept by the failed attempt');
});

t.test('a port whose send() throws (closed under us)', async (t) => {
  const { pair, host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  await server.next();
  pair.guest.send = () => {
    throw new Error('port closed');
  };
  t.throws(() => g.write(Uint8Array.of(1)), { name: 'DifError', code: 'port_down', message: /port closed/ });
  t.doesNotThrow(() => g.deallocate(), 'control messages the port refuses are dropped, counted');
  t.equal(guest.stats.controlDropped, 1);
});

t.test('unregister cancels undecided requests', async (t) => {
  const { host, guest } = setup(t);
  let req: ShimHvFlowRequest | null = null;
  const reg = host.register('server', (r) => {
    req = r;
  });
  const p = guest.allocateFlow('client', 'server');
  await until(() => req !== null, 'request');
  reg.unregister();
  await t.rejects(p, { code: 'rejected', peerReason: 'application unregistered' });
  t.equal(req!.state, 'cancelled');
  t.notOk(host.isRegistered('server'));
  reg.unregister(); // no-op
  await t.rejects(guest.allocateFlow('client', 'server'), { code: 'rejected', peerReason: 'unknown application' });
});

t.test('API misuse', async (t) => {
  const { pair, host, guest } = setup(t, { pair: { maxSdu: 4096 } });
  const server = acceptAll(host, 'server');

  t.throws(() => host.register('server', () => {}), { name: 'DifError', code: 'already_registered' }, 'register twice');
  t.throws(() => host.register({ processName: 'server' }, () => {}), { code: 'already_registered' }, 'same name as an object');
  t.throws(() => host.register('', () => {}), { code: 'invalid_name' });
  t.throws(() => host.register('a/b/c/d/e', () => {}), { code: 'invalid_name' });
  t.throws(() => host.register('fine', undefined as unknown as () => void), { code: 'invalid_argument' });
  t.throws(() => host.unregister('never'), { code: 'not_registered' });

  const bad = await guest.allocateFlow('client', 'bad\u0000name').catch((e: unknown) => e);
  t.match(bad, { name: 'DifError', code: 'invalid_name' });
  t.ok((bad as Error).cause instanceof NamingError, 'the NamingError is the cause');
  await t.rejects(guest.allocateFlow(' client', 'server'), { code: 'invalid_name' });
  await t.rejects(guest.allocateFlow('client', 'server', { maxSdu: 4097 }), { code: 'invalid_qos' }, 'max SDU above the port');
  await t.rejects(guest.allocateFlow('client', 'server', { maxSdu: -1 }), { code: 'invalid_qos' });
  await t.rejects(guest.allocateFlow('client', 'server', { reliable: 'yes' as unknown as boolean }), { code: 'invalid_qos' });
  await t.rejects(guest.allocateFlow('client', 'server', {}, { timeoutMs: 0 }), { code: 'invalid_argument' });
  t.equal(pair.guest.boundChannels.length, 1, 'none of that took a channel');

  const f = await guest.allocateFlow('client', 'server', { maxSdu: 100 });
  const h = await server.next();
  t.throws(() => f.write(new Uint8Array(101)), { code: 'sdu_too_large' });
  t.throws(() => h.write(new Uint8Array(101)), { code: 'sdu_too_large' }, 'the limit holds at both ends');
  t.ok(f.write(new Uint8Array(100)));
  t.throws(() => f.write('text' as unknown as Uint8Array), { code: 'invalid_argument' });
  t.throws(() => server.requests[0]!.accept(), { code: 'request_settled' }, 'accept twice');
  t.throws(() => server.requests[0]!.reject('no'), { code: 'request_settled' }, 'reject after accept');
  f.deallocate();
  t.throws(() => f.write(Uint8Array.of(1)), { name: 'DifError', code: 'flow_deallocated' }, 'write after deallocate');
  await t.rejects(f.send(Uint8Array.of(1)), { code: 'flow_deallocated' });

  t.throws(() => new ShimHvIpcp({ port: pair.guest, role: 'peer' as 'host' }), { code: 'invalid_argument' });
  t.throws(() => new ShimHvIpcp({ port: pair.guest, role: 'guest', maxChannel: 1 }), { code: 'invalid_argument' });
  t.throws(() => new ShimHvIpcp({ port: pair.guest, role: 'guest', difName: '' }), { code: 'invalid_argument' });

  guest.close();
  await t.rejects(guest.allocateFlow('client', 'server'), { code: 'closed' });
  t.throws(() => guest.register('x', () => {}), { code: 'closed' });
});

t.test('close() deallocates flows at the peer', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  guest.close('shutting down');
  t.equal(g.state, 'deallocated');
  await until(() => h.state === 'deallocated', 'peer learns');
  t.equal(h.deallocationReason, 'shutting down');
});

t.test('rxQueueLimit bounds what an unread flow keeps', async (t) => {
  const { host, guest } = setup(t, { host: { rxQueueLimit: 3 } });
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  for (let i = 0; i < 5; i++) g.write(Uint8Array.of(i));
  await settle();
  t.equal(h.stats.rxQueueDrops, 2);
  t.same([await readWithin(h, 'SDU 0'), await readWithin(h, 'SDU 1'), await readWithin(h, 'SDU 2')], [Uint8Array.of(0), Uint8Array.of(1), Uint8Array.of(2)]);
});

t.test('an exception in a data listener does not break the link', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  const seen: number[] = [];
  h.on('data', (sdu) => {
    seen.push(sdu[0]!);
    if (sdu[0] === 0) throw new Error('listener bug');
  });
  const uncaught = new Promise<Error>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (e) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(e);
    });
  });
  g.write(Uint8Array.of(0));
  g.write(Uint8Array.of(1));
  t.match(await within(uncaught, "the data listener's exception surfaced"), { message: 'listener bug' }, 'surfaced as an uncaught exception');
  await until(() => seen.length === 2, 'second SDU');
  t.same(seen, [0, 1]);
});
