/**
 * The normal DIF across a back-end restart, under real QEMU 10 (TCG): one `vmpi serve` (keeper
 * mode) with two VMPI devices running the enroller n.DIF.host, two Node guests running `vmpi
 * guest --normal-dif n.DIF`; VM2 echoes, VM1 keeps SDUs moving on a flow to VM2's echo (relayed
 * by the host). The worker is killed with SIGKILL. The normal DIF's IPC process is not carried
 * across a restart (its EFCP and routing state live in the dead worker), so what is asserted is
 * that nothing hangs and the DIF heals by itself: VM1's flow ends with a cause naming the
 * restart (its N-1 flow over the shim DIF ends with the shim's restart cause), both members
 * enroll again, and VM1's next allocation to VM2's echo carries SDUs again, within bounds; a
 * host application can use the DIF after the restart too.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { IpcClient } from '../src/dif/ipc/client.js';
import { readN } from './helpers/flows.js';
import { GUEST_DIR, guestUnavailable } from './helpers/guest.js';
import { twoVmDif } from './helpers/serve.js';
import { workerPid } from './helpers/restart.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`normal DIF restart test cannot run in CI: ${unavailable}`);

const DIF = 'n.DIF';
/** VM1's flow must end (not hang) within this after the kill. */
const END_BOUND_MS = 30_000;
/** VM1 must carry SDUs on a new flow within this after its flow ended. */
const HEAL_BOUND_MS = 90_000;

const PRELUDE = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('NDIF-' + tag + ' ' + JSON.stringify(v));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
`;

const VM2_JS = `${PRELUDE}
const reg = await c.register('${DIF}', 'echo');
reg.on('request', async (req) => {
  let f;
  try { f = await req.accept(); } catch { return; }
  try { for await (const sdu of f) await f.send(sdu); } catch {}
});
out('VM2-READY', {});
setInterval(() => {}, 1000);
`;

/** VM1: flows to VM2's echo, one after the other; each carries SDUs until it ends. */
const VM1_JS = `${PRELUDE}
out('VM1-UP', {});
let k = 0;
for (;;) {
  let f = null;
  const t0 = Date.now();
  while (f === null) {
    try { f = await c.allocate('${DIF}', 'echo', { src: 'vm1app/1', qos: { reliable: true, maxSdu: 1000 }, timeoutMs: 10000 }); }
    catch (e) { await sleep(500); }
  }
  k++;
  let ended = null;
  f.on('deallocated', (reason, cause) => { ended = { reason, cause }; });
  let good = 0;
  try {
    for (;;) {
      for (let i = 0; i < 8; i++) await f.send(new Uint8Array(100).fill(good & 0xff));
      for (let i = 0; i < 8; i++) {
        const sdu = await Promise.race([f.read(), sleep(20000).then(() => 'timeout')]);
        if (sdu === null || sdu === 'timeout') throw new Error(String(sdu));
      }
      good += 8;
      if (good === 200) out('VM1-FLOWING', { k, allocMs: Date.now() - t0 });
      await sleep(5);
    }
  } catch (e) {
    await sleep(200);
    out('VM1-ENDED', { k, good, error: e.message, ...(ended ?? {}) });
  }
}
`;

t.test('normal DIF: the worker killed with SIGKILL; VM1 flow ends with a cause, the DIF heals', { skip: unavailable ?? false, timeout: 400_000 }, async (t) => {
  const { srv, ipcSocket, vm1, vm2 } = await twoVmDif(t, { name: 'vmpi-ndif-restart', dif: DIF, ids: [81, 82], vm1Js: VM1_JS, vm2Js: VM2_JS, timeoutMs: 380_000 });
  await vm2.waitJson('NDIF-VM2-READY', 180_000);
  const first = await vm1.waitJson<{ k: number }>('NDIF-VM1-FLOWING', 200_000);
  t.equal(first.k, 1, "VM1's first flow to VM2's echo carries SDUs");

  const worker = workerPid(srv.child.pid!);
  const mark = vm1.mark;
  const killedAt = Date.now();
  process.kill(worker, 'SIGKILL');
  const ended = await vm1.waitJson<{ k: number; reason?: string; cause?: string; error: string }>('NDIF-VM1-ENDED', END_BOUND_MS, mark);
  const endMs = Date.now() - killedAt;
  t.equal(ended.k, 1, `VM1's flow ended ${endMs} ms after the kill (bound ${END_BOUND_MS} ms): ${JSON.stringify(ended)}`);
  t.match(String(ended.reason ?? ended.error), /restart|lost|unreachable|down/i, 'with a reason that says why');
  const again = await vm1.waitJson<{ k: number; allocMs: number }>('NDIF-VM1-FLOWING', HEAL_BOUND_MS, mark);
  t.equal(again.k, 2, `VM1's next flow carries SDUs again, ${Date.now() - killedAt} ms after the kill`);
  t.comment(`normal DIF across a restart: flow ended after ${endMs} ms, a new flow flowed after ${Date.now() - killedAt} ms`);

  const app = await IpcClient.connect(ipcSocket);
  t.teardown(() => app.close());
  const f = await app.allocate(DIF, 'echo', { src: 'hostapp/1', qos: { reliable: true, maxSdu: 1000 }, timeoutMs: 20_000 });
  for (let i = 0; i < 8; i++) await f.send(new Uint8Array(50).fill(i));
  const echoes = await readN(f, 8, 20_000);
  t.equal(echoes.length, 8, 'a host application reaches VM2 over the normal DIF after the restart');
  t.notMatch(srv.log(), /"level":50[^\n]*uncaught/, 'no uncaught error in serve');
});
