/**
 * The guest's metrics through its VMPI under real QEMU 10 (TCG): `vmpi serve`'s startServing
 * in this process (metrics on an ephemeral loopback port), `vmpi guest` in a Node guest.
 *
 * After a known transfer on one flow (the host application sends N SDUs to a guest application
 * that reads them from its driver file — the fast path, no shim IPC process on the data path —
 * and sends M back), the guest's per-channel counters as the host serves them on
 * /metrics/guest/<vmpi-id> (fetched over a flow to vmpi-metrics) match the host's own
 * vmpi_channel_* counters for that flow's channel, SDUs and bytes both ways; /sd/guests lists
 * the guest. Then `vmpi guest` is stopped (SIGSTOP): the guest scrape answers 504 within its
 * timeout (plus slack), the host's own /metrics answers meanwhile, and after SIGCONT the guest
 * is scraped again. Prints the scrape latencies through the VMPI.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpcClient } from '../src/dif/ipc/client.js';
import { mergeServeOptions } from '../src/ops/config.js';
import { startServing } from '../src/ops/serve.js';
import { readN } from './helpers/flows.js';
import { Guest, GUEST_DIR, guestUnavailable, nodeScript } from './helpers/guest.js';
import { httpGet, sample } from './helpers/exposition.js';

const unavailable =
  guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing: run scripts/guest/build-node.sh');
if (unavailable && process.env.CI) t.fail(`guest metrics test cannot run in CI: ${unavailable}`);

const VMPI_ID = 44;
const DIF = `hv.vmpi-${VMPI_ID}`;
const N = 60;
const SIZE = 1000;
const M = 25;
const BACK = 333;
/** Allocations of the test's own flows (a TCG guest on a loaded machine can take seconds). */
const ALLOC_MS = 30_000;
const TIMEOUT_MS = 5000; // TCG on a loaded machine: a scrape takes 0.7-2 s

const GUEST_JS = `
import { spawn } from 'node:child_process';
import { IpcClient } from '/opt/vmpi/dist/src/dif/ipc/client.js';
const out = (tag, v) => console.log('GM-' + tag + ' ' + JSON.stringify(v));
const c = await IpcClient.connect('/run/vmpi/ipc.sock');
const keep = [];
const sink = await c.register('${DIF}', 'sink/1');
sink.on('request', async (req) => {
  const f = await req.accept();
  keep.push(f);
  let n = 0, bytes = 0;
  while (n < ${N}) { const sdu = await f.read(); if (sdu === null) break; n++; bytes += sdu.byteLength; }
  for (let i = 0; i < ${M}; i++) await f.send(new Uint8Array(${BACK}).fill(i));
  out('SINK', { datapath: f.datapath, n, bytes });
});
const stop = await c.register('${DIF}', 'stop/1');
stop.on('request', async (req) => {
  await req.reject('stopping vmpi guest');
  spawn('sh', ['-c', 'sleep 0.3; kill -STOP $(cat /tmp/vmpi-guest.pid); sleep 12; kill -CONT $(cat /tmp/vmpi-guest.pid)'], { stdio: 'ignore', detached: true }).unref();
});
const ping = await c.register('${DIF}', 'ping/1');
ping.on('request', (req) => void req.reject('pong'));
const quit = await c.register('${DIF}', 'quit/1');
quit.on('request', async (req) => {
  await req.reject('bye');
  setTimeout(() => process.exit(0), 100);
});
out('READY', {});
`;

const GUEST_SCRIPT = nodeScript(GUEST_JS, `mkdir -p /run/vmpi
node /opt/vmpi/dist/src/cli.js guest --log-level warn &
echo $! > /tmp/vmpi-guest.pid
for i in $(seq 1 900); do [ -S /run/vmpi/ipc.sock ] && break; sleep 0.1; done
`);

t.test('guest metrics through the VMPI match the host per-channel counters; a stopped guest costs one timeout', { skip: unavailable ?? false, timeout: 480_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-gm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'vm.sock');
  const plan = mergeServeOptions(undefined, { sockets: [sock], vmpiIds: [VMPI_ID], listenFds: [], metricsListen: { host: '127.0.0.1', port: 0 } });
  plan.metrics.guestTimeoutMs = TIMEOUT_MS;
  const serving = await startServing(plan, { ipc: { socketPath: join(dir, 'ipc.sock'), required: true } });
  t.teardown(() => serving.close());
  const base = serving.metricsServer!.url.replace(/\/metrics$/, '');
  const app = await IpcClient.connect(join(dir, 'ipc.sock'));
  t.teardown(() => app.close());

  const g = new Guest({ sockets: [sock], node: true, script: GUEST_SCRIPT, memMb: 768, timeoutMs: 450_000, name: 'vmpi-gm-test' });
  t.teardown(() => g.kill());
  await g.waitJson('GM-READY', 240_000);

  const sd = JSON.parse((await httpGet(`${base}/sd/guests`)).body) as unknown;
  t.same(sd, [{ targets: [new URL(base).host], labels: { __metrics_path__: `/metrics/guest/${VMPI_ID}`, vmpi_guest_id: String(VMPI_ID) } }], '/sd/guests lists the guest');

  // A known transfer on one flow.
  const flow = await app.allocate(DIF, 'sink/1', { src: 'hsrc/1', timeoutMs: ALLOC_MS });
  for (let i = 0; i < N; i++) await flow.send(new Uint8Array(SIZE).fill(i));
  const got = await g.waitJson<{ datapath: string; n: number; bytes: number }>('GM-SINK', 120_000);
  t.same(got, { datapath: 'vmpi_file', n: N, bytes: N * SIZE }, 'the guest application read every SDU from its driver file (fast path)');
  t.equal((await readN(flow, M, 60_000)).length, M, 'and its SDUs came back');
  const hostFlow = serving.ipcps.get(VMPI_ID)!.flows().find((f) => f.remoteApp.processName === 'sink');
  t.ok(hostFlow, "the host's shim DIF flow");
  const channel = String(hostFlow!.channel);

  const latencies: number[] = [];
  let guestText = '';
  for (let i = 0; i < 5; i++) {
    const r = await httpGet(`${base}/metrics/guest/${VMPI_ID}`);
    t.equal(r.status, 200, `guest scrape ${i + 1} through the VMPI`);
    latencies.push(Math.round(r.ms));
    guestText = r.body;
  }
  t.comment(`guest scrape latency through the VMPI (ms): ${latencies.join(', ')}`);
  // For scale: one flow allocation round trip (a guest application that refuses at once).
  const pings: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    t.match(await app.allocate(DIF, 'ping/1', { timeoutMs: ALLOC_MS }).catch((e: unknown) => e), { peerReason: 'pong' });
    pings.push(Math.round(performance.now() - t0));
  }
  t.comment(`allocation round trip to a refusing guest application (ms): ${pings.join(', ')}`);
  const hostText = (await httpGet(`${base}/metrics`)).body;
  for (const [name, dir_, want] of [
    ['sdus', 'to_guest', N],
    ['bytes', 'to_guest', N * SIZE],
    ['sdus', 'from_guest', M],
    ['bytes', 'from_guest', M * BACK],
  ] as const) {
    const labels = { vmpi_id: String(VMPI_ID), channel, direction: dir_ };
    const guestV = sample(guestText, `vmpi_guest_channel_${name}_total`, labels);
    const hostV = sample(hostText, `vmpi_channel_${name}_total`, labels);
    t.equal(guestV, want, `guest driver: ${name} ${dir_} on channel ${channel}`);
    t.equal(hostV, guestV, `host and guest agree: ${name} ${dir_}`);
  }
  t.equal(sample(guestText, 'vmpi_guest_device_info', { vmpi_id: String(VMPI_ID), devname: 'vmpi0' }), 1, "the guest's device");
  t.match(guestText, /vmpi_dif_flows_active\{dif="hv\.vmpi-44"\} \d/, "the guest's shim DIF");
  t.match(guestText, /vmpi_ipc_sessions \d/, "the guest's IPC daemon");
  t.match(guestText, /process_resident_memory_bytes \d/, "the guest's process metrics");

  // A stopped vmpi guest: its scrape costs its timeout, the host's own /metrics does not wait.
  t.match(await app.allocate(DIF, 'stop/1', { timeoutMs: ALLOC_MS }).catch((e: unknown) => e), { peerReason: 'stopping vmpi guest' });
  await new Promise((r) => setTimeout(r, 1500));
  const [silent, own] = await Promise.all([httpGet(`${base}/metrics/guest/${VMPI_ID}`), httpGet(`${base}/metrics`)]);
  t.equal(silent.status, 504, 'a stopped guest: 504');
  t.ok(silent.ms >= TIMEOUT_MS - 50 && silent.ms < TIMEOUT_MS + 1500, `within its timeout of ${TIMEOUT_MS} ms plus slack: ${Math.round(silent.ms)} ms`);
  t.equal(own.status, 200, "the host's /metrics answers meanwhile");
  t.ok(own.ms < silent.ms, `without waiting for the guest (${Math.round(own.ms)} ms)`);
  t.comment(`stopped guest: ${Math.round(silent.ms)} ms; host /metrics meanwhile: ${Math.round(own.ms)} ms`);

  // Resumed: scraped again.
  const end = Date.now() + 60_000;
  let again = 0;
  while (Date.now() < end) {
    again = (await httpGet(`${base}/metrics/guest/${VMPI_ID}`)).status;
    if (again === 200) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(again, 200, 'after SIGCONT the guest is scraped again');
  const counts = (await httpGet(`${base}/metrics`)).body;
  t.ok((sample(counts, 'vmpi_guest_scrapes_total', { vmpi_id: String(VMPI_ID), outcome: 'timeout' }) ?? 0) >= 1, 'the timeout is counted');
  t.ok((sample(counts, 'vmpi_guest_scrapes_total', { vmpi_id: String(VMPI_ID), outcome: 'ok' }) ?? 0) >= 6, 'the good scrapes are counted');

  t.match(await app.allocate(DIF, 'quit/1', { timeoutMs: ALLOC_MS }).catch((e: unknown) => e), { peerReason: 'bye' });
});
