/**
 * top-flows.test.ts — `vmpi top`'s flow rows with real per-flow rates: a host and a guest shim
 * IPC process (an in-memory port pair), the host's real IPC daemon and metrics endpoint, an
 * application on each end (IpcClient): the guest one accepts and reads, the host one allocates a
 * flow and writes RATE SDUs/s of SIZE bytes, paced against the clock. `vmpi top --once` (run in
 * this process: topOnce) must show that flow's tx rate within 20% of what was sent, from the
 * per-flow counters the shim's inspection carries, and the DIF row the same from the metrics.
 */
import t from 'tap';
import { IpcClient, type ClientFlow } from '../src/dif/ipc/client.js';
import { HostMetrics, startMetricsServer } from '../src/ops/metrics.js';
import { fetchFlows } from '../src/ops/top/source.js';
import { topOnce } from '../src/ops/top/run.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { DIF, ipcSetup, within } from './ipc/helpers.js';

const RATE = 100;
const SIZE = 500;

t.test('a flow row with its rates, from the per-flow counters of the inspection', { timeout: 60_000 }, async (t) => {
  const s = ipcSetup(t, { timeoutMs: 60_000 });
  const host = new VmpiHost();
  const metrics = new HostMetrics(host, { processMetrics: false });
  metrics.addIpcp(s.hostIpcp);
  const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    metrics.close();
    host.close();
    await server.close();
  });

  const guestApp = await s.guestClient();
  const reg = await guestApp.register(DIF, 'sink');
  let received = 0;
  const accepted = within(
    reg.next().then((r) => r!.accept()),
    'the flow accepted in the guest',
    10_000,
  );
  const hostApp: IpcClient = await s.hostClient();
  const flow: ClientFlow = await within(hostApp.allocate(DIF, 'sink', { src: 'source' }), 'the flow allocated', 10_000);
  const sink = await accepted;
  void (async () => {
    while ((await sink.read()) !== null) received++;
  })();

  const flows = await fetchFlows(s.hostDaemon.socketPath);
  t.equal(flows.length, 1, 'one flow at the host');
  t.same([flows[0]!.dif, flows[0]!.state, flows[0]!.local, flows[0]!.remote], [DIF, 'allocated', 'source', 'sink']);
  t.same(flows[0]!.counters, { txSdus: 0, txBytes: 0, rxSdus: 0, rxBytes: 0 }, 'the inspection carries the flow\'s counters');

  const sdu = new Uint8Array(SIZE).fill(7);
  const t0 = performance.now();
  let sent = 0;
  const history: [number, number][] = [[t0, 0]];
  const pacer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) / 1000) * RATE);
    while (sent < due) {
      flow.write(sdu);
      sent++;
    }
    history.push([performance.now(), sent]);
  }, 5);
  t.teardown(() => clearInterval(pacer));
  await new Promise((r) => setTimeout(r, 1000));

  const lines: string[] = [];
  await topOnce({ url: server.url, ipcSocket: s.hostDaemon.socketPath, intervalS: 2, width: 160 }, (l) => lines.push(l));
  const now = performance.now();
  const [at, n] = history.find(([x]) => now - x <= 3000)!;
  const actual = (sent - n) / ((now - at) / 1000);
  t.comment(lines.join('\n'));
  t.comment(`sent ${actual.toFixed(1)} SDU/s over the last 3 s; the guest read ${received}`);
  t.ok(Math.abs(actual - RATE) <= 0.2 * RATE, `the test sent about ${RATE} SDU/s`);

  const row = lines.find((l) => l.startsWith(DIF) && /\ballocated\b/.test(l));
  t.ok(row, 'a flow row');
  const m = /\s(\S+)\s+(\S+)$/.exec(row!)!;
  const [rx, tx] = [Number(m[1]), Number(m[2])];
  t.equal(rx, 0, 'nothing read back on the host end');
  t.ok(Math.abs(tx - actual) <= 0.2 * actual, `the flow's TX SDU/s ${tx} within 20% of ${actual.toFixed(1)}`);
  const dif = lines.find((l) => new RegExp(`^${DIF.replace('.', '\\.')}\\s+shim-hv\\s+1\\s`).test(l));
  t.ok(dif, 'the DIF row, one flow active');
  const d = dif!.trim().split(/\s+/);
  t.ok(Math.abs(Number(d[5]) - actual) <= 0.2 * actual, `the DIF's TX SDU/s ${d[5]} within 20%`);
  t.ok(Math.abs(Number(d[6]) - (actual * SIZE * 8) / 1e6) <= (0.2 * actual * SIZE * 8) / 1e6, `the DIF's TX Mb/s ${d[6]} within 20%`);
  flow.deallocate('done');
});
