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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiTestDriver, packRecords } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import { until } from './dif/helpers.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { Req } from '../src/vhost-user/protocol.js';
import { stateFromJSON } from '../src/vhost-user/state.js';
import { VmpiDevice, type VmpiDeviceSnapshot } from '../src/vmpi/device.js';

const SDU_LOG2 = 12;
const MAX_SDU = 2 ** SDU_LOG2;

interface Rec {
  channel: number;
  sdu: Uint8Array;
}

function serve(t: Test): { device: VmpiDevice; server: VhostUserServer; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-txheld-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const device = new VmpiDevice({ vmpiId: 9, maxSduLog2: SDU_LOG2 });
  const path = join(dir, 'vm.sock');
  const server = new VhostUserServer({ path, createDevice: () => device, maxConnections: 1 });
  server.listen();
  t.teardown(() => server.close());
  return { device, server, path };
}

/** A receiver with room for `room.n` SDUs: it takes each SDU it is handed, then pauses the device. */
function receiver(device: VmpiDevice, got: Rec[], room: { n: number }): void {
  device.bind(6, (sdu, channel) => {
    got.push({ channel, sdu: Uint8Array.prototype.slice.call(sdu) });
    if (--room.n <= 0) device.pause();
  });
}

function same(t: Test, got: Rec[], want: Rec[], what: string): void {
  let bad = -1;
  for (let i = 0; i < Math.max(got.length, want.length) && bad < 0; i++) {
    const g = got[i];
    const w = want[i];
    if (!g || !w || g.channel !== w.channel || Buffer.compare(g.sdu, w.sdu) !== 0) bad = i;
  }
  t.equal(bad, -1, `${what}: ${want.length} SDUs exactly once, in order (got ${got.length}, first wrong at ${bad})`);
}

/**
 * Two chains of 15 records; the device pauses after 5 (mid-chain); `between` runs (e.g. a queue
 * stop); both snapshots are taken, the process "dies", a new device restores them and adopts the
 * connection, `after` runs, and the device goes on.
 */
async function heldAcrossRestart(t: Test, between: (d: VmpiTestDriver) => Promise<void>, after: (d: VmpiTestDriver, base: number) => Promise<void>): Promise<void> {
  const a = serve(t);
  const d = await VmpiTestDriver.connect(a.path, { queueSize: 64, maxSdu: MAX_SDU, txPacked: true });
  t.teardown(() => d.close());
  await until(() => a.device.isUp, 'device up', 5000);
  const got: Rec[] = [];
  receiver(a.device, got, { n: 5 });
  const sent = Array.from({ length: 30 }, (_, i) => ({ channel: 6, sdu: patternSdu(6, i, 100 + i) }));
  t.ok(d.sendChain(packRecords(sent.slice(0, 15))));
  t.ok(d.sendChain(packRecords(sent.slice(15))));
  await until(() => got.length === 5, 'the first 5', 5000);
  await new Promise((r) => setTimeout(r, 30));
  d.harvestTx();
  t.equal(got.length, 5, 'paused mid-chain');
  t.equal(d.txOutstanding, 2, 'the held chain is not returned');
  await between(d);
  d.harvestTx();
  t.equal(d.txOutstanding, 2, 'still not returned');
  const [conn] = [...a.server.connections];
  const saved = stateFromJSON(conn!.snapshot());
  // Through JSON, as the restart document carries it.
  const snap = JSON.parse(JSON.stringify(a.device.snapshot())) as VmpiDeviceSnapshot;
  t.ok(snap.txHeld, 'the snapshot carries the held chain');
  const base = saved.vrings[1]!.lastAvailIdx;
  const fd = conn!.socketFd;
  conn!.abandon();
  const b = serve(t);
  // The new process pauses too, 4 records in (mid-way through what the snapshot carried).
  const roomB = { n: 4 };
  receiver(b.device, got, roomB);
  b.device.restore(snap);
  b.server.adopt(fd, saved);
  await after(d, base);
  await until(() => got.length === 9, 'the new process: 4 records, then paused', 5000);
  await new Promise((r) => setTimeout(r, 30));
  d.harvestTx();
  t.equal(got.length, 9, 'paused again in the new process');
  t.equal(d.txOutstanding, 2, 'the held chain still not returned');
  roomB.n = 1000;
  b.device.resume();
  await until(
    () => {
      d.harvestTx();
      return got.length >= 30 && d.txOutstanding === 0;
    },
    'all 30 delivered, both chains returned',
    5000,
  ).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 30));
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
    async (d, base) => {
      // What QEMU does on `cont`: the queue starts again at the base GET_VRING_BASE gave.
      await d.fe.setVringState(Req.SET_VRING_BASE, 1, base);
      await d.fe.setVringFd(Req.SET_VRING_ERR, 1, d.tx.errFd);
      await d.fe.setVringFd(Req.SET_VRING_CALL, 1, d.tx.callFd);
      await d.fe.setVringFd(Req.SET_VRING_KICK, 1, d.tx.kickFd);
    },
  );
});

t.test('a queue stop and start in one process mid-chain: the rest delivered once, the chain returned on the new queue', async (t) => {
  const a = serve(t);
  const d = await VmpiTestDriver.connect(a.path, { queueSize: 64, maxSdu: MAX_SDU, txPacked: true });
  t.teardown(() => d.close());
  await until(() => a.device.isUp, 'device up', 5000);
  const got: Rec[] = [];
  const room = { n: 5 };
  receiver(a.device, got, room);
  const sent = Array.from({ length: 30 }, (_, i) => ({ channel: 6, sdu: patternSdu(6, i, 100 + i) }));
  t.ok(d.sendChain(packRecords(sent.slice(0, 15))));
  t.ok(d.sendChain(packRecords(sent.slice(15))));
  await until(() => got.length === 5, 'the first 5', 5000);
  const base = await d.fe.getVringBase(1);
  d.harvestTx();
  t.equal(d.txOutstanding, 2, 'not returned at the stop');
  room.n = 1000;
  a.device.resume();
  await d.fe.setVringState(Req.SET_VRING_BASE, 1, base);
  await d.fe.setVringFd(Req.SET_VRING_ERR, 1, d.tx.errFd);
  await d.fe.setVringFd(Req.SET_VRING_CALL, 1, d.tx.callFd);
  await d.fe.setVringFd(Req.SET_VRING_KICK, 1, d.tx.kickFd);
  await until(
    () => {
      d.harvestTx();
      return got.length >= 30 && d.txOutstanding === 0;
    },
    'all 30, both chains returned',
    5000,
  ).catch(() => undefined);
  same(t, got, sent, 'across the stop');
  t.equal(d.txOutstanding, 0, 'both returned');
});

t.test('a stale device snapshot (its chain returned since, as after a crash) is ignored: nothing twice, no used entry made up', async (t) => {
  const a = serve(t);
  const d = await VmpiTestDriver.connect(a.path, { queueSize: 64, maxSdu: MAX_SDU, txPacked: true });
  t.teardown(() => d.close());
  await until(() => a.device.isUp, 'device up', 5000);
  const got: Rec[] = [];
  const room = { n: 5 };
  receiver(a.device, got, room);
  const sent = Array.from({ length: 15 }, (_, i) => ({ channel: 6, sdu: patternSdu(6, i, 100 + i) }));
  t.ok(d.sendChain(packRecords(sent)));
  await until(() => got.length === 5, 'the first 5', 5000);
  const stale = JSON.parse(JSON.stringify(a.device.snapshot())) as VmpiDeviceSnapshot;
  t.ok(stale.txHeld, 'held at the snapshot');
  room.n = 1000;
  a.device.resume();
  await until(() => {
    d.harvestTx();
    return got.length === 15 && d.txOutstanding === 0;
  }, 'the rest, the chain returned', 5000);
  const [conn] = [...a.server.connections];
  const saved = stateFromJSON(conn!.snapshot());
  const fd = conn!.socketFd;
  conn!.abandon();
  const b = serve(t);
  receiver(b.device, got, { n: 1000 });
  b.device.restore(stale);
  b.server.adopt(fd, saved);
  await until(() => b.device.isUp, 'resumed', 5000);
  await new Promise((r) => setTimeout(r, 30));
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
