/**
 * The shim IPC process for hypervisors restored from a snapshot (src/dif/shim-hv/snapshot.ts,
 * ipcp.ts), host and guest over an in-memory VMPI port pair: the host IPC process dies without
 * a word (detach(), as a SIGKILL does), its snapshot goes through JSON, and a new host IPC
 * process on the same port takes over while the guest lives on. Its flows end with the restart
 * reason, its pending requests are answered, host applications reach guest applications again,
 * and bad snapshots are refused with typed errors; plus the state change callback.
 */
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { DifError } from '../../src/dif/api.js';
import {
  RESTART_FLOW_LOST,
  RESTART_REQUEST_LOST,
  SHIM_HV_SNAPSHOT_VERSION,
  ShimHvIpcp,
  ShimHvStateError,
  type ShimHvFlow as Flow,
  type ShimHvFlowRequest as FlowRequest,
  type ShimHvSnapshot,
} from '../../src/dif/shim-hv/ipcp.js';
import { acceptAll, readWithin, settle, setup, until, within } from './helpers.js';
import { createPortPair } from './port-pair.js';

const LOST = RESTART_FLOW_LOST('host');

/** The snapshot as another process reads it back from its file. */
function throughJson(s: ShimHvSnapshot): unknown {
  return JSON.parse(JSON.stringify(s)) as unknown;
}

/** Resolves with the flow's deallocation reason (bounded). */
function ended(flow: Flow, what: string, ms = 2000): Promise<string> {
  if (flow.state === 'deallocated') return Promise.resolve(flow.deallocationReason ?? '');
  return within(new Promise<string>((resolve) => flow.once('deallocated', (reason) => resolve(reason))), what, ms);
}

async function roundTrip(t: Test, a: Flow, b: Flow, label: string): Promise<void> {
  a.write(Buffer.from(`${label} a→b`));
  t.equal(Buffer.from((await readWithin(b, `${label}: a → b`))!).toString(), `${label} a→b`, `${label}: an SDU one way`);
  b.write(Buffer.from(`${label} b→a`));
  t.equal(Buffer.from((await readWithin(a, `${label}: b → a`))!).toString(), `${label} b→a`, `${label}: an SDU the other way`);
}

/** Register `app` and keep its requests undecided (`cancelled` gets why each was cancelled). */
function holdAll(ipcp: ShimHvIpcp, app: string, cancelled: string[] = []): FlowRequest[] {
  const held: FlowRequest[] = [];
  ipcp.register(app, (req) => {
    held.push(req);
    req.on('cancelled', (reason) => cancelled.push(reason));
  });
  return held;
}

t.test('restart: the guest flows end with the reason, host applications reach guest applications again', async (t) => {
  const { pair, host, guest } = setup(t);
  const gApp = acceptAll(guest, 'G');
  const hApp = acceptAll(host, 'H');
  const g1 = await guest.allocateFlow('g-client', 'H', { reliable: true });
  const h1 = await hApp.next();
  await roundTrip(t, g1, h1, 'guest-requested flow');
  const h2 = await host.allocateFlow('H2', 'G');
  const g2 = await gApp.next();
  await roundTrip(t, h2, g2, 'host-requested flow');

  const snap = host.snapshot();
  t.same(throughJson(snap), snap, 'the snapshot is plain JSON data');
  t.notOk(/"fd"|function/.test(JSON.stringify(snap)), 'no fd and no function in it');
  t.equal(snap.version, SHIM_HV_SNAPSHOT_VERSION);
  t.same(snap.registrations, ['H'], 'the host application registered');
  t.same(
    snap.channels.map((c) => [c.channel, c.state, 'requester' in c ? c.requester : null]),
    [
      [h2.channel, 'allocated', 'local'],
      [g1.channel, 'allocated', 'peer'],
    ].sort((a, b) => (a[0] as number) - (b[0] as number)),
    'both flows, with who asked',
  );

  // The worker dies: nothing more leaves it, its bindings are gone. The guest's SDUs wait in the ring.
  const sentBefore = pair.host.stats.sent;
  host.detach('killed');
  t.equal(pair.host.stats.sent, sentBefore, 'a dead IPC process sends nothing');
  t.same(pair.host.boundChannels, [], 'and holds no binding');
  pair.guest.pause();
  t.ok(g1.write(Buffer.from('written while the host was down')), 'the guest application writes on');
  const late = guest.allocateFlow('g-late', 'H');

  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, throughJson(snap));
  t.teardown(() => restored.close());
  t.same(restored.restored, { flowsEnded: 2, flowsKept: 0, allocationsEnded: 0, requestsRefused: 0, closing: 0, registrations: 1 }, 'what the restore did');
  t.same(restored.inspect().restored, restored.restored, 'inspect() shows it too');
  t.same(pair.host.boundChannels, [0, h2.channel, g1.channel].sort((a, b) => a - b), 'the control channel and the resumed channels are bound on the same port');
  const hApp2 = acceptAll(restored, 'H'); // the host application is back before the rings run again
  pair.guest.resume();

  t.equal(await ended(g1, 'the guest-requested flow ends'), LOST, 'the guest-requested flow ends with the restart reason');
  t.equal(await ended(g2, 'the host-requested flow ends'), LOST, 'the host-requested flow ends with the restart reason');
  t.equal(await readWithin(g1, 'the end of the guest flow'), null, 'a reader of the ended flow sees its end, no hang');

  const gLate = await within(late, 'the allocation made while the host was down is answered');
  const hLate = await hApp2.next();
  await roundTrip(t, gLate, hLate, 'flow asked while the host was down');

  // A host application reaches the guest application without the guest registering again.
  const h3 = await within(restored.allocateFlow('H3', 'G'), 'a new flow to the guest application');
  const g3 = await gApp.next();
  t.notOk([h2.channel, g1.channel].includes(h3.channel), 'on a channel that is not being closed');
  t.ok(h3.portId > h2.portId, 'port-ids go on from where they were');
  await roundTrip(t, h3, g3, 'new host-requested flow');

  await until(() => restored.inspect().channels instanceof Array && (restored.inspect().channels as unknown[]).length === 2, 'the resumed channels freed on the guest\'s confirmations');
  t.equal(restored.stats.staleSdus, 1, 'the SDU written while the host was down is counted as stale, not lost silently');
  t.equal(restored.stats.unexpectedSdus, 0);
  t.equal(guest.stats.unknownFlow, 0, 'the guest saw nothing out of step');
});

t.test('restart: requests pending in either direction are answered with the reason', async (t) => {
  const { pair, host, guest } = setup(t);
  const gCancelled: string[] = [];
  const gHeld = holdAll(guest, 'G-slow', gCancelled);
  const hHeld = holdAll(host, 'H-slow');
  const hostAsked = host.allocateFlow('H', 'G-slow');
  hostAsked.catch(() => {});
  const guestAsked = guest.allocateFlow('g', 'H-slow');
  guestAsked.catch(() => {});
  await until(() => gHeld.length === 1 && hHeld.length === 1, 'both requests reached the application');
  const snap = host.snapshot();
  t.same(
    snap.channels.map((c) => c.state).sort(),
    ['incoming', 'pending'],
    'one request each way',
  );

  host.detach('killed');
  await t.rejects(hostAsked, { code: 'closed' }, 'the dead process\'s own allocation ends there (in-process user)');
  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host', reregisterGraceMs: 0 }, throughJson(snap));
  t.teardown(() => restored.close());
  t.same(restored.restored, { flowsEnded: 0, flowsKept: 0, allocationsEnded: 1, requestsRefused: 1, closing: 0, registrations: 1 });

  const err = (await within(
    guestAsked.then(
      () => null,
      (e: unknown) => e,
    ),
    'the guest allocation answered',
  )) as DifError;
  t.ok(err instanceof DifError, 'the guest allocation is refused');
  t.equal(err.code, 'rejected');
  t.equal(err.peerReason, RESTART_REQUEST_LOST('host'), 'with the restart reason');
  await until(() => gHeld[0]!.state === 'cancelled', 'the host request at the guest cancelled');
  t.same(gCancelled, [LOST], 'the host request the guest application had not answered is cancelled with the restart reason');
  t.throws(() => gHeld[0]!.accept(), { code: 'request_settled' }, 'and can no longer be accepted');

  // The host application has not registered again (and no grace): a clear refusal, not "unknown application".
  await t.rejects(within(guest.allocateFlow('g', 'H-slow'), 'refused at once', 500), { code: 'rejected', peerReason: 'H-slow was registered before the host back-end restarted and has not registered again yet: try again' });
  await t.rejects(within(guest.allocateFlow('g', 'nobody'), 'refused at once', 500), { code: 'rejected', peerReason: 'unknown application' });
  t.same(restored.snapshot().registrations, ['H-slow'], 'the name stays in the snapshot until it registers again or leaves');
  const back = acceptAll(restored, 'H-slow');
  const f = await guest.allocateFlow('g', 'H-slow');
  await roundTrip(t, f, await back.next(), 'after registering again');
  await until(() => (restored.inspect().channels as unknown[]).length === 1, 'the closing channel freed');
  t.equal(pair.host.boundChannels.length, 2, 'control channel and the one flow bound');
});

t.test('restart: a channel closing at the crash gets its Deallocate again (it may not have gone out)', async (t) => {
  const { pair, host, guest } = setup(t);
  const hApp = acceptAll(host, 'H');
  const g = await guest.allocateFlow('g', 'H');
  const h = await hApp.next();
  pair.host.pause();
  h.deallocate('done');
  const snap = host.snapshot();
  t.same(snap.channels, [{ channel: g.channel, state: 'closing', portId: h.portId }]);
  host.detach('killed');
  t.equal(pair.host.dropInFlight(), 1, 'the Deallocate dies with the process (it was still in its backlog)');
  pair.host.resume();
  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, throughJson(snap));
  t.teardown(() => restored.close());
  t.equal(await ended(g, 'the guest flow ends'), LOST, 'the guest flow ends all the same');
  await until(() => (restored.inspect().channels as unknown[]).length === 0, 'the channel freed');
});

t.test('restart: an accept that died with the process (persisted, never sent) still settles the guest allocation', async (t) => {
  const { pair, host, guest } = setup(t);
  acceptAll(host, 'H');
  pair.host.pause();
  const asked = guest.allocateFlow('g', 'H');
  asked.catch(() => {});
  await until(() => host.flows().length === 1, 'the host accepted');
  const snap = host.snapshot();
  t.same(snap.channels.map((c) => c.state), ['allocated'], 'the snapshot says allocated');
  host.detach('killed');
  t.equal(pair.host.dropInFlight(), 1, 'the accept is lost with the process');
  pair.host.resume();
  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, throughJson(snap));
  t.teardown(() => restored.close());
  await t.rejects(within(asked, 'the guest allocation settles'), { code: 'rejected', peerReason: LOST }, 'refused with the restart reason, not left to time out');
  await until(() => (restored.inspect().channels as unknown[]).length === 0, 'the channel freed');
});

t.test('restart while the port is down: the Deallocates wait for the port to come up', async (t) => {
  const { pair, host, guest } = setup(t);
  const hApp = acceptAll(host, 'H');
  const g = await guest.allocateFlow('g', 'H');
  await hApp.next();
  const snap = throughJson(host.snapshot());
  host.detach('killed');
  pair.host.setUp(false, 'the new worker has not resumed the rings yet');
  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, snap);
  t.teardown(() => restored.close());
  await settle();
  t.equal(g.state, 'allocated', 'nothing sent while the port is down');
  pair.host.setUp(true, '');
  t.equal(await ended(g, 'the guest flow ends once the port is up'), LOST);
});

t.test('a snapshot of another version is refused with state_version, a damaged one with state_invalid, and nothing is bound', async (t) => {
  const pair = createPortPair();
  const guest = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
  const host = new ShimHvIpcp({ port: pair.host, role: 'host' });
  t.teardown(() => guest.close());
  acceptAll(guest, 'G');
  acceptAll(host, 'H');
  const hPending = holdAll(host, 'H-slow');
  await host.allocateFlow('H', 'G');
  await guest.allocateFlow('g', 'H');
  guest.allocateFlow('g', 'H-slow').catch(() => {});
  await until(() => hPending.length === 1, 'a request waiting at the host');
  const good = host.snapshot();
  t.same(good.channels.map((c) => c.state).sort(), ['allocated', 'allocated', 'incoming']);
  host.detach('killed');

  const attempt = (snap: unknown, opts: { role?: 'host' | 'guest'; difName?: string } = {}): unknown => {
    try {
      const ipcp = ShimHvIpcp.restore({ port: pair.host, role: opts.role ?? 'host', ...(opts.difName ? { difName: opts.difName } : {}) }, snap);
      ipcp.detach();
      return null;
    } catch (e) {
      return e;
    }
  };
  const mutate = (f: (s: Record<string, any>) => void): unknown => {
    const s = throughJson(good) as Record<string, any>;
    f(s);
    return s;
  };
  const refused = (snap: unknown, code: string, what: string, opts?: { role?: 'host' | 'guest'; difName?: string }): void => {
    const e = attempt(snap, opts);
    t.ok(e instanceof ShimHvStateError, `${what}: a ShimHvStateError`);
    t.equal((e as ShimHvStateError).code, code, `${what}: ${code}: ${(e as Error).message}`);
    t.same(pair.host.boundChannels, [], `${what}: nothing bound`);
  };

  refused(mutate((s) => (s.version = 2)), 'state_version', 'version 2');
  refused(mutate((s) => (s.version = 0)), 'state_version', 'version 0');
  refused(mutate((s) => delete s.version), 'state_invalid', 'no version');
  refused(mutate((s) => (s.version = '1')), 'state_invalid', 'version as a string');
  refused(null, 'state_invalid', 'null');
  refused([good], 'state_invalid', 'an array');
  refused('{"version":1}', 'state_invalid', 'unparsed JSON text');
  const damaged: Array<[string, (s: Record<string, any>) => void]> = [
    ['an unknown field', (s) => (s.extra = 1)],
    ['role missing', (s) => delete s.role],
    ['role wrong', (s) => (s.role = 'both')],
    ['DIF name empty', (s) => (s.difName = '')],
    ['VMPI-id negative', (s) => (s.vmpiId = -1)],
    ['maxChannel 1', (s) => (s.maxChannel = 1)],
    ['nextPortId 0', (s) => (s.nextPortId = 0)],
    ['nextPortId fractional', (s) => (s.nextPortId = 2.5)],
    ['cursor beyond the channel space', (s) => (s.cursor = 100_000)],
    ['registrations not an array', (s) => (s.registrations = 'H')],
    ['a registration not a name', (s) => (s.registrations = [''])],
    ['a registration twice', (s) => (s.registrations = ['H', 'H'])],
    ['channels not an array', (s) => (s.channels = {})],
    ['a channel null', (s) => (s.channels[0] = null)],
    ['channel 0', (s) => (s.channels[0].channel = 0)],
    ['a channel beyond maxChannel', (s) => (s.channels[0].channel = s.maxChannel + 2)],
    ['a channel as a string', (s) => (s.channels[0].channel = '2')],
    ['a channel twice', (s) => s.channels.push({ ...s.channels[0] })],
    ['an unknown state', (s) => (s.channels[0].state = 'open')],
    ['a missing port-id', (s) => delete s.channels[0].portId],
    ['a port-id not handed out yet', (s) => (s.channels[0].portId = s.nextPortId)],
    ['a port-id twice', (s) => (s.channels[1].portId = s.channels[0].portId)],
    ['a bad local name', (s) => (s.channels[0].localApp = 'a/b/c/d/e')],
    ['a remote name not a string', (s) => (s.channels[0].remoteApp = { processName: 'x' })],
    ['QoS max SDU 0', (s) => (s.channels[0].qos.maxSdu = 0)],
    ['QoS flag not a boolean', (s) => (s.channels[0].qos.reliable = 1)],
    ['QoS with an extra field', (s) => (s.channels[0].qos.x = 1)],
    ['requester unknown', (s) => (s.channels[0].requester = 'them')],
    ['requester of the wrong parity', (s) => (s.channels[0].requester = s.channels[0].requester === 'peer' ? 'local' : 'peer')],
    ['dataFile not a boolean', (s) => (s.channels[0].dataFile = 'no')],
    ['an incoming request on a host channel', (s) => (s.channels[2].channel = 10)],
    ['a pending request on a guest channel', (s) => s.channels.push({ channel: 11, state: 'pending', portId: 1, localApp: 'a', remoteApp: 'b', qos: { reliable: false, inOrder: false, maxSdu: 10 } })],
    ['a closing port-id as a string', (s) => s.channels.push({ channel: 13, state: 'closing', portId: '1' })],
  ];
  for (const [what, f] of damaged) refused(mutate(f), 'state_invalid', what);
  refused(throughJson(good), 'state_invalid', 'restored as a guest', { role: 'guest' });
  refused(throughJson(good), 'state_invalid', 'restored in another DIF', { difName: 'hv.other' });
  const otherPair = createPortPair({ vmpiId: 8 });
  t.throws(() => ShimHvIpcp.restore({ port: otherPair.host, role: 'host' }, throughJson(good)), { code: 'state_invalid' }, 'restored on another VMPI device');
  t.same(otherPair.host.boundChannels, []);
  t.throws(() => new ShimHvIpcp({ port: pair.host, role: 'host', resume: { ...good, version: 3 as 1 } }), { code: 'state_version' }, 'the resume option checks the same way');

  const ok = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, throughJson(good));
  t.teardown(() => ok.close());
  t.same(ok.restored, { flowsEnded: 2, flowsKept: 0, allocationsEnded: 0, requestsRefused: 1, closing: 0, registrations: 2 }, 'the undamaged snapshot restores');
});

t.test('the state change callback: once per change, before the peer hears of it, guarded, silent after detach', async (t) => {
  const seen: Array<{ states: string[]; registrations: string[] }> = [];
  let throwing = false;
  const warnings: string[] = [];
  const sentAtReport: number[] = [];
  const { pair, guest, host } = setup(t, {
    host: {
      logger: pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) }),
      onStateChange: (ipcp) => {
        const s = ipcp.snapshot();
        seen.push({ states: s.channels.map((c) => `${c.channel}:${c.state}`), registrations: s.registrations });
        sentAtReport.push(pair.host.stats.sent);
        if (throwing) throw new Error('the restart code failed');
      },
    },
  });
  const take = (): Array<{ states: string[]; registrations: string[] }> => seen.splice(0);

  const hApp = acceptAll(host, 'H');
  t.same(take(), [{ states: [], registrations: ['H'] }], 'register');
  const gApp = acceptAll(guest, 'G');
  await settle();
  t.same(take(), [], 'nothing for a guest registration (it lives in the guest)');

  // Host asks: the pending channel is persisted before the request leaves.
  let requestLeftAfter = -1;
  pair.host.pause();
  const p = host.allocateFlow('H2', 'G');
  requestLeftAfter = pair.host.inFlightCount;
  const afterAsk = take();
  t.same(afterAsk, [{ states: ['2:pending'], registrations: ['H'] }], 'allocation asked');
  t.equal(requestLeftAfter, 1, 'the request was queued after the callback ran');
  pair.host.resume();
  const h2 = await p;
  t.same(take(), [{ states: ['2:allocated'], registrations: ['H'] }], 'allocation answered');
  await gApp.next();

  // Guest asks: incoming and accepted in one control message: one report, before the answer.
  const sentBeforeAccept = pair.host.stats.sent;
  const g1 = await guest.allocateFlow('g', 'H');
  const h1 = await hApp.next();
  t.same(take(), [{ states: ['1:allocated', '2:allocated'], registrations: ['H'] }], 'incoming request accepted: one report');
  t.equal(sentAtReport.at(-1), sentBeforeAccept, 'reported before the accept went out');
  t.equal(pair.host.stats.sent, sentBeforeAccept + 1, 'the accept went out after');

  // Deallocation by this end: closing, then free on the confirmation.
  h2.deallocate('done');
  t.same(take(), [{ states: ['1:allocated', '2:closing'], registrations: ['H'] }], 'deallocated here');
  await until(() => seen.length > 0, 'the confirmation');
  t.same(take(), [{ states: ['1:allocated'], registrations: ['H'] }], 'confirmed by the peer');

  // Deallocation by the peer.
  g1.deallocate('bye');
  await until(() => h1.state === 'deallocated', 'the peer deallocates');
  t.same(take(), [{ states: [], registrations: ['H'] }], 'deallocated by the peer');

  // A request refused by the application, and one that is held then refused.
  const slow = holdAll(host, 'H-slow');
  t.same(take(), [{ states: [], registrations: ['H', 'H-slow'] }], 'second registration');
  const refused = guest.allocateFlow('g', 'H-slow');
  refused.catch(() => {});
  await until(() => slow.length === 1, 'the request reaches the application');
  t.same(take(), [{ states: ['3:incoming'], registrations: ['H', 'H-slow'] }], 'request waiting for the application');
  slow[0]!.reject('no');
  t.same(take(), [{ states: [], registrations: ['H', 'H-slow'] }], 'request rejected');
  await t.rejects(refused, { code: 'rejected', peerReason: 'no' });

  host.unregister('H-slow');
  t.same(take(), [{ states: [], registrations: ['H'] }], 'unregister');

  // A throwing callback is contained.
  throwing = true;
  const h4 = await host.allocateFlow('H4', 'G');
  t.equal(h4.state, 'allocated', 'a throwing callback does not disturb the IPC process');
  t.same(warnings, ['shim-hv: the state change callback threw (ignored)', 'shim-hv: the state change callback threw (ignored)'], 'each throw logged (pending, allocated)');
  throwing = false;
  take();

  // A dead process reports nothing (its last snapshot is what a successor restores).
  host.detach('killed');
  await settle();
  t.same(take(), [], 'detach reports no change');
  t.equal(h4.state, 'deallocated', 'the in-process user of the dead process hears its flow end');
});

t.test('a restored IPC process reports its new state before it tells the guest, and its snapshot restores again', async (t) => {
  const { pair, host, guest } = setup(t);
  const hApp = acceptAll(host, 'H');
  const g = await guest.allocateFlow('g', 'H');
  await hApp.next();
  const snap = throughJson(host.snapshot());
  host.detach('killed');
  let reported: ShimHvSnapshot | null = null;
  let sentWhenReported = -1;
  const sentBefore = pair.host.stats.sent;
  const restored = ShimHvIpcp.restore(
    {
      port: pair.host,
      role: 'host',
      onStateChange: (ipcp) => {
        if (reported) return;
        reported = ipcp.snapshot();
        sentWhenReported = pair.host.stats.sent - sentBefore;
      },
    },
    snap,
  );
  t.teardown(() => restored.close());
  t.ok(reported, 'reported from inside restore()');
  t.equal(sentWhenReported, 0, 'before the Deallocate went out');
  t.same(reported!.channels, [{ channel: g.channel, state: 'closing', portId: null }], 'the flow is closing in the reported state');
  // It dies too before the guest confirmed: its successor sends the Deallocate again, harmlessly.
  restored.detach('killed again');
  const third = ShimHvIpcp.restore({ port: pair.host, role: 'host' }, throughJson(reported!));
  t.teardown(() => third.close());
  t.equal(await ended(g, 'the guest flow ends'), LOST);
  await until(() => (third.inspect().channels as unknown[]).length === 0, 'the channel freed at the third process');
  t.equal(third.stats.unknownFlow, 1, 'the guest confirmed both Deallocates; the second confirmation is counted and ignored');
  t.equal(guest.stats.unknownFlow, 1, 'the guest counted the second Deallocate, for a channel it had freed, and confirmed it');
});

t.test('restart: a request for a host application that has not registered again waits for it, within a grace', async (t) => {
  const { pair, host, guest } = setup(t);
  acceptAll(host, 'H');
  acceptAll(host, 'H-gone');
  holdAll(host, 'H-left');
  const snap = throughJson(host.snapshot());
  host.detach('killed');
  pair.guest.pause(); // asked while no worker runs: the request waits in the ring
  const early = guest.allocateFlow('g', 'H');
  const restored = ShimHvIpcp.restore({ port: pair.host, role: 'host', reregisterGraceMs: 400 }, snap);
  t.teardown(() => restored.close());
  const started = Date.now();
  pair.guest.resume();
  const gone = guest.allocateFlow('g', 'H-gone');
  gone.catch(() => {});
  const left = guest.allocateFlow('g', 'H-left');
  left.catch(() => {});
  await until(() => restored.snapshot().channels.length === 3, 'three requests waiting at the host');
  t.same(
    restored.snapshot().channels.map((c) => [c.state, 'localApp' in c ? c.localApp : '']),
    [
      ['incoming', 'H'],
      ['incoming', 'H-gone'],
      ['incoming', 'H-left'],
    ],
    'kept as requests (a restore of this snapshot would refuse them)',
  );
  t.same(restored.inspect().awaitingRegistration, ['H', 'H-gone', 'H-left'], 'inspect() shows who has not registered again');
  restored.unregister('H-left');
  await t.rejects(within(left, 'refused once its application left for good'), { code: 'rejected', peerReason: 'unknown application' });

  const hApp = acceptAll(restored, 'H');
  const g = await within(early, 'the request accepted once its application registered again');
  await roundTrip(t, g, await hApp.next(), 'flow asked before its host application came back');

  await t.rejects(within(gone, 'refused when the grace ends', 2000), {
    code: 'rejected',
    peerReason: 'H-gone was registered before the host back-end restarted and has not registered again yet: try again',
  });
  t.ok(Date.now() - started >= 350, `refused at the end of the grace, not before (${Date.now() - started} ms)`);
  await t.rejects(within(guest.allocateFlow('g', 'H-gone'), 'refused at once after the grace', 500), { code: 'rejected', peerReason: /has not registered again yet/ });
});
