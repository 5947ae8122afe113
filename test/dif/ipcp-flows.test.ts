/**
 * The shim IPC process for hypervisors (src/dif/shim-hv/ipcp.ts), host and guest over an
 * in-memory VMPI port pair: allocation in both directions, SDUs of every size 0..4000 both ways,
 * concurrent flows, the read paths (read(), 'data', async iteration), backpressure, and
 * deallocation (either side, both at once, with data in flight, channel reuse).
 */
import t, { type Test } from 'tap';
import type { ShimHvFlow as Flow } from '../../src/dif/shim-hv/ipcp.js';
import { patternSdu } from '../helpers/pattern.js';
import { acceptAll, readWithin, settle, setup, until, within } from './helpers.js';

t.test('guest → host allocation', async (t) => {
  const { pair, host, guest } = setup(t);
  t.equal(host.difName, 'hv.vmpi-7', 'default DIF name from the VMPI-id');
  t.equal(host.address, 7, 'address = VMPI-id');
  const server = acceptAll(host, 'server/1');
  const flow = await guest.allocateFlow('client/1', 'server/1', { reliable: true, inOrder: true });
  t.equal(flow.state, 'allocated');
  t.same(flow.localApp, { processName: 'client', processInstance: '1' });
  t.same(flow.remoteApp, { processName: 'server', processInstance: '1' });
  t.same(flow.qos, { reliable: true, inOrder: true, maxSdu: pair.guest.maxSdu }, 'maxSdu 0 resolves to the port max; reliable granted');
  t.equal(flow.difName, 'hv.vmpi-7');
  const hflow = await server.next();
  t.equal(hflow.state, 'allocated');
  t.same(hflow.remoteApp, { processName: 'client', processInstance: '1' });
  t.same(server.requests[0]!.qos, flow.qos);
  t.equal(server.requests[0]!.state, 'accepted');
  const ch = flow.channel;
  t.equal(ch % 2, 1, 'the guest allocates odd channels');
  t.equal(hflow.channel, ch, 'both ends on the same channel');
  t.ok(pair.host.isBound(ch) && pair.guest.isBound(ch), 'channel bound at both ends');
  t.equal(guest.flows().length, 1);
  t.equal(host.flows().length, 1);
  t.equal(guest.stats.allocSucceeded, 1);
  t.equal(host.stats.incomingAccepted, 1);
});

t.test('SDUs that overtake the allocate response are kept for the new flow', async (t) => {
  const { pair, host, guest } = setup(t);
  // The responder writes at once when it accepts; hold its control channel so the data arrives
  // at the requester first, as it may in a guest (one poll watcher per channel file).
  host.register('eager/1', (req) => {
    const f = req.accept();
    for (let i = 0; i < 3; i++) f.write(Uint8Array.of(i, 42));
  });
  pair.host.holdChannel(0);
  const pending = guest.allocateFlow('client/1', 'eager/1');
  await settle();
  t.equal(guest.stats.unexpectedSdus, 0, 'data on the pending flow\'s channel is not dropped as unexpected');
  pair.host.releaseChannel(0);
  const flow = await within(pending, 'the allocation completes once its answer is released');
  const got = [await readWithin(flow, 'SDU 0'), await readWithin(flow, 'SDU 1'), await readWithin(flow, 'SDU 2')].map((b) => Array.from(b!));
  t.same(got, [[0, 42], [1, 42], [2, 42]], 'the three SDUs, in order, after the allocation completes');
});

t.test('host → guest allocation, custom DIF name', async (t) => {
  const { host, guest } = setup(t, { host: { difName: 'hv.test' }, guest: { difName: 'hv.test' } });
  const app = acceptAll(guest, 'guest-app');
  const flow = await host.allocateFlow('host-app', 'guest-app', { maxSdu: 1500 });
  t.equal(flow.channel % 2, 0, 'the host allocates even channels');
  t.equal(flow.qos.maxSdu, 1500);
  t.equal(flow.difName, 'hv.test');
  const g = await app.next();
  t.equal(g.qos.maxSdu, 1500);
  t.equal(g.difName, 'hv.test');
});

async function exchange(t: Test, a: Flow, b: Flow, sizes: number[], label: string): Promise<void> {
  const ch = a.channel;
  const got: Uint8Array[] = [];
  const done = new Promise<void>((resolve) => {
    b.on('data', (sdu) => {
      got.push(sdu);
      if (got.length === sizes.length) resolve();
    });
  });
  let refused = 0;
  sizes.forEach((size, seq) => {
    if (!a.write(patternSdu(ch, seq, size))) refused++;
  });
  t.equal(refused, 0, `${label}: no write refused`);
  await within(done, `${label}: all ${sizes.length} SDUs delivered to the 'data' listener`, 10_000);
  let bad = 0;
  got.forEach((sdu, seq) => {
    const want = patternSdu(ch, seq, sizes[seq]!);
    if (sdu.byteLength !== want.byteLength || Buffer.compare(Buffer.from(sdu), Buffer.from(want)) !== 0) bad++;
  });
  t.equal(got.length, sizes.length, `${label}: every SDU arrived`);
  t.equal(bad, 0, `${label}: every SDU intact and in order`);
}

t.test('SDUs of 0..4000 bytes both ways, intact and in order', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server', { reliable: true, inOrder: true });
  const h = await server.next();
  const sizes = Array.from({ length: 4001 }, (_, i) => i);

  // guest → host through 'data' events.
  await exchange(t, g, h, sizes, 'guest → host');

  // host → guest through read().
  const ch = h.channel;
  for (const [seq, size] of sizes.entries()) h.write(patternSdu(ch, seq, size));
  let bad = 0;
  for (const [seq, size] of sizes.entries()) {
    const sdu = await readWithin(g, `host → guest SDU ${seq}`);
    const want = patternSdu(ch, seq, size);
    if (!sdu || Buffer.compare(Buffer.from(sdu), Buffer.from(want)) !== 0) bad++;
  }
  t.equal(bad, 0, 'host → guest: every SDU intact and in order');
  t.equal(bad, 0, 'host → guest: every SDU intact and in order (read())');
  t.equal(g.stats.txSdus, 4001);
  t.equal(h.stats.rxSdus, 4001);
  t.equal(h.stats.rxBytes, (4000 * 4001) / 2);
  t.equal(h.stats.txSdus, 4001);
  t.equal(g.stats.rxSdus, 4001);
});

t.test('two flows at once, both directions, no cross-talk', async (t) => {
  const { host, guest } = setup(t);
  const hs = acceptAll(host, 'h-server');
  const gs = acceptAll(guest, 'g-server');
  // Allocations in both directions at the same time, plus a second one from the guest.
  const [g1, h2, g3] = await Promise.all([guest.allocateFlow('c1', 'h-server'), host.allocateFlow('c2', 'g-server'), guest.allocateFlow('c3', 'h-server')]);
  const h1 = hs.flows.find((f) => f.remoteApp.processName === 'c1')!;
  const h3 = hs.flows.find((f) => f.remoteApp.processName === 'c3')!;
  const g2 = await gs.next();
  const chans = [g1, h2, g3].map((f) => f.channel);
  t.equal(new Set(chans).size, 3, `three distinct channels (${chans.join(',')})`);
  t.equal(host.flows().length, 3);
  t.equal(guest.flows().length, 3);

  const pairs: Array<[Flow, Flow, string]> = [
    [g1, h1, 'flow 1 g→h'],
    [h1, g1, 'flow 1 h→g'],
    [h2, g2, 'flow 2 h→g'],
    [g2, h2, 'flow 2 g→h'],
    [g3, h3, 'flow 3 g→h'],
  ];
  const received = new Map<Flow, number[]>();
  for (const [, rx] of pairs) {
    received.set(rx, []);
    rx.on('data', (sdu) => received.get(rx)!.push(new DataView(sdu.buffer, sdu.byteOffset).getUint32(0, true)));
  }
  // Interleave writes: SDU carries (flow tag << 16 | seq).
  for (let seq = 0; seq < 100; seq++) {
    pairs.forEach(([tx], tag) => {
      const b = new Uint8Array(16);
      new DataView(b.buffer).setUint32(0, (tag << 16) | seq, true);
      tx.write(b);
    });
  }
  await until(() => [...received.values()].every((v) => v.length >= 100), 'all SDUs');
  pairs.forEach(([, rx], tag) => {
    const want = Array.from({ length: 100 }, (_, seq) => (tag << 16) | seq);
    // h1 and g1 receive from one writer each; check per receiver.
    const got = received.get(rx)!;
    t.same(got, want, `${pairs[tag]![2]}: its own SDUs only, in order`);
  });
});

t.test('read paths: queued SDUs, data listener attached later, async iteration', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  for (let i = 0; i < 5; i++) g.write(Uint8Array.of(i));
  await settle();
  t.equal(h.stats.rxSdus, 5, 'queued while nobody reads');
  t.same(await readWithin(h, 'the first queued SDU'), Uint8Array.of(0), 'read() takes the first');
  const seen: number[] = [];
  h.on('data', (sdu) => seen.push(sdu[0]!));
  g.write(Uint8Array.of(5));
  await settle();
  t.same(seen, [1, 2, 3, 4, 5], 'a late data listener gets the queued SDUs first, in order');

  // Async iteration on the other direction ends when the flow is deallocated.
  const collected: number[] = [];
  const loop = (async () => {
    for await (const sdu of g) collected.push(sdu[0]!);
  })();
  for (let i = 10; i < 15; i++) h.write(Uint8Array.of(i));
  await until(() => collected.length === 5, 'iterated SDUs');
  h.deallocate('done');
  await within(loop, 'async iteration ends with the deallocation');
  t.same(collected, [10, 11, 12, 13, 14]);
  t.equal(g.state, 'deallocated');
  t.equal(g.deallocationReason, 'done', "the peer's reason reaches the other end");
  t.equal(await readWithin(g, 'read() after the end'), null, 'read() after the end: null');
});

t.test('a reader keeps SDUs that arrived before the deallocation', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  g.write(Uint8Array.of(1));
  g.write(Uint8Array.of(2));
  g.deallocate();
  await until(() => h.state === 'deallocated', 'deallocated at the host');
  t.same(await readWithin(h, 'SDU 1 after the deallocation'), Uint8Array.of(1));
  t.same(await readWithin(h, 'SDU 2 after the deallocation'), Uint8Array.of(2));
  t.equal(await readWithin(h, 'the end after the queued SDUs'), null);
});

t.test('received SDUs are private copies', async (t) => {
  const { host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  const sdu = new Uint8Array(64).fill(0x42);
  g.write(sdu);
  sdu.fill(0); // the writer may reuse its buffer at once
  await settle(); // and the link overwrites its delivery buffer after the handler
  const got = await readWithin(h, 'the SDU');
  t.ok(got && got.every((b) => b === 0x42), 'the bytes survive both the writer reusing its buffer and the link reusing its own');
});

t.test('backpressure: write() → false when the link is full, then drain', async (t) => {
  const { pair, host, guest } = setup(t, { pair: { capacity: 8 } });
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server', { reliable: true });
  const h = await server.next();
  const received: number[] = [];
  h.on('data', (sdu) => received.push(sdu[0]!));

  let accepted = 0;
  while (accepted < 1000 && g.write(Uint8Array.of(accepted))) accepted++;
  t.equal(accepted, 8, 'the link took its capacity');
  t.equal(g.stats.txRefused, 1);
  t.equal(g.write(Uint8Array.of(99)), false, 'refused until drain, even if the port had room');
  const drained = new Promise<void>((resolve) => g.once('drain', resolve));
  await within(drained, "'drain' after a refused write");
  t.pass("'drain' emitted");
  t.ok(g.write(Uint8Array.of(accepted)), 'writes resume after drain');
  accepted++;

  // send() waits for drain by itself: 200 more SDUs, none lost, in order.
  for (let i = accepted; i < 200; i++) await within(g.send(Uint8Array.of(i)), `send() of SDU ${i} (waits for drain)`);
  await until(() => received.length === 200, 'all SDUs');
  t.same(
    received,
    Array.from({ length: 200 }, (_, i) => i),
    'reliable flow: nothing lost, in order',
  );
  t.ok(pair.guest.stats.refused > 1, 'the link refused several times');
});

t.test('control messages wait for room on a full port', async (t) => {
  const { pair, host, guest } = setup(t, { pair: { capacity: 2 } });
  acceptAll(host, 'server');
  // Three allocations at once: the third request finds the link full and goes out after 'drain'.
  const flows = await Promise.all([guest.allocateFlow('a', 'server'), guest.allocateFlow('b', 'server'), guest.allocateFlow('c', 'server')]);
  t.equal(flows.length, 3);
  t.equal(pair.guest.stats.refused, 1, 'the link refused the third request once');
  t.equal(guest.stats.controlTx, 3, 'three requests went out, none twice');
  t.equal(guest.stats.controlDropped, 0);
  t.equal(guest.stats.controlBacklog, 0);
});

t.test('deallocation from either side frees the channel at both ends', async (t) => {
  const { pair, host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  for (const side of ['guest', 'host'] as const) {
    const g = await guest.allocateFlow('client', 'server');
    const h = await server.next();
    const ch = g.channel;
    const [by, other] = side === 'guest' ? [g, h] : [h, g];
    const ended = new Promise<[string, string]>((resolve) => other.once('deallocated', (reason, cause) => resolve([reason, cause])));
    const localEnd = new Promise<[string, string]>((resolve) => by.once('deallocated', (reason, cause) => resolve([reason, cause])));
    by.deallocate('bye');
    t.equal(by.state, 'deallocated', `${side}: deallocated at once locally`);
    t.same(await within(localEnd, `${side}: 'deallocated' at the deallocating end`), ['bye', 'local']);
    t.same(await within(ended, `${side}: 'deallocated' at the other end`), ['bye', 'peer'], `${side}: the peer learns why`);
    await until(() => !pair.host.isBound(ch) && !pair.guest.isBound(ch), 'channel unbound at both ends');
    t.equal(host.flows().length + guest.flows().length, 0);
    t.throws(() => by.write(Uint8Array.of(1)), { name: 'DifError', code: 'flow_deallocated' });
    t.throws(() => other.write(Uint8Array.of(1)), { name: 'DifError', code: 'flow_deallocated' });
    by.deallocate('again');
    t.equal(by.deallocationReason, 'bye', 'deallocate() twice is a no-op');
  }
  t.equal(host.stats.unknownFlow + guest.stats.unknownFlow, 0, 'no stray control messages');
});

t.test('both ends deallocate at the same time', async (t) => {
  const { pair, host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  const ch = g.channel;
  g.deallocate('guest says bye');
  h.deallocate('host says bye');
  await until(() => !pair.host.isBound(ch) && !pair.guest.isBound(ch), 'channel unbound at both ends');
  await settle();
  t.equal(g.deallocationReason, 'guest says bye');
  t.equal(h.deallocationReason, 'host says bye');
  t.equal(host.stats.unknownFlow + guest.stats.unknownFlow, 0, 'each Deallocate served as the other one\'s confirmation');
  // The channel is usable again.
  const again = await guest.allocateFlow('client', 'server');
  t.equal(again.state, 'allocated');
});

t.test('data in flight on a deallocated channel is counted and dropped', async (t) => {
  const { pair, host, guest } = setup(t);
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  const ch = g.channel;
  let delivered = 0;
  g.on('data', () => delivered++);
  // Ten host → guest SDUs stay in flight while the guest deallocates.
  pair.host.pause();
  for (let i = 0; i < 10; i++) h.write(new Uint8Array(100));
  g.deallocate('leaving');
  await until(() => h.state === 'deallocated', 'the host saw the Deallocate');
  t.ok(pair.guest.isBound(ch), 'the guest keeps the channel until the confirm');
  pair.host.resume(); // the ten SDUs, then the host's confirm
  await until(() => !pair.guest.isBound(ch), 'confirm received');
  t.equal(delivered, 0, 'nothing delivered after deallocate');
  t.equal(g.stats.rxAfterDeallocate, 10, 'counted on the flow');
  t.equal(guest.stats.staleSdus, 10, 'and on the IPC process');
  t.equal(pair.guest.stats.unbound, 0, 'none reached an unbound channel');
});

t.test('a channel is reused only after the peer confirmed the deallocation', async (t) => {
  // maxChannel 2: the host owns a single channel (2).
  const { pair, host, guest } = setup(t, { host: { maxChannel: 2 }, guest: { maxChannel: 2 } });
  acceptAll(guest, 'server');
  const f = await host.allocateFlow('client', 'server');
  t.equal(f.channel, 2);
  await t.rejects(host.allocateFlow('client', 'server'), { name: 'DifError', code: 'no_free_channel' });
  f.deallocate();
  await t.rejects(host.allocateFlow('client', 'server'), { code: 'no_free_channel' }, 'still closing: not reused yet');
  await until(() => !pair.host.isBound(2), 'confirm');
  const f2 = await host.allocateFlow('client', 'server');
  t.equal(f2.channel, 2, 'reused after the confirm');
});

t.test('the requester picks channels next-fit within its half', async (t) => {
  const { host, guest } = setup(t, { host: { maxChannel: 8 }, guest: { maxChannel: 8 } });
  acceptAll(guest, 'server');
  acceptAll(host, 'server');
  const hf = await Promise.all([1, 2, 3, 4].map(() => host.allocateFlow('c', 'server')));
  t.same(
    hf.map((f) => f.channel),
    [2, 4, 6, 8],
  );
  const gf = await Promise.all([1, 2, 3, 4].map(() => guest.allocateFlow('c', 'server')));
  t.same(
    gf.map((f) => f.channel),
    [1, 3, 5, 7],
  );
  hf[0]!.deallocate();
  await settle();
  const next = await host.allocateFlow('c', 'server');
  t.equal(next.channel, 2, 'the only free one');
});
