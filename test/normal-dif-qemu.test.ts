/**
 * The normal DIF end to end under real QEMU 10 (TCG): one `vmpi serve` process with two VMPI
 * devices and `normal: { dif: n.DIF }` in its config runs the enroller n.DIF.host over both
 * devices' shim DIFs; two Node guests each run `vmpi guest --normal-dif n.DIF` (a member that
 * enrolls through its shim DIF) and an application on the client library.
 *
 * VM2's application registers "echo" in n.DIF and echoes. VM1's application allocates two flows
 * to "echo" through n.DIF at once (the host relays: VM1 and VM2 are neighbours of the host only),
 * one with the reliable QoS cube and one with the flow-control cube, sends SDUs of 0..4000 bytes
 * on both and checks every echo, then reports on the console. Then a host application (client
 * library on serve's IPC socket) reaches VM2's echo over n.DIF as well.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { IpcClient } from '../src/dif/ipc/client.js';
import { readN } from './helpers/flows.js';
import { GUEST_DIR, guestUnavailable } from './helpers/guest.js';
import { twoVmDif } from './helpers/serve.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`normal DIF guest test cannot run in CI: ${unavailable}`);

const DIF = 'n.DIF';
const VM1_ID = 61;
const VM2_ID = 62;
const SIZES = [0, 1, 2, 7, 8, 100, 255, 256, 1000, 1500, 2048, 3000, 3999, 4000];
/** Then a burst per flow: more SDUs than the EFCP credit (2048), so the window must open again. */
const BURST = { n: 2200, size: 1400 };
const SEQ = [...SIZES, ...Array<number>(BURST.n).fill(BURST.size)];

/** SDU `i` of flow `f`, `n` bytes; the same source text runs in the guests (hence the eval). */
const PATTERN = `(f, i, n) => { const b = new Uint8Array(n); for (let k = 0; k < n; k++) b[k] = (k + 7 * i + 31 * f) & 0xff; return b; }`;
const pattern = eval(PATTERN) as (f: number, i: number, n: number) => Uint8Array;
/** What an n.DIF inspection counted that is not zero (RMT drops by reason, RMT ports, EFCP totals): the guests run it too. */
const COUNTED = `(s) => { const nz = (o) => { if (typeof o !== 'object' || o === null) return o; const r = Array.isArray(o) ? [] : {}; for (const [k, v] of Object.entries(o)) { const w = nz(v); if (w !== 0 && w !== false && !(typeof w === 'object' && w !== null && Object.keys(w).length === 0)) r[k] = w; } return r; }; return nz({ rmt: s.rmt?.stats, ports: s.rmt?.ports, efcp: s.efcp }); }`;
const counted = eval(COUNTED) as (s: unknown) => unknown;
/**
 * In a guest: the VMPI driver's rx drops that are not zero, per device and per channel, read by
 * the same sysfs reader `vmpi guest --metrics` exports (src/ops/guest-driver-stats.ts).
 */
const DRIVER_DROPS = `() => { const r = {}; const dropped = (k) => k.startsWith('rx_drops') || k === 'rx_short' || k === 'rx_oversize'; for (const dir of driverDeviceDirs()) { try { const d = readDriverDevice(dir); for (const [k, v] of Object.entries(d.counters)) if (dropped(k) && v) r[d.devname + '/' + k] = v; for (const c of d.channels?.channels ?? []) for (const [k, v] of Object.entries(c.values)) if (dropped(k) && v) r[d.devname + '/ch' + c.channel + '/' + k] = v; } catch (e) { r[dir] = String(e); } } return r; }`;

/** VM2: register "echo" in n.DIF and echo every SDU of every flow. */
const VM2_JS = `
import { driverDeviceDirs, readDriverDevice } from '/opt/vmpi/dist/src/ops/guest-driver-stats.js';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('NDIF-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const difs = (await c.listDifs()).map((d) => d.name);
const reg = await c.register('${DIF}', 'echo');
let flows = 0;
reg.on('request', async (req) => {
  const f = await req.accept();
  flows++;
  out('ECHO-FLOW', { n: flows, maxSdu: f.qos.maxSdu, reliable: f.qos.reliable, inOrder: f.qos.inOrder });
  // send() waits out backpressure (write() returning false means the SDU was not taken).
  for await (const sdu of f) await f.send(sdu);
  // The flow ended (VM1 deallocated it): what VM2's n.DIF counted, for the diagnosis of a failure.
  out('ECHO-DONE', { ...(${COUNTED})((await c.inspectDif('${DIF}')).state), driver: (${DRIVER_DROPS})() });
});
out('VM2-READY', { difs });
setInterval(() => {}, 1000);
`;

/** VM1: two flows to "echo" through n.DIF (reliable, flow-control), every size on both, checked. */
const VM1_JS = `
import { driverDeviceDirs, readDriverDevice } from '/opt/vmpi/dist/src/ops/guest-driver-stats.js';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('NDIF-' + tag + ' ' + JSON.stringify(v));
const pattern = ${PATTERN};
const SIZES = ${JSON.stringify(SEQ)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const difs = (await c.listDifs()).map((d) => d.name);
out('VM1-UP', { difs });
const QOS = [{ reliable: true, inOrder: true, maxSdu: 4000 }, { reliable: false, inOrder: true, maxSdu: 4000 }];
const t0 = Date.now();
let flows = null, attempts = 0, lastErr = '';
// VM2 may not have enrolled or registered yet: retry (bounded) until the directory knows "echo".
while (flows === null && Date.now() - t0 < 100000) {
  attempts++;
  const r = await Promise.allSettled(QOS.map((qos, i) => c.allocate('${DIF}', 'echo', { src: 'vm1app/' + (i + 1), qos, timeoutMs: 20000 })));
  if (r.every((x) => x.status === 'fulfilled')) { flows = r.map((x) => x.value); break; }
  for (const x of r) if (x.status === 'fulfilled') x.value.deallocate('retrying'); else lastErr = x.reason.code + ': ' + x.reason.message;
  await sleep(1000);
}
if (flows === null) { out('VM1-RESULT', { ok: false, attempts, lastErr }); process.exit(1); }
const allocMs = Date.now() - t0;
const t1 = Date.now();
const readOne = (f, ms) => Promise.race([f.read(), sleep(ms).then(() => 'timeout')]);
const results = await Promise.all(flows.map(async (f, fi) => {
  const sender = (async () => { for (const [i, n] of SIZES.entries()) await f.send(pattern(fi, i, n)); })();
  let good = 0; const bad = [];
  for (const [i, n] of SIZES.entries()) {
    const sdu = await readOne(f, 60000);
    if (sdu === null || sdu === 'timeout') { bad.push({ i, got: String(sdu) }); break; }
    const want = pattern(fi, i, n);
    if (sdu.byteLength === n && sdu.every((v, k) => v === want[k])) good++; else bad.push({ i, len: sdu.byteLength });
  }
  await sender;
  return { qos: f.qos, datapath: f.datapath, good, bad };
}));
const echoMs = Date.now() - t1;
// Something bad or missing: what VM1's n.DIF counted (drops by reason, EFCP losses), to tell why.
let diag;
if (results.some((r) => r.bad.length > 0 || r.good !== SIZES.length)) {
  try { diag = { ...(${COUNTED})((await c.inspectDif('${DIF}')).state), driver: (${DRIVER_DROPS})() }; } catch (e) { diag = String(e); }
}
out('VM1-RESULT', { ok: true, attempts, allocMs, echoMs, lastErr, results, diag });
for (const f of flows) f.deallocate('vm1 done');
setInterval(() => {}, 1000);
`;

t.test('normal DIF: two guests talk through the host over n.DIF, and a host app reaches a guest', { skip: unavailable ?? false, timeout: 240_000 }, async (t) => {
  const started = Date.now();
  const { srv, ipcSocket, vm1, vm2 } = await twoVmDif(t, { name: 'vmpi-ndif', dif: DIF, ids: [VM1_ID, VM2_ID], vm1Js: VM1_JS, vm2Js: VM2_JS, timeoutMs: 220_000 });

  const ready = await vm2.waitJson<{ difs: string[] }>('NDIF-VM2-READY', 150_000);
  t.same(ready.difs.sort(), [`hv.vmpi-${VM2_ID}`, DIF].sort(), 'vmpi guest in VM2 offers its shim DIF and n.DIF');
  const up = await vm1.waitJson<{ difs: string[] }>('NDIF-VM1-UP', 150_000);
  t.same(up.difs.sort(), [`hv.vmpi-${VM1_ID}`, DIF].sort(), 'vmpi guest in VM1 offers its shim DIF and n.DIF');
  const bootedS = (Date.now() - started) / 1000;

  interface FlowResult { qos: { reliable: boolean; inOrder: boolean; maxSdu: number }; datapath: string; good: number; bad: unknown[] }
  const res = await vm1.waitJson<{ ok: boolean; attempts: number; allocMs?: number; echoMs?: number; lastErr: string; results?: FlowResult[]; diag?: unknown }>('NDIF-VM1-RESULT', 120_000);
  t.ok(res.ok, `VM1 allocated two flows to echo through n.DIF (attempts ${res.attempts}, last error: ${res.lastErr || 'none'})`);
  const [rel, fc] = res.results ?? [];
  t.match(rel?.qos, { reliable: true, inOrder: true, maxSdu: 4000 }, 'first flow: the reliable cube');
  t.match(fc?.qos, { reliable: false, inOrder: true, maxSdu: 4000 }, 'second flow: the flow-control cube');
  // Something bad or missing: what each hop's n.DIF counted (drops by reason, EFCP losses), in the
  // failing assertions' own lines, which are what CI's log tail shows.
  let hops = '';
  if (res.diag !== undefined) {
    const host = await IpcClient.connect(ipcSocket);
    let hostDiag: unknown;
    try {
      hostDiag = counted((await host.inspectDif(DIF)).state);
    } finally {
      host.close();
    }
    await vm2.waitFor(/NDIF-ECHO-DONE[^\n]*\n[\s\S]*NDIF-ECHO-DONE[^\n]*\n/, 15_000).catch(() => undefined);
    const vm2Diag = [...vm2.output.matchAll(/NDIF-ECHO-DONE (\{[^\r\n]*\})/g)].map((m) => m[1]).join(' then ');
    hops = ` — counted by VM1 n.DIF ${JSON.stringify(res.diag)}; by the host's ${JSON.stringify(hostDiag)}; by VM2's as each flow ended ${vm2Diag || '(nothing printed)'}`;
  }
  for (const [name, r] of [['reliable', rel], ['flow-control', fc]] as const) {
    t.same(r?.bad, [], `${name} flow: no bad or missing echo${r?.bad.length ? hops : ''}`);
    t.equal(r?.good, SEQ.length, `${name} flow: ${SIZES.length} SDUs of 0..4000 bytes and ${BURST.n} of ${BURST.size} echoed back intact, in order, VM1 → host → VM2 → host → VM1`);
  }
  // VM2 printed each accept before it echoed anything; the console may still be delivering it.
  const first = await vm2.waitJson<{ maxSdu: number }>('NDIF-ECHO-FLOW', 10_000);
  t.equal(first.maxSdu, 4000, 'VM2 accepted flows with the requested max SDU');
  await vm2.waitFor(/NDIF-ECHO-FLOW[^\n]*\n[\s\S]*NDIF-ECHO-FLOW[^\n]*\n/, 10_000);
  t.pass('VM2 accepted the two flows');

  // A host application on serve's IPC daemon reaches VM2's echo over n.DIF.
  const app = await IpcClient.connect(ipcSocket);
  t.teardown(() => app.close());
  t.ok((await app.listDifs()).some((d) => d.name === DIF), 'serve offers n.DIF to host applications');
  const f = await app.allocate(DIF, 'echo', { src: 'hostapp/1', qos: { reliable: true, maxSdu: 4000 }, timeoutMs: 20_000 });
  for (const [i, n] of SIZES.entries()) await f.send(pattern(5, i, n));
  const echoes = await readN(f, SIZES.length, 60_000);
  const bad = echoes.filter((sdu, i) => Buffer.compare(Buffer.from(sdu), Buffer.from(pattern(5, i, SIZES[i]!))) !== 0).length;
  t.equal(bad, 0, `host app: ${SIZES.length} SDUs echoed by VM2 over n.DIF intact and in order`);
  f.deallocate('host done');

  t.equal(srv.child.exitCode, null, 'vmpi serve is still running');
  t.notMatch(srv.log(), /"level":(50|60)/, 'vmpi serve logged no error');
  t.match(srv.log(), /normal DIF: IPC process started/, 'vmpi serve started the enroller');
  t.comment(`boot ${bootedS.toFixed(1)} s, VM1 allocation ${res.allocMs} ms (${res.attempts} attempts), VM1 echoes ${res.echoMs} ms, total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  vm1.kill();
  vm2.kill();
});
