/**
 * The normal IPC process (src/dif/normal/ipcp.ts) assembled over real shim-hv IPC processes:
 * VM1 —shim— host —shim— VM2, the host enrolling both VMs and relaying between them. Flows by
 * name across the relay (reliable and flow-control cubes, SDUs 0..4000 bytes both ways, two at
 * once), a host application to a VM, allocation to an unknown name, and the IPC API's Flow
 * semantics (read(), 'data', iteration, deallocation with reason and cause).
 */
import t, { type Test } from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Flow } from '../../../src/dif/api.js';
import { DifError } from '../../../src/dif/api.js';
import { PCI_LEN } from '../../../src/dif/normal/pci.js';
import { patternSdu } from '../../helpers/pattern.js';
import { until } from '../helpers.js';
import { acceptAll, knows, topology, within } from './ipcp-harness.js';

/** Write SDUs of 0..max bytes (step) on `f`, waiting for 'drain' when refused. */
async function sendAll(f: Flow, tag: number, max: number, step: number): Promise<number> {
  let n = 0;
  for (let size = 0; size <= max; size += step) await f.send(patternSdu(tag, n++, size));
  return n;
}

/** Read `count` SDUs from `f` and check each is the pattern `sendAll` wrote. */
async function expectAll(t: Test, f: Flow, tag: number, max: number, step: number): Promise<void> {
  let n = 0;
  let bad = 0;
  for (let size = 0; size <= max; size += step) {
    const got = await within(f.read(), 5000, `SDU ${n} (size ${size}) read`);
    if (got === null) {
      t.fail(`flow ended after ${n} SDUs: ${f.deallocationReason}`);
      return;
    }
    const want = patternSdu(tag, n++, size);
    if (got.length !== want.length || !got.every((b, i) => b === want[i])) bad++;
  }
  t.equal(bad, 0, `tag ${tag}: ${n} SDUs of 0..${max} B intact and in order`);
}

t.test('the IPCP max SDU is the lower max SDU minus the PCI', async (t) => {
  const { host, vm1 } = await topology(t, { maxSdu: 9000 });
  t.equal(vm1.maxSdu, 9000 - PCI_LEN);
  t.equal(host.maxSdu, 9000 - PCI_LEN);
  t.equal(vm1.difName, 'n.DIF');
  t.not(vm1.address, 0);
  t.not(vm1.address, host.address);
});

t.test('VM1 → VM2 through the host: two flows at once, reliable and flow-control, 0..4000 B both ways', async (t) => {
  const { vm1, vm2, host } = await topology(t, { capacity: 64 });
  const server = acceptAll(vm2, 'server');
  await until(() => knows(vm1, 'server'), 'the directory at VM1 knows server', 3000);
  const [a, b] = await within(Promise.all([vm1.allocateFlow('client/1', 'server', { reliable: true }), vm1.allocateFlow('client/2', 'server', { inOrder: true })]), 5000, 'two allocations');
  t.same(a.qos, { reliable: true, inOrder: true, maxSdu: vm1.maxSdu });
  t.same(b.qos, { reliable: false, inOrder: true, maxSdu: vm1.maxSdu });
  t.equal(a.state, 'allocated');
  t.same(a.remoteApp, { processName: 'server' });
  const sa = await within(server.next(), 2000, 'first accepted flow');
  const sb = await within(server.next(), 2000, 'second accepted flow');
  t.same(sa.remoteApp.processName, 'client');
  const step = 1;
  const max = 4000;
  await within(
    Promise.all([
      sendAll(a, 1, max, step),
      sendAll(b, 2, max, step),
      sendAll(sa, 3, max, step),
      sendAll(sb, 4, max, step),
      expectAll(t, sa, 1, max, step),
      expectAll(t, sb, 2, max, step),
      expectAll(t, a, 3, max, step),
      expectAll(t, b, 4, max, step),
    ]),
    15000,
    'SDUs both ways on both flows',
  );
  t.ok((host.snapshot().rmt as { stats: { relayed: number } }).stats.relayed > 0, 'the host relayed the PDUs');
  t.ok(a.stats.txRefused + b.stats.txRefused + sa.stats.txRefused + sb.stats.txRefused > 0, 'write() said false and drain followed (backpressure exercised)');
  t.equal(a.stats.rxQueueDrops + b.stats.rxQueueDrops, 0, 'nothing dropped for the reader');
  t.equal(vm1.flows().length, 2);
  // Deallocation: the other end learns it with cause 'peer'.
  const ended = new Promise<[string, string]>((resolve) => sa.once('deallocated', (reason, cause) => resolve([reason, cause])));
  a.deallocate('done here');
  const [reason, cause] = await within(ended, 3000, 'the peer sees the deallocation');
  t.equal(cause, 'peer');
  t.match(reason, /done here/);
  t.equal(await within(sa.read(), 2000, 'the read after the deallocation ends'), null, 'reads end after the deallocation');
  t.throws(() => a.write(new Uint8Array(1)), { code: 'flow_deallocated' });
  t.equal(b.state, 'allocated', 'the other flow carries on');
});

t.test('a host application reaches a VM application; data event and async iteration', async (t) => {
  const { host, vm2 } = await topology(t);
  const got: number[] = [];
  vm2.register('echo', (req) => {
    const f = req.accept();
    f.on('data', (sdu) => {
      got.push(sdu.length);
      void f.send(sdu);
    });
  });
  await until(() => knows(host, 'echo'), 'the host knows echo', 3000);
  const f = await within(host.allocateFlow('host-app', 'echo', { reliable: true }), 5000, 'host → VM allocation');
  for (let i = 0; i < 20; i++) t.ok(f.write(patternSdu(9, i, 100 * i)) || (await new Promise<void>((r) => f.once('drain', () => r())), true));
  const back: number[] = [];
  for await (const sdu of f) {
    back.push(sdu.length);
    if (back.length === 20) f.deallocate('enough');
  }
  t.same(back, got, 'every SDU echoed, in order');
  t.equal(back.length, 20);
  t.equal(f.deallocationReason, 'enough');
});

t.test('allocation to an unknown name gets a negative answer with a reason', async (t) => {
  const { vm1, vm2 } = await topology(t);
  const err = await vm1.allocateFlow('client', 'nobody').catch((e: unknown) => e);
  t.ok(err instanceof DifError);
  t.equal((err as DifError).code, 'rejected');
  t.equal((err as DifError).peerReason, 'unknown application');
  // Registered in the directory, but refused by the application.
  vm2.register('picky', (req) => req.reject('not today'));
  await until(() => knows(vm1, 'picky'), 'VM1 knows picky', 3000);
  const err2 = await within(vm1.allocateFlow('client', 'picky').catch((e: unknown) => e), 5000, 'refused allocation');
  t.equal((err2 as DifError).code, 'rejected');
  t.equal((err2 as DifError).peerReason, 'not today');
  const err3 = await vm1.allocateFlow('client', 'picky', { maxSdu: 1 << 20 }).catch((e: unknown) => e);
  t.equal((err3 as DifError).code, 'invalid_qos');
});

t.test('the normal DIF never imports the VMPI layer or the shim DIF', async (t) => {
  const dir = join(dirname(fileURLToPath(import.meta.url)), '../../../src/dif/normal');
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.ts')) files.push(join(d, e.name));
    }
  };
  walk(dir);
  t.ok(files.length > 10, 'found the normal DIF sources');
  const bad = files.filter((f) => /from\s+['"][^'"]*(\/vmpi\/|\/shim-hv\/)/.test(readFileSync(f, 'utf8')) || /import\(\s*['"][^'"]*(\/vmpi\/|\/shim-hv\/)/.test(readFileSync(f, 'utf8')));
  t.same(bad, [], 'no file of src/dif/normal/ imports src/vmpi/ or src/dif/shim-hv/');
});
