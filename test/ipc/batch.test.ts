/**
 * batch.test.ts — the host data path's batches (record.ts Outbox and readRecords, used by the
 * daemon's FlowBridge and the client's ClientFlow): under backpressure nothing accepted is lost
 * and what is held stays bounded; order, SDU boundaries and 0-byte SDUs survive batch
 * boundaries in both directions; a flow that ends while a batch is still queued delivers it
 * first. Real daemon, client and shim IPC processes over a port pair.
 */
import t from 'tap';
import type { Flow } from '../../src/dif/api.js';
import type { ClientFlow } from '../../src/dif/ipc/client.js';
import type { Session } from '../../src/dif/ipc/daemon.js';
import { FlowBridge } from '../../src/dif/ipc/datapath.js';
import type { Outbox } from '../../src/dif/ipc/record.js';
import { DIF, ipcSetup, nextEvent, until, within, type IpcSetup } from './helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function hostApp(s: IpcSetup, app: string): Promise<{ session: Session; flows: ClientFlow[] }> {
  const sp = nextEvent<[Session]>(s.hostDaemon, 'session', "the daemon's session", 10_000).then(([x]) => x);
  // The socket data path's batching (record.ts Outbox, packing, the bridge's pending SDU) is what
  // this file checks: ring flows (the default) are ring.test.ts's and ring-flow.test.ts's.
  const client = await s.hostClient({ rings: false });
  const session = await sp;
  const reg = await client.register(DIF, app);
  const flows: ClientFlow[] = [];
  reg.on('request', (req) => void req.accept().then((f) => flows.push(f), () => undefined));
  return { session, flows };
}

/** A flow from the guest IPC process to the host application: [guest end, application end, the daemon's bridge]. */
async function flowTo(s: IpcSetup, app: { session: Session; flows: ClientFlow[] }, name: string): Promise<[Flow, ClientFlow, FlowBridge]> {
  const g = await s.guestIpcp.allocateFlow('peer/1', name);
  await until(() => app.flows.length > 0, 'the host application got the flow');
  const links = [...(app.session as unknown as { flows: Map<number, { link: unknown }> }).flows.values()].map((f) => f.link);
  const bridge = links.find((l): l is FlowBridge => l instanceof FlowBridge)!;
  return [g, app.flows[0]!, bridge];
}

const outboxOf = (x: ClientFlow | FlowBridge): Outbox => (x as unknown as { outbox: Outbox }).outbox;
const pendingOf = (b: FlowBridge): number => (b as unknown as { pending: unknown[] }).pending.length;

/** SDU number `i`: its size cycles through 0..1500 (0-byte ones included); bytes 0..3 carry `i` where it fits. */
function numbered(i: number): Uint8Array {
  const size = i % 7 === 3 ? 0 : (i * 37) % 1501;
  const b = new Uint8Array(size).fill(i & 0xff);
  if (size >= 4) new DataView(b.buffer).setUint32(0, i);
  return b;
}

function checkNumbered(got: Uint8Array[]): string | null {
  for (let i = 0; i < got.length; i++) {
    const want = numbered(i);
    const b = got[i]!;
    if (b.byteLength !== want.byteLength || Buffer.compare(b, want) !== 0) return `SDU ${i}: ${b.byteLength} bytes, expected ${want.byteLength}`;
  }
  return null;
}

t.test('application → guest with a slow reader: nothing lost, in order across batches, 0-byte SDUs kept, the outboxes bounded', async (t) => {
  const s = ipcSetup(t, { pair: { capacity: 4 } });
  const app = await hostApp(s, 'slow');
  const [g, h, bridge] = await flowTo(s, app, 'slow');
  const N = 3000;
  const got: Uint8Array[] = [];
  const reader = (async () => {
    while (got.length < N) {
      const sdu = await g.read();
      if (sdu === null) return;
      got.push(sdu);
      if (got.length % 50 === 0) await sleep(1); // slow
    }
  })();
  let refused = 0;
  let maxClient = 0;
  let maxClientBytes = 0;
  let maxBridgePending = 0;
  for (let i = 0; i < N; ) {
    // Many writes per tick: each tick's batch crosses the outbox's 256-record bound.
    while (i < N && h.write(numbered(i))) i++;
    maxClient = Math.max(maxClient, outboxOf(h).length);
    maxClientBytes = Math.max(maxClientBytes, outboxOf(h).bytes);
    maxBridgePending = Math.max(maxBridgePending, pendingOf(bridge));
    if (i < N) {
      refused++;
      await within(new Promise<void>((r) => h.once('drain', () => r())), `'drain' after ${i} SDUs`, 10_000);
    }
  }
  await within(reader, `all ${N} SDUs at the guest (got ${got.length})`, 20_000);
  t.equal(got.length, N, 'every SDU arrived');
  t.equal(checkNumbered(got), null, 'in order, each whole, 0-byte SDUs included');
  t.ok(refused > 0, `write() returned false ${refused} times (the slow reader pushed back)`);
  t.ok(maxClient <= 256 && maxClientBytes <= 256 * 1024, `the client's outbox stayed within its bounds (${maxClient} records, ${maxClientBytes} bytes at most)`);
  t.ok(maxBridgePending <= 1, 'the bridge held at most one SDU beyond its outbox');
  t.equal(h.txLost, 0, 'nothing accepted was lost');
  t.equal(bridge.stats.fromApp, N, 'the bridge passed every SDU on');
  t.ok(outboxOf(h).packs && outboxOf(bridge).packs, 'both ends said hello: both pack small SDUs');
});

t.test('guest → application not reading: the bridge backs up bounded; the guest ends the flow mid-backlog: everything, then the end', async (t) => {
  const s = ipcSetup(t);
  const app = await hostApp(s, 'stalled');
  const [g, h, bridge] = await flowTo(s, app, 'stalled');
  const N = 2000; // below the host IPC process's per-flow receive budget: held there, not dropped
  for (let i = 0; i < N; i++) if (!g.write(numbered(i))) await within(g.send(numbered(i)), `the guest's send of SDU ${i}`, 10_000);
  // The application takes nothing: its read-ahead, its socket and the bridge's outbox fill up.
  const blocked = (): boolean => (bridge as unknown as { outBlocked: boolean }).outBlocked;
  await until(blocked, 'the bridge waits for room in the application socket', 10_000);
  t.ok(outboxOf(bridge).length <= 256 && outboxOf(bridge).bytes <= 256 * 1024, `the bridge's outbox within its bounds (${outboxOf(bridge).length} records)`);
  t.ok(pendingOf(bridge) <= 1, 'at most one SDU beyond it');
  const ended = nextEvent<[string]>(h, 'deallocated', "the application's flow ending", 10_000);
  g.deallocate('sender done');
  const got: Uint8Array[] = [];
  for (;;) {
    const sdu = await within(h.read(), `SDU ${got.length} at the application`, 10_000);
    if (sdu === null) break;
    got.push(sdu);
  }
  t.equal(got.length, N, 'every SDU queued before the end was delivered');
  t.equal(checkNumbered(got), null, 'in order, whole, 0-byte SDUs included');
  t.same((await ended)[0], 'sender done');
  t.equal(bridge.stats.lost, 0, 'nothing lost in the bridge');
  t.equal(bridge.stats.toApp, N);
});

t.test("the application ends its flow while a batch is still queued (socket full): the batch goes first", async (t) => {
  const s = ipcSetup(t);
  const app = await hostApp(s, 'closer');
  const [g, h, bridge] = await flowTo(s, app, 'closer');
  const got: Uint8Array[] = [];
  const reader = (async () => {
    for (;;) {
      const sdu = await g.read();
      if (sdu === null) return;
      got.push(sdu);
    }
  })();
  // One tick: more than the socket holds, so the outbox keeps a rest (write() says false).
  const sdu = new Uint8Array(1000);
  let accepted = 0;
  for (; accepted < 5000; accepted++) {
    new DataView(sdu.buffer).setUint32(0, accepted);
    if (!h.write(sdu)) break;
  }
  t.ok(accepted < 5000 && outboxOf(h).length > 0, `the socket filled (${accepted} accepted, ${outboxOf(h).length} still in the outbox)`);
  h.deallocate('done writing');
  await within(reader, 'the end of the guest reads', 10_000);
  t.equal(got.length, accepted, 'every SDU write() accepted arrived before the end');
  t.ok(
    got.every((b, i) => new DataView(b.buffer, b.byteOffset).getUint32(0) === i),
    'in order',
  );
  t.equal(h.txLost, 0);
  t.equal(bridge.stats.fromApp, accepted);
  t.equal(g.deallocationReason, 'done writing', 'the guest learns the reason after the data');
});

t.test('writev: many SDUs in one call, stops at the first refused one', async (t) => {
  const s = ipcSetup(t);
  const app = await hostApp(s, 'vec');
  const [g, h] = await flowTo(s, app, 'vec');
  const sdus = Array.from({ length: 600 }, (_, i) => numbered(i));
  const taken = h.writev(sdus);
  t.ok(taken > 0 && taken <= sdus.length, `writev took ${taken}`);
  let rest = taken;
  while (rest < sdus.length) {
    await within(new Promise<void>((r) => h.once('drain', () => r())), "'drain'", 10_000);
    rest += h.writev(sdus.slice(rest));
  }
  const got: Uint8Array[] = [];
  while (got.length < sdus.length) {
    const x = await within(g.read(), `SDU ${got.length}`, 10_000);
    if (x === null) break;
    got.push(x);
  }
  t.equal(checkNumbered(got), null, 'all of them, in order');
  t.equal(h.writev([]), 0);
});
