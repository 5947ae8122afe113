/**
 * rx-budget.test.ts — a guest cannot pin host memory through flows nobody reads: the shim IPC
 * process's receive queues are bounded in bytes per flow and over all flows of the device (not
 * only in SDUs), drops are counted by budget, and a flow's queued bytes leave the device budget
 * when they are read or the flow ends.
 */
import t from 'tap';
import { acceptAll, readWithin, settle, setup, until } from './helpers.js';
/** The default per-flow byte budget (ipcp.ts DEFAULT_RX_QUEUE_BYTES). */
const DEFAULT_RX_QUEUE_BYTES = 8 * 1024 * 1024;

const KiB = 1024;

t.test('default budget: an unread flow keeps at most 8 MiB of 64 KiB SDUs, not 4096 of them (256 MiB)', async (t) => {
  const { host, guest } = setup(t, { pair: { maxSdu: 64 * KiB } });
  const server = acceptAll(host, 'server');
  const g = await guest.allocateFlow('client', 'server');
  const h = await server.next();
  const sdu = new Uint8Array(64 * KiB);
  for (let i = 0; i < 200; i++) g.write(sdu); // 12.5 MiB
  await until(() => h.stats.rxSdus === 200, 'all delivered to the flow');
  t.equal(host.rxQueuedBytes, DEFAULT_RX_QUEUE_BYTES, 'the queue holds exactly its byte budget');
  t.equal(h.stats.rxQueueDrops, 200 - DEFAULT_RX_QUEUE_BYTES / (64 * KiB), 'the rest is dropped and counted');
  t.same(host.stats.rxBudgetDrops, { sdus: 0, flow_bytes: 200 - DEFAULT_RX_QUEUE_BYTES / (64 * KiB), total_bytes: 0 }, 'all by the per-flow byte budget');
  await readWithin(h, 'a queued SDU');
  t.equal(host.rxQueuedBytes, DEFAULT_RX_QUEUE_BYTES - 64 * KiB, 'reading frees budget');
});

t.test('per-flow and per-device byte budgets, released when read or deallocated', async (t) => {
  const { host, guest } = setup(t, { host: { rxQueueBytes: 64 * KiB, rxQueueTotalBytes: 96 * KiB } });
  const server = acceptAll(host, 'server');
  const g1 = await guest.allocateFlow('client/1', 'server');
  const h1 = await server.next();
  const g2 = await guest.allocateFlow('client/2', 'server');
  const h2 = await server.next();
  const sdu = new Uint8Array(8 * KiB);
  for (let i = 0; i < 10; i++) g1.write(sdu);
  await settle();
  t.equal(h1.stats.rxQueueDrops, 2, 'flow 1: 8 SDUs fit its 64 KiB, 2 dropped');
  t.equal(host.stats.rxBudgetDrops.flow_bytes, 2);
  for (let i = 0; i < 10; i++) g2.write(sdu);
  await settle();
  t.equal(h2.stats.rxQueueDrops, 6, 'flow 2: only the 32 KiB left of the device budget');
  t.equal(host.stats.rxBudgetDrops.total_bytes, 6);
  t.equal(host.rxQueuedBytes, 96 * KiB);

  for (let i = 0; i < 4; i++) await readWithin(h1, `queued SDU ${i} of flow 1`);
  t.equal(host.rxQueuedBytes, 64 * KiB, 'read SDUs leave the budget');
  g1.deallocate();
  await until(() => h1.state === 'deallocated', 'flow 1 ended');
  t.equal(host.rxQueuedBytes, 32 * KiB, "an ended flow's queue leaves the device budget");
  t.equal((await readWithin(h1, 'an SDU of the ended flow'))?.byteLength, 8 * KiB, 'its SDUs are still readable');
  for (let i = 0; i < 4; i++) g2.write(sdu);
  await settle();
  t.equal(h2.stats.rxQueueDrops, 6, 'flow 2 gets room again (up to its own 64 KiB)');
  t.equal(host.rxQueuedBytes, 64 * KiB);
  // A consumer takes SDUs as they come: no budget applies to what passes straight through.
  const seen: number[] = [];
  h2.on('data', (b) => seen.push(b.byteLength));
  await settle();
  for (let i = 0; i < 20; i++) g2.write(sdu);
  await until(() => seen.length === 28, 'a listener gets everything');
  t.equal(host.rxQueuedBytes, 0);
});

t.test('budgets must be positive integers', async (t) => {
  t.throws(() => setup(t, { host: { rxQueueBytes: 0 } }), { code: 'invalid_argument' });
  t.throws(() => setup(t, { host: { rxQueueTotalBytes: 1.5 } }), { code: 'invalid_argument' });
});
