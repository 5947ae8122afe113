/**
 * vmpi-echo.test.ts — the echo responder (src/vmpi/echo.ts) on a real VmpiDevice over a real
 * vhost-user connection, with this process as the guest driver (test/frontend: memfd guest
 * memory, split rings): SDUs echoed unchanged on several channels, backpressure without loss (a
 * guest that posts no rx buffers: the responder stops taking frames, the guest's tx ring fills,
 * everything comes back once it posts them), SDUs the backlog refused kept and sent after
 * 'drain', the wiring through `vmpi serve`'s start-up (echoChannels), and the config checks
 * (echoChannels in a file, --echo-channel).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiTestDriver } from './helpers/vmpi-driver.js';
import { patternSdu } from './helpers/pattern.js';
import { until } from './dif/helpers.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { SendResult, VmpiDevice } from '../src/vmpi/device.js';
import { EchoError, EchoResponder } from '../src/vmpi/echo.js';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { ConfigError, ECHO_CHANNEL_MIN, mergeServeOptions, parseConfig, type ServeFlags } from '../src/ops/config.js';
import { startServing } from '../src/ops/serve.js';
import { logger } from '../src/sys/log.js';

const QUEUE_SIZE = 64;
const SDU_LOG2 = 12;
const MAX_SDU = 2 ** SDU_LOG2;

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-echo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** This process as the VMPI guest driver: frames out on the tx queue, rx buffers in. */
type TestDriver = VmpiTestDriver;

async function connectDriver(t: Test, path: string, opts: { eventIdx?: boolean } = {}): Promise<TestDriver> {
  const d = await VmpiTestDriver.connect(path, { queueSize: QUEUE_SIZE, maxSdu: MAX_SDU, eventIdx: opts.eventIdx });
  t.teardown(() => d.close());
  return d;
}

/** Pump `d` until `cond()` holds (bounded). */
async function pumpUntil(d: TestDriver, cond: () => boolean, what: string, ms = 5000): Promise<void> {
  await until(
    () => {
      d.pump();
      return cond();
    },
    what,
    ms,
  );
}

/** Send `sdus` from the driver, waiting for ring room (bounded). */
async function sendAll(d: TestDriver, sdus: { channel: number; sdu: Uint8Array }[], ms = 5000): Promise<void> {
  let i = 0;
  await pumpUntil(
    d,
    () => {
      while (i < sdus.length && d.send(sdus[i]!.channel, sdus[i]!.sdu)) i++;
      return i === sdus.length;
    },
    `${sdus.length} SDUs written by the guest`,
    ms,
  );
}

/** A VmpiDevice with its own server (so the test chooses the backlog bounds). */
function serveDevice(t: Test, dir: string, opts: { backlogMaxSdus?: number } = {}): { device: VmpiDevice; path: string } {
  const device = new VmpiDevice({ vmpiId: 9, maxSduLog2: SDU_LOG2, ...opts });
  const path = join(dir, 'echo.sock');
  const server = new VhostUserServer({ path, createDevice: () => device, maxConnections: 1 });
  server.listen();
  t.teardown(() => server.close());
  return { device, path };
}

const stream = (channels: number[], n: number, size = 100) => Array.from({ length: n }, (_, i) => ({ channel: channels[i % channels.length]!, sdu: patternSdu(channels[i % channels.length]!, i, size) }));

function sameSdus(t: Test, got: { channel: number; sdu: Uint8Array }[], want: { channel: number; sdu: Uint8Array }[], msg: string): void {
  const bad = want.findIndex((w, i) => got[i] === undefined || got[i]!.channel !== w.channel || Buffer.compare(Buffer.from(got[i]!.sdu), Buffer.from(w.sdu)) !== 0);
  t.equal(got.length, want.length, `${msg}: count`);
  t.equal(bad, -1, `${msg}: every SDU unchanged, on its channel, in order${bad >= 0 ? ` (first difference at ${bad})` : ''}`);
}

t.test('through vmpi serve (echoChannels): every SDU comes back unchanged on its channel', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'vm.sock');
  const flags: ServeFlags = { sockets: [path], vmpiIds: [3], listenFds: [], maxSduLog2: SDU_LOG2, echoChannels: [ECHO_CHANNEL_MIN, 5000], noMetrics: true };
  const plan = mergeServeOptions(undefined, flags);
  t.same(plan.devices[0]!.echoChannels, [ECHO_CHANNEL_MIN, 5000], '--echo-channel reaches the flag device');
  const serving = await startServing(plan, { logger: logger.child({ test: 'echo' }), ipc: null });
  t.teardown(() => serving.close());
  const echo = serving.echoes.get(3)!;
  t.ok(echo, 'serve started an echo responder for the device');
  const device = serving.host.device(3)!;
  t.ok(device.isBound(0) && device.isBound(ECHO_CHANNEL_MIN) && device.isBound(5000), 'the shim DIF has channel 0, the echo its channels');

  const d = await connectDriver(t, path);
  await until(() => device.isUp, 'device up');
  d.postRx();
  const sdus = stream([ECHO_CHANNEL_MIN, 5000], 300, 1000);
  sdus.splice(7, 0, { channel: 77, sdu: new Uint8Array([1, 2, 3]) }); // not an echo channel
  await sendAll(d, sdus);
  await pumpUntil(d, () => d.received.length >= 300, '300 echoes');
  sameSdus(t, d.received, sdus.filter((s) => s.channel !== 77), 'echoes');
  t.equal(echo.stats.echoed, 300, 'echoed counted');
  t.equal(echo.stats.bytes, 300 * 1000, 'bytes counted');
  t.equal(echo.stats.dropped, 0, 'nothing dropped');
  t.equal(device.stats.drops.unbound_channel, 1, 'a channel that is not an echo channel is not echoed (unbound)');
  t.equal(device.stats.drops.backlog_full, 0);
  t.notOk(echo.pausing, 'not paused at the end');

  // An empty SDU and one of the largest size.
  d.received.length = 0;
  const edge = [
    { channel: 5000, sdu: new Uint8Array(0) },
    { channel: ECHO_CHANNEL_MIN, sdu: patternSdu(ECHO_CHANNEL_MIN, 1, MAX_SDU) },
  ];
  await sendAll(d, edge);
  await pumpUntil(d, () => d.received.length >= 2, 'two edge-size echoes');
  sameSdus(t, d.received, edge, 'empty and max-size SDUs');

  await serving.close();
  t.notOk(device.isBound(ECHO_CHANNEL_MIN), 'closing the server unbinds the echo channels');
});

t.test('backpressure: a guest that posts no rx buffers loses nothing; the responder pauses, then resumes', async (t) => {
  const dir = tmp(t);
  const { device, path } = serveDevice(t, dir);
  const echo = new EchoResponder(device, [ECHO_CHANNEL_MIN]);
  t.teardown(() => echo.close());
  const d = await connectDriver(t, path);
  await until(() => device.isUp, 'device up');

  // No rx buffers: the first echo waits in the device's backlog (Queued), and the responder
  // stops taking frames, so the rest stay in the guest's tx ring.
  const sdus = stream([ECHO_CHANNEL_MIN], 200, 500);
  let i = 0;
  while (i < sdus.length && d.send(sdus[i]!.channel, sdus[i]!.sdu)) i++;
  t.equal(i, QUEUE_SIZE, 'the tx ring took a ring full');
  await until(() => echo.pausing, 'the responder paused the device');
  await new Promise((r) => setTimeout(r, 100));
  d.harvestTx();
  t.equal(echo.stats.echoed, 1, 'one SDU echoed into the backlog');
  t.equal(echo.stats.queued, 1, 'Queued counted');
  t.equal(device.stats.backlogSdus, 1, 'the backlog holds one SDU, not the stream');
  t.equal(d.txOutstanding, QUEUE_SIZE - 1, 'the other frames stay in the guest tx ring (the guest is held back)');
  t.ok(d.send(sdus[i]!.channel, sdus[i]!.sdu), 'the one slot the echoed frame freed takes one more');
  i++;
  await new Promise((r) => setTimeout(r, 50));
  t.equal(d.txOutstanding, QUEUE_SIZE, 'a paused device takes nothing, kick or not');
  t.equal(d.send(sdus[i]!.channel, sdus[i]!.sdu), false, 'the guest cannot write more: its ring is full');
  t.equal(device.stats.drops.backlog_full + device.stats.drops.unbound_channel, 0, 'nothing dropped');

  // The guest posts buffers: everything comes back, in order.
  d.postRx();
  await sendAll(d, sdus.slice(i), 10_000);
  await pumpUntil(d, () => d.received.length >= sdus.length, `${sdus.length} echoes`, 10_000);
  sameSdus(t, d.received, sdus, 'after the stall');
  t.ok(echo.stats.pauses >= 1, `paused ${echo.stats.pauses} time(s)`);
  t.equal(echo.stats.refused, 0, 'never refused (the responder stops before the backlog fills)');
  t.equal(echo.stats.dropped, 0);
  await pumpUntil(d, () => !echo.pausing, 'resumed');
});

t.test('refused by a full backlog: the SDU is kept and sent after drain, in order', async (t) => {
  const dir = tmp(t);
  const { device, path } = serveDevice(t, dir, { backlogMaxSdus: 4 });
  const echo = new EchoResponder(device, [ECHO_CHANNEL_MIN]);
  t.teardown(() => echo.close());
  const d = await connectDriver(t, path);
  await until(() => device.isUp, 'device up');

  // Another sender fills the backlog (no rx buffers yet), so the echo finds it full.
  const other = stream([7], 4, 50);
  for (const s of other) t.equal(device.send(s.channel, s.sdu), SendResult.Queued);
  t.equal(device.send(7, new Uint8Array(1)), SendResult.Full, 'the backlog is full');
  const sdus = stream([ECHO_CHANNEL_MIN], 20, 300);
  for (const s of sdus.slice(0, 5)) t.ok(d.send(s.channel, s.sdu));
  await until(() => echo.stats.refused >= 1, 'the echo was refused');
  t.equal(echo.holding, 1, 'the responder holds the refused SDU');
  t.ok(echo.pausing, 'and stopped taking frames');
  t.equal(echo.stats.echoed, 0);

  d.postRx();
  await sendAll(d, sdus.slice(5));
  await pumpUntil(d, () => d.received.length >= other.length + sdus.length, 'every SDU');
  sameSdus(t, d.received, [...other, ...sdus], 'the backlog first, then every echo');
  t.equal(echo.stats.echoed, sdus.length);
  t.equal(echo.stats.dropped, 0, 'nothing dropped');
  t.equal(echo.holding, 0);
});

t.test('the guest driver goes away while the responder holds SDUs: dropped and counted, the device resumed', async (t) => {
  const dir = tmp(t);
  const { device, path } = serveDevice(t, dir, { backlogMaxSdus: 1 });
  const echo = new EchoResponder(device, [ECHO_CHANNEL_MIN]);
  t.teardown(() => echo.close());
  const d = await connectDriver(t, path);
  await until(() => device.isUp, 'device up');
  t.equal(device.send(7, new Uint8Array(1)), SendResult.Queued);
  t.ok(d.send(ECHO_CHANNEL_MIN, new Uint8Array(10)));
  await until(() => echo.holding === 1, 'held');
  device.reset('test: driver reset');
  t.equal(echo.holding, 0, 'nothing held for a driver that is gone');
  t.equal(echo.stats.dropped, 1, 'counted as dropped');
  t.notOk(echo.pausing, 'device resumed');
});

t.test('a burst of send()s in one turn of the event loop signals the guest once, after the burst', async (t) => {
  const dir = tmp(t);
  const { device, path } = serveDevice(t, dir);
  // Without VIRTIO_RING_F_EVENT_IDX the driver wants every interrupt (no used_event to hold them
  // back), so only the device's own batching keeps a burst from costing a call per SDU.
  const d = await connectDriver(t, path, { eventIdx: false });
  await until(() => device.isUp, 'device up');
  d.postRx();
  const calls0 = device.stats.calls;
  for (let i = 0; i < 10; i++) t.equal(device.send(5, new Uint8Array([i])), SendResult.Sent, `SDU ${i} written into a guest buffer`);
  await until(() => device.stats.calls > calls0, 'the call for the burst');
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  t.equal(device.stats.calls - calls0, 1, 'one call for the ten SDUs');
  await pumpUntil(d, () => d.received.length >= 10, 'ten SDUs in the guest');
  t.same(
    d.received.map((r) => [r.channel, r.sdu[0]]),
    Array.from({ length: 10 }, (_, i) => [5, i]),
    'every SDU arrived, in order',
  );
});

t.test('binding errors: typed, and nothing half-bound', async (t) => {
  const device = new VmpiDevice({ vmpiId: 4 });
  const ipcp = new ShimHvIpcp({ port: device, role: 'host' });
  t.teardown(() => ipcp.close('test'));
  t.throws(() => new EchoResponder(device, [ECHO_CHANNEL_MIN, 0]), { name: 'EchoError', code: 'channel_bound', message: /channel 0 of vmpi-4 is already bound.*control channel/ });
  t.notOk(device.isBound(ECHO_CHANNEL_MIN), 'no channel of a refused responder stays bound');
  t.throws(() => new EchoResponder(device, [-1]), { code: 'bad_channel', message: 'echo: channel -1 is not a u32 channel id' });
  t.throws(() => new EchoResponder(device, [2 ** 32]), EchoError);
  const e = new EchoResponder(device, [ECHO_CHANNEL_MIN, ECHO_CHANNEL_MIN]);
  t.same(e.channels, [ECHO_CHANNEL_MIN], 'a channel listed twice is bound once');
  e.close();
  e.close();
  t.notOk(device.isBound(ECHO_CHANNEL_MIN), 'close() unbinds (idempotent)');
});

t.test('config: echoChannels in a file and --echo-channel are checked against the shim DIF channel space', async (t) => {
  const problems = (yaml: string): string[] => {
    try {
      parseConfig(yaml, { format: 'yaml' });
      return [];
    } catch (e) {
      return e instanceof ConfigError ? e.problems : [String(e)];
    }
  };
  const c = parseConfig(`devices:\n  - socket: /a\n    echoChannels: [${ECHO_CHANNEL_MIN}, 70000]\n  - socket: /b\n`, { format: 'yaml' });
  t.same(c.devices[0]!.echoChannels, [ECHO_CHANNEL_MIN, 70000], 'echoChannels reach the device');
  t.notOk('echoChannels' in c.devices[1]!, 'absent when not set');
  t.notOk('echoChannels' in parseConfig('devices:\n  - socket: /a\n    echoChannels: []\n', { format: 'yaml' }).devices[0]!, 'an empty list is no list');
  t.same(problems('devices:\n  - socket: /a\n    echoChannels: [0, 5, 1023, 2000, 2000]\n'), [
    "devices[0].echoChannels[0]: channel 0 is the shim DIF's control channel; an echo channel must be 1024..4294967295",
    "devices[0].echoChannels[1]: channel 5 is in the shim DIF's flow channels 1..1023; an echo channel must be 1024..4294967295",
    "devices[0].echoChannels[2]: channel 1023 is in the shim DIF's flow channels 1..1023; an echo channel must be 1024..4294967295",
    'devices[0].echoChannels[4]: channel 2000 is already listed at devices[0].echoChannels[3]; list each echo channel once',
  ]);
  t.same(problems(`devices:\n  - socket: /a\n    echoChannels: [4294967296, "x"]\n`), ['devices[0].echoChannels[0]: 4294967296 is above the maximum 4294967295', 'devices[0].echoChannels[1]: "x" is a string, expected an integer']);
  t.same(problems('devices:\n  - socket: /a\n    echoChannels: 1024\n'), ['devices[0].echoChannels: 1024 is an integer, expected a list']);

  const flags = (echoChannels: number[], sockets = ['/run/x.sock']): ServeFlags => ({ sockets, vmpiIds: [], listenFds: [], echoChannels });
  t.throws(() => mergeServeOptions(undefined, flags([0])), { code: 'ERR_VMPI_CONFIG', message: "--echo-channel[0]: channel 0 is the shim DIF's control channel; an echo channel must be 1024..4294967295" });
  t.throws(() => mergeServeOptions(parseConfig('devices:\n  - socket: /a\n', { format: 'yaml' }), flags([1024], [])), { message: /--echo-channel: applies to the devices given by --socket\/--listen-fd, and there are none/ });
  const plan = mergeServeOptions(parseConfig('devices:\n  - socket: /a\n', { format: 'yaml' }), flags([1024, 1025]));
  t.same(
    plan.devices.map((d) => d.echoChannels),
    [undefined, [1024, 1025]],
    'flag echo channels go to the flag devices, not the file devices',
  );
});
