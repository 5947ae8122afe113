/**
 * metrics.ts — Prometheus metrics for a VmpiHost, and the HTTP server that exposes them.
 *
 * Owns: one prom-client Registry per host (process metrics with the `vmpi_` prefix, plus the
 * device and vhost-user metrics below) and a small node:http server answering `GET /metrics`
 * (default 127.0.0.1:9464, loopback only unless configured otherwise).
 *
 * Hot path: nothing here runs per SDU. Device metrics are read from `VmpiDevice.stats` in each
 * metric's `collect()` callback, i.e. once per scrape. Device stats are cumulative for the life of
 * the device object, which outlives vhost-user connections, so the counters stay monotonic when
 * QEMU reconnects or the guest driver resets. A device removed from the host disappears from the
 * output; re-adding the same VMPI-id restarts its counters from 0 (Prometheus sees a reset).
 *
 * Labels are bounded: `vmpi_id` (one per configured device) plus small fixed sets (direction,
 * drop reason, disconnect cause).
 * TODO(shim DIF): per-channel metrics (SDUs/bytes per flow). Channels come and go with flows, so
 * they need either a bounded label (the IPCP or DIF name, not the channel id) or series that are
 * deleted when the flow is deallocated; decide when the DIF defines flows.
 *
 * vhost-user connection counters come from the VhostUserServer's `connection`, `disconnect`
 * (with its typed cause) and `rejected` (a request refused with REPLY_ACK, connection kept) events.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { logger as rootLogger, type Logger } from '../log.js';
import type { DisconnectCause } from '../vhost-user/connection.js';
import type { VhostUserServer } from '../vhost-user/server.js';
import type { Flow } from '../dif/api.js';
import type { ShimHvIpcp } from '../dif/shim-hv/ipcp.js';
import type { DropReason, VmpiDevice } from '../vmpi/device.js';
import type { VmpiHost } from '../vmpi/host.js';
import { formatListenAddress, type ListenAddress } from './config.js';

export const METRICS_PREFIX = 'vmpi_';

export type { DisconnectCause };
export const DISCONNECT_CAUSES: readonly DisconnectCause[] = ['peer_closed', 'shutdown', 'protocol_error', 'internal_error', 'io_error'];

const LINT_FAILING_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const DROP_REASONS: readonly DropReason[] = ['malformed', 'oversize', 'unbound_channel', 'backlog_full', 'device_reset'];

interface ConnectionCounts {
  accepted: number;
  disconnects: Record<DisconnectCause, number>;
  /** Requests refused with a failed REPLY_ACK (connection kept). */
  rejected: number;
}

export interface HostMetricsOptions {
  /** Add Node.js process metrics (collectDefaultMetrics, prefix `vmpi_`). Default true. */
  processMetrics?: boolean;
  /** Registry to use (default: a new one). */
  registry?: Registry;
  /** Version reported by vmpi_build_info. */
  version?: string;
}

/** SDU/byte totals of flows that are gone, kept so per-DIF counters never go down. */
interface DifTotals {
  ipcp: ShimHvIpcp;
  retired: { txSdus: number; txBytes: number; rxSdus: number; rxBytes: number; rxQueueDrops: number };
}

/** The metrics of one VmpiHost. Create it before or after adding devices: both are followed. */
export class HostMetrics {
  readonly registry: Registry;
  private readonly difs = new Map<string, DifTotals>();
  private readonly counts = new Map<number, ConnectionCounts>();
  private readonly watched = new WeakSet<VhostUserServer>();
  private readonly onDevice = (d: VmpiDevice): void => this.watch(d.vmpiId);

  constructor(
    private readonly host: VmpiHost,
    opts: HostMetricsOptions = {},
  ) {
    this.registry = opts.registry ?? new Registry();
    if (opts.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: METRICS_PREFIX });
      // prom-client names three gauges `…_total`, which Prometheus reserves for counters
      // (promtool check metrics flags them). Their per-type siblings without the suffix stay:
      // sum(vmpi_nodejs_active_handles) gives the same number.
      for (const n of LINT_FAILING_DEFAULT_METRICS) this.registry.removeSingleMetric(METRICS_PREFIX + n);
    }
    this.define(opts.version ?? 'unknown');
    for (const d of host.devices) this.watch(d.vmpiId);
    host.on('device', this.onDevice);
  }

  /**
   * Follow an IPC process of a DIF (label `dif`: its name, a configured and bounded set). Per-flow
   * counters are summed per DIF, including flows already deallocated, so flows coming and going
   * never add series.
   */
  addIpcp(ipcp: ShimHvIpcp): void {
    if (this.difs.has(ipcp.difName)) return;
    const totals: DifTotals = { ipcp, retired: { txSdus: 0, txBytes: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0 } };
    this.difs.set(ipcp.difName, totals);
    ipcp.on('flowDeallocated', (flow: Flow) => {
      const r = totals.retired;
      r.txSdus += flow.stats.txSdus;
      r.txBytes += flow.stats.txBytes;
      r.rxSdus += flow.stats.rxSdus;
      r.rxBytes += flow.stats.rxBytes;
      r.rxQueueDrops += flow.stats.rxQueueDrops;
    });
  }

  /** Stop following the host's new devices (the registry keeps working for existing ones). */
  close(): void {
    this.host.off('device', this.onDevice);
  }

  /** The text exposition (what GET /metrics returns). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  private watch(vmpiId: number): void {
    const server = this.host.server(vmpiId);
    if (!server || this.watched.has(server)) return;
    this.watched.add(server);
    const counts: ConnectionCounts = { accepted: 0, disconnects: { peer_closed: 0, shutdown: 0, protocol_error: 0, internal_error: 0, io_error: 0 }, rejected: 0 };
    this.counts.set(vmpiId, counts);
    server.on('connection', () => {
      counts.accepted++;
    });
    server.on('disconnect', (_conn, _reason, cause) => {
      counts.disconnects[cause]++;
    });
    server.on('rejected', () => {
      counts.rejected++;
    });
  }

  /** Devices currently on the host, with their connection counts (forgetting removed ones). */
  private current(): { d: VmpiDevice; id: string; counts: ConnectionCounts | undefined; server: VhostUserServer | undefined }[] {
    const devices = this.host.devices;
    if (this.counts.size > devices.length) {
      const live = new Set(devices.map((d) => d.vmpiId));
      for (const id of this.counts.keys()) if (!live.has(id)) this.counts.delete(id);
    }
    return devices.map((d) => ({ d, id: String(d.vmpiId), counts: this.counts.get(d.vmpiId), server: this.host.server(d.vmpiId) }));
  }

  private define(version: string): void {
    const registers = [this.registry];
    const cur = () => this.current();

    const buildInfo = new Gauge({ name: 'vmpi_build_info', help: 'vmpi version (value is always 1)', labelNames: ['version', 'nodejs'] as const, registers });
    buildInfo.set({ version, nodejs: process.versions.node }, 1);

    const info = new Gauge({
      name: 'vmpi_device_info',
      help: 'One series per configured VMPI device (value is always 1), with its carrier and socket',
      labelNames: ['vmpi_id', 'carrier', 'socket'] as const,
      registers,
      collect: () => {
        info.reset();
        for (const { d, id, server } of cur()) info.set({ vmpi_id: id, carrier: d.carrier.name, socket: server?.path ?? 'inherited-fd' }, 1);
      },
    });

    const gauge = (name: string, help: string, value: (d: VmpiDevice, server: VhostUserServer | undefined) => number): void => {
      const g: Gauge<'vmpi_id'> = new Gauge({
        name,
        help,
        labelNames: ['vmpi_id'] as const,
        registers,
        collect: () => {
          g.reset();
          for (const { d, id, server } of cur()) g.set({ vmpi_id: id }, value(d, server));
        },
      });
    };
    const counter = (name: string, help: string, value: (d: VmpiDevice, counts: ConnectionCounts | undefined) => number): void => {
      const c: Counter<'vmpi_id'> = new Counter({
        name,
        help,
        labelNames: ['vmpi_id'] as const,
        registers,
        collect: () => {
          c.reset();
          for (const { d, id, counts } of cur()) c.inc({ vmpi_id: id }, value(d, counts));
        },
      });
    };

    gauge('vmpi_device_max_sdu_bytes', 'Largest SDU the device carries, in bytes', (d) => d.maxSdu);
    gauge('vmpi_device_up', '1 while the guest driver has both queues running, else 0', (d) => (d.isUp ? 1 : 0));
    gauge('vmpi_device_backlog_sdus', 'Host-to-guest SDUs waiting in the backlog for guest buffers', (d) => d.stats.backlogSdus);
    gauge('vmpi_device_backlog_bytes', 'Host-to-guest bytes waiting in the backlog for guest buffers', (d) => d.stats.backlogBytes);
    counter('vmpi_device_rx_queue_full_total', 'Times a host-to-guest send found no free guest rx buffer', (d) => d.stats.rxQueueFull);
    counter('vmpi_device_kicks_total', 'Guest-to-host notifications (kicks) handled', (d) => d.stats.kicks);
    counter('vmpi_device_calls_total', 'Host-to-guest notifications (calls, interrupts) sent', (d) => d.stats.calls);

    const sdus: Counter<'vmpi_id' | 'direction'> = new Counter({
      name: 'vmpi_device_sdus_total',
      help: 'SDUs carried, by direction',
      labelNames: ['vmpi_id', 'direction'] as const,
      registers,
      collect: () => {
        sdus.reset();
        for (const { d, id } of cur()) {
          sdus.inc({ vmpi_id: id, direction: 'to_guest' }, d.stats.toGuest.sdus);
          sdus.inc({ vmpi_id: id, direction: 'from_guest' }, d.stats.fromGuest.sdus);
        }
      },
    });
    const bytes: Counter<'vmpi_id' | 'direction'> = new Counter({
      name: 'vmpi_device_bytes_total',
      help: 'SDU payload bytes carried (without the 4-byte frame header), by direction',
      labelNames: ['vmpi_id', 'direction'] as const,
      registers,
      collect: () => {
        bytes.reset();
        for (const { d, id } of cur()) {
          bytes.inc({ vmpi_id: id, direction: 'to_guest' }, d.stats.toGuest.bytes);
          bytes.inc({ vmpi_id: id, direction: 'from_guest' }, d.stats.fromGuest.bytes);
        }
      },
    });
    const drops: Counter<'vmpi_id' | 'reason'> = new Counter({
      name: 'vmpi_device_drops_total',
      help: 'SDUs or frames dropped or refused, by reason',
      labelNames: ['vmpi_id', 'reason'] as const,
      registers,
      collect: () => {
        drops.reset();
        for (const { d, id } of cur()) for (const reason of DROP_REASONS) drops.inc({ vmpi_id: id, reason }, d.stats.drops[reason] ?? 0);
      },
    });

    gauge('vmpi_vhost_user_connections', 'vhost-user front-ends (QEMU) connected now', (_d, server) => server?.connections.size ?? 0);
    counter('vmpi_vhost_user_connections_accepted_total', 'vhost-user front-end connections accepted', (_d, c) => c?.accepted ?? 0);
    counter('vmpi_vhost_user_protocol_errors_total', 'vhost-user requests that broke the protocol (rejected with REPLY_ACK, or closing the connection)', (_d, c) => (c ? c.disconnects.protocol_error + c.rejected : 0));
    const disconnects: Counter<'vmpi_id' | 'cause'> = new Counter({
      name: 'vmpi_vhost_user_disconnects_total',
      help: 'vhost-user connections closed, by cause',
      labelNames: ['vmpi_id', 'cause'] as const,
      registers,
      collect: () => {
        disconnects.reset();
        for (const { id, counts } of cur()) for (const cause of DISCONNECT_CAUSES) disconnects.inc({ vmpi_id: id, cause }, counts?.disconnects[cause] ?? 0);
      },
    });
    this.defineDifs(registers);
  }

  private defineDifs(registers: Registry[]): void {
    const difs = () => [...this.difs.entries()];
    const flowsActive: Gauge<'dif'> = new Gauge({
      name: 'vmpi_dif_flows_active',
      help: 'Flows allocated now, per DIF',
      labelNames: ['dif'] as const,
      registers,
      collect: () => {
        flowsActive.reset();
        for (const [dif, { ipcp }] of difs()) flowsActive.set({ dif }, ipcp.flows().filter((f) => f.state === 'allocated').length);
      },
    });
    const allocations: Counter<'dif' | 'direction' | 'outcome'> = new Counter({
      name: 'vmpi_dif_flow_allocations_total',
      help: 'Flow allocations by direction (outgoing: asked by a local app; incoming: asked by the peer) and outcome',
      labelNames: ['dif', 'direction', 'outcome'] as const,
      registers,
      collect: () => {
        allocations.reset();
        for (const [dif, { ipcp }] of difs()) {
          const s = ipcp.stats;
          const failedLocally = Math.max(0, s.allocRequested - s.allocSucceeded - s.allocRejectedByPeer - s.allocTimedOut);
          allocations.inc({ dif, direction: 'outgoing', outcome: 'allocated' }, s.allocSucceeded);
          allocations.inc({ dif, direction: 'outgoing', outcome: 'rejected' }, s.allocRejectedByPeer);
          allocations.inc({ dif, direction: 'outgoing', outcome: 'timeout' }, s.allocTimedOut);
          allocations.inc({ dif, direction: 'outgoing', outcome: 'failed' }, failedLocally);
          allocations.inc({ dif, direction: 'incoming', outcome: 'allocated' }, s.incomingAccepted);
          allocations.inc({ dif, direction: 'incoming', outcome: 'rejected' }, s.incomingRejected);
        }
      },
    });
    const deallocated: Counter<'dif'> = new Counter({
      name: 'vmpi_dif_flows_deallocated_total',
      help: 'Flows deallocated (by either end, or because the port went down)',
      labelNames: ['dif'] as const,
      registers,
      collect: () => {
        deallocated.reset();
        for (const [dif, { ipcp }] of difs()) deallocated.inc({ dif }, ipcp.stats.flowsDeallocated);
      },
    });
    const flowSum = (dif: DifTotals, key: 'txSdus' | 'txBytes' | 'rxSdus' | 'rxBytes' | 'rxQueueDrops'): number =>
      dif.retired[key] + dif.ipcp.flows().reduce((n, f) => n + f.stats[key], 0);
    const difSdus: Counter<'dif' | 'direction'> = new Counter({
      name: 'vmpi_dif_sdus_total',
      help: 'SDUs written (tx) and read (rx) on the DIF\'s flows',
      labelNames: ['dif', 'direction'] as const,
      registers,
      collect: () => {
        difSdus.reset();
        for (const [dif, t] of difs()) {
          difSdus.inc({ dif, direction: 'tx' }, flowSum(t, 'txSdus'));
          difSdus.inc({ dif, direction: 'rx' }, flowSum(t, 'rxSdus'));
        }
      },
    });
    const difBytes: Counter<'dif' | 'direction'> = new Counter({
      name: 'vmpi_dif_bytes_total',
      help: 'SDU bytes written (tx) and read (rx) on the DIF\'s flows',
      labelNames: ['dif', 'direction'] as const,
      registers,
      collect: () => {
        difBytes.reset();
        for (const [dif, t] of difs()) {
          difBytes.inc({ dif, direction: 'tx' }, flowSum(t, 'txBytes'));
          difBytes.inc({ dif, direction: 'rx' }, flowSum(t, 'rxBytes'));
        }
      },
    });
    const difDrops: Counter<'dif' | 'reason'> = new Counter({
      name: 'vmpi_dif_drops_total',
      help: 'SDUs dropped in the DIF: rx_queue_full (a flow nobody reads), stale (data for a deallocated flow), malformed_control',
      labelNames: ['dif', 'reason'] as const,
      registers,
      collect: () => {
        difDrops.reset();
        for (const [dif, t] of difs()) {
          const s = t.ipcp.stats;
          difDrops.inc({ dif, reason: 'rx_queue_full' }, flowSum(t, 'rxQueueDrops'));
          difDrops.inc({ dif, reason: 'stale' }, s.staleSdus + s.unexpectedSdus);
          difDrops.inc({ dif, reason: 'malformed_control' }, Object.values(s.malformed).reduce((a, b) => a + b, 0));
        }
      },
    });
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface MetricsServer {
  /** The address actually bound (port 0 resolved). */
  readonly address: ListenAddress;
  /** http://HOST:PORT/metrics */
  readonly url: string;
  close(): Promise<void>;
}

export class MetricsServerError extends Error {
  override name = 'MetricsServerError';
}

/** Serve `GET /metrics` from `source` on `listen`. Rejects with a MetricsServerError if it cannot bind. */
export function startMetricsServer(source: { metrics(): Promise<string>; registry: Registry }, listen: ListenAddress, logger: Logger = rootLogger): Promise<MetricsServer> {
  const log = logger.child({ component: 'metrics' });
  const server: Server = createServer((req, res) => {
    handle(source, req, res).catch((e: unknown) => {
      log.error({ err: (e as Error).message }, 'metrics request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('internal error\n');
    });
  });
  server.keepAliveTimeout = 10_000;
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const where = formatListenAddress(listen);
      const hint = e.code === 'EADDRINUSE' ? '; choose another with --metrics-listen (metrics.listen) or turn metrics off with --no-metrics' : '';
      reject(new MetricsServerError(`metrics: cannot listen on ${where}: ${e.code ?? e.message}${hint}`));
    };
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      server.on('error', (e) => log.error({ err: e.message }, 'metrics server error'));
      const a = server.address() as AddressInfo;
      const address = { host: a.address, port: a.port };
      const url = `http://${formatListenAddress(address)}/metrics`;
      log.info({ url }, 'metrics listening');
      resolve({
        address,
        url,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

async function handle(source: { metrics(): Promise<string>; registry: Registry }, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/metrics') {
    const body = await source.metrics();
    res.writeHead(200, { 'content-type': source.registry.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('vmpi metrics: GET /metrics\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end('not found: try /metrics\n');
}
