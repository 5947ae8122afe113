/**
 * vmpi-batch-rx.test.ts — batch delivery on the receive side (issue #15): a channel bound with
 * VmpiDevice.bindBatch() gets the consecutive records of one packed tx chain in ONE call (a
 * PortSduBatch over the device's scratch, no call or view per SDU), split where another channel's
 * record, the chain's end, a malformed record or the per-turn budget comes; one-frame chains (an
 * old driver) come as batches of one; bind() and bindBatch() replace each other; a batch handler
 * that pauses the device stops the chain after its batch (the rest waits, in order). And the shim
 * IPC process on such a port hands a batch to the flow as one 'sdus' batch (deliverBatch).
 * And the per-turn budget counts bytes: a guest writing large SDUs as fast as it can gets about
 * 512 KiB delivered per turn of the event loop, not 4096 SDUs (16 MiB of 4000-byte ones).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiTestDriver, packRecords } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import { until } from './dif/helpers.js';
import { createPortPair } from './dif/port-pair.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { VmpiDevice } from '../src/vmpi/device.js';
import type { PortSduBatch, SduBatchHandler } from '../src/vmpi/port.js';
import { SduRun } from '../src/vmpi/sdu-run.js';
import { shimHvSinkPair } from './helpers/shim-hv-pair.js';
import type { SduBatch } from '../src/dif/api.js';


interface Call {
  channel: number;
  sdus: Uint8Array[];
}

async function setup(t: Test, txPacked: boolean, maxSduLog2 = 12): Promise<{ device: VmpiDevice; d: VmpiTestDriver }> {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-batchrx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const device = new VmpiDevice({ vmpiId: 9, maxSduLog2 });
  const path = join(dir, 'vm.sock');
  const server = new VhostUserServer({ path, createDevice: () => device, maxConnections: 1 });
  server.listen();
  t.teardown(() => server.close());
  const d = await VmpiTestDriver.connect(path, { queueSize: 64, maxSdu: 2 ** maxSduLog2, txPacked });
  t.teardown(() => d.close());
  await until(() => device.isUp, 'device up', 5000);
  return { device, d };
}

/** Bind `channels` with bindBatch, recording each call (with copies of its SDUs). */
function collectBatches(device: VmpiDevice, channels: number[], each?: (b: PortSduBatch) => void): Call[] {
  const calls: Call[] = [];
  const h: SduBatchHandler = (b, channel) => {
    const sdus: Uint8Array[] = [];
    let bytes = 0;
    for (let i = 0; i < b.count; i++) {
      sdus.push(b.buffer.slice(b.offset(i), b.offset(i) + b.length(i)));
      bytes += b.length(i);
    }
    if (bytes !== b.bytes) throw new Error(`batch bytes ${b.bytes} != ${bytes}`);
    calls.push({ channel, sdus });
    each?.(b);
  };
  for (const ch of channels) device.bindBatch(ch, h);
  return calls;
}

async function sendChains(d: VmpiTestDriver, chains: Uint8Array[]): Promise<void> {
  let i = 0;
  await until(
    () => {
      while (i < chains.length && d.sendChain(chains[i]!)) i++;
      d.harvestTx();
      return i === chains.length && d.txOutstanding === 0;
    },
    `${chains.length} chains taken`,
    10_000,
  );
}

t.test('bindBatch: one call per run of a channel in a packed chain, in order, bytes intact', async (t) => {
  const { device, d } = await setup(t, true);
  t.equal(device.txPacked, true);
  const calls = collectBatches(device, [1, 2]);
  const run = (ch: number, n: number, base: number): { channel: number; sdu: Uint8Array }[] =>
    Array.from({ length: n }, (_, i) => ({ channel: ch, sdu: patternSdu(ch, base + i, 10 + ((base + i) * 37) % 200) }));
  const chainA = [...run(1, 20, 0), ...run(2, 5, 100), ...run(1, 3, 200)];
  const chainB = run(1, 30, 300);
  await sendChains(d, [packRecords(chainA), packRecords(chainB)]);
  await until(() => calls.reduce((n, c) => n + c.sdus.length, 0) === 58, '58 SDUs');
  t.same(
    calls.map((c) => [c.channel, c.sdus.length]),
    [
      [1, 20],
      [2, 5],
      [1, 3],
      [1, 30],
    ],
    'four calls: one per run of a channel in a chain (not one per SDU)',
  );
  const flat = calls.flatMap((c) => c.sdus);
  const want = [...chainA, ...chainB].map((r) => r.sdu);
  t.ok(
    flat.every((s, i) => Buffer.compare(s, want[i]!) === 0),
    'every SDU intact and in order',
  );
  t.equal(device.stats.fromGuest.sdus, 58, 'fromGuest counts SDUs');
  t.equal(device.stats.fromGuest.bytes, want.reduce((n, s) => n + s.byteLength, 0));
});

t.test('bindBatch: a malformed record ends the run (the records before it delivered); unbound records are dropped, counted', async (t) => {
  const { device, d } = await setup(t, true);
  const calls = collectBatches(device, [4]);
  const good = [0, 1, 2, 3].map((i) => ({ channel: 4, sdu: patternSdu(4, i, 100) }));
  const body = packRecords([...good, { channel: 5, sdu: patternSdu(5, 0, 9) }, ...good]);
  const start = (body.byteLength + 7) & ~7;
  const c = new Uint8Array(start + 8 + 16);
  c.set(body);
  const v = new DataView(c.buffer);
  v.setUint32(start, 4, true);
  v.setUint32(start + 4, 60, true); // runs past the chain
  await sendChains(d, [c]);
  await until(() => calls.length === 2, 'two runs');
  t.same(
    calls.map((x) => x.sdus.length),
    [4, 4],
    'the unbound record splits the runs',
  );
  t.equal(device.stats.drops.unbound_channel, 1);
  t.equal(device.stats.drops.malformed, 1, 'the malformed tail counted once');
});

t.test('bindBatch: one frame per chain (an old driver) comes as batches of one; bind() and bindBatch() replace each other', async (t) => {
  const { device, d } = await setup(t, false);
  t.equal(device.txPacked, false);
  const calls = collectBatches(device, [3]);
  for (let i = 0; i < 5; i++) t.ok(d.send(3, patternSdu(3, i, 50)));
  await until(() => calls.length === 5, 'five frames');
  t.ok(calls.every((c) => c.sdus.length === 1 && c.channel === 3), 'batches of one');
  const single: Uint8Array[] = [];
  device.bind(3, (sdu) => single.push(sdu.slice()));
  t.ok(device.isBound(3));
  t.ok(d.send(3, patternSdu(3, 9, 50)));
  await until(() => single.length === 1, 'to the one-SDU handler');
  t.equal(calls.length, 5, 'bind() replaced the batch handler');
  device.unbind(3);
  t.notOk(device.isBound(3), 'unbind() ends either');
});

t.test('bindBatch: a handler that pauses stops the chain after its batch; the rest comes on resume, in order', async (t) => {
  const { device, d } = await setup(t, true);
  let pauseNext = true;
  const calls = collectBatches(device, [1, 2], () => {
    if (pauseNext) {
      pauseNext = false;
      device.pause();
    }
  });
  const recs = [
    ...Array.from({ length: 6 }, (_, i) => ({ channel: 1, sdu: patternSdu(1, i, 40) })),
    ...Array.from({ length: 4 }, (_, i) => ({ channel: 2, sdu: patternSdu(2, i, 40) })),
  ];
  t.ok(d.sendChain(packRecords(recs)));
  await until(() => calls.length === 1, 'first run');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(calls.length, 1, 'paused after the first batch: the rest waits');
  d.harvestTx();
  t.equal(d.txOutstanding, 1, 'the chain is not returned meanwhile');
  device.resume();
  await until(() => calls.length === 2, 'the rest');
  t.same(
    calls.map((c) => [c.channel, c.sdus.length]),
    [
      [1, 6],
      [2, 4],
    ],
  );
  await until(() => (d.harvestTx(), d.txOutstanding === 0), 'chain returned');
});

t.test("shim IPC process on a batch port: a port batch of N SDUs reaches the flow's 'sdus' listener as one batch of N", async (t) => {
  const pair = createPortPair();
  // The host port also offers bindBatch (as VmpiDevice does): the test hands it batches itself.
  const batchHandlers = new Map<number, SduBatchHandler>();
  const hostPort = pair.host as typeof pair.host & { bindBatch?(ch: number, h: SduBatchHandler): void };
  hostPort.bindBatch = (ch, h) => {
    batchHandlers.set(ch, h);
    pair.host.bind(ch, (sdu) => {
      const one = new SduRun(sdu, 1);
      one.add(0, sdu.byteLength);
      h(one, ch);
    });
  };
  const { hostFlow: f } = await shimHvSinkPair(t, hostPort, pair.guest);
  const ch = f.channel;
  t.ok(batchHandlers.has(ch), "the shim IPC process bound the flow's channel with bindBatch");
  const seen: number[] = [];
  const firsts: number[] = [];
  let sameBuffer = true;
  const buf = new Uint8Array(64 * 100);
  f.on('sdus', (b: SduBatch) => {
    seen.push(b.count);
    if (b.buffer !== buf) sameBuffer = false;
    for (let i = 0; i < b.count; i++) firsts.push(b.buffer[b.offset(i)]!);
  });
  const run = new SduRun(buf, 100);
  for (let i = 0; i < 100; i++) {
    buf.fill(i, i * 64, i * 64 + 64);
    run.add(i * 64, i % 2 ? 64 : 17);
  }
  batchHandlers.get(ch)!(run, ch);
  t.same(seen, [100], 'one call of the listener for the 100 SDUs');
  t.ok(sameBuffer, "the listener's batch is over the port's bytes: no copy");
  t.same(firsts, Array.from({ length: 100 }, (_, i) => i), 'in order');
  t.equal(f.stats.rxSdus, 100, 'counted');
  // A flow with no listener queues them (copies) under its budget, in order, for read().
  f.removeAllListeners('sdus');
  run.clear();
  for (let i = 0; i < 3; i++) run.add(i * 64, 5);
  batchHandlers.get(ch)!(run, ch);
  buf.fill(0xee);
  const r0 = await f.read();
  t.same(Array.from(r0!), [0, 0, 0, 0, 0], 'queued as a copy');
  t.equal(f.stats.rxSdus, 103);
});

t.test('the per-turn budget counts bytes: 4000-byte SDUs come about 512 KiB per turn of the event loop, all of them, in order', async (t) => {
  const { device, d } = await setup(t, true, 14);
  // 60 chains of 4 records of 4000 bytes (960 kB), all on the ring before the device looks.
  const recs = Array.from({ length: 60 * 4 }, (_, i) => ({ channel: 1, sdu: patternSdu(1, i, 4000) }));
  const chains: Uint8Array[] = [];
  for (let c = 0; c < 60; c++) chains.push(packRecords(recs.slice(c * 4, c * 4 + 4)));
  const got: Uint8Array[] = [];
  const perTurn: number[] = [];
  let turnStart = -1;
  device.bindBatch(1, (b) => {
    if (turnStart < 0) {
      turnStart = got.length;
      setImmediate(() => {
        perTurn.push(got.length - turnStart);
        turnStart = -1;
      });
    }
    for (let i = 0; i < b.count; i++) got.push(b.sdu(i).slice());
  });
  device.pause();
  for (const c of chains) t.ok(d.sendChain(c), 'on the ring');
  device.resume();
  await until(() => (d.harvestTx(), got.length === recs.length), 'every SDU', 10_000);
  await new Promise((r) => setImmediate(r));
  t.ok(perTurn.length >= 2, `spread over ${perTurn.length} turns (${perTurn.join(', ')})`);
  t.ok(Math.max(...perTurn) <= 160, `at most 160 SDUs of 4000 bytes (about 512 KiB) per turn: ${Math.max(...perTurn)}`);
  t.ok(
    got.every((s, i) => Buffer.compare(s, recs[i]!.sdu) === 0),
    'all in order, intact',
  );
  await until(() => (d.harvestTx(), d.txOutstanding === 0), 'chains returned');
});
