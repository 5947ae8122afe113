/**
 * inspect.test.ts — the IPC daemon's read-only look inside (list_ipcps, inspect_dif) with real
 * IPC processes: the normal DIF's topology of ipcp-harness.ts (host enroller relaying between two
 * VM members over real shim DIF pairs), its host side hosted by a real daemon. Exact list, the
 * enroller's neighbours, forwarding table, members, directory and flows as a client reads them;
 * the shim's port and channels; an unknown DIF refused naming the DIFs there; a state bigger than
 * one control message cut to fit (the session goes on), and a malformed request refused.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpcClient } from '../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { DifError, type IpcProcess } from '../../src/dif/api.js';
import { until } from './helpers.js';
import { DIF, acceptAll, knows, topology, within } from '../dif/normal/ipcp-harness.js';

type Obj = Record<string, unknown>;

/** A real IPC daemon offering `ipcps` on a fresh socket, and a client connected to it (both closed at the end of `t`). */
async function daemonClient(t: Test, ipcps: IpcProcess[]): Promise<IpcClient> {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-inspect-'));
  const daemon = new IpcDaemon({ socketPath: join(dir, 'ipc.sock') });
  for (const i of ipcps) daemon.addIpcp(i);
  daemon.listen();
  const c = await IpcClient.connect(daemon.socketPath);
  t.teardown(() => {
    c.close();
    daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return c;
}

t.test('list_ipcps and inspect_dif show the host side of n.DIF', async (t) => {
  const { host, vm1, vm2, shims } = await topology(t);
  const c = await daemonClient(t, [host, shims[0]!, shims[1]!]);

  t.same(await within(c.listIpcps(), 3000, 'list_ipcps answered'), {
    ipcps: [
      { dif: 'hv.vmpi-1', type: 'shim-hv', name: 'hv.vmpi-1.host', address: 1 },
      { dif: 'hv.vmpi-2', type: 'shim-hv', name: 'hv.vmpi-2.host', address: 2 },
      { dif: DIF, type: 'normal', name: 'host.n', address: host.address },
    ],
  }, 'every hosted IPC process, sorted by DIF, nothing truncated');

  // A flow from VM1 to an application on the host, and a name registered at VM2.
  const server = acceptAll(host, 'host-app');
  await until(() => knows(vm1, 'host-app'), 'VM1 knows host-app', 3000);
  vm2.register('vm2-app', (r) => r.reject('no'));
  await until(() => knows(host, 'vm2-app'), 'the host knows vm2-app', 3000);
  const f = await within(vm1.allocateFlow('vm1-client', 'host-app'), 5000, 'flow VM1 → host');
  await server.next();

  const d = await within(c.inspectDif(DIF), 3000, 'inspect_dif answered');
  t.same({ dif: d.dif, type: d.type, name: d.name, address: d.address, truncated: d.truncated }, { dif: DIF, type: 'normal', name: 'host.n', address: 1, truncated: undefined });
  const st = d.state;
  t.equal(st.role, 'enroller');
  const members = (st.enroller as { members: Obj[] }).members.map((m) => [m.name, m.address, m.state]);
  t.same(members.sort(), [['vm1.n', vm1.address, 'enrolled'], ['vm2.n', vm2.address, 'enrolled']].sort(), 'the enroller\'s members');
  const lower = st.lowerFlows as Obj[];
  t.same(lower.map((l) => [l.dif, l.remoteApp, l.neighbour]).sort(), [['hv.vmpi-1', 'vm1.n', vm1.address], ['hv.vmpi-2', 'vm2.n', vm2.address]].sort(), 'one N-1 flow per shim DIF, each to its member');
  const portTo = (addr: number): unknown => lower.find((l) => l.neighbour === addr)!.id;
  const neighbours = (st.routing as { neighbours: Obj[] }).neighbours.map((n) => [n.addr, n.portId]);
  t.same(neighbours, [[vm1.address, portTo(vm1.address)], [vm2.address, portTo(vm2.address)]], 'routing\'s neighbours, over those N-1 flows');
  t.same((st.rmt as { forwarding: unknown }).forwarding, [[vm1.address, portTo(vm1.address)], [vm2.address, portTo(vm2.address)]], 'the forwarding table: each VM over its own N-1 flow');
  const entries = (st.directory as { entries: { app: { processName: string }; address: number; removed: boolean }[] }).entries;
  t.same(entries.map((e) => [e.app.processName, e.address, e.removed]).sort(), [['host-app', 1, false], ['vm2-app', vm2.address, false]], 'the directory');
  const flows = (st.flowAllocator as { flows: Obj[] }).flows;
  t.equal(flows.length, 1, 'one flow at the host');
  t.same([(flows[0]!.srcApp as Obj).processName, (flows[0]!.dstApp as Obj).processName, flows[0]!.remoteAddr, flows[0]!.initiator], ['vm1-client', 'host-app', vm1.address, false]);

  const shim = await within(c.inspectDif('hv.vmpi-1'), 3000, 'inspect_dif of the shim answered');
  t.same([shim.type, shim.name, shim.address], ['shim-hv', 'hv.vmpi-1.host', 1]);
  t.same([shim.state.vmpiId, shim.state.port, shim.state.role], [1, 'up', 'host']);
  t.same(shim.state.registered, ['host.n'], 'the enroller\'s name is registered in the shim DIF');
  const ch = shim.state.channels as Obj[];
  t.same(ch.map((x) => [x.state, x.localApp, x.remoteApp, typeof x.channel, typeof x.portId]), [['allocated', 'host.n', 'vm1.n', 'number', 'number']], 'the N-1 flow\'s channel');

  const err = await c.inspectDif('nope.DIF').catch((e: unknown) => e);
  t.ok(err instanceof DifError, 'an unknown DIF is refused');
  t.equal((err as DifError).code, 'unknown_dif');
  t.equal((err as DifError).message, `no DIF named "nope.DIF" here (${DIF}, hv.vmpi-1, hv.vmpi-2)`, 'naming the DIFs there');
  f.deallocate('done');
});

t.test('a state bigger than one control message is cut to fit, and the session goes on', async (t) => {
  const { host } = await topology(t);
  const c = await daemonClient(t, [host]);
  // ~1000 names of 200 characters: the directory alone is several times 64 KiB of JSON.
  const N = 1000;
  for (let i = 0; i < N; i++) host.register(`app-${i}-${'x'.repeat(200)}`, (r) => r.reject('no'));
  const d = await within(c.inspectDif(DIF), 5000, 'inspect_dif of a big state answered');
  const cut = d.truncated?.find((x) => x.path === 'directory.entries');
  t.ok(cut, `the directory's entries are reported cut (${JSON.stringify(d.truncated)})`);
  t.equal(cut?.total, N);
  t.equal((d.state.directory as { entries: unknown[] }).entries.length, cut?.shown, 'as many entries as the cut says');
  t.ok(cut !== undefined && cut.shown < N);
  t.equal((await within(c.listIpcps(), 3000, 'list_ipcps after the big answer')).ipcps.length, 1, 'the same session still answers');
});

t.test('inspect_dif without a DIF name is malformed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-inspect-bad-'));
  const daemon = new IpcDaemon({ socketPath: join(dir, 'ipc.sock') });
  daemon.listen();
  t.teardown(() => {
    daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const c = await IpcClient.connect(daemon.socketPath);
  t.teardown(() => c.close());
  const err = await within(c.request({ op: 'inspect_dif' }), 3000, 'answer to a bad inspect_dif').catch((e: unknown) => e);
  t.ok(err instanceof DifError);
  t.same([(err as DifError).code, (err as DifError).message], ['malformed', 'missing field "dif"']);
  t.same(await within(c.listIpcps(), 3000, 'list_ipcps answered'), { ipcps: [] }, 'an empty daemon lists nothing, on the same session');
});
