/**
 * guest-metrics.test.ts — the guests' metrics without QEMU: the wire framing (metrics-wire.ts:
 * valid, truncated, oversize, malformed), the guest driver's sysfs parser and families
 * (guest-driver-stats.ts, fed a fake sysfs tree in a temp dir), and the whole path over an
 * in-memory VMPI port pair: the guest's vmpi-metrics application answering the host's fetcher,
 * served on /metrics/guest/<id> and /sd/guests, with a silent guest bounded by the timeout, an
 * unregistered app and an oversize reply answered 502/504 and counted.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { HostMetrics, startMetricsServer } from '../src/ops/metrics.js';
import { HEADER_SIZE, MetricsWireError, ReplyAssembler, decodeRequest, encodeReply, encodeRequest } from '../src/ops/metrics-wire.js';
import { DriverStatsError, parseChannelStats, registerDriverMetrics } from '../src/ops/guest-driver-stats.js';
import { GuestMetricsApp } from '../src/ops/guest-metrics-app.js';
import { GuestMetricsFetcher } from '../src/ops/guest-metrics-fetch.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { setup } from './dif/helpers.js';
import { httpGet } from './helpers/exposition.js';

const dir = mkdtempSync(join(tmpdir(), 'vmpi-gmetrics-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function wireError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof MetricsWireError) return e.code;
    throw e;
  }
  return 'no error';
}

t.test('framing: valid, truncated, oversize, malformed', async (t) => {
  t.same(decodeRequest(encodeRequest(12345)), { maxBytes: 12345 });
  t.equal(wireError(() => decodeRequest(encodeRequest(1).subarray(0, 8))), 'malformed', 'short request');
  const badVersion = encodeRequest(1);
  badVersion[4] = 9;
  t.equal(wireError(() => decodeRequest(badVersion)), 'malformed', 'unknown version');

  const body = new Uint8Array(1000).map((_, i) => i & 0xff);
  const sdus = encodeReply('ok', body, 300);
  t.same(sdus.map((s) => s.byteLength), [HEADER_SIZE, 300, 300, 300, 100], 'header then chunks of at most the max SDU');
  const a = new ReplyAssembler(1000);
  t.same(sdus.map((s) => a.push(s)), [false, false, false, false, true]);
  const r = a.finish();
  t.equal(r.status, 'ok');
  t.same(Buffer.from(r.body), Buffer.from(body), 'body intact');
  t.equal(new ReplyAssembler(0).push(encodeReply('error', new Uint8Array(0), 64)[0]!), true, 'an empty body is complete with its header');

  const cut = new ReplyAssembler(1000);
  sdus.slice(0, 3).forEach((s) => cut.push(s));
  t.equal(wireError(() => cut.finish()), 'truncated', 'flow ended mid-body');
  t.equal(wireError(() => new ReplyAssembler(1000).finish()), 'truncated', 'flow ended before the header');
  t.equal(wireError(() => new ReplyAssembler(999).push(sdus[0]!)), 'oversize', 'announced length over the budget: refused at the header');
  const more = new ReplyAssembler(2000);
  more.push(encodeReply('ok', new Uint8Array(10), 64)[0]!);
  t.equal(wireError(() => more.push(new Uint8Array(11))), 'malformed', 'more bytes than announced');
  t.equal(wireError(() => new ReplyAssembler(10).push(new Uint8Array(HEADER_SIZE))), 'malformed', 'no magic');
});

/** A fake sysfs tree with one vmpi-bound virtio device (and one of another driver). */
function fakeSys(channelStats: string | null): string {
  const root = mkdtempSync(join(dir, 'sys-'));
  const devs = join(root, 'bus', 'virtio', 'devices');
  const drivers = join(root, 'bus', 'virtio', 'drivers');
  mkdirSync(join(drivers, 'vmpi'), { recursive: true });
  mkdirSync(join(drivers, 'gpio_virtio'), { recursive: true });
  const dev = (name: string, driver: string, files: Record<string, string>) => {
    mkdirSync(join(devs, name), { recursive: true });
    writeFileSync(join(devs, name, 'device'), '0x0029\n');
    symlinkSync(join(drivers, driver), join(devs, name, 'driver'));
    for (const [f, v] of Object.entries(files)) writeFileSync(join(devs, name, f), v);
  };
  dev('virtio2', 'vmpi', {
    devname: 'vmpi0\n', vmpi_id: '7\n', max_sdu: '65536\n', rx_frames: '10\n', rx_bytes: '1000\n', tx_frames: '4\n', tx_bytes: '40\n',
    rx_drops_unbound: '1\n', rx_drops_full: '0\n', rx_drops_stalled: '2\n', rx_drops_nomem: '0\n', rx_short: '0\n', rx_oversize: '0\n', ring_resets: '0\n', config_rejected: '0\n',
    ...(channelStats === null ? {} : { channel_stats: channelStats }),
  });
  dev('virtio3', 'gpio_virtio', { devname: 'x\n', vmpi_id: '9\n' });
  return root;
}

const HEADER = 'channel rx_sdus rx_bytes tx_sdus tx_bytes rx_drops_full rx_drops_stalled rx_full tx_full rx_queued\n';

t.test('sysfs: channel_stats parser', async (t) => {
  t.same(parseChannelStats(HEADER), { channels: [], truncated: 0 }, 'no bound channel');
  const p = parseChannelStats(`${HEADER}3 5 500 2 20 0 1 1 0 4\n# truncated 2\n`);
  t.equal(p.truncated, 2);
  t.same(p.channels, [{ channel: 3, values: { rx_sdus: 5, rx_bytes: 500, tx_sdus: 2, tx_bytes: 20, rx_drops_full: 0, rx_drops_stalled: 1, rx_full: 1, tx_full: 0, rx_queued: 4 } }]);
  t.same(parseChannelStats('channel rx_sdus later_column\n4 9 1\n').channels, [{ channel: 4, values: { rx_sdus: 9, later_column: 1 } }], 'columns by header name');
  t.throws(() => parseChannelStats('3 5 500\n'), DriverStatsError, 'no header');
  t.throws(() => parseChannelStats(`${HEADER}3 5\n`), DriverStatsError, 'short line');
  t.throws(() => parseChannelStats(`${HEADER}3 5 x 2 20 0 1 1 0 4\n`), DriverStatsError, 'not a number');
});

t.test('sysfs: driver families read at scrape time', async (t) => {
  const root = fakeSys(`${HEADER}3 5 500 2 20 0 1 1 0 4\n`);
  const reg = new Registry();
  const stats = registerDriverMetrics(reg, root);
  const text = await reg.metrics();
  t.match(text, 'vmpi_guest_device_info{vmpi_id="7",devname="vmpi0"} 1');
  t.notMatch(text, 'vmpi_id="9"', 'a carrier bound to another driver is not read');
  t.match(text, 'vmpi_guest_device_sdus_total{vmpi_id="7",direction="to_guest"} 10');
  t.match(text, 'vmpi_guest_device_bytes_total{vmpi_id="7",direction="from_guest"} 40');
  t.match(text, 'vmpi_guest_device_drops_total{vmpi_id="7",reason="stalled"} 2');
  t.match(text, 'vmpi_guest_channel_sdus_total{vmpi_id="7",channel="3",direction="to_guest"} 5');
  t.match(text, 'vmpi_guest_channel_bytes_total{vmpi_id="7",channel="3",direction="from_guest"} 20');
  t.match(text, 'vmpi_guest_channel_queue_full_total{vmpi_id="7",channel="3",direction="to_guest"} 1');
  t.match(text, 'vmpi_guest_channel_rx_queued_sdus{vmpi_id="7",channel="3"} 4');
  t.equal(stats.readErrors(), 0);
  writeFileSync(join(root, 'bus/virtio/devices/virtio2/channel_stats'), 'garbage\n');
  await new Promise((r) => setImmediate(r));
  const bad = await reg.metrics();
  t.equal(stats.readErrors(), 1, 'a malformed channel_stats is counted');
  t.match(bad, 'vmpi_guest_sysfs_read_errors_total 1');
  t.notMatch(bad, 'vmpi_guest_device_info{', "that device's samples are left out, the scrape still works");
  const old = registerDriverMetrics(new Registry(), fakeSys(null));
  t.equal(old.readErrors(), 0, 'an older driver without channel_stats');
});

t.test('through the VMPI: /metrics/guest/<id>, /sd/guests, timeout, refusal, oversize', async (t) => {
  const { host, guest } = setup(t, { pair: { vmpiId: 7, maxSdu: 1024 } });
  const guestReg = new Registry();
  const big = 'x'.repeat(5000);
  let text = `# HELP guest_fixture_value a value\n# TYPE guest_fixture_value gauge\nguest_fixture_value 42\n${'# padding\n'.repeat(200)}`;
  const app = new GuestMetricsApp({ ipcps: [guest], render: async () => text, registry: guestReg });
  t.teardown(() => app.close());
  const vmHost = new VmpiHost();
  t.teardown(() => vmHost.close());
  const fetcher = new GuestMetricsFetcher({ ipcps: () => [host], timeoutMs: 300, maxBytes: 4096 });
  const metrics = new HostMetrics(vmHost, { processMetrics: false });
  metrics.addIpcp(host);
  metrics.addGuestScrapes(fetcher);
  const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 }, undefined, { routes: fetcher.routes });
  t.teardown(async () => {
    fetcher.close();
    metrics.close();
    await server.close();
  });
  const base = `http://127.0.0.1:${server.address.port}`;

  const ok = await httpGet(`${base}/metrics/guest/7`);
  t.equal(ok.status, 200);
  t.equal(ok.type, 'text/plain; version=0.0.4; charset=utf-8');
  t.equal(ok.body, text, "the guest's exposition, verbatim, over several SDUs of at most 1024 bytes");
  t.equal(host.flows().length, 0, 'the host deallocated the flow');

  const sd = await httpGet(`${base}/sd/guests`);
  t.equal(sd.status, 200);
  t.same(JSON.parse(sd.body), [{ targets: [`127.0.0.1:${server.address.port}`], labels: { __metrics_path__: '/metrics/guest/7', vmpi_guest_id: '7' } }]);

  t.equal((await httpGet(`${base}/metrics/guest/99`)).status, 404, 'an unknown VMPI-id');

  const [c1, c2] = await Promise.all([httpGet(`${base}/metrics/guest/7`), httpGet(`${base}/metrics/guest/7`)]);
  t.same([c1.status, c2.status], [200, 200], 'concurrent requests share one fetch');

  text = big;
  const over = await httpGet(`${base}/metrics/guest/7`);
  t.equal(over.status, 502, 'an exposition over the budget');
  t.match(over.body, /guest_error: .*over the host's budget of 4096/);

  app.close();
  const silentRegs: Array<() => void> = [];
  const refused = await httpGet(`${base}/metrics/guest/7`);
  t.equal(refused.status, 502, 'vmpi-metrics not registered: refused at allocation');
  t.match(refused.body, /^unreachable: /);

  // A guest that accepts and never answers: bounded by the timeout.
  const reg = guest.register('vmpi-metrics', (req) => void req.accept());
  silentRegs.push(() => reg.unregister());
  t.teardown(() => silentRegs.forEach((f) => f()));
  const t0 = Date.now();
  const silent = await httpGet(`${base}/metrics/guest/7`);
  const took = Date.now() - t0;
  t.equal(silent.status, 504, 'a silent guest: 504');
  t.ok(took >= 250 && took < 300 + 400, `answered after about the timeout (300 ms): ${took} ms`);
  const own = await httpGet(`${base}/metrics`);
  t.equal(own.status, 200, "the host's own /metrics still answers");
  t.match(own.body, 'vmpi_guest_scrapes_total{vmpi_id="7",outcome="ok"} 2');
  t.match(own.body, 'vmpi_guest_scrapes_total{vmpi_id="7",outcome="guest_error"} 1');
  t.match(own.body, 'vmpi_guest_scrapes_total{vmpi_id="7",outcome="unreachable"} 1');
  t.match(own.body, 'vmpi_guest_scrapes_total{vmpi_id="7",outcome="timeout"} 1');
  t.notMatch(own.body, 'vmpi_id="99"', 'made-up ids add no series');
  t.match(await guestReg.metrics(), 'vmpi_guest_metrics_requests_total{outcome="ok"} 2');
});

t.test('the host counts each shim DIF flow per channel', async (t) => {
  const { host, guest } = setup(t, { pair: { vmpiId: 7 } });
  guest.register('sink', (req) => void req.accept());
  const vmHost = new VmpiHost();
  t.teardown(() => vmHost.close());
  const metrics = new HostMetrics(vmHost, { processMetrics: false });
  metrics.addIpcp(host);
  const f = await host.allocateFlow('src', 'sink');
  for (let i = 0; i < 3; i++) f.write(new Uint8Array(100));
  const text = await metrics.metrics();
  t.match(text, `vmpi_channel_sdus_total{vmpi_id="7",channel="${f.channel}",direction="to_guest"} 3`);
  t.match(text, `vmpi_channel_bytes_total{vmpi_id="7",channel="${f.channel}",direction="to_guest"} 300`);
  t.match(text, `vmpi_channel_sdus_total{vmpi_id="7",channel="${f.channel}",direction="from_guest"} 0`);
  f.deallocate();
  t.notMatch(await metrics.metrics(), 'vmpi_channel_sdus_total{', 'gone with the flow');
  const g = new HostMetrics(null, { processMetrics: false });
  const gText = await g.metrics();
  t.notMatch(gText, /vmpi_(device|vhost_user|channel|guest_scrapes)_/, 'without a host: no device, vhost-user, channel or scrape families');
  t.match(gText, 'vmpi_ipc_sessions', 'the IPC and DIF families stay');
});
