/**
 * vmpi-tx-held-restart.test.ts — a packed tx chain held mid-way (a handler paused the device)
 * across a server restart (src/vmpi/device.ts snapshot()/restore(), with the connection's saved
 * state and a new device on the same guest memory): every record of the chain delivered exactly
 * once, in order, before the later chains; with the tx ring running at the snapshot (the resumed
 * ring rewinds to the used index and re-offers the held chain) and with it stopped by
 * GET_VRING_BASE (the chain is not returned at the stop, and goes back after the restart); and a
 * queue stop and start in one process (the chain returned on the new queue).
 */
import t, { type Test } from 'tap';
import { type VmpiTestDriver, packRecords } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import {
  MAX_SDU,
  SDU_LOG2,
  connect,
  firstMismatch,
  handOver,
  pausedAt,
  pausingReceiver,
  restartTxQueue,
  sendChains,
  serveDevice,
  up,
  type Rec,
  type Served,
} from './helpers/vmpi-device-rig.js';
import { sleep, until } from './dif/helpers.js';
import { VmpiDevice, type VmpiDeviceSnapshot } from '../src/vmpi/device.js';

const serve = (t: Test): Served => serveDevice(t, 'vmpi-txheld-', { vmpiId: 9 });
const receiver = (device: VmpiDevice, got: Rec[], room: { n: number }): void => pausingReceiver(device, 6, got, room);

function same(t: Test, got: Rec[], want: Rec[], what: string): void {
  const bad = firstMismatch(got, want);
  t.equal(bad, -1, `${what}: ${want.length} SDUs exactly once, in order (got ${got.length}, first wrong at ${bad})`);
}

/**
 * A device served and connected (packed tx), a receiver on channel 6 with room for 5, and
 * `length` records (100 + i bytes) sent in chains of 15; resolves once the first 5 arrived.
 */
async function heldAfterFive(t: Test, length: number): Promise<{ a: Served; d: VmpiTestDriver; got: Rec[]; room: { n: number }; sent: Rec[] }> {
  const a = serve(t);
  const d = await connect(t, a.path, { txPacked: true });
  await up(a.device);
  const got: Rec[] = [];
  const room = { n: 5 };
  receiver(a.device, got, room);
  const sent = Array.from({ length }, (_, i) => ({ channel: 6, sdu: patternSdu(6, i, 100 + i) }));
  sendChains(t, d, sent, 15);
  await until(() => got.length === 5, 'the first 5', 5000);
  return { a, d, got, room, sent };
}

/** Wait (bounded) until `n` records arrived and every chain was returned; the checks after say what did not. */
async function allReturned(d: VmpiTestDriver, got: readonly Rec[], n: number): Promise<void> {
  await until(
    () => {
      d.harvestTx();
      return got.length >= n && d.txOutstanding === 0;
    },
    `all ${n} delivered, every chain returned`,
    5000,
  ).catch(() => undefined);
}

/**
 * Two chains of 15 records; the device pauses after 5 (mid-chain); `between` runs (e.g. a queue
 * stop); both snapshots are taken, the process "dies", a new device restores them and adopts the
 * connection, `after` runs, and the device goes on.
 */
async function heldAcrossRestart(t: Test, between: (d: VmpiTestDriver) => Promise<void>, after: (d: VmpiTestDriver, base: number) => Promise<void>): Promise<void> {
  const { a, d, got, sent } = await heldAfterFive(t, 30);
  await pausedAt(t, d, got, 5, 2, 30);
  await between(d);
  d.harvestTx();
  t.equal(d.txOutstanding, 2, 'still not returned');
  // Through JSON, as the restart document carries it.
  const snap = JSON.parse(JSON.stringify(a.device.snapshot())) as VmpiDeviceSnapshot;
  t.ok(snap.txHeld, 'the snapshot carries the held chain');
  const { saved, fd } = handOver(a.server);
  const base = saved.vrings[1]!.lastAvailIdx;
  const b = serve(t);
  // The new process pauses too, 4 records in (mid-way through what the snapshot carried).
  const roomB = { n: 4 };
  receiver(b.device, got, roomB);
  b.device.restore(snap);
  b.server.adopt(fd, saved);
  await after(d, base);
  await pausedAt(t, d, got, 9, 2, 30); // the new process: 4 records, then paused again
  roomB.n = 1000;
  b.device.resume();
  await allReturned(d, got, 30);
  await sleep(30);
  d.harvestTx();
  same(t, got, sent, 'across the restart');
  t.equal(d.txOutstanding, 0, 'both chains returned');
  t.equal(b.device.stats.fromGuest.sdus, 25, 'the new process delivered the 25 the old one had not');
  // The ring goes on: a later chain.
  const more = { channel: 6, sdu: patternSdu(6, 99, 40) };
  t.ok(d.sendChain(packRecords([more])));
  await until(() => got.length === 31, 'a later chain', 5000);
  same(t, got.slice(30), [more], 'after');
}

t.test('restart with the tx ring running: the resumed ring re-offers the held chain; its first records are not delivered again', async (t) => {
  await heldAcrossRestart(
    t,
    async () => {},
    async () => {},
  );
});

t.test('restart after a queue stop (GET_VRING_BASE) mid-chain: the records waiting are delivered by the new process, then the chain returned', async (t) => {
  await heldAcrossRestart(
    t,
    async (d) => {
      await d.fe.getVringBase(1);
    },
    // What QEMU does on `cont`: the queue starts again at the base GET_VRING_BASE gave.
    async (d, base) => restartTxQueue(d, base),
  );
});

t.test('a queue stop and start in one process mid-chain: the rest delivered once, the chain returned on the new queue', async (t) => {
  const { a, d, got, room, sent } = await heldAfterFive(t, 30);
  const base = await d.fe.getVringBase(1);
  d.harvestTx();
  t.equal(d.txOutstanding, 2, 'not returned at the stop');
  room.n = 1000;
  a.device.resume();
  await restartTxQueue(d, base);
  await allReturned(d, got, 30);
  same(t, got, sent, 'across the stop');
  t.equal(d.txOutstanding, 0, 'both returned');
});

t.test('a stale device snapshot (its chain returned since, as after a crash) is ignored: nothing twice, no used entry made up', async (t) => {
  const { a, d, got, room, sent } = await heldAfterFive(t, 15);
  const stale = JSON.parse(JSON.stringify(a.device.snapshot())) as VmpiDeviceSnapshot;
  t.ok(stale.txHeld, 'held at the snapshot');
  room.n = 1000;
  a.device.resume();
  await until(() => {
    d.harvestTx();
    return got.length === 15 && d.txOutstanding === 0;
  }, 'the rest, the chain returned', 5000);
  const { saved, fd } = handOver(a.server);
  const b = serve(t);
  receiver(b.device, got, { n: 1000 });
  b.device.restore(stale);
  b.server.adopt(fd, saved);
  await up(b.device);
  await sleep(30);
  same(t, got, sent, 'nothing delivered again');
  t.equal(d.tx.usedIdx(), 1, 'one used entry in all: none made up for the chain the guest already has');
  const more = { channel: 6, sdu: patternSdu(6, 99, 40) };
  t.ok(d.sendChain(packRecords([more])));
  await until(() => got.length === 16, 'a later chain', 5000);
  same(t, got.slice(15), [more], 'the ring goes on');
});

t.test('restore: an old snapshot (no txHeld) is a fresh device; a malformed one is refused with a clear error', async (t) => {
  const dev = new VmpiDevice({ vmpiId: 9, maxSduLog2: SDU_LOG2 });
  dev.restore({ version: 1 });
  t.same(dev.snapshot(), { version: 1 }, 'nothing held');
  t.throws(() => dev.restore({ version: 2 } as unknown as VmpiDeviceSnapshot), /version 2 is not supported/);
  t.throws(() => dev.restore({ version: 1, txHeld: { head: 70000, availIdx: 0, records: 'AAAA' } }), /txHeld is malformed/);
  t.throws(() => dev.restore({ version: 1, txHeld: { head: 1, availIdx: 0, records: Buffer.alloc(MAX_SDU + 9).toString('base64') } }), /txHeld is malformed/);
});
