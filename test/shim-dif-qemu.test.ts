/**
 * The shim DIF for hypervisors end to end under real QEMU 10: a ShimHvIpcp on the host over a
 * VmpiDevice, its peer in the guest on Node over /dev/vmpi0 (GuestVmpiPort), the same TypeScript
 * on both ends. An app registered in the guest accepts flows allocated by a host app; SDUs of
 * 0..4000 bytes cross both ways intact on 2 flows at once; a guest app allocates a flow to a host
 * app; deallocation frees the channel; an unknown application is rejected with its reason.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DifError, type Flow } from '../src/dif/api.js';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { readN } from './helpers/flows.js';
import { Guest, GUEST_DIR, guestUnavailable, hostCondition, nodeScript } from './helpers/guest.js';
import { patternSdu } from './helpers/pattern.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`shim DIF guest test cannot run in CI: ${unavailable}`);

const SIZES = Array.from({ length: 17 }, (_, i) => i * 250);

/** The guest side: an echo app, and a client that allocates a flow to the host's sink. */
const GUEST_JS = `
import { GuestVmpiPort } from '/opt/vmpi/dist/src/vmpi/guest-port.js';
import { ShimHvIpcp } from '/opt/vmpi/dist/src/dif/shim-hv/ipcp.js';
const out = (tag, v) => console.log('SHIM-' + tag + ' ' + JSON.stringify(v));
const port = new GuestVmpiPort(0);
const ipcp = new ShimHvIpcp({ port, role: 'guest' });
let echoed = 0;
ipcp.register('echo/1', (req) => {
  const flow = req.accept();
  flow.on('data', (sdu) => { echoed++; flow.write(sdu); });
});
ipcp.register('quit/1', (req) => { req.reject('bye'); out('QUIT', { echoed, flows: ipcp.flows().length }); setTimeout(() => process.exit(0), 100); });
out('READY', { difName: ipcp.difName, address: ipcp.address });
// Guest-initiated flow to the host's sink: 20 SDUs of 1000 bytes.
const flow = await ipcp.allocateFlow('client/1', 'sink/1', { maxSdu: 4000 });
for (let i = 0; i < 20; i++) {
  const b = new Uint8Array(1000);
  for (let k = 0; k < 1000; k++) b[k] = (k + 7 * i + 13) & 0xff;
  await flow.send(b);
}
out('SENT', { channel: flow.channel, n: 20 });
`;

const GUEST_SCRIPT = nodeScript(GUEST_JS);


t.test('shim DIF: host and guest apps talk over a VMPI device', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-shim-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const device = host.addDevice({ socketPath: join(dir, 'vm.sock'), vmpiId: 41 });
  const ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 30_000 });

  // The host's sink app for the guest-initiated flow.
  const sinkGot: Uint8Array[] = [];
  let sinkFlow: Flow | undefined;
  ipcp.register('sink/1', (req) => {
    sinkFlow = req.accept();
    sinkFlow.on('data', (sdu) => sinkGot.push(sdu));
  });

  const g = new Guest({ sockets: [join(dir, 'vm.sock')], node: true, script: GUEST_SCRIPT, memMb: 768, timeoutMs: 380_000, name: 'vmpi-shim-test' });
  t.teardown(() => g.kill());
  const ready = await g.waitJson('SHIM-READY', 240_000);
  t.equal(ready.difName, 'hv.vmpi-41', 'both ends name the shim DIF after the VMPI-id');
  t.equal(ready.address, 41, 'the address in the shim DIF is the VMPI-id');

  // Two flows at once from host apps to the guest's echo app.
  const [a, b] = await Promise.all([ipcp.allocateFlow('client/1', 'echo/1'), ipcp.allocateFlow('client/2', 'echo/1')]);
  t.equal(a.state, 'allocated');
  t.not((a as unknown as { channel: number }).channel, (b as unknown as { channel: number }).channel, 'each flow has its own channel');
  for (const f of [a, b]) for (const [i, size] of SIZES.entries()) f.write(patternSdu(i, i, size));
  for (const [name, f] of [['first', a], ['second', b]] as const) {
    const echoes = await readN(f, SIZES.length, 120_000);
    const bad = echoes.filter((sdu, i) => Buffer.compare(Buffer.from(sdu), Buffer.from(patternSdu(i, i, SIZES[i]!))) !== 0).length;
    t.equal(bad, 0, `${name} flow: ${SIZES.length} SDUs of 0..4000 bytes echoed back intact and in order`);
  }

  // The guest-initiated flow reached the host's sink.
  await g.waitJson('SHIM-SENT', 120_000);
  await hostCondition(() => sinkGot.length >= 20, 'the 20 SDUs of the guest app at the host sink', 30_000);
  t.equal(sinkGot.length, 20, 'host sink got the 20 SDUs the guest app sent');
  t.ok(sinkGot.every((sdu, i) => sdu.byteLength === 1000 && sdu.every((v, k) => v === ((k + 7 * i + 13) & 0xff))), 'guest -> host SDUs intact');
  t.equal(sinkFlow?.remoteApp.processName, 'client', 'the sink sees the guest app as the remote application');

  // Unknown application: rejected with the peer's reason.
  const err = await ipcp.allocateFlow('client/3', 'nobody/1').catch((e: unknown) => e);
  t.ok(err instanceof DifError && err.code === 'rejected', 'allocation to an unknown application is rejected');
  t.match((err as DifError).peerReason ?? '', /unknown application/);

  // Deallocation frees the channel at both ends: the flow count drops and a new flow works.
  const before = ipcp.flows().length;
  a.deallocate('test done');
  t.equal(a.state, 'deallocated');
  t.equal(ipcp.flows().length, before - 1, 'the deallocated flow is gone');
  const c = await ipcp.allocateFlow('client/4', 'echo/1');
  c.write(patternSdu(9, 9, 777));
  const [echo] = await readN(c, 1, 60_000);
  t.same(Buffer.from(echo!), Buffer.from(patternSdu(9, 9, 777)), 'a flow allocated after deallocation works');

  const quit = await ipcp.allocateFlow('client/5', 'quit/1').catch((e: unknown) => e);
  t.ok(quit instanceof DifError, 'quit request answered');
  const q = await g.waitJson('SHIM-QUIT', 60_000);
  t.ok(Number(q.echoed) >= 2 * SIZES.length + 1, `the guest echo app saw every SDU (${String(q.echoed)})`);
  t.equal(device.stats.drops.unbound_channel, 0, 'no SDU went to an unbound channel');
  await g.done;
});
