/**
 * metrics.test.ts — src/ops/metrics.ts: a VmpiHost with real vhost-user sockets, its device stats
 * set by hand, scraped over HTTP on an ephemeral loopback port. Checks the values, the labels,
 * monotonic counters across a reconnect, connection counters from real connects (one clean, one
 * protocol error), the HTTP edges, and that `promtool check metrics` accepts the output (when
 * promtool is installed: VMPI_TEST_TOOLS=1 scripts/setup-system.sh installs it).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/sys/native.js';
import { HostMetrics, startMetricsServer } from '../src/ops/metrics.js';
import { FrontendRequestError, VhostUserFrontend } from './frontend/frontend.js';
import { acceptAll, settle, setup } from './dif/helpers.js';
import { VmpiHost } from '../src/vmpi/host.js';
import { httpGet, sample } from './helpers/exposition.js';

const dir = mkdtempSync(join(tmpdir(), 'vmpi-metrics-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(pred: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const promtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

t.test('device and connection metrics, scraped over HTTP', async (t) => {
  const host = new VmpiHost();
  const a = host.addDevice({ socketPath: join(dir, 'a.sock'), vmpiId: 7 });
  const metrics = new HostMetrics(host, { version: '9.9.9' });
  // Added after the metrics object: must be followed too.
  const b = host.addDevice({ socketPath: join(dir, 'b.sock'), vmpiId: 8, maxSduLog2: 12 });
  const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    host.close();
    metrics.close();
    await server.close();
  });
  t.equal(server.address.host, '127.0.0.1');
  t.ok(server.address.port > 0, 'ephemeral port');
  t.equal(server.url, `http://127.0.0.1:${server.address.port}/metrics`);

  a.stats.toGuest.sdus = 11;
  a.stats.toGuest.bytes = 1100;
  a.stats.fromGuest.sdus = 22;
  a.stats.fromGuest.bytes = 2200;
  a.stats.drops.unbound_channel = 3;
  a.stats.drops.backlog_full = 4;
  a.stats.rxQueueFull = 5;
  a.stats.kicks = 6;
  a.stats.calls = 7;
  a.stats.backlogSdus = 2;
  a.stats.backlogBytes = 300;
  b.stats.drops.oversize = 1;

  let r = await httpGet(server.url);
  t.equal(r.status, 200);
  t.match(r.type, /^text\/plain; version=0\.0\.4/);
  const m = r.body;
  t.equal(sample(m, 'vmpi_device_sdus_total', { vmpi_id: '7', direction: 'to_guest' }), 11);
  t.equal(sample(m, 'vmpi_device_sdus_total', { vmpi_id: '7', direction: 'from_guest' }), 22);
  t.equal(sample(m, 'vmpi_device_bytes_total', { vmpi_id: '7', direction: 'to_guest' }), 1100);
  t.equal(sample(m, 'vmpi_device_bytes_total', { vmpi_id: '7', direction: 'from_guest' }), 2200);
  t.equal(sample(m, 'vmpi_device_drops_total', { vmpi_id: '7', reason: 'unbound_channel' }), 3);
  t.equal(sample(m, 'vmpi_device_drops_total', { vmpi_id: '7', reason: 'backlog_full' }), 4);
  t.equal(sample(m, 'vmpi_device_drops_total', { vmpi_id: '7', reason: 'malformed' }), 0, 'every reason present from the start');
  t.equal(sample(m, 'vmpi_device_rx_queue_full_total', { vmpi_id: '7' }), 5);
  t.equal(sample(m, 'vmpi_device_kicks_total', { vmpi_id: '7' }), 6);
  t.equal(sample(m, 'vmpi_device_calls_total', { vmpi_id: '7' }), 7);
  t.equal(sample(m, 'vmpi_device_backlog_sdus', { vmpi_id: '7' }), 2);
  t.equal(sample(m, 'vmpi_device_backlog_bytes', { vmpi_id: '7' }), 300);
  t.equal(sample(m, 'vmpi_device_backlog_max_sdus', { vmpi_id: '7' }), 4096, 'the backlog bounds, for a fill ratio');
  t.equal(sample(m, 'vmpi_device_backlog_max_bytes', { vmpi_id: '7' }), 4 * 1024 * 1024);
  t.equal(sample(m, 'vmpi_device_up', { vmpi_id: '7' }), 0, 'no guest driver');
  t.equal(sample(m, 'vmpi_device_max_sdu_bytes', { vmpi_id: '8' }), 4096);
  t.equal(sample(m, 'vmpi_device_drops_total', { vmpi_id: '8', reason: 'oversize' }), 1, 'devices do not mix');
  t.equal(sample(m, 'vmpi_device_drops_total', { vmpi_id: '7', reason: 'oversize' }), 0);
  t.equal(sample(m, 'vmpi_device_sdus_total', { vmpi_id: '8', direction: 'to_guest' }), 0, 'device added after the metrics object');
  t.equal(sample(m, 'vmpi_device_info', { vmpi_id: '7', carrier: 'gpio', socket: join(dir, 'a.sock') }), 1);
  t.equal(sample(m, 'vmpi_build_info', { version: '9.9.9', nodejs: process.versions.node }), 1);
  t.match(m, /^vmpi_uncaught_errors_total 0$/m, 'nothing reached the process guard');
  t.equal(sample(m, 'vmpi_vhost_user_connections', { vmpi_id: '7' }), 0);
  t.equal(sample(m, 'vmpi_vhost_user_connections_accepted_total', { vmpi_id: '7' }), 0);
  for (const std of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'process_max_fds', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds']) {
    t.match(m, new RegExp(`^${std} \\d`, 'm'), `standard process metric ${std} under its standard name`);
  }
  t.notMatch(m, /^vmpi_process_|^vmpi_nodejs_/m, 'no vmpi_ prefix on the standard ones');
  t.notMatch(m, /channel=/, 'no per-channel labels');

  // A front-end connects and goes away cleanly, another breaks the protocol.
  const fd1 = native.connectUnix(join(dir, 'a.sock'));
  await until(() => host.server(7)!.connections.size === 1, 'first connection');
  r = await httpGet(server.url);
  t.equal(sample(r.body, 'vmpi_vhost_user_connections', { vmpi_id: '7' }), 1);
  t.equal(sample(r.body, 'vmpi_vhost_user_connections_accepted_total', { vmpi_id: '7' }), 1);
  native.close(fd1);
  await until(() => host.server(7)!.connections.size === 0, 'first disconnect');

  const fd2 = native.connectUnix(join(dir, 'a.sock'));
  await until(() => host.server(7)!.connections.size === 1, 'second connection');
  const hdr = new Uint8Array(12);
  new DataView(hdr.buffer).setUint32(0, 9999, true); // no such request
  new DataView(hdr.buffer).setUint32(4, 1, true); // version 1
  native.sendMsg(fd2, hdr, 0, hdr.byteLength, null);
  await until(() => host.server(7)!.connections.size === 0, 'protocol-error disconnect');
  native.close(fd2);

  // The counters are cumulative: a disconnect (device reset) must not lower them.
  a.stats.toGuest.sdus += 1;
  r = await httpGet(server.url);
  const m2 = r.body;
  t.equal(sample(m2, 'vmpi_vhost_user_connections', { vmpi_id: '7' }), 0);
  t.equal(sample(m2, 'vmpi_vhost_user_connections_accepted_total', { vmpi_id: '7' }), 2);
  t.equal(sample(m2, 'vmpi_vhost_user_protocol_errors_total', { vmpi_id: '7' }), 1);
  t.equal(sample(m2, 'vmpi_vhost_user_disconnects_total', { vmpi_id: '7', cause: 'peer_closed' }), 1);
  t.equal(sample(m2, 'vmpi_vhost_user_disconnects_total', { vmpi_id: '7', cause: 'protocol_error' }), 1);
  t.equal(sample(m2, 'vmpi_vhost_user_connections_accepted_total', { vmpi_id: '8' }), 0);
  t.equal(sample(m2, 'vmpi_device_sdus_total', { vmpi_id: '7', direction: 'to_guest' }), 12, 'monotonic across reconnects');
  t.equal(sample(m2, 'vmpi_device_bytes_total', { vmpi_id: '7', direction: 'from_guest' }), 2200);
  t.equal(sample(m2, 'vmpi_device_backlog_sdus', { vmpi_id: '7' }), 0, 'the reset cleared the backlog gauge');

  // A removed device disappears.
  host.removeDevice(8);
  r = await httpGet(server.url);
  t.equal(sample(r.body, 'vmpi_device_sdus_total', { vmpi_id: '8', direction: 'to_guest' }), undefined);
  t.ok(sample(r.body, 'vmpi_device_sdus_total', { vmpi_id: '7', direction: 'to_guest' }) !== undefined);

  // HTTP edges.
  t.equal((await httpGet(server.url, { method: 'HEAD' })).status, 200);
  t.equal((await httpGet(server.url.replace('/metrics', '/nope'))).status, 404);
  t.equal((await httpGet(server.url, { method: 'POST' })).status, 405);
  t.equal((await httpGet(server.url.replace('/metrics', '/'))).status, 200);
  t.equal((await httpGet(`${server.url}?x=1`)).status, 200, 'query string ignored');

  t.test('promtool check metrics', { skip: promtool ? false : 'promtool not installed (VMPI_TEST_TOOLS=1 bash scripts/setup-system.sh)' }, async (t) => {
    const p = spawnSync('promtool', ['check', 'metrics'], { input: m2, encoding: 'utf8' });
    t.equal(p.stdout + p.stderr, '', 'no lint findings');
    t.equal(p.status, 0, 'promtool exit status');
  });
});

t.test('metrics server: a port in use is a clear error', async (t) => {
  const host = new VmpiHost();
  const metrics = new HostMetrics(host, { processMetrics: false });
  const first = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  t.teardown(() => first.close());
  await t.rejects(startMetricsServer(metrics, first.address), { name: 'MetricsServerError', message: /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE; choose another with --metrics-listen/ });
  const r = await httpGet(first.url);
  t.notMatch(r.body, /^process_/m, 'processMetrics: false');
  t.match(r.body, /# TYPE vmpi_device_sdus_total counter/, 'families declared even with no device');
});

t.test('a request rejected with REPLY_ACK counts as a protocol error and keeps the connection', async (t) => {
  const host = new VmpiHost();
  t.teardown(() => host.close());
  host.addDevice({ socketPath: join(dir, 'ack.sock'), vmpiId: 9 });
  const metrics = new HostMetrics(host, { processMetrics: false });
  const fe = new VhostUserFrontend(join(dir, 'ack.sock'));
  t.teardown(() => fe.close());
  await fe.setProtocolFeatures(await fe.getProtocolFeatures());
  // Feature bit 2 was never offered (bit 0 is VMPI_F_RX_PACKED, bit 1 VMPI_F_TX_PACKED): nacked, connection kept.
  await t.rejects(fe.setFeatures(4n), FrontendRequestError);
  t.equal(host.server(9)!.connections.size, 1, 'still connected');
  const m = await metrics.metrics();
  t.equal(sample(m, 'vmpi_vhost_user_protocol_errors_total', { vmpi_id: '9' }), 1);
  t.equal(sample(m, 'vmpi_vhost_user_disconnects_total', { vmpi_id: '9', cause: 'protocol_error' }), 0);
});

t.test('DIF metrics: flows come and go, counters only grow, series stay bounded', async (t) => {
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const metrics = new HostMetrics(host, { processMetrics: false });
  const s = setup(t);
  metrics.addIpcp(s.host);
  const echo = acceptAll(s.guest, 'echo/1');
  s.guest.register('picky/1', (req) => req.reject('not today'));

  for (let round = 0; round < 3; round++) {
    const f = await s.host.allocateFlow('client/1', 'echo/1');
    const peer = await echo.next();
    f.write(new Uint8Array(100));
    f.write(new Uint8Array(50));
    peer.write(new Uint8Array(10));
    await settle();
    const m = await metrics.metrics();
    t.equal(sample(m, 'vmpi_dif_flows_active', { dif: s.host.difName }), 1, `round ${round}: one flow active`);
    f.deallocate('round over');
    await settle();
  }
  await t.rejects(s.host.allocateFlow('client/1', 'picky/1'));
  await t.rejects(s.host.allocateFlow('client/1', 'nobody/1'));

  const m = await metrics.metrics();
  const dif = { dif: s.host.difName };
  t.equal(sample(m, 'vmpi_dif_flows_active', dif), 0, 'no flow left');
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'outgoing', outcome: 'allocated' }), 3);
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'outgoing', outcome: 'rejected' }), 2, 'rejections by the peer (unknown app included)');
  t.equal(sample(m, 'vmpi_dif_flows_deallocated_total', dif), 3);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { ...dif, direction: 'tx' }), 6, 'SDUs of deallocated flows still counted');
  t.equal(sample(m, 'vmpi_dif_bytes_total', { ...dif, direction: 'tx' }), 450);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { ...dif, direction: 'rx' }), 3);
  t.equal((m.match(/^vmpi_dif_sdus_total\{/gm) ?? []).length, 2, 'two series per DIF, however many flows came and went');
  if (promtool) {
    const p = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
    t.equal(p.stdout + p.stderr, '', 'promtool: no lint findings');
  }
});

t.test('metrics server: at most maxConnections sockets, idle ones closed', async (t) => {
  const { connect } = await import('node:net');
  const host = new VmpiHost();
  const metrics = new HostMetrics(host, { processMetrics: false });
  const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 }, undefined, { maxConnections: 2, idleTimeoutMs: 300 });
  t.teardown(() => server.close());
  const closed: number[] = [];
  const open = (i: number) => {
    const s = connect(server.address.port, '127.0.0.1');
    s.on('close', () => closed.push(i));
    s.on('error', () => undefined);
    t.teardown(() => s.destroy());
    return s;
  };
  open(0);
  open(1);
  await sleep(50);
  open(2);
  await until(() => closed.includes(2), 'the connection over the cap closed', 2000);
  t.same(closed, [2], 'only the one over the cap');
  t.equal(server.stats.dropped, 1, 'counted');
  await until(() => closed.includes(0) && closed.includes(1), 'idle connections closed', 3000);
  t.equal((await httpGet(server.url)).status, 200, 'and a real scrape is served again');
});

t.test('IPC daemon and receive-budget metrics', async (t) => {
  const { IpcDaemon } = await import('../src/dif/ipc/daemon.js');
  const { setup: difSetup } = await import('./dif/helpers.js');
  const host = new VmpiHost();
  const metrics = new HostMetrics(host, { processMetrics: false });
  const { host: ipcp } = difSetup(t);
  metrics.addIpcp(ipcp);
  const daemon = new IpcDaemon({ socketPath: join(dir, 'ipc-metrics.sock'), maxRingBytes: 12345678 });
  daemon.addIpcp(ipcp);
  daemon.listen();
  t.teardown(() => daemon.close());
  metrics.addIpcDaemon(daemon);
  const fd = native.connectUnix(daemon.socketPath);
  t.teardown(() => native.close(fd));
  await until(() => daemon.sessionCount === 1, 'session');
  const m = await metrics.metrics();
  t.equal(sample(m, 'vmpi_ipc_sessions', {}), undefined, 'no labels: printed without braces');
  t.match(m, /^vmpi_ipc_sessions 1$/m);
  t.match(m, /^vmpi_ipc_output_queued_bytes 0$/m);
  t.equal(sample(m, 'vmpi_ipc_sessions_closed_total', { cause: 'output_limit' }), 0);
  t.equal(sample(m, 'vmpi_ipc_connections_refused_total', { reason: 'max_sessions_per_uid' }), 0);
  t.equal(sample(m, 'vmpi_ipc_flows_aborted_total', { reason: 'fds_on_flow_socket' }), 0);
  t.match(m, /^vmpi_ipc_sdus_dropped_total 0$/m);
  t.match(m, /^vmpi_ipc_ring_flows 0$/m);
  t.match(m, /^vmpi_ipc_ring_bytes 0$/m);
  t.match(m, /^vmpi_ipc_ring_max_bytes 12345678$/m);
  t.match(m, /^vmpi_ipc_rings_refused_total 0$/m);
  t.equal(sample(m, 'vmpi_dif_rx_queued_bytes', { dif: ipcp.difName }), 0);
  t.equal(sample(m, 'vmpi_dif_rx_budget_drops_total', { dif: ipcp.difName, budget: 'flow_bytes' }), 0);
  t.test('promtool check metrics', { skip: promtool ? false : 'promtool not installed' }, async (t) => {
    const p = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
    t.equal(p.stdout + p.stderr, '', 'no lint findings');
  });
});

t.test('normal DIF metrics: an enroller relaying between two members, scraped per IPC process', async (t) => {
  const { topology, acceptAll: acceptNormal, knows, within } = await import('./dif/normal/ipcp-harness.js');
  const topo = await topology(t);
  // One registry per IPC process here (all three are in one DIF, so they would share `dif`).
  const hostM = new HostMetrics(new VmpiHost(), { processMetrics: false });
  const vm1M = new HostMetrics(new VmpiHost(), { processMetrics: false });
  const vm2M = new HostMetrics(new VmpiHost(), { processMetrics: false });
  hostM.addIpcp(topo.host);
  vm1M.addIpcp(topo.vm1);
  vm2M.addIpcp(topo.vm2);
  const echo = acceptNormal(topo.vm2, 'echo/1');
  topo.vm2.register('picky/1', (req) => req.reject('not today'));
  await until(() => knows(topo.vm1, 'echo') && knows(topo.vm1, 'picky'), 'registrations flooded to vm1', 5000);
  const dif = { dif: topo.host.difName };

  const f = await within(topo.vm1.allocateFlow('client/1', 'echo/1', { reliable: true }), 5000, 'flow vm1 → vm2 allocated');
  const peer = await within(echo.next(), 5000, 'the flow accepted at vm2');
  for (let i = 0; i < 5; i++) await within(f.send(new Uint8Array(100 + i)), 2000, `SDU ${i} sent`);
  for (let i = 0; i < 5; i++) t.equal((await within(peer.read(), 2000, `SDU ${i} read at vm2`))?.byteLength, 100 + i);
  await t.rejects(within(topo.vm1.allocateFlow('client/1', 'picky/1'), 5000, 'the picky app answers'), { code: 'rejected' });

  let m = await vm1M.metrics();
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { ...dif, type: 'normal', name: 'vm1.n' }), 1, 'type and name');
  t.equal(sample(m, 'vmpi_dif_flows_active', dif), 1);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { ...dif, direction: 'tx' }), 5);
  t.equal(sample(m, 'vmpi_dif_bytes_total', { ...dif, direction: 'tx' }), 510);
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'outgoing', outcome: 'allocated' }), 1);
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'outgoing', outcome: 'rejected' }), 1);
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'outgoing', outcome: 'failed' }), 0);
  t.equal(sample(m, 'vmpi_dif_neighbours', dif), 1, 'a member has the enroller as its one neighbour');
  t.equal(sample(m, 'vmpi_dif_rx_queued_bytes', dif), undefined, 'no receive-budget series for a DIF without one');
  t.equal(sample(m, 'vmpi_dif_enrolled', dif), 1, 'the member is enrolled');
  t.equal(sample(m, 'vmpi_dif_efcp_pdus_total', { ...dif, direction: 'tx' }), 5, 'one data PDU per SDU');
  for (const event of ['retransmissions', 'rtx_timeouts', 'window_stalls', 'lost_pdus', 'duplicates', 'tx_refused', 'lower_refused', 'reorder_drops', 'rx_byte_drops', 'beyond_window', 'rx_paused_drops']) {
    t.equal(sample(m, 'vmpi_dif_efcp_events_total', { ...dif, event }), 0, `no EFCP ${event} on a lossless path`);
  }
  for (const event of ['ctrl_sent', 'ctrl_rcvd']) {
    t.type(sample(m, 'vmpi_dif_efcp_events_total', { ...dif, event }), 'number', `EFCP ${event} is a series (credit/ACK pacing)`);
  }
  t.equal(sample(m, 'vmpi_dif_rmt_queued_pdus', dif), 0, 'nothing left in the RMT queues');

  m = await vm2M.metrics();
  t.equal(sample(m, 'vmpi_dif_sdus_total', { ...dif, direction: 'rx' }), 5);
  t.equal(sample(m, 'vmpi_dif_bytes_total', { ...dif, direction: 'rx' }), 510);
  t.equal(sample(m, 'vmpi_dif_efcp_pdus_total', { ...dif, direction: 'rx' }), 5, 'the 5 data PDUs arrived at vm2');
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'incoming', outcome: 'allocated' }), 1);
  t.equal(sample(m, 'vmpi_dif_flow_allocations_total', { ...dif, direction: 'incoming', outcome: 'rejected' }), 1);

  m = await hostM.metrics();
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { ...dif, type: 'normal', name: 'host.n' }), 1);
  t.equal(sample(m, 'vmpi_dif_neighbours', dif), 2, 'the enroller neighbours both members');
  t.equal(sample(m, 'vmpi_dif_flows_active', dif), 0, 'the relay has no flow of its own');
  const forwarded = sample(m, 'vmpi_dif_rmt_pdus_forwarded_total', dif) ?? 0;
  t.ok(forwarded >= 5 + 2 * 2, `every data PDU and both allocations' request and answer went through the relay (${forwarded} PDUs)`);
  for (const reason of ['no_route', 'ttl', 'queue_full', 'no_cep', 'no_mgmt', 'port_down', 'too_big', 'malformed']) {
    t.equal(sample(m, 'vmpi_dif_rmt_pdus_dropped_total', { ...dif, reason }), 0, `no PDU dropped (${reason})`);
  }

  f.deallocate('done');
  await until(() => peer.state === 'deallocated', 'the deallocation reached vm2', 5000);
  m = await vm1M.metrics();
  t.equal(sample(m, 'vmpi_dif_flows_active', dif), 0);
  t.equal(sample(m, 'vmpi_dif_flows_deallocated_total', dif), 1);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { ...dif, direction: 'tx' }), 5, 'SDUs of the deallocated flow still counted');
  t.equal(sample(m, 'vmpi_dif_efcp_pdus_total', { ...dif, direction: 'tx' }), 5, 'and its EFCP PDUs, once');
  if (promtool) {
    const p = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
    t.equal(p.stdout + p.stderr, '', 'promtool: no lint findings');
  }
});

t.test('vmpi serve follows its normal DIF enroller in the metrics, next to the shim DIF', async (t) => {
  const { parseConfig, mergeServeOptions } = await import('../src/ops/config.js');
  const { startServing } = await import('../src/ops/serve.js');
  const config = parseConfig('normal: { dif: n.DIF }\n', { format: 'yaml' });
  const plan = mergeServeOptions(config, { sockets: [join(dir, 'serve.sock')], listenFds: [], vmpiIds: [5], metricsListen: { host: '127.0.0.1', port: 0 } });
  const serving = await startServing(plan, { ipc: null });
  t.teardown(() => serving.close());
  t.ok(serving.normal, 'the enroller runs');
  const m = (await httpGet(serving.metricsServer!.url)).body;
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { dif: 'n.DIF', type: 'normal', name: 'n.DIF.host' }), 1, 'the normal IPC process');
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { dif: 'hv.vmpi-5', type: 'shim-hv', name: 'hv.vmpi-5.host' }), 1, 'the shim IPC process of the device');
  t.equal(sample(m, 'vmpi_dif_neighbours', { dif: 'n.DIF' }), 0, 'no member enrolled yet');
  t.equal(sample(m, 'vmpi_dif_flows_active', { dif: 'n.DIF' }), 0);
});

t.test('shim-udp metrics: datagrams, bytes, drops by reason, resolutions', async (t) => {
  const { ShimUdpIpcp } = await import('../src/dif/shim-udp/ipcp.js');
  const { createSocket } = await import('node:dgram');
  const host = new VmpiHost();
  t.teardown(() => host.close());
  const metrics = new HostMetrics(host, { processMetrics: false });
  const a = await ShimUdpIpcp.open({ difName: 'udp.m', bind: '127.0.0.1:0' });
  const b = await ShimUdpIpcp.open({ difName: 'udp.m', bind: '127.0.0.1:0' });
  t.teardown(() => {
    a.close();
    b.close();
  });
  b.addPeer('srv', a.localAddress);
  a.allowAddress(b.localAddress);
  metrics.addIpcp(a);
  // One IPC process per DIF name in one registry: b (the requester) in its own.
  const metricsB = new HostMetrics(host, { processMetrics: false });
  metricsB.addIpcp(b);
  a.register('srv', (req) => void req.accept());
  const f = await b.allocateFlow('cli', 'srv');
  f.write(new Uint8Array(100));
  await t.rejects(b.allocateFlow('cli', 'nowhere'));
  const stranger = createSocket('udp4');
  t.teardown(() => stranger.close());
  await new Promise<void>((r) => stranger.send(Buffer.of(1, 2, 3), Number(a.localAddress.split(':')[1]), '127.0.0.1', () => r()));
  const end = Date.now() + 2000;
  while (a.counters().datagramDrops!.unknown_peer === 0 || a.flows()[0]?.stats.rxSdus !== 1) {
    if (Date.now() > end) throw new Error('timed out waiting for the datagrams');
    await new Promise((r) => setTimeout(r, 10));
  }
  const m = await metrics.metrics();
  t.equal(sample(m, 'vmpi_dif_ipcp_info', { dif: 'udp.m', type: 'shim-udp', name: `udp.m.127.0.0.1:0` }), 1);
  t.equal(sample(m, 'vmpi_dif_datagrams_total', { dif: 'udp.m', direction: 'rx' }), a.stats.rxDatagrams);
  t.ok(a.stats.rxDatagrams >= 3, 'request, data, the stranger');
  t.equal(sample(m, 'vmpi_dif_datagram_bytes_total', { dif: 'udp.m', direction: 'rx' }), a.stats.rxBytes);
  t.equal(sample(m, 'vmpi_dif_datagram_drops_total', { dif: 'udp.m', reason: 'unknown_peer' }), 1);
  t.equal(sample(m, 'vmpi_dif_datagram_drops_total', { dif: 'udp.m', reason: 'malformed' }), 0);
  const mb = await metricsB.metrics();
  t.equal(sample(mb, 'vmpi_dif_resolutions_total', { dif: 'udp.m', outcome: 'unresolved' }), 1);
  t.equal(sample(mb, 'vmpi_dif_resolutions_total', { dif: 'udp.m', outcome: 'resolved' }), 1);
  t.equal(sample(m, 'vmpi_dif_sdus_total', { dif: 'udp.m', direction: 'rx' }), 1);
});
