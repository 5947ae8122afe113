/**
 * ipc-restart-qemu.test.ts — a host application's IPC session and flow survive a SIGKILL of the
 * back-end's worker (src/dif/ipc/snapshot.ts, src/ops/restart/): `vmpi serve` (keeper mode,
 * built code) serves one VM running the Node guest image with `vmpi guest` and an echo
 * application; a host application (this process, the client library) holds a registration and
 * a flow to the guest's echo through the host IPC daemon. The worker is killed twice, the second
 * time with SDUs the application wrote while no worker ran.
 *
 * Asserted: the application never sees its session close; every SDU it sends (also those
 * written in the restart window) comes back intact and in order on the same flow, none lost
 * (a replayed chain may bring back one it had already, within the restart bound); its
 * registration still receives a flow request from the guest after the restarts; a new
 * allocation works. The host's shim DIF needs a guest peer (no host-to-host flow exists without
 * a VM), hence QEMU.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpcClient, type ClientFlow } from '../src/dif/ipc/client.js';
import { Guest, GUEST_DIR, ROOT, guestUnavailable, nodeScript } from './helpers/guest.js';
import { patternSdu } from './helpers/pattern.js';
import { startServe, workerPid } from './helpers/restart.js';
import { until } from './helpers/serve.js';
import { within } from './ipc/helpers.js';

const unavailable =
  guestUnavailable() ??
  (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh') ??
  (existsSync(join(ROOT, 'dist/src/cli.js')) ? null : 'dist/ is not built (npm run build)');
if (unavailable && process.env.CI) t.fail(`IPC restart test cannot run in CI: ${unavailable}`);

const VMPI_ID = 44;
/**
 * Duplicates per restart: a guest → host chain delivered but not completed by the dead worker
 * is delivered again (src/ops/restart/worker.ts; the same bound as test/restart-qemu.test.ts).
 */
const MAX_DUP = 2;
const DIF = `hv.vmpi-${VMPI_ID}`;

/** The guest: an echo application, and one that (asked by a rejected request) allocates a flow to the host's hsink/1. */
const GUEST_JS = `
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('GIPC-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const echo = await c.register('${DIF}', 'echo/1');
echo.on('request', async (req) => {
  const f = await req.accept();
  (async () => { for await (const sdu of f) await f.send(sdu); })().catch(() => {});
});
const call = await c.register('${DIF}', 'call/1');
call.on('request', async (req) => {
  await req.reject('calling');
  try {
    const f = await c.allocate('${DIF}', 'hsink/1', { src: 'gcall/1' });
    await f.send(new Uint8Array([1, 2, 3]));
    out('CALLED', { ok: true });
  } catch (e) {
    out('CALLED', { ok: false, err: String(e) });
  }
});
out('READY', {});
`;

const GUEST_SCRIPT = nodeScript(GUEST_JS, `mkdir -p /run/vmpi
node /opt/vmpi/dist/src/cli.js guest --log-level warn &
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`);

const same = (a: Uint8Array | null, b: Uint8Array): boolean => a !== null && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

t.test("a host application's session and flow survive kill -9 of the worker", { skip: unavailable ?? false, timeout: 420_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-ipcrestart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const ipcSock = join(dir, 'ipc.sock');
  const serve = startServe(join(ROOT, 'dist/src/cli.js'), ['--socket', sock, '--vmpi-id', String(VMPI_ID), '--ipc-socket', ipcSock, '--no-metrics']);
  t.teardown(() => {
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  });
  await until('the sockets', () => existsSync(sock) && existsSync(ipcSock), 30_000, serve.log);
  const g = new Guest({ sockets: [sock], node: true, script: GUEST_SCRIPT, memMb: 768, timeoutMs: 400_000, name: 'vmpi-ipcrestart' });
  t.teardown(() => g.kill());
  await g.waitJson('GIPC-READY', 240_000);

  const app = await IpcClient.connect(ipcSock);
  t.teardown(() => app.close());
  let closed: string | null = null;
  app.on('close', (reason: string) => (closed = reason));
  const sunk: ClientFlow[] = [];
  const hsink = await app.register(DIF, 'hsink/1');
  hsink.on('request', (req) => void req.accept().then((f) => sunk.push(f)));
  const flow = await within(app.allocate(DIF, 'echo/1', { src: 'hclient/1', qos: { maxSdu: 2000 } }), 'the flow to the guest echo', 60_000);

  let seq = 0;
  /** The next SDU whose echo is due; SDUs are told apart by size (100 + seq, seq < 1500). */
  let due = 0;
  const send = async (): Promise<void> => {
    await flow.send(patternSdu(seq, seq, 100 + seq));
    seq++;
  };
  /**
   * Read echoes until every SDU sent so far came back: returns the SDUs lost or out of order
   * (bad) and the duplicates of ones already back (a guest → host chain replayed after a
   * restart: src/ops/restart/worker.ts bounds them).
   */
  const readEchoes = async (what: string): Promise<{ bad: number; dup: number }> => {
    let bad = 0;
    let dup = 0;
    const got: number[] = [];
    while (due < seq) {
      const sdu = await within(flow.read(), `echo ${due} (${what})`, 60_000);
      if (sdu === null) throw new Error(`${what}: the flow ended`);
      const id = sdu.byteLength - 100;
      got.push(id);
      if (id < 0 || !same(sdu, patternSdu(id, id, 100 + id))) bad++;
      else if (id < due) dup++;
      else {
        bad += id - due; // skipped ones are lost
        due = id + 1;
      }
    }
    if (bad + dup > 0) t.comment(`${what}: got ${got.join(',')}`);
    return { bad, dup };
  };
  /** Send `n` SDUs, then read their echoes: each intact, in order, none lost. */
  const echoes = async (n: number, what: string, maxDup = 0): Promise<number> => {
    for (let i = 0; i < n; i++) await send();
    const r = await readEchoes(what);
    t.equal(r.bad, 0, `${what}: ${n} SDUs echoed intact and in order, none lost`);
    t.ok(r.dup <= maxDup, `${what}: ${r.dup} duplicates (≤ ${maxDup})`);
    return r.dup;
  };
  await echoes(50, 'before any restart');

  const kill = async (k: number, inGap: number): Promise<number> => {
    const before = serve.lines('ipc: sessions resumed from the last process').length;
    const pid = workerPid(serve.child.pid!);
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    // Written while no worker runs: they wait in the flow's socket.
    for (let i = 0; i < inGap; i++) await send();
    await until(`the sessions resumed (kill ${k})`, () => serve.lines('ipc: sessions resumed from the last process').length > before, 60_000, serve.log);
    const ms = Date.now() - t0;
    const sum = serve.lines('ipc: sessions resumed from the last process').at(-1)!;
    t.match(sum, { sessions: 1, flows: 1, flowsLost: 0, registrations: 1, outOfStep: 0 }, `kill ${k}: the worker resumed the session with its flow and registration`);
    if (inGap > 0) {
      const r = await readEchoes(`kill ${k}, the gap`);
      t.equal(r.bad, 0, `kill ${k}: the ${inGap} SDUs written in the restart window echoed intact, none lost`);
      dups += r.dup;
    }
    t.not(workerPid(serve.child.pid!), pid, `kill ${k}: a new worker runs`);
    return ms;
  };

  let dups = 0;
  const w1 = await kill(1, 0);
  dups += await echoes(50, 'after the first restart', MAX_DUP);
  const w2 = await kill(2, 10);
  dups += await echoes(50, 'after the second restart', MAX_DUP);
  t.ok(dups <= 2 * MAX_DUP, `${dups} duplicates over both restarts (≤ ${2 * MAX_DUP})`);
  t.comment(`kill → session resumed (host): ${w1} ms, ${w2} ms; duplicates: ${dups}`);

  // The registration made before the restarts still receives; a new allocation works.
  t.match(await app.allocate(DIF, 'call/1', { src: 'hclient/2' }).catch((e: unknown) => e), { peerReason: 'calling' });
  t.same(await g.waitJson('GIPC-CALLED', 60_000), { ok: true }, 'the guest allocated a flow to the host application');
  await until('the flow accepted through the old registration', () => sunk.length === 1, 30_000, serve.log);
  t.ok(same(await within(sunk[0]!.read(), 'the guest call SDU', 30_000), new Uint8Array([1, 2, 3])));
  const f2 = await within(app.allocate(DIF, 'echo/1', { src: 'hclient/3' }), 'a new flow after the restarts', 60_000);
  await f2.send(patternSdu(1, 2, 300));
  t.ok(same(await within(f2.read(), 'its echo', 60_000), patternSdu(1, 2, 300)));

  t.equal(closed, null, 'the application never saw its session close');
  t.equal(flow.state, 'allocated');
  t.notMatch(serve.log(), /kept flows nobody reclaimed were ended/, 'no kept flow was left unclaimed');
});
