/**
 * The IPC API at both ends of a VMPI device under real QEMU 10: `vmpi serve`'s pieces on the host
 * (ShimHvIpcp over a VmpiDevice, IpcDaemon, IpcClient applications) and `vmpi guest` in the VM
 * (GuestVmpiPort, guest-role ShimHvIpcp, IpcDaemon) with applications on the client library.
 *
 * Checks that the guest's applications get the driver file of their flow's channel (datapath
 * 'vmpi_file': SDUs do not cross the guest daemon), that SDUs of 0..4000 bytes cross intact both
 * ways on two flows at once, that a deallocation with SDUs in flight lets the guest application
 * read what arrived and then ends its reads, that a guest application can allocate a flow to
 * a host application, and that a guest application killed with SIGKILL while it holds a flow's
 * file has its flow deallocated at the host (the guest daemon sees its connection go).
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpcClient, type ClientFlow } from '../src/dif/ipc/client.js';
import { IpcDaemon } from '../src/dif/ipc/daemon.js';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { readN } from './helpers/flows.js';
import { Guest, GUEST_DIR, guestUnavailable, hostCondition, nodeScript } from './helpers/guest.js';
import { patternSdu } from './helpers/pattern.js';
import { within } from './ipc/helpers.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`guest IPC test cannot run in CI: ${unavailable}`);

const VMPI_ID = 43;
const DIF = `hv.vmpi-${VMPI_ID}`;
const SIZES = Array.from({ length: 17 }, (_, i) => i * 250);
const HOLD_SDUS = 10;

/** A guest application the test kills (SIGKILL) while it holds a flow to the host's vsink/1. */
const VICTIM_JS = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const f = await c.allocate('${DIF}', 'vsink/1', { src: 'victim/1' });
for (let i = 0; i < 3; i++) await f.send(new Uint8Array(100).fill(i));
console.log('GIPC-VICTIM-UP ' + JSON.stringify({ datapath: f.datapath }));
setInterval(() => {}, 1000);
`;

/** Guest applications: an echo server, a holder that reads only after its flow ended, a client. */
const GUEST_JS = `
import { spawn } from 'node:child_process';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('GIPC-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const difs = await c.listDifs();
const echo = await c.register('${DIF}', 'echo/1');
let echoed = 0;
echo.on('request', async (req) => {
  const f = await req.accept();
  out('ECHO-FLOW', { datapath: f.datapath, maxSdu: f.qos.maxSdu });
  // send(), not write(): write() false means "not sent", so an echo must wait for 'drain'.
  (async () => { for await (const sdu of f) { echoed++; await f.send(sdu); } })().catch(() => {});
});
const hold = await c.register('${DIF}', 'hold/1');
hold.on('request', async (req) => {
  const f = await req.accept();
  out('HOLD-ACCEPTED', { datapath: f.datapath });
  f.once('deallocated', async (reason, cause) => {
    const got = [];
    for (;;) { const sdu = await f.read(); if (sdu === null) break; got.push(sdu.byteLength); }
    out('HOLD', { reason, cause, sizes: got });
  });
});
let victim = null;
const kill = await c.register('${DIF}', 'kill/1');
kill.on('request', async (req) => {
  if (victim === null) {
    victim = spawn(process.execPath, ['--input-type=module', '-e', ${JSON.stringify(VICTIM_JS)}], { stdio: ['ignore', 'inherit', 'inherit'] });
    await req.reject('victim started');
  } else {
    victim.kill('SIGKILL');
    await req.reject('victim killed');
  }
});
const quit = await c.register('${DIF}', 'quit/1');
quit.on('request', async (req) => {
  await req.reject('bye');
  out('QUIT', { echoed });
  setTimeout(() => process.exit(0), 100);
});
out('READY', { difs });
const up = await c.allocate('${DIF}', 'sink/1', { src: 'gclient/1', qos: { maxSdu: 4000 } });
for (let i = 0; i < 20; i++) {
  const b = new Uint8Array(1000);
  for (let k = 0; k < 1000; k++) b[k] = (k + 7 * i + 13) & 0xff;
  await up.send(b);
}
out('SENT', { datapath: up.datapath, n: 20 });
`;

const GUEST_SCRIPT = nodeScript(GUEST_JS, `mkdir -p /run/vmpi
node /opt/vmpi/dist/src/cli.js guest --log-level warn &
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`);

t.test('IPC API in the guest: vmpi guest hands applications the channel file', { skip: unavailable ?? false, timeout: 420_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-gipc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: VMPI_ID });
  const ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 30_000 });
  t.teardown(() => ipcp.close());
  const daemon = new IpcDaemon({ socketPath: join(dir, 'ipc.sock') });
  daemon.addIpcp(ipcp);
  daemon.listen();
  t.teardown(() => daemon.close());
  const app = await IpcClient.connect(daemon.socketPath);
  t.teardown(() => app.close());

  // The host's sink for the guest-initiated flow.
  const sinkGot: Uint8Array[] = [];
  const sink = await app.register(DIF, 'sink/1');
  sink.on('request', (req) => {
    void req.accept().then((f) => f.on('data', (sdu) => sinkGot.push(sdu)));
  });

  const g = new Guest({ sockets: [join(dir, 'vm.sock')], node: true, script: GUEST_SCRIPT, memMb: 768, timeoutMs: 400_000, name: 'vmpi-gipc-test' });
  t.teardown(() => g.kill());
  const ready = await g.waitJson<{ difs: Array<{ name: string; address: number }> }>('GIPC-READY', 240_000);
  t.same(ready.difs, [{ name: DIF, address: VMPI_ID }], 'vmpi guest offers the shim DIF of /dev/vmpi0');

  // Two flows at once from host applications to the guest's echo application.
  const [a, b] = await Promise.all([
    app.allocate(DIF, 'echo/1', { src: 'hclient/1', qos: { maxSdu: 4000 } }),
    app.allocate(DIF, 'echo/1', { src: 'hclient/2', qos: { maxSdu: 4000 } }),
  ]);
  t.equal(a.datapath, 'ring', 'host applications: the daemon socketpair and a shared-memory ring (the default)');
  const first = await g.waitJson<{ datapath: string; maxSdu: number }>('GIPC-ECHO-FLOW', 60_000);
  t.same(first, { datapath: 'vmpi_file', maxSdu: 4000 }, 'the guest application got the driver file of its channel');
  for (const f of [a, b]) for (const [i, size] of SIZES.entries()) await f.send(patternSdu(i, i, size));
  for (const [name, f] of [['first', a], ['second', b]] as const) {
    const echoes = await readN(f, SIZES.length, 120_000);
    const bad = echoes.filter((sdu, i) => Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(i, i, SIZES[i]!))) !== 0).length;
    t.equal(bad, 0, `${name} flow: ${SIZES.length} SDUs of 0..4000 bytes echoed back intact and in order`);
  }

  // Guest → host: the guest client's SDUs reach the host sink.
  const sent = await g.waitJson<{ datapath: string; n: number }>('GIPC-SENT', 120_000);
  t.equal(sent.datapath, 'vmpi_file', 'the guest client writes to the driver file too');
  await hostCondition(() => sinkGot.length >= 20, 'the 20 SDUs of the guest client at the host sink', 30_000);
  t.equal(sinkGot.length, 20, 'host sink got the 20 SDUs');
  t.ok(sinkGot.every((sdu, i) => sdu.byteLength === 1000 && sdu.every((v, k) => v === ((k + 7 * i + 13) & 0xff))), 'guest → host SDUs intact');

  // Deallocation with SDUs in flight: the guest application reads them after the end, then null.
  const mark = g.mark;
  const h = await app.allocate(DIF, 'hold/1', { src: 'hclient/3' });
  await g.waitJson('GIPC-HOLD-ACCEPTED', 60_000, mark);
  for (let i = 0; i < HOLD_SDUS; i++) await h.send(patternSdu(i, 50 + i, 100 + i));
  h.deallocate('host done');
  const held = await g.waitJson<{ reason: string; cause: string; sizes: number[] }>('GIPC-HOLD', 60_000, mark);
  t.same(held.sizes, Array.from({ length: HOLD_SDUS }, (_, i) => 100 + i), 'every SDU sent before the deallocation was read, in order, then the reads ended');
  t.equal(held.cause, 'peer');
  t.equal(held.reason, 'host done', "the host application's reason, as given");

  // A guest application killed while it holds a flow's file: the guest daemon sees its
  // connection close and deallocates the flow; the host application is told by the peer.
  const vsink = await app.register(DIF, 'vsink/1');
  const victimFlow = new Promise<ClientFlow>((resolve) => vsink.on('request', (req) => void req.accept().then(resolve)));
  t.match(await app.allocate(DIF, 'kill/1').catch((e: unknown) => e), { peerReason: 'victim started' });
  t.same(await g.waitJson('GIPC-VICTIM-UP', 60_000), { datapath: 'vmpi_file' }, 'the victim holds its flow\'s driver file');
  const vf = await within(victimFlow, "the victim's flow accepted at the host", 60_000);
  t.equal((await readN(vf, 3, 30_000)).length, 3, "the victim's SDUs arrived");
  const vEnd = new Promise<string>((resolve) => vf.once('deallocated', (_reason, cause) => resolve(cause)));
  t.match(await app.allocate(DIF, 'kill/1').catch((e: unknown) => e), { peerReason: 'victim killed' });
  t.equal(await Promise.race([vEnd, new Promise<string>((r) => setTimeout(() => r('still allocated after 30 s'), 30_000))]), 'peer', 'SIGKILL of the guest application: its flow is deallocated at the host');

  // The channel file of a deallocated flow is shut: a new flow works (channels get reused).
  a.deallocate('done');
  const c = await app.allocate(DIF, 'echo/1', { src: 'hclient/4' });
  c.write(patternSdu(9, 9, 777));
  const [echo] = await readN(c, 1, 60_000);
  t.same(Buffer.from(echo!), Buffer.from(patternSdu(9, 9, 777)), 'a flow allocated after deallocations works');

  const quit = await app.allocate(DIF, 'quit/1').catch((e: unknown) => e);
  t.match(quit, { code: 'rejected', peerReason: 'bye' }, 'quit request answered');
  const q = await g.waitJson<{ echoed: number }>('GIPC-QUIT', 60_000);
  t.equal(q.echoed, 2 * SIZES.length + 1, 'the guest echo application saw every SDU');
  t.equal(device.stats.drops.unbound_channel, 0, 'no SDU went to an unbound channel at the host');
  await within(g.done, 'the guest to power down after its applications quit', 60_000);
});
