/**
 * shim-hv-borrow.test.ts — the shim DIF flow's receive path without a copy per SDU (issue #15):
 *  - a shim-hv flow with an 'sdus' listener and nothing queued gets each SDU as a batch of one
 *    over the port's own bytes (no copy); SDUs queued before the listener still come first, in
 *    order; 'data' listeners still get a copy of their own;
 *  - the IPC daemon's bridge takes a shim flow's SDUs as borrowed reads (core/budgeted-flow.ts),
 *    not as 'data' events, and stays lossless and in order when the application stops reading
 *    (its socket fills, the flow holds the rest under its budget, all arrive once it reads again).
 */
import t from 'tap';
import type { SduBatch } from '../../src/dif/api.js';
import type { ClientFlow } from '../../src/dif/ipc/client-flow.js';
import { shimHvSinkPair } from '../helpers/shim-hv-pair.js';
import { createPortPair } from './port-pair.js';
import { DIF, ipcSetup, until } from '../ipc/helpers.js';

const sdu = (len: number, seed: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (i + seed * 7) & 0xff);

t.test("shim-hv flow: an 'sdus' listener gets the port's bytes as a batch of one, no copy; order and 'data' unchanged", async (t) => {
  const pair = createPortPair();
  const { hostFlow: f, guestFlow: g } = await shimHvSinkPair(t, pair.host, pair.guest);

  // Queued before any listener: copies, delivered first, as batches of one.
  f.deliver(sdu(3, 1));
  f.deliver(sdu(3, 2));
  const order: number[] = [];
  const buffers: ArrayBufferLike[] = [];
  f.on('sdus', (b: SduBatch) => {
    for (let i = 0; i < b.count; i++) {
      order.push(b.sdu(i)[0]!);
      buffers.push(b.sdu(i).buffer);
    }
  });
  await new Promise((r) => setImmediate(r));
  t.same(order, [7, 14], 'queued SDUs first, in order');
  const view = sdu(5, 3);
  f.deliver(view);
  t.same(order, [7, 14, 21], 'then the new one, at once');
  t.equal(buffers[2], view.buffer, 'the batch is over the bytes as delivered: no copy');
  t.equal(f.stats.rxSdus, 3, 'counted');

  // Through the port pair (which overwrites its bytes after each call): every SDU, in order.
  for (let i = 0; i < 50; i++) g.write(sdu(10, i + 10));
  await until(() => order.length === 53, '50 SDUs through the port');
  t.same(order.slice(3), Array.from({ length: 50 }, (_, i) => ((i + 10) * 7) & 0xff));

  // 'data' listeners (no 'sdus' one): a copy each, as before.
  f.removeAllListeners('sdus');
  const got: Uint8Array[] = [];
  f.on('data', (s) => void got.push(s));
  const v2 = sdu(4, 9);
  f.deliver(v2);
  t.equal(got.length, 1);
  t.not(got[0]!.buffer, v2.buffer, "'data' gets a copy of its own");
  t.same(got[0], v2);
});

t.test('IPC bridge: borrows the shim flow (no data listener), lossless and in order through a full application socket', async (t) => {
  const s = ipcSetup(t);
  const client = await s.hostClient();
  const reg = await client.register(DIF, 'slow-app');
  const flows: ClientFlow[] = [];
  reg.on('request', (req) => void req.accept().then((f) => flows.push(f), () => undefined));
  const g = await s.guestIpcp.allocateFlow('peer/1', 'slow-app');
  await until(() => flows.length > 0, 'the application got the flow');
  const app = flows[0]!;
  const shimFlow = s.hostIpcp.flows()[0]!;
  t.equal(shimFlow.listenerCount('data'), 0, "the bridge takes the shim flow's SDUs as borrowed reads, not 'data' events");

  // The application does not read: its socket and read-ahead fill, the bridge stops borrowing,
  // the shim flow queues the rest under its budget (8 MiB by default: 3000 × 1000 B fit).
  const N = 3000;
  for (let i = 0; i < N; i++) {
    const x = sdu(1000, i);
    x[1] = i & 0xff;
    x[2] = i >> 8;
    while (!g.write(x)) await new Promise<void>((r) => g.once('drain', () => r()));
  }
  await until(() => shimFlow.stats.rxSdus === N, `${N} SDUs at the host shim flow`, 20_000);
  t.equal(shimFlow.stats.rxQueueDrops, 0, 'nothing dropped');
  const seen: number[] = [];
  for (let i = 0; i < N; i++) {
    const x = await app.read();
    if (x === null) break;
    seen.push(x[1]! | (x[2]! << 8));
    if (x[0] !== ((i * 7) & 0xff) || x.byteLength !== 1000) t.fail(`SDU ${i} has bad bytes`);
  }
  t.same(seen, Array.from({ length: N }, (_, i) => i), 'every SDU once, in order');
});
