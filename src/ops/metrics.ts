/**
 * metrics.ts — Prometheus metrics for a VmpiHost: its devices, vhost-user servers, IPC processes
 * (any DIF type) and IPC daemon.
 *
 * Owns: one prom-client Registry per host (the standard process and Node.js metrics under their
 * standard names — process_cpu_seconds_total, process_resident_memory_bytes, nodejs_… — so generic
 * dashboards find them, plus the vmpi_ device, vhost-user, DIF and IPC daemon metrics below). The
 * HTTP server answering `GET /metrics` is metrics-http.ts' (re-exported here).
 *
 * Hot path: nothing here runs per SDU. Device metrics are read from `VmpiDevice.stats` in each
 * metric's `collect()` callback, i.e. once per scrape. Device stats are cumulative for the life of
 * the device object, which outlives vhost-user connections, so the counters stay monotonic when
 * QEMU reconnects or the guest driver resets. A device removed from the host disappears from the
 * output; re-adding the same VMPI-id restarts its counters from 0 (Prometheus sees a reset).
 *
 * Labels are bounded: `vmpi_id` (one per configured device) plus small fixed sets (direction,
 * drop reason, disconnect cause).
 *
 * IPC processes (`addIpcp`, any type: the shim DIF's per device, the normal DIF's) are followed
 * through the interface every IPC process implements (dif/core/observe.ts): flows and SDU/byte
 * totals per DIF (label `dif`, never a flow or channel id, so flows coming and going add no
 * series), allocation outcomes, drops; the normal DIF's RMT (PDUs forwarded, dropped by reason)
 * and enrolled neighbours too.
 *
 * vhost-user connection counters come from the VhostUserServer's `connection`, `disconnect`
 * (with its typed cause) and `rejected` (a request refused with REPLY_ACK, connection kept) events.
 * The IPC daemon's counters (`addIpcDaemon`) are its own `stats`, read at scrape time too.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { DisconnectCause } from '../vhost-user/connection.js';
import type { VhostUserServer } from '../vhost-user/server.js';
import type { Flow } from '../dif/api.js';
import type { ObservableIpcp } from '../dif/core/observe.js';
import { ENROLLMENT_STATES } from '../dif/core/observe.js';
import { SESSION_CLOSE_CAUSES, type IpcDaemon } from '../dif/ipc/daemon.js';
import type { DropReason, VmpiDevice } from '../vmpi/device.js';
import type { VmpiHost } from '../vmpi/host.js';
import { uncaughtCount } from './guard.js';
import type { RestartStats } from './restart/worker.js';

export { MetricsServerError, startMetricsServer, type MetricsServer, type MetricsServerOptions, type MetricsServerStats } from './metrics-http.js';


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
  /** Add the standard process and Node.js metrics (collectDefaultMetrics, no prefix). Default true. */
  processMetrics?: boolean;
  /** Registry to use (default: a new one). */
  registry?: Registry;
  /** Version reported by vmpi_build_info. */
  version?: string;
}

/** What the host's guest-metrics fetcher counts, per VMPI-id and outcome. */
export interface GuestScrapeCounts {
  counts(): Iterable<[vmpiId: number, byOutcome: Record<string, number>]>;
}

/** SDU/byte totals of flows that are gone, kept so per-DIF counters never go down. */
interface DifTotals {
  ipcp: ObservableIpcp;
  retired: { txSdus: number; txBytes: number; rxSdus: number; rxBytes: number; rxQueueDrops: number };
}

/** The metrics of one VmpiHost. Create it before or after adding devices: both are followed. */
export class HostMetrics {
  readonly registry: Registry;
  private readonly difs = new Map<string, DifTotals>();
  private ipcDaemon: IpcDaemon | null = null;
  private restart: RestartStats | null = null;
  private guestScrapes: GuestScrapeCounts | null = null;
  private readonly counts = new Map<number, ConnectionCounts>();
  private readonly watched = new WeakSet<VhostUserServer>();
  private readonly onDevice = (d: VmpiDevice): void => this.watch(d.vmpiId);

  /**
   * `host` null: no devices or vhost-user servers (`vmpi guest`'s metrics, guest-metrics.ts):
   * the vmpi_device_*, vmpi_vhost_user_* and vmpi_channel_* families are left out.
   */
  constructor(
    private readonly host: VmpiHost | null,
    opts: HostMetricsOptions = {},
  ) {
    this.registry = opts.registry ?? new Registry();
    if (opts.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      // prom-client names three gauges `…_total`, which Prometheus reserves for counters
      // (promtool check metrics flags them). Their per-type siblings without the suffix stay:
      // sum(nodejs_active_handles) gives the same number.
      for (const n of LINT_FAILING_DEFAULT_METRICS) this.registry.removeSingleMetric(n);
    }
    this.define(opts.version ?? 'unknown');
    for (const d of host?.devices ?? []) this.watch(d.vmpiId);
    host?.on('device', this.onDevice);
  }

  /**
   * Follow an IPC process of a DIF, of any type (label `dif`: its name, a configured and bounded
   * set; one IPC process per DIF here). Per-flow counters are summed per DIF, including flows
   * already deallocated, so flows coming and going never add series.
   */
  addIpcp(ipcp: ObservableIpcp): void {
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

  /** Follow the restart machinery (src/ops/restart/): restarts survived, resumes, state writes. */
  addRestart(stats: RestartStats): void {
    this.restart = stats;
  }

  /** Follow the IPC daemon (one per host): sessions, refusals, limits hit, contained faults. */
  addIpcDaemon(daemon: IpcDaemon): void {
    this.ipcDaemon = daemon;
  }

  /** Stop following the host's new devices (the registry keeps working for existing ones). */
  close(): void {
    this.host?.off('device', this.onDevice);
  }

  /** Follow the host's fetches of its guests' metrics (guest-metrics-fetch.ts). */
  addGuestScrapes(source: GuestScrapeCounts): void {
    this.guestScrapes = source;
  }

  /** The text exposition (what GET /metrics returns). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  private watch(vmpiId: number): void {
    const server = this.host?.server(vmpiId);
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
  private current(): DeviceRow[] {
    if (!this.host) return [];
    const host = this.host;
    const devices = host.devices;
    if (this.counts.size > devices.length) {
      const live = new Set(devices.map((d) => d.vmpiId));
      for (const id of this.counts.keys()) if (!live.has(id)) this.counts.delete(id);
    }
    return devices.map((d) => ({ d, id: String(d.vmpiId), counts: this.counts.get(d.vmpiId), server: host.server(d.vmpiId) }));
  }

  private define(version: string): void {
    const registers = [this.registry];
    const hostOnly = /^vmpi_(device|vhost_user|channel|guest_scrapes)_/;
    const family = <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => {
      if (this.host || !hostOnly.test(name)) readAtScrape(registers, kind, name, help, labelNames, samples);
    };
    const cur = () => this.current();
    /** One sample per device: vmpi_id plus the labels `more` gives. */
    const perDevice = function* <L extends string>(rows: (row: DeviceRow) => Iterable<[Record<L, string>, number]>): Iterable<Sample<L | 'vmpi_id'>> {
      for (const row of cur()) for (const [labels, v] of rows(row)) yield [{ vmpi_id: row.id, ...labels } as Record<L | 'vmpi_id', string>, v];
    };
    const deviceValue = (kind: Kind, name: string, help: string, value: (row: DeviceRow) => number): void =>
      family(kind, name, help, ['vmpi_id'], () => perDevice((row) => [[{}, value(row)]]));
    const byDirection = (toGuest: (d: VmpiDevice) => number, fromGuest: (d: VmpiDevice) => number) => (row: DeviceRow): [Record<'direction', string>, number][] => [
      [{ direction: 'to_guest' }, toGuest(row.d)],
      [{ direction: 'from_guest' }, fromGuest(row.d)],
    ];

    const buildInfo = new Gauge({ name: 'vmpi_build_info', help: 'vmpi version (value is always 1)', labelNames: ['version', 'nodejs'] as const, registers });
    buildInfo.set({ version, nodejs: process.versions.node }, 1);
    family('counter', 'vmpi_uncaught_errors_total', 'Exceptions and promise rejections that no connection, device or session contained; the process guard logged each and kept serving (a bug: alert on any increase)', [], () => [[{}, uncaughtCount()]]);
    family('gauge', 'vmpi_device_info', 'One series per configured VMPI device (value is always 1), with its carrier and socket', ['vmpi_id', 'carrier', 'socket'], () =>
      perDevice(({ d, server }) => [[{ carrier: d.carrier.name, socket: server?.path ?? 'inherited-fd' }, 1]]),
    );

    deviceValue('gauge', 'vmpi_device_max_sdu_bytes', 'Largest SDU the device carries, in bytes', ({ d }) => d.maxSdu);
    deviceValue('gauge', 'vmpi_device_up', '1 while the guest driver has both queues running, else 0', ({ d }) => (d.isUp ? 1 : 0));
    deviceValue('gauge', 'vmpi_device_backlog_sdus', 'Host-to-guest SDUs waiting in the backlog for guest buffers', ({ d }) => d.stats.backlogSdus);
    deviceValue('gauge', 'vmpi_device_backlog_bytes', 'Host-to-guest bytes waiting in the backlog for guest buffers', ({ d }) => d.stats.backlogBytes);
    deviceValue('gauge', 'vmpi_device_backlog_max_sdus', 'Bound of the host-to-guest backlog in SDUs (past it, or past the byte bound, SDUs are refused: drops reason backlog_full)', ({ d }) => d.backlogLimits.maxSdus);
    deviceValue('gauge', 'vmpi_device_backlog_max_bytes', 'Bound of the host-to-guest backlog in bytes', ({ d }) => d.backlogLimits.maxBytes);
    deviceValue('counter', 'vmpi_device_rx_queue_full_total', 'Times a host-to-guest send found no free guest rx buffer', ({ d }) => d.stats.rxQueueFull);
    deviceValue('counter', 'vmpi_device_kicks_total', 'Guest-to-host notifications (kicks) handled', ({ d }) => d.stats.kicks);
    deviceValue('counter', 'vmpi_device_calls_total', 'Host-to-guest notifications (calls, interrupts) sent', ({ d }) => d.stats.calls);
    family('counter', 'vmpi_device_sdus_total', 'SDUs carried, by direction', ['vmpi_id', 'direction'], () =>
      perDevice(byDirection((d) => d.stats.toGuest.sdus, (d) => d.stats.fromGuest.sdus)),
    );
    family('counter', 'vmpi_device_bytes_total', 'SDU payload bytes carried (without the 4-byte frame header), by direction', ['vmpi_id', 'direction'], () =>
      perDevice(byDirection((d) => d.stats.toGuest.bytes, (d) => d.stats.fromGuest.bytes)),
    );
    family('counter', 'vmpi_device_drops_total', 'SDUs or frames dropped or refused, by reason', ['vmpi_id', 'reason'], () =>
      perDevice(({ d }) => DROP_REASONS.map((reason): [Record<'reason', string>, number] => [{ reason }, d.stats.drops[reason] ?? 0])),
    );

    deviceValue('gauge', 'vmpi_vhost_user_connections', 'vhost-user front-ends (QEMU) connected now', ({ server }) => server?.connections.size ?? 0);
    deviceValue('counter', 'vmpi_vhost_user_connections_accepted_total', 'vhost-user front-end connections accepted', ({ counts }) => counts?.accepted ?? 0);
    deviceValue('counter', 'vmpi_vhost_user_protocol_errors_total', 'vhost-user requests that broke the protocol (rejected with REPLY_ACK, or closing the connection)', ({ counts }) =>
      counts ? counts.disconnects.protocol_error + counts.rejected : 0,
    );
    deviceValue('counter', 'vmpi_vhost_user_accept_pauses_total', 'times the socket stopped accepting because its front-ends misbehaved faster than allowed (frontend-gate)', ({ server }) => server?.misbehaviour.pauses ?? 0);
    family('counter', 'vmpi_vhost_user_disconnects_total', 'vhost-user connections closed, by cause', ['vmpi_id', 'cause'], () =>
      perDevice(({ counts }) => DISCONNECT_CAUSES.map((cause): [Record<'cause', string>, number] => [{ cause }, counts?.disconnects[cause] ?? 0])),
    );
    this.defineDifs(family);
    this.defineIpc(family);
    this.defineRestart(family);
    this.defineChannels(family);
  }

  /**
   * Per-channel counters of each device, from the host's shim DIF flows (each flow holds one
   * channel), so a flow's numbers can be compared with the guest driver's channel_stats
   * (vmpi_guest_channel_*). One series per allocated flow: it goes when the flow does (the
   * label set is bounded by the flows a device may hold). Plus the host's fetches of guest
   * metrics through the VMPI, by outcome.
   */
  private defineChannels(family: <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => void): void {
    const difs = this.difs;
    const perChannel = function* (value: (f: Flow) => [number, number]): Iterable<Sample<'vmpi_id' | 'channel' | 'direction'>> {
      for (const { ipcp } of difs.values()) {
        if (ipcp.ipcpType !== 'shim-hv') continue;
        for (const f of ipcp.flows()) {
          const channel = (f as Flow & { channel?: unknown }).channel;
          if (f.state !== 'allocated' || typeof channel !== 'number') continue;
          const [toGuest, fromGuest] = value(f);
          const labels = { vmpi_id: String(ipcp.address), channel: String(channel) };
          yield [{ ...labels, direction: 'to_guest' }, toGuest];
          yield [{ ...labels, direction: 'from_guest' }, fromGuest];
        }
      }
    };
    family('counter', 'vmpi_channel_sdus_total', 'SDUs on one channel of a device (one shim DIF flow), by direction, while the flow is allocated', ['vmpi_id', 'channel', 'direction'], () =>
      perChannel((f) => [f.stats.txSdus, f.stats.rxSdus]),
    );
    family('counter', 'vmpi_channel_bytes_total', 'SDU bytes on one channel of a device (one shim DIF flow), by direction', ['vmpi_id', 'channel', 'direction'], () =>
      perChannel((f) => [f.stats.txBytes, f.stats.rxBytes]),
    );
    const scrapes = () => this.guestScrapes;
    family('counter', 'vmpi_guest_scrapes_total', "Fetches of a guest's metrics through its VMPI device (GET /metrics/guest/<vmpi-id>), by outcome", ['vmpi_id', 'outcome'], function* () {
      const s = scrapes();
      if (!s) return;
      for (const [id, byOutcome] of s.counts()) for (const [outcome, v] of Object.entries(byOutcome)) yield [{ vmpi_id: String(id), outcome }, v];
    });
  }

  private defineRestart(family: <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => void): void {
    const r = () => this.restart;
    const one = singleValue(family, r);
    family('gauge', 'vmpi_restart_info', 'Who keeps the fds across worker restarts (keeper, systemd); value is always 1', ['holder'], function* () {
      const s = r();
      if (s) yield [{ holder: s.holder }, 1];
    });
    one('counter', 'vmpi_restarts_total', 'Worker restarts (crashes, upgrades) this server survived with its VMs untouched, since it first started', (s) => s.restarts);
    one('counter', 'vmpi_restart_connections_resumed_total', 'vhost-user connections resumed by a new worker after a restart, since the server first started', (s) => s.connectionsResumed);
    one('counter', 'vmpi_restart_resume_failures_total', 'vhost-user connections a new worker could not resume after a restart, since the server first started (their VMs must reconnect their devices: alert on any)', (s) => s.resumeFailures);
    one('counter', 'vmpi_restart_state_writes_total', 'Restart state documents written', (s) => s.stateWrites);
    one('counter', 'vmpi_restart_state_write_errors_total', 'Restart state documents that could not be written (a restart would resume an older state)', (s) => s.stateWriteErrors);
    one('gauge', 'vmpi_restart_stored_fds', 'Open files kept in the fd store (keeper or systemd) for the next worker', (s) => s.storedFds());
  }

  private defineIpc(family: <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => void): void {
    const d = () => this.ipcDaemon;
    const one = singleValue(family, d);
    const byLabel = <L extends string>(name: string, help: string, label: L, values: (daemon: IpcDaemon) => Record<string, number>): void =>
      family('counter', name, help, [label], function* () {
        const daemon = d();
        if (!daemon) return;
        for (const [k, v] of Object.entries(values(daemon))) yield [{ [label]: k } as Record<L, string>, v];
      });
    one('gauge', 'vmpi_ipc_sessions', 'Applications connected to the IPC daemon now', (x) => x.stats.sessions);
    one('gauge', 'vmpi_ipc_output_queued_bytes', 'Bytes of answers and events waiting for applications to read them', (x) => x.outputQueuedBytes());
    byLabel('vmpi_ipc_sessions_closed_total', 'IPC sessions closed, by cause (output_limit: the application did not read; idle; internal_error: a contained fault)', 'cause', (x) =>
      Object.fromEntries(SESSION_CLOSE_CAUSES.map((c) => [c, x.stats.sessionsClosed[c]])),
    );
    byLabel('vmpi_ipc_connections_refused_total', 'Connections to the IPC daemon refused at accept, by limit', 'reason', (x) => ({ ...x.stats.refused }));
    byLabel('vmpi_ipc_limit_hits_total', 'IPC requests refused by a per-user limit', 'limit', (x) => ({ ...x.stats.limitHits }));
    byLabel('vmpi_ipc_flows_aborted_total', 'Flows the IPC daemon ended itself, by why (fds_on_flow_socket, internal_error, ring_broken)', 'reason', (x) => ({ ...x.stats.bridgeAborts }));
    one('counter', 'vmpi_ipc_accept_errors_total', 'accept(2) failures of the IPC daemon (EMFILE, ENFILE: out of file descriptors)', (x) => x.stats.acceptErrors);
    one('counter', 'vmpi_ipc_flow_fd_failures_total', 'Flows refused to an application because no file descriptor could be created', (x) => x.stats.flowFdFailures);
    one('counter', 'vmpi_ipc_sdus_dropped_total', "SDUs for applications dropped because they exceed the flow socket's buffer", (x) => x.stats.sdusTooLarge);
    one('counter', 'vmpi_ipc_allocate_timeouts_clamped_total', 'Allocation timeouts shortened to the daemon maximum', (x) => x.stats.timeoutsClamped);
    one('gauge', 'vmpi_ipc_ring_flows', 'Flows on the shared-memory ring data path now', (x) => x.stats.ringFlows);
    one('gauge', 'vmpi_ipc_ring_bytes', 'Bytes of flow ring memory (memfd) the IPC daemon maps now; bounded by ipc.maxRingBytes', (x) => x.stats.ringBytes);
    one('gauge', 'vmpi_ipc_ring_max_bytes', 'The IPC daemon\'s bound on flow ring memory (config ipc.maxRingBytes)', (x) => x.maxRingBytes);
    one('counter', 'vmpi_ipc_rings_refused_total', 'Flows that asked for a shared-memory ring and got the socket data path (ipc.maxRingBytes reached, or no memfd)', (x) => x.stats.ringsRefused);
    one('counter', 'vmpi_ipc_faults_total', 'Exceptions contained by the IPC daemon (each closed one session or flow, or one accept round)', (x) => x.stats.faults);
  }

  private defineDifs(family: <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => void): void {
    /** One sample per DIF: dif plus the labels `rows` gives. */
    const perDif = function* <L extends string>(difs: Map<string, DifTotals>, rows: (t: DifTotals) => [Record<L, string>, number][]): Iterable<Sample<L | 'dif'>> {
      for (const [dif, t] of difs) for (const [labels, v] of rows(t)) yield [{ dif, ...labels } as Record<L | 'dif', string>, v];
    };
    const difs = this.difs;
    const flowSum = (t: DifTotals, key: keyof DifTotals['retired']): number => t.retired[key] + t.ipcp.flows().reduce((n, f) => n + f.stats[key], 0);
    const txRx = (tx: keyof DifTotals['retired'], rx: keyof DifTotals['retired']) => (t: DifTotals): [Record<'direction', string>, number][] => [
      [{ direction: 'tx' }, flowSum(t, tx)],
      [{ direction: 'rx' }, flowSum(t, rx)],
    ];

    family('gauge', 'vmpi_dif_ipcp_info', 'One series per IPC process followed (value is always 1): its DIF, type (shim-hv, shim-udp, shim-eth, normal) and name', ['dif', 'type', 'name'], () =>
      perDif(difs, ({ ipcp }) => [[{ type: ipcp.ipcpType, name: ipcp.ipcpName }, 1]]),
    );
    family('gauge', 'vmpi_dif_flows_active', 'Flows allocated now, per DIF', ['dif'], () =>
      perDif(difs, ({ ipcp }) => [[{}, ipcp.flows().filter((f) => f.state === 'allocated').length]]),
    );
    family('counter', 'vmpi_dif_flow_allocations_total', 'Flow allocations by direction (outgoing: asked by a local app; incoming: asked by the peer) and outcome', ['dif', 'direction', 'outcome'], () =>
      perDif(difs, ({ ipcp }) => {
        const { outgoing: o, incoming: i } = ipcp.counters().allocations;
        return [
          [{ direction: 'outgoing', outcome: 'allocated' }, o.allocated],
          [{ direction: 'outgoing', outcome: 'rejected' }, o.rejected],
          [{ direction: 'outgoing', outcome: 'timeout' }, o.timeout],
          [{ direction: 'outgoing', outcome: 'failed' }, o.failed],
          [{ direction: 'incoming', outcome: 'allocated' }, i.allocated],
          [{ direction: 'incoming', outcome: 'rejected' }, i.rejected],
        ];
      }),
    );
    family('gauge', 'vmpi_dif_rx_queued_bytes', "Bytes waiting in the receive queues of the DIF's flows (budgeted: rxQueueBytes per flow, rxQueueTotalBytes per DIF)", ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const q = ipcp.counters().rxQueuedBytes;
        return q === undefined ? [] : [[{}, q]];
      }),
    );
    family('counter', 'vmpi_dif_rx_budget_drops_total', 'SDUs dropped because an unread flow reached a receive budget, by budget (sdus, flow_bytes, total_bytes)', ['dif', 'budget'], () =>
      perDif(difs, ({ ipcp }) => Object.entries(ipcp.counters().rxBudgetDrops ?? {}).map(([budget, v]): [Record<'budget', string>, number] => [{ budget }, v])),
    );
    family('counter', 'vmpi_dif_flows_deallocated_total', 'Flows deallocated (by either end, or because the port went down)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => [[{}, ipcp.counters().flowsDeallocated]]),
    );
    family('counter', 'vmpi_dif_sdus_total', "SDUs written (tx) and read (rx) on the DIF's flows", ['dif', 'direction'], () => perDif(difs, txRx('txSdus', 'rxSdus')));
    family('counter', 'vmpi_dif_bytes_total', "SDU bytes written (tx) and read (rx) on the DIF's flows", ['dif', 'direction'], () => perDif(difs, txRx('txBytes', 'rxBytes')));
    family('counter', 'vmpi_dif_drops_total', 'SDUs dropped in the DIF: rx_queue_full (a flow nobody reads), stale (data for a deallocated flow), malformed_control', ['dif', 'reason'], () =>
      perDif(difs, (t) => {
        const d = t.ipcp.counters().drops;
        return [
          [{ reason: 'rx_queue_full' }, flowSum(t, 'rxQueueDrops')],
          [{ reason: 'stale' }, d.stale],
          [{ reason: 'malformed_control' }, d.malformed_control],
        ];
      }),
    );
    family('counter', 'vmpi_dif_datagrams_total', 'Datagrams sent (tx) and received (rx) by an IPC process over a datagram socket (shim-udp) or Ethernet frames (shim-eth), control and data', ['dif', 'direction'], () =>
      perDif(difs, ({ ipcp }) => {
        const d = ipcp.counters().datagrams;
        return d === undefined ? [] : [[{ direction: 'tx' }, d.txDatagrams], [{ direction: 'rx' }, d.rxDatagrams]];
      }),
    );
    family('counter', 'vmpi_dif_datagram_bytes_total', 'UDP payload bytes (shim-udp) or whole frame bytes (shim-eth) sent (tx) and received (rx)', ['dif', 'direction'], () =>
      perDif(difs, ({ ipcp }) => {
        const d = ipcp.counters().datagrams;
        return d === undefined ? [] : [[{ direction: 'tx' }, d.txBytes], [{ direction: 'rx' }, d.rxBytes]];
      }),
    );
    family('counter', 'vmpi_dif_datagram_drops_total', 'Datagrams dropped on arrival, by reason (unknown_peer, malformed, oversize, unknown_flow, stale, no_registration, limit; shim-udp; shim-eth adds not_for_us, unsolicited)', ['dif', 'reason'], () =>
      perDif(difs, ({ ipcp }) => Object.entries(ipcp.counters().datagramDrops ?? {}).map(([reason, v]): [Record<'reason', string>, number] => [{ reason }, v])),
    );
    family('counter', 'vmpi_dif_resolutions_total', 'Destination names looked up to reach a peer, by outcome (resolved, unresolved; shim-udp peers table, shim-eth ARP-style requests)', ['dif', 'outcome'], () =>
      perDif(difs, ({ ipcp }) => {
        const r = ipcp.counters().resolutions;
        return r === undefined ? [] : [[{ outcome: 'resolved' }, r.resolved], [{ outcome: 'unresolved' }, r.unresolved]];
      }),
    );
    family('counter', 'vmpi_dif_rmt_pdus_forwarded_total', 'PDUs the RMT relayed for other members of the DIF (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const r = ipcp.counters().rmt;
        return r === undefined ? [] : [[{}, r.forwarded]];
      }),
    );
    family('counter', 'vmpi_dif_rmt_pdus_dropped_total', 'PDUs the RMT dropped, by reason (no_route, ttl, queue_full, no_cep, no_mgmt, port_down, too_big, malformed; normal DIF)', ['dif', 'reason'], () =>
      perDif(difs, ({ ipcp }) => Object.entries(ipcp.counters().rmt?.dropped ?? {}).map(([reason, v]): [Record<'reason', string>, number] => [{ reason }, v])),
    );
    family('counter', 'vmpi_dif_rmt_backpressure_total', 'RMT backpressure events (normal DIF): pause (an incoming N-1 port paused because the output queue of a PDU it relayed was full), stuck (an output queue that took nothing for stallMs while ports waited on it: they resume and its relayed PDUs are dropped as queue_full until it moves)', ['dif', 'event'], () =>
      perDif(difs, ({ ipcp }) => {
        const b = ipcp.counters().rmt?.backpressure;
        return b === undefined ? [] : [[{ event: 'pause' }, b.pauses], [{ event: 'stuck' }, b.stuck]];
      }),
    );
    family('gauge', 'vmpi_dif_rmt_queued_pdus', 'PDUs waiting in the RMT output queues of all N-1 ports now (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const q = ipcp.counters().rmtQueuedPdus;
        return q === undefined ? [] : [[{}, q]];
      }),
    );
    family('gauge', 'vmpi_dif_enrolled', '1 while the IPC process is a member of its DIF (has an address), else 0 (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const e = ipcp.counters().enrolled;
        return e === undefined ? [] : [[{}, e ? 1 : 0]];
      }),
    );
    family('counter', 'vmpi_dif_efcp_pdus_total', 'Data PDUs of the flows (EFCP), first transmissions and receptions, by direction (normal DIF)', ['dif', 'direction'], () =>
      perDif(difs, ({ ipcp }) => {
        const e = ipcp.counters().efcp;
        return e === undefined ? [] : [[{ direction: 'tx' }, e.tx_pdus], [{ direction: 'rx' }, e.rx_pdus]];
      }),
    );
    family('counter', 'vmpi_dif_efcp_events_total', 'EFCP events over all flows: retransmissions, rtx_timeouts, window_stalls (episodes), lost_pdus (flow-control gaps given up), duplicates, ctrl_sent, ctrl_rcvd (control PDUs), tx_refused (writes refused: closed-window queue full), lower_refused (PDUs the RMT refused), reorder_drops / rx_byte_drops / beyond_window / rx_paused_drops (data PDUs receivers dropped: reordering queue full, byte budget full, beyond the window, unreliable delivery paused) (normal DIF)', ['dif', 'event'], () =>
      perDif(difs, ({ ipcp }) => {
        const e = ipcp.counters().efcp;
        if (e === undefined) return [];
        return (['retransmissions', 'rtx_timeouts', 'window_stalls', 'lost_pdus', 'duplicates', 'ctrl_sent', 'ctrl_rcvd', 'tx_refused', 'lower_refused', 'reorder_drops', 'rx_byte_drops', 'beyond_window', 'rx_paused_drops'] as const).map((event): [Record<'event', string>, number] => [{ event }, e[event]]);
      }),
    );
    family('gauge', 'vmpi_dif_neighbours', 'Neighbours enrolled now: members at the other end of a working N-1 flow (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const n = ipcp.counters().neighbours;
        return n === undefined ? [] : [[{}, n]];
      }),
    );
    family('gauge', 'vmpi_dif_enrollment_state', 'Enrollment with each neighbour now: 1 for its current state (enrolling, enrolled, lost), 0 for the others (normal DIF: the enroller\'s members, a member\'s enroller)', ['dif', 'neighbour', 'state'], () =>
      perDif(difs, ({ ipcp }) =>
        (ipcp.counters().enrollment ?? []).flatMap(({ neighbour, state }) => ENROLLMENT_STATES.map((s): [Record<'neighbour' | 'state', string>, number] => [{ neighbour, state: s }, s === state ? 1 : 0])),
      ),
    );
    family('gauge', 'vmpi_dif_directory_entries', 'Entries in the replicated directory now, withdrawals still remembered included (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const d = ipcp.counters().directory;
        return d === undefined ? [] : [[{}, d.entries]];
      }),
    );
    family('counter', 'vmpi_dif_directory_drops_total', 'Directory entries from other members refused, by reason (full: the directory bound; member_full: the per-member bound; normal DIF)', ['dif', 'reason'], () =>
      perDif(difs, ({ ipcp }) => Object.entries(ipcp.counters().directory?.dropped ?? {}).map(([reason, v]): [Record<'reason', string>, number] => [{ reason }, v])),
    );
    family('gauge', 'vmpi_dif_efcp_queued_pdus', 'PDUs waiting in the flows\' EFCP queues now, summed over flows, by queue (rtx: sent, not yet acknowledged; closed_window: not yet sent; reassembly: received out of order; normal DIF)', ['dif', 'queue'], () =>
      perDif(difs, ({ ipcp }) => Object.entries(ipcp.counters().efcpQueuedPdus ?? {}).map(([queue, v]): [Record<'queue', string>, number] => [{ queue }, v])),
    );
    family('gauge', 'vmpi_dif_flows_lingering', 'Reliable flows deallocated by their application whose EFCP still delivers its last SDUs (normal DIF)', ['dif'], () =>
      perDif(difs, ({ ipcp }) => {
        const n = ipcp.counters().lingeringFlows;
        return n === undefined ? [] : [[{}, n]];
      }),
    );
  }
}

type Kind = 'counter' | 'gauge';
type Sample<L extends string> = [labels: Record<L, string>, value: number];
interface DeviceRow {
  d: VmpiDevice;
  id: string;
  counts: ConnectionCounts | undefined;
  server: VhostUserServer | undefined;
}

/**
 * A metric family whose samples are read from the devices' and DIFs' own counters at scrape time,
 * so nothing is recorded per SDU on the hot path.
 */
function readAtScrape<L extends string>(registers: Registry[], kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>): void {
  if (kind === 'gauge') {
    const g: Gauge<L> = new Gauge({
      name,
      help,
      labelNames,
      registers,
      collect: () => {
        g.reset();
        for (const [labels, v] of samples()) g.set(labels, v);
      },
    });
  } else {
    const c: Counter<L> = new Counter({
      name,
      help,
      labelNames,
      registers,
      collect: () => {
        c.reset();
        for (const [labels, v] of samples()) c.inc(labels, v);
      },
    });
  }
}

/** A family of one unlabelled sample read from `source()` at scrape time (none while it is null). */
function singleValue<S>(
  family: <L extends string>(kind: Kind, name: string, help: string, labelNames: readonly L[], samples: () => Iterable<Sample<L>>) => void,
  source: () => S | null,
): (kind: Kind, name: string, help: string, value: (s: S) => number) => void {
  return (kind, name, help, value) =>
    family(kind, name, help, [], function* () {
      const s = source();
      if (s) yield [{}, value(s)];
    });
}
