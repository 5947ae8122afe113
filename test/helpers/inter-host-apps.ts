/**
 * inter-host-apps.ts — the applications of the inter-host tests (test/inter-host-qemu.test.ts,
 * test/inter-host-udp-qemu.test.ts) on the two-host topology (two-hosts.ts): VM-B's echo, VM-A's
 * driver (two flows at once, reliable and flow-control, every echo checked; then how they end,
 * and a new flow per /tmp/ih-new), reading their console lines, and the shared checks.
 */
import type { Test } from 'tap';
import type { Guest } from './guest.js';
import { runInBackground, writeGuestFile, type TwoHosts } from './two-hosts.js';

const DIF = 'n.DIF';
export const SIZES = [0, 1, 2, 7, 8, 100, 255, 256, 1000, 1500, 2048, 3000, 3999, 4000];
/** A burst per flow over shim-eth: more SDUs than the EFCP credit (256), so the window must open again. */
export const BURST = { n: 300, size: 1400 };

/** SDU `i` of flow `f`, `n` bytes; the same source text runs in the guest (hence the eval). */
const PATTERN = `(f, i, n) => { const b = new Uint8Array(n); for (let k = 0; k < n; k++) b[k] = (k + 7 * i + 31 * f) & 0xff; return b; }`;

/** VM-B: register "echo" and echo every SDU of every flow; say when a flow starts and ends. */
const ECHO_JS = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('IH-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const reg = await c.register('${DIF}', 'echo');
let n = 0;
reg.on('request', async (req) => {
  const f = await req.accept();
  const id = ++n;
  out('ECHO-FLOW', { id, reliable: f.qos.reliable, maxSdu: f.qos.maxSdu });
  f.once('deallocated', (reason, cause) => out('ECHO-END', { id, reason, cause }));
  try { for await (const sdu of f) await f.send(sdu); } catch (e) { out('ECHO-ERR', { id, msg: String(e && e.message || e) }); }
});
out('ECHO-READY', {});
setInterval(() => {}, 1000);
`;

/**
 * VM-A: two flows to "echo" (reliable, flow-control), `seq` on both, every echo checked; then it
 * reports how they end, and opens a new flow (and checks SIZES on it) per /tmp/ih-new.
 */
const driverJs = (seq: number[]): string => `
import { existsSync, rmSync } from 'node:fs';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('IH-' + tag + ' ' + JSON.stringify(v));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pattern = ${PATTERN};
const SEQ = ${JSON.stringify(seq)};
export const SIZES = ${JSON.stringify(SIZES)};
const QOS = [{ reliable: true, inOrder: true, maxSdu: 4000 }, { reliable: false, inOrder: true, maxSdu: 4000 }];
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
async function open(qs, src, ms) {
  const t0 = Date.now();
  let attempts = 0, lastErr = '';
  // The other VM may not have enrolled or registered yet: retry (bounded) until the directory knows "echo".
  while (Date.now() - t0 < ms) {
    attempts++;
    const r = await Promise.allSettled(qs.map((qos, i) => c.allocate('${DIF}', 'echo', { src: src + '/' + (i + 1), qos, timeoutMs: 20000 })));
    if (r.every((x) => x.status === 'fulfilled')) return { flows: r.map((x) => x.value), attempts, ms: Date.now() - t0, lastErr };
    for (const x of r) if (x.status === 'fulfilled') x.value.deallocate('retrying'); else lastErr = x.reason.code + ': ' + x.reason.message;
    await sleep(1000);
  }
  return { flows: null, attempts, lastErr };
}
const readOne = (f, ms) => Promise.race([f.read(), sleep(ms).then(() => 'timeout')]);
export async function exchange(f, fi, seq) {
  const sender = (async () => { for (const [i, n] of seq.entries()) await f.send(pattern(fi, i, n)); })();
  let good = 0; const bad = [];
  for (const [i, n] of seq.entries()) {
    const sdu = await readOne(f, 60000);
    if (sdu === null || sdu === 'timeout') { bad.push({ i, got: String(sdu) }); break; }
    const want = pattern(fi, i, n);
    if (sdu.byteLength === n && sdu.every((v, k) => v === want[k])) good++; else bad.push({ i, len: sdu.byteLength });
  }
  await Promise.race([sender, sleep(10000)]);
  return { good, bad };
}
const first = await open(QOS, 'vma', 150000);
if (!first.flows) out('RESULT', { ok: false, attempts: first.attempts, lastErr: first.lastErr });
else {
  const t1 = Date.now();
  const results = await Promise.all(first.flows.map(async (f, fi) => ({ qos: f.qos, ...(await exchange(f, fi, SEQ)) })));
  out('RESULT', { ok: true, attempts: first.attempts, allocMs: first.ms, echoMs: Date.now() - t1, lastErr: first.lastErr, results });
  first.flows.forEach((f, i) => f.once('deallocated', (reason, cause) => out('ENDED', { flow: i, reason, cause })));
}
for (;;) {
  if (!existsSync('/tmp/ih-new')) { await sleep(100); continue; }
  rmSync('/tmp/ih-new');
  const r = await open([QOS[0]], 'vma-new', 90000);
  if (!r.flows) { out('NEW', { ok: false, attempts: r.attempts, lastErr: r.lastErr }); continue; }
  const e = await exchange(r.flows[0], 5, SIZES);
  out('NEW', { ok: true, attempts: r.attempts, ms: r.ms, lastErr: r.lastErr, ...e });
  r.flows[0].deallocate('done');
}
`;

/** The next `n` console lines `IH-<tag> {json}` from offset `from`, within `ms` in all. */
export async function lines<T>(g: Guest, tag: string, n: number, ms: number, from: number): Promise<T[]> {
  const end = Date.now() + ms;
  const got: T[] = [];
  let at = from;
  while (got.length < n) {
    const m = await g.waitFor(new RegExp(`IH-${tag} (\\{[^\\r\\n]*\\})\\r?\\n`), Math.max(1, end - Date.now()), at);
    at += m.index! + m[0].length;
    got.push(JSON.parse(m[1]!) as T);
  }
  return got;
}

interface FlowResult { qos: { reliable: boolean; inOrder: boolean; maxSdu: number }; good: number; bad: unknown[] }
interface Result { ok: boolean; attempts: number; allocMs?: number; echoMs?: number; lastErr: string; results?: FlowResult[] }
export interface Ended { flow?: number; id?: number; reason: string; cause: string }

/** Start both applications and check the two flows' exchange of `seq`. */
export async function exchange(t: Test, th: TwoHosts, seq: number[], shim: string): Promise<void> {
  const [vmA, vmB] = [th.a.guest, th.b.guest];
  await writeGuestFile(vmB, '/tmp/echo.mjs', ECHO_JS);
  const fromB = runInBackground(vmB, '/tmp/echo.mjs');
  await writeGuestFile(vmA, '/tmp/driver.mjs', driverJs(seq));
  await lines(vmB, 'ECHO-READY', 1, 180_000, fromB);
  const fromA = runInBackground(vmA, '/tmp/driver.mjs');
  const [res] = await lines<Result>(vmA, 'RESULT', 1, 240_000, fromA);
  t.ok(res!.ok, `VM-A allocated two flows to echo in VM-B over ${shim} (attempts ${res!.attempts}, last error: ${res!.lastErr || 'none'})`);
  const [rel, fc] = res!.results ?? [];
  t.match(rel?.qos, { reliable: true, inOrder: true, maxSdu: 4000 }, 'first flow: the reliable cube');
  t.match(fc?.qos, { reliable: false, inOrder: true, maxSdu: 4000 }, 'second flow: the flow-control cube');
  for (const [name, r] of [['reliable', rel], ['flow-control', fc]] as const) {
    t.same(r?.bad, [], `${name} flow: no bad or missing echo`);
    t.equal(r?.good, seq.length, `${name} flow: ${seq.length} SDUs (0..4000 B) intact and in order VM-A → host-A → host-B → VM-B and back`);
  }
  t.comment(`${shim}: allocation ${res!.allocMs} ms (${res!.attempts} attempts), echoes ${res!.echoMs} ms`);
}

