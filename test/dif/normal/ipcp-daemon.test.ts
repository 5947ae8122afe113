/**
 * The normal IPC process served by the IPC daemon unchanged (daemon.addIpcp): an application on
 * "VM1" (a client of VM1's daemon) reaches an application on the host (a client of the host's
 * daemon) by name through n.DIF, SDUs both ways, and an unknown name gets a refusal with a reason.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpcClient } from '../../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../../src/dif/ipc/daemon.js';
import { DifError } from '../../../src/dif/api.js';
import { until } from '../helpers.js';
import { DIF, knows, topology, within } from './ipcp-harness.js';

t.test('clients of two daemons talk through n.DIF', async (t) => {
  const { host, vm1 } = await topology(t);
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-normal-ipc-'));
  const hostDaemon = new IpcDaemon({ socketPath: join(dir, 'host.sock') });
  const vmDaemon = new IpcDaemon({ socketPath: join(dir, 'vm1.sock') });
  hostDaemon.addIpcp(host);
  vmDaemon.addIpcp(vm1);
  hostDaemon.listen();
  vmDaemon.listen();
  const hc = await IpcClient.connect(hostDaemon.socketPath);
  const vc = await IpcClient.connect(vmDaemon.socketPath);
  t.teardown(() => {
    hc.close();
    vc.close();
    hostDaemon.close();
    vmDaemon.close();
    rmSync(dir, { recursive: true, force: true });
  });
  t.ok((await vc.listDifs()).some((d) => d.name === DIF && d.address === vm1.address), 'VM1 daemon lists n.DIF with its address');
  const reg = await hc.register(DIF, 'host-server');
  await until(() => knows(vm1, 'host-server'), 'VM1 knows host-server', 3000);
  const accepted = (async () => {
    for await (const req of reg) return req.accept();
    throw new Error('registration ended');
  })();
  const f = await within(vc.allocate(DIF, 'host-server', { src: 'vm-client', qos: { reliable: true } }), 5000, 'allocation through the daemon');
  const g = await within(accepted, 3000, 'accepted at the host');
  const sdus = [0, 1, 1000, 4000].map((n) => Uint8Array.from({ length: n }, (_, i) => (i + n) & 0xff));
  for (const s of sdus) await f.send(s);
  for (const s of sdus) t.same(await within(g.read(), 3000, 'SDU at the host'), s, `${s.length} B VM → host`);
  for (const s of sdus) await g.send(s);
  for (const s of sdus) t.same(await within(f.read(), 3000, 'SDU at the VM'), s, `${s.length} B host → VM`);
  const err = await vc.allocate(DIF, 'nobody').catch((e: unknown) => e);
  t.ok(err instanceof DifError);
  t.equal((err as DifError).code, 'rejected');
  t.equal((err as DifError).peerReason, 'unknown application');
  f.deallocate('bye');
  await within(new Promise((r) => g.once('deallocated', r)), 3000, 'the host end ends');
});
