/**
 * One member of the normal DIF powered off mid-flow, under real QEMU 10 (TCG): the same topology
 * as normal-dif-qemu.test.ts (one `vmpi serve` with two VMPI devices running the enroller
 * n.DIF.host, two Node guests running `vmpi guest --normal-dif n.DIF`).
 *
 * VM2 registers "echo" and echoes; VM1 registers "vm1echo" and echoes, and keeps SDUs moving on a
 * flow to VM2's echo (VM1 → host → VM2 and back). A host application (client library on serve's
 * IPC socket) keeps SDUs moving on a flow to VM2's echo and one to VM1's vm1echo. Then VM1's QEMU
 * is killed (no shutdown: the guest just stops). Expected: VM2's end of VM1's flow and the host
 * app's flow to VM1 end with cause 'port_down' and a reason naming the unreachable member, within
 * seconds (the vhost-user connection's end tells serve, not the keepalives); serve stays up and
 * logs no error; the host application's flow to VM2 carries on, every SDU echoed intact and in
 * order, before, across and after the power-off; and routing has withdrawn VM1: serve's n.DIF no longer lists it as a neighbour, an N-1 flow or a
 * destination, and a new flow to "vm1echo" fails with 'port_down'.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DifError } from '../src/dif/api.js';
import { IpcClient } from '../src/dif/ipc/client.js';
import type { ClientFlow } from '../src/dif/ipc/client-flow.js';
import { readN } from './helpers/flows.js';
import { GUEST_DIR, guestUnavailable, within } from './helpers/guest.js';
import { twoVmDif, until } from './helpers/serve.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`normal DIF power-off test cannot run in CI: ${unavailable}`);

const DIF = 'n.DIF';
const VM1_ID = 71;
const VM2_ID = 72;
/** SDU sizes the flows cycle through, in batches of BATCH (send them all, then read the echoes). */
const SIZES = [0, 1, 7, 100, 256, 1000, 1500, 3000, 4000];
const BATCH = 8;
/** VM2's end of VM1's flow must end within this after the kill (the keepalives would take 30 s). */
const END_BOUND_MS = 10_000;
/** Echoes the host app must still get after VM2's flow from VM1 ended. */
const AFTER = 400;

/** SDU `i` of flow `f`, `n` bytes; the same source text runs in the guests (hence the eval). */
const PATTERN = `(f, i, n) => { const b = new Uint8Array(n); for (let k = 0; k < n; k++) b[k] = (k + 7 * i + 31 * f) & 0xff; return b; }`;
const pattern = eval(PATTERN) as (f: number, i: number, n: number) => Uint8Array;

/** Register `app` and echo every SDU of every flow; print each flow's start and end (reason, cause). */
const echoApp = (app: string) => `
const reg = await c.register('${DIF}', '${app}');
let flows = 0;
reg.on('request', async (req) => {
  let f;
  try { f = await req.accept(); } catch (e) { out('ECHO-ERR', { app: '${app}', op: 'accept', code: e.code, message: e.message }); return; }
  const n = ++flows;
  let echoed = 0;
  f.on('deallocated', (reason, cause) => out('ECHO-END', { app: '${app}', n, remote: f.remoteApp.processName, reason, cause, echoed }));
  out('ECHO-FLOW', { app: '${app}', n, remote: f.remoteApp.processName });
  try {
    // send() waits out backpressure; it rejects once the flow is gone.
    for await (const sdu of f) { await f.send(sdu); echoed++; }
  } catch (e) {
    if (e.code !== 'flow_deallocated') out('ECHO-ERR', { app: '${app}', n, op: 'echo', code: e.code, message: e.message });
  }
});
`;

const PRELUDE = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('NDIF-' + tag + ' ' + JSON.stringify(v));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
`;

/** VM2: echo. */
const VM2_JS = `${PRELUDE}${echoApp('echo')}
out('VM2-READY', { difs: (await c.listDifs()).map((d) => d.name) });
setInterval(() => {}, 1000);
`;

/** VM1: echo as "vm1echo"; a flow to VM2's echo with SDUs moving until it ends (or VM1 stops). */
const VM1_JS = `${PRELUDE}${echoApp('vm1echo')}
const pattern = ${PATTERN};
const SIZES = ${JSON.stringify(SIZES)};
out('VM1-UP', { difs: (await c.listDifs()).map((d) => d.name) });
const t0 = Date.now();
let f = null, attempts = 0, lastErr = '';
// VM2 may not have enrolled or registered yet: retry (bounded) until the directory knows "echo".
while (f === null && Date.now() - t0 < 150000) {
  attempts++;
  try { f = await c.allocate('${DIF}', 'echo', { src: 'vm1app/1', qos: { reliable: true, inOrder: true, maxSdu: 4000 }, timeoutMs: 20000 }); }
  catch (e) { lastErr = e.code + ': ' + e.message; await sleep(1000); }
}
if (f === null) { out('VM1-RESULT', { ok: false, attempts, lastErr }); process.exit(1); }
const readOne = (ms) => Promise.race([f.read(), sleep(ms).then(() => 'timeout')]);
let i = 0, good = 0;
const fail = (what) => { out('VM1-FLOW-FAILED', { what, good }); process.exit(1); };
for (;;) {
  const first = i;
  for (let k = 0; k < ${BATCH}; k++, i++) await f.send(pattern(1, i, SIZES[i % SIZES.length]));
  for (let j = first; j < i; j++) {
    const sdu = await readOne(30000);
    if (sdu === null || sdu === 'timeout') fail('echo ' + j + ': ' + String(sdu));
    const want = pattern(1, j, SIZES[j % SIZES.length]);
    if (sdu.byteLength !== want.byteLength || !sdu.every((v, k) => v === want[k])) fail('echo ' + j + ' corrupt (' + sdu.byteLength + ' bytes)');
    good++;
  }
  if (good === ${BATCH * 25}) out('VM1-FLOWING', { attempts, allocMs: Date.now() - t0, good });
  await sleep(5);
}
`;

/** The host app's flow: batches of echoes, checked, until `stop`; bounded per batch. */
class Pump {
  good = 0;
  bad = 0;
  error: string | null = null;
  /** Longest batch (send BATCH, read their echoes), ms, since `markSlowest()`. */
  slowestMs = 0;
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    private readonly f: ClientFlow,
    private readonly tag: number,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    let i = 0;
    try {
      while (!this.stopped) {
        const first = i;
        const t0 = Date.now();
        for (let k = 0; k < BATCH; k++, i++) await this.f.send(pattern(this.tag, i, SIZES[i % SIZES.length]!));
        const echoes = await readN(this.f, BATCH, 20_000);
        for (const [j, sdu] of echoes.entries()) {
          if (Buffer.compare(Buffer.from(sdu), Buffer.from(pattern(this.tag, first + j, SIZES[(first + j) % SIZES.length]!))) === 0) this.good++;
          else this.bad++;
        }
        this.slowestMs = Math.max(this.slowestMs, Date.now() - t0);
      }
    } catch (e) {
      this.error = `after ${this.good} good echoes: ${(e as Error).message}`;
    }
  }

  markSlowest(): void {
    this.slowestMs = 0;
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

interface Inspected {
  lowerFlows: { dif: string; neighbour: number }[];
  routing: { neighbours: { addr: number }[]; forwarding: [number, number][] };
}

t.test('normal DIF: a member powered off mid-flow ends its flows with a cause; the other flows carry on', { skip: unavailable ?? false, timeout: 300_000 }, async (t) => {
  const started = Date.now();
  const { srv, ipcSocket, vm1, vm2 } = await twoVmDif(t, { name: 'vmpi-ndif-off', dif: DIF, ids: [VM1_ID, VM2_ID], vm1Js: VM1_JS, vm2Js: VM2_JS, timeoutMs: 280_000 });

  await vm2.waitJson('NDIF-VM2-READY', 180_000);
  await vm1.waitJson('NDIF-VM1-UP', 180_000);
  const bootedS = (Date.now() - started) / 1000;
  const flowing = await vm1.waitJson<{ attempts: number; allocMs: number; good: number }>('NDIF-VM1-FLOWING', 180_000);
  t.pass(`VM1's flow to VM2's echo carries SDUs (${flowing.good} echoes checked in VM1, allocation ${flowing.allocMs} ms, ${flowing.attempts} attempts)`);
  const vm1Flow = await vm2.waitJson<{ n: number; remote: string }>('NDIF-ECHO-FLOW', 10_000);
  t.match(vm1Flow, { remote: 'vm1app' }, 'VM2 accepted the flow from VM1');

  // The host app: a flow to VM2's echo with SDUs moving, and (the control) one to VM1's vm1echo.
  const app = await IpcClient.connect(ipcSocket);
  t.teardown(() => app.close());
  const toVm2 = await app.allocate(DIF, 'echo', { src: 'hostapp/1', qos: { reliable: true, maxSdu: 4000 }, timeoutMs: 20_000 });
  const pump = new Pump(toVm2, 5);
  t.teardown(() => pump.stop());
  const toVm1 = await app.allocate(DIF, 'vm1echo', { src: 'hostapp/2', qos: { reliable: true, maxSdu: 4000 }, timeoutMs: 20_000 });
  const toVm1End = within(new Promise<{ reason: string; cause: string; at: number }>((r) => toVm1.once('deallocated', (reason, cause) => r({ reason, cause, at: Date.now() }))), 60_000 + END_BOUND_MS, "the host app's flow to vm1echo to end");
  toVm1End.catch(() => {});
  const pump1 = new Pump(toVm1, 9);
  t.teardown(() => pump1.stop());
  await until('the host app flows to move SDUs', () => (pump.good >= BATCH * 10 && pump1.good >= BATCH * 10) || pump.error !== null || pump1.error !== null, 60_000, srv.log);
  t.equal(pump.error, null, 'the host app flow to VM2 carries SDUs before the power-off');
  t.equal(pump1.error, null, "the host app flow to VM1's vm1echo carries SDUs before the power-off");

  const before = (await app.inspectDif(DIF)).state as unknown as Inspected;
  const lower1 = before.lowerFlows.find((l) => l.dif === `hv.vmpi-${VM1_ID}`);
  const vm1Addr = lower1?.neighbour ?? 0;
  const vm2Addr = before.lowerFlows.find((l) => l.dif === `hv.vmpi-${VM2_ID}`)?.neighbour ?? 0;
  t.not(vm1Addr, 0, `serve's n.DIF has VM1 as a neighbour over hv.vmpi-${VM1_ID} (address ${vm1Addr})`);
  t.ok(before.routing.neighbours.some((n) => n.addr === vm1Addr), 'routing lists VM1 as a neighbour');

  // Power VM1 off: QEMU is killed with SDUs in flight on both flows.
  const vm2Mark = vm2.mark;
  const goodAtKill = pump.good;
  pump.markSlowest();
  const killedAt = Date.now();
  vm1.kill();
  const ended = await vm2.waitJson<{ app: string; n: number; remote: string; reason: string; cause: string; echoed: number }>('NDIF-ECHO-END', END_BOUND_MS, vm2Mark);
  const endMs = Date.now() - killedAt;
  t.comment(`VM2's end of VM1's flow: ${JSON.stringify(ended)}`);
  t.match(ended, { app: 'echo', n: vm1Flow.n, remote: 'vm1app', cause: 'port_down' }, `VM2's end of VM1's flow ended with cause port_down, ${endMs} ms after the power-off`);
  t.match(ended.reason, new RegExp(`member ${vm1Addr} of ${DIF.replace('.', '\\.')} is unreachable`), 'its reason names the unreachable member');
  await within(vm1.done, 10_000, "VM1's QEMU to exit after the kill");
  const end1 = await within(toVm1End, END_BOUND_MS, "the host app's flow to vm1echo to end");
  const end1Ms = end1.at - killedAt;
  t.comment(`the host app's flow to VM1: ${JSON.stringify({ reason: end1.reason, cause: end1.cause })}`);
  t.match(end1, { cause: 'port_down', reason: new RegExp(`^member ${vm1Addr} of ${DIF.replace('.', '\\.')} is unreachable \\(port down: `) }, `the host app's flow to vm1echo ended with cause port_down, naming the member and its port's end, ${end1Ms} ms after the power-off`);
  await within(pump1.stop(), 25_000, 'the pump on the flow to vm1echo to stop');
  t.equal(pump1.bad, 0, `every echo from vm1echo before the end was intact and in order (${pump1.good})`);

  // Routing withdrew VM1 at the host.
  let after = (await app.inspectDif(DIF)).state as unknown as Inspected;
  const withdrawnBy = Date.now() + 5000;
  while ((after.lowerFlows.some((l) => l.dif === `hv.vmpi-${VM1_ID}`) || after.routing.neighbours.some((n) => n.addr === vm1Addr)) && Date.now() < withdrawnBy) {
    await new Promise((r) => setTimeout(r, 100));
    after = (await app.inspectDif(DIF)).state as unknown as Inspected;
  }
  t.notOk(after.lowerFlows.some((l) => l.dif === `hv.vmpi-${VM1_ID}`), "serve's n.DIF has no N-1 flow to VM1 any more");
  t.same(after.routing.neighbours.map((n) => n.addr), [vm2Addr], 'routing lists only VM2 as a neighbour');
  t.notOk(after.routing.forwarding.some(([dst]) => dst === vm1Addr), 'VM1 is no destination in the forwarding table');
  const refused = await app.allocate(DIF, 'vm1echo', { src: 'hostapp/3', qos: { reliable: true }, timeoutMs: 10_000 }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(refused instanceof DifError, 'a new flow to vm1echo (registered only in VM1) is refused');
  t.match(refused, { code: 'port_down', message: new RegExp(`member ${vm1Addr} of .*vm1echo.* is unreachable`) }, `…with port_down: ${(refused as Error | null)?.message}`);

  // The host app's flow to VM2 carried on across the power-off and still does.
  const goodAtEnd = pump.good;
  await until(`${AFTER} more echoes on the host app's flow`, () => pump.good >= goodAtEnd + AFTER || pump.error !== null, 60_000, srv.log);
  await within(pump.stop(), 25_000, 'the host app pump to stop');
  t.equal(pump.error, null, 'the host app flow to VM2 never stalled or ended');
  t.equal(pump.bad, 0, `every echo on the host app flow intact and in order (${pump.good} in all, ${pump.good - goodAtKill} after the power-off)`);
  t.equal(toVm2.state, 'allocated', 'the host app flow to VM2 is still allocated');
  toVm2.deallocate('host done');
  t.notMatch(vm2.output, /NDIF-ECHO-ERR/, 'VM2 saw no error on its flows');

  t.equal(srv.child.exitCode, null, 'vmpi serve is still running');
  t.notMatch(srv.log(), /"level":(50|60)/, 'vmpi serve logged no error');
  t.comment(`boot ${bootedS.toFixed(1)} s; power-off → VM2's flow from VM1 ended ${endMs} ms, the host app's flow to VM1 ${end1Ms} ms; slowest host-app batch since the power-off ${pump.slowestMs} ms; total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  vm2.kill();
});
