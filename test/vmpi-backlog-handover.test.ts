/**
 * vmpi-backlog-handover.test.ts — a hand-over (upgrade, stop under systemd) loses nothing the
 * device held for the guest (src/vmpi/device.ts snapshot(true)/restore()): the SDUs in its host →
 * guest backlog go to the next process and arrive once, in order, before later ones; the records
 * in the open packed rx chain are given to the guest before the process goes. A routine snapshot
 * carries no backlog (after a crash it would deliver twice what went since), and a malformed
 * backlog is refused whole with an error that says what it expected.
 */
import t, { type Test } from 'tap';
import { patternSdu } from './helpers/pattern.js';
import { MAX_SDU, SDU_LOG2, connect, firstMismatch, handOver, serveDevice, up, type Rec, type Served } from './helpers/vmpi-device-rig.js';
import { until } from './dif/helpers.js';
import { SendResult } from '../src/vmpi/port.js';
import { VmpiDevice, type VmpiDeviceSnapshot } from '../src/vmpi/device.js';

const CH = 6;
const serve = (t: Test): Served => serveDevice(t, 'vmpi-bl-handover-', { vmpiId: 9 });

function same(t: Test, got: readonly Rec[], want: readonly Rec[], what: string): void {
  const bad = firstMismatch(got, want);
  t.equal(bad, -1, `${what}: ${want.length} SDUs exactly once, in order (got ${got.length}, first wrong at ${bad})`);
}

/** The old process goes (snapshot as the restart worker takes it, connection abandoned); a new one resumes it. */
function resume(t: Test, a: Served, snap: VmpiDeviceSnapshot): Served {
  const { saved, fd } = handOver(a.server);
  const b = serve(t);
  b.device.restore(JSON.parse(JSON.stringify(snap)) as VmpiDeviceSnapshot); // through JSON, as the state document
  b.server.adopt(fd, saved);
  return b;
}

t.test('the backlog goes with a hand-over: every SDU once, in order, before the later ones', async (t) => {
  const a = serve(t);
  const d = await connect(t, a.path, { rxPacked: true });
  await up(a.device);
  // No rx buffer posted: everything waits in the backlog.
  const sent: Rec[] = Array.from({ length: 10 }, (_, i) => ({ channel: CH, sdu: patternSdu(CH, i, 100 + 37 * i) }));
  for (const r of sent) t.equal(a.device.send(r.channel, r.sdu), SendResult.Queued, 'queued');
  t.equal(a.device.stats.backlogSdus, 10, '10 in the backlog');
  t.notOk('backlog' in a.device.snapshot(), 'a routine snapshot carries no backlog');
  const snap = a.device.snapshot(true);
  t.type(snap.backlog, 'string', "the hand-over's snapshot carries it");
  const b = resume(t, a, snap);
  t.equal(b.device.restoredBacklog, 10, 'the new device took the 10');
  await up(b.device);
  const later = { channel: CH, sdu: patternSdu(CH, 10, 99) };
  b.device.send(later.channel, later.sdu);
  d.postRx();
  // Held until the worker has saved a state without them (releaseBacklog): nothing goes before.
  await new Promise((r) => setTimeout(r, 50));
  d.pump();
  t.equal(d.received.length, 0, 'the restored backlog waits for releaseBacklog(), and what came after it waits behind it');
  b.device.releaseBacklog();
  await until(() => {
    d.pump();
    return d.received.length >= 11;
  }, '11 SDUs at the guest', 5000).catch(() => undefined);
  same(t, d.received, [...sent, later], 'across the hand-over');
  t.equal(b.device.stats.backlogSdus, 0, 'the backlog emptied');
});

t.test('the open packed rx chain is returned to the guest before the process goes', async (t) => {
  const a = serve(t);
  const d = await connect(t, a.path, { rxPacked: true });
  await up(a.device);
  d.repost = false;
  d.postRx();
  await new Promise((r) => setTimeout(r, 20)); // the device has the buffers (the kick was handled)
  // Three of 2000 B: two fill the first chain, the third opens the second; all in this turn, so
  // the second is still open (its return is deferred) when the snapshot is taken.
  const sent: Rec[] = Array.from({ length: 3 }, (_, i) => ({ channel: CH, sdu: patternSdu(CH, i, 2000) }));
  for (const r of sent) t.equal(a.device.send(r.channel, r.sdu), SendResult.Sent, 'written into a guest buffer');
  const snap = a.device.snapshot(true);
  t.notOk(snap.backlog, 'nothing in the backlog');
  const b = resume(t, a, snap);
  await up(b.device);
  await until(() => {
    d.pump();
    return d.received.length >= 3;
  }, 'the 3 SDUs at the guest', 5000).catch(() => undefined);
  same(t, d.received, sent, 'across the hand-over');
});

t.test('restore: a malformed backlog is refused whole, with what was expected', async (t) => {
  const dev = new VmpiDevice({ vmpiId: 9, maxSduLog2: SDU_LOG2 });
  const rec = (channel: number, len: number, have = len): string => {
    const b = Buffer.alloc(8 + have);
    b.writeUInt32LE(channel, 0);
    b.writeUInt32LE(len, 4);
    return b.toString('base64');
  };
  t.throws(() => dev.restore({ version: 1, backlog: rec(CH, MAX_SDU + 1) }), /backlog is malformed at byte 0 .*max SDU 4096/, 'longer than the max SDU');
  t.throws(() => dev.restore({ version: 1, backlog: rec(CH, 100, 50) }), /backlog is malformed at byte 0/, 'cut short');
  t.throws(() => dev.restore({ version: 1, backlog: Buffer.concat([Buffer.from(rec(CH, 10), 'base64'), Buffer.from([1, 2, 3])]).toString('base64') }), /backlog is malformed at byte 18/, 'a torn header after a good record');
  t.throws(() => dev.restore({ version: 1, backlog: 42 } as unknown as VmpiDeviceSnapshot), /backlog is malformed/, 'not a string');
  t.equal(dev.stats.backlogSdus, 0, 'nothing was queued by the refused ones');
  dev.restore({ version: 1, backlog: rec(CH, 10) + '' });
  t.equal(dev.restoredBacklog, 1, 'a good one is taken');
  t.equal(dev.stats.backlogSdus, 1);
  dev.reset('the driver reset');
  t.equal(dev.stats.backlogSdus, 0, 'a reset drops a held backlog too');
  t.equal(dev.stats.drops.device_reset, 1, 'counted');
});
