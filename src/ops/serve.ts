/**
 * serve.ts — start and stop what `vmpi serve` runs: the devices of a ServePlan on a VmpiHost,
 * their socket permissions, one shim IPC process for hypervisors per device (DIF
 * `hv.vmpi-<VMPI-id>`), the IPC daemon that offers those IPC processes to applications on a Unix
 * socket (src/dif/ipc/), the normal DIF's enroller over every shim DIF when the config has a
 * `normal` section (normal.ts), the shim DIF over UDP when the config has a `shimUdp` section (its
 * IPC process offered like the others, the normal DIF over it too; a server with only that needs
 * no device), the shim DIF over Ethernet likewise from a `shimEth` section, and the metrics endpoint.
 *
 * Owns: the start-up order (check everything that can be checked first, then metrics, then
 * sockets, so a failure leaves no socket file behind) and the clean shutdown (close every
 * vhost-user server, which removes the socket files it created, then the metrics server).
 */
import { existsSync } from 'node:fs';
import { safeClose } from '../sys/fd.js';
import { logger as rootLogger, type Logger } from '../sys/log.js';
import { ShimHvIpcp } from '../dif/shim-hv/ipcp.js';
import { ShimUdpIpcp } from '../dif/shim-udp/ipcp.js';
import { ShimEthIpcp } from '../dif/shim-eth/ipcp.js';
import { openDatagramShim } from './restart/datagram-shims.js';
import { IpcDaemon } from '../dif/ipc/daemon.js';
import type { NormalIpcp } from '../dif/normal/ipcp.js';
import type { Flow } from '../dif/api.js';
import { createNormalIpcp } from './normal.js';
import { VmpiHost } from '../vmpi/host.js';
import { EchoResponder } from '../vmpi/echo.js';
import { ConfigError, type ServePlan } from './config.js';
import { inheritedFdProblem } from './activation.js';
import { HostMetrics, startMetricsServer, type MetricsServer } from './metrics.js';
import { GuestMetricsFetcher } from './guest-metrics-fetch.js';
import { applySocketPermissions, permissionProblems } from './socket-perms.js';
import type { DeviceConfig, Restarter } from './restart/worker.js';
import type { VmpiDevice } from '../vmpi/device.js';

export interface Serving {
  readonly host: VmpiHost;
  /** The shim IPC process of each device, by VMPI-id. */
  readonly ipcps: ReadonlyMap<number, ShimHvIpcp>;
  /** The echo responder of each device with echoChannels, by VMPI-id. */
  readonly echoes: ReadonlyMap<number, EchoResponder>;
  /** The shim DIF over UDP's IPC process, when configured. */
  readonly shimUdp: ShimUdpIpcp | undefined;
  /** The shim DIF over Ethernet's IPC process, when configured. */
  readonly shimEth: ShimEthIpcp | undefined;
  /** The normal DIF's IPC process (enroller, or member with normal.role), when configured. */
  readonly normal: NormalIpcp | undefined;
  readonly metrics: HostMetrics | undefined;
  readonly metricsServer: MetricsServer | undefined;
  /** The IPC daemon, unless disabled or (for the default path) its socket could not be created. */
  readonly ipcDaemon: IpcDaemon | undefined;
  /** Close the devices (removing their socket files) and the metrics server. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Reported as vmpi_build_info{version}. */
  version?: string;
  /**
   * The IPC daemon's socket. `required`: failing to create it fails the start (an explicit
   * --ipc-socket); otherwise a failure is logged and serving goes on without it. null: no daemon.
   */
  ipc?: { socketPath: string; required: boolean } | null;
  /**
   * Keep what a next worker needs to resume the devices' connections, and resume what the last
   * worker left (src/ops/restart/worker.ts). Without it, a restart starts every device afresh.
   */
  restart?: Restarter;
}

/** Start serving `plan`. Throws ConfigError (every problem) or the first runtime error. */
export async function startServing(plan: ServePlan, opts: StartOptions = {}): Promise<Serving> {
  const log = opts.logger ?? rootLogger;
  if (plan.devices.length === 0 && !plan.config.shimUdp && !plan.config.shimEth) throw new ConfigError(['no devices: give --socket PATH, --listen-fd N, or devices (or shimUdp, shimEth) in --config FILE']);

  const problems = permissionProblems(plan.devices);
  for (const d of plan.devices) {
    if (d.listenFd === undefined) continue;
    const p = inheritedFdProblem(d.listenFd);
    if (p) problems.push(`${d.where}: ${p}`);
    if (d.owner !== undefined || d.group !== undefined || d.mode !== undefined) problems.push(`${d.where}: owner/group/mode apply to sockets vmpi creates; set them in the .socket unit (SocketUser=, SocketGroup=, SocketMode=)`);
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const host = new VmpiHost(log);
  const ipcps = new Map<number, ShimHvIpcp>();
  const echoes = new Map<number, EchoResponder>();
  const metrics = plan.metrics.enabled ? new HostMetrics(host, { version: opts.version }) : undefined;
  // The guests' metrics through their VMPI, on the same endpoint (/metrics/guest/<id>, /sd/guests).
  const guests = metrics
    ? new GuestMetricsFetcher({ ipcps: () => ipcps.values(), timeoutMs: plan.metrics.guestTimeoutMs, maxBytes: plan.metrics.guestMaxBytes, logger: log })
    : undefined;
  if (guests) metrics?.addGuestScrapes(guests);
  const metricsOpts = { routes: guests?.routes };
  let metricsServer: MetricsServer | undefined;
  let ipcDaemon: IpcDaemon | undefined;
  let normal: NormalIpcp | undefined;
  let shimUdp: ShimUdpIpcp | undefined;
  let shimEth: ShimEthIpcp | undefined;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      ipcDaemon?.close();
      normal?.close('server shutting down');
      for (const ipcp of ipcps.values()) ipcp.close('server shutting down');
      shimUdp?.close('server shutting down');
      shimEth?.close('server shutting down');
      for (const echo of echoes.values()) echo.close();
      host.close();
      metrics?.close();
      guests?.close();
      await metricsServer?.close();
    })());

  try {
    const restart = opts.restart;
    // Resuming VMs wait for their devices (the restart window): the metrics endpoint comes after.
    const resuming = restart?.previous !== undefined;
    if (metrics && !resuming) metricsServer = await startMetricsServer(metrics, plan.metrics.listen, log, metricsOpts);
    if (restart) metrics?.addRestart(restart.stats);
    for (const d of plan.devices) {
      try {
        const kept = { vmpiId: d.vmpiId ?? host.allocateId(), maxSduLog2: d.maxSduLog2, carrier: d.carrier };
        const listenFd = d.listenFd ?? keptSocket(restart, restart?.listenFdFor(kept), d.socket, log);
        // A new socket's file appears with its owner and mode (set under its temporary name); a
        // kept one's file is there already: set them again, as the config may have changed.
        const prepareSocket = (name: string): void => applySocketPermissions(name, d);
        const device = host.addDevice({ socketPath: d.socket, listenFd, vmpiId: kept.vmpiId, maxSduLog2: d.maxSduLog2, carrier: d.carrier, allowUnsealedMemory: d.allowUnsealedMemory, prepareSocket, commit: restart?.commit });
        if (d.socket !== undefined && listenFd !== undefined) applySocketPermissions(d.socket, d);
        const ipcp = shimIpcp(device, log, restart, kept);
        ipcps.set(device.vmpiId, ipcp);
        metrics?.addIpcp(ipcp);
        if (d.echoChannels) echoes.set(device.vmpiId, new EchoResponder(device, d.echoChannels, { logger: log }));
        // Last: a resumed connection runs at once, and its channels' handlers must be bound.
        restart?.attach(device, host.server(device.vmpiId)!, kept, () => ipcp.snapshot());
        log.info({ vmpiId: device.vmpiId, socket: d.socket ?? `fd:${d.listenFd}`, dif: ipcp.difName, from: d.where }, 'device configured');
      } catch (e) {
        throw new Error(`${d.where}: ${(e as Error).message}`, { cause: e });
      }
    }
    const udpCfg = plan.config.shimUdp;
    if (udpCfg) {
      shimUdp = await openDatagramShim(`shim-udp:${udpCfg.dif}`, restart, log, (r) => ShimUdpIpcp.open({ ...udpCfg, difName: udpCfg.dif, logger: log, ...r }));
      metrics?.addIpcp(shimUdp);
    }
    const ethCfg = plan.config.shimEth;
    if (ethCfg) {
      shimEth = await openDatagramShim(`shim-eth:${ethCfg.dif}`, restart, log, (r) => ShimEthIpcp.open({ ...ethCfg, difName: ethCfg.dif, logger: log, ...r }));
      metrics?.addIpcp(shimEth);
    }
    if (plan.config.normal) {
      const n = plan.config.normal;
      // A member enrolls through its first lower DIF: the UDP one, when there is one, else the Ethernet one.
      const between = [...(shimUdp ? [shimUdp] : []), ...(shimEth ? [shimEth] : [])];
      const lower = n.role === 'member' ? [...between, ...ipcps.values()] : [...ipcps.values(), ...between];
      normal = createNormalIpcp(n, n.role === 'member' ? 'guest' : 'host', lower, { logger: log });
      metrics?.addIpcp(normal);
    }
    if (opts.ipc) {
      const { maxRingBytes, ...limits } = plan.config.ipc;
      const daemon = new IpcDaemon({ socketPath: opts.ipc.socketPath, logger: log, limits, maxRingBytes, onStateChange: restart?.ipcChanged });
      for (const ipcp of ipcps.values()) daemon.addIpcp(ipcp);
      if (shimUdp) daemon.addIpcp(shimUdp);
      if (shimEth) daemon.addIpcp(shimEth);
      if (normal) daemon.addIpcp(normal);
      // The host applications' sessions the last worker served, before anyone new is accepted.
      const shims = [...(shimUdp ? [shimUdp] : []), ...(shimEth ? [shimEth] : [])];
      restart?.resumeIpc(daemon, (dif, portId) => ([...ipcps.values(), ...shims] as { difName: string; reclaimFlow(p: number): Flow | undefined }[]).find((i) => i.difName === dif)?.reclaimFlow(portId));
      try {
        daemon.listen(keptSocket(restart, restart?.ipcListenFd(), opts.ipc.socketPath, log));
        restart?.attachIpc(daemon);
        ipcDaemon = daemon;
        metrics?.addIpcDaemon(daemon);
      } catch (e) {
        daemon.close(); // the sessions resumed above end with it
        if (opts.ipc.required) throw new Error(`--ipc-socket ${opts.ipc.socketPath}: ${(e as Error).message}`, { cause: e });
        log.warn({ err: (e as Error).message, socket: opts.ipc.socketPath }, 'IPC daemon not started (applications cannot use the IPC API; see --ipc-socket)');
      }
    }
    // Flows kept for a session that did not come back end toward the guest now.
    for (const ipcp of ipcps.values()) ipcp.endUnclaimed();
    shimUdp?.endUnclaimed();
    shimEth?.endUnclaimed();
    if (metrics && resuming) metricsServer = await startMetricsServer(metrics, plan.metrics.listen, log, metricsOpts);
  } catch (e) {
    await close();
    throw e;
  }
  return { host, ipcps, echoes, shimUdp, shimEth, normal, metrics, metricsServer, ipcDaemon, close };
}

/**
 * The device's shim DIF IPC process: restored from the snapshot the last worker left (its flows
 * whose host end died with that worker end toward the guest with the restart's cause; those a
 * kept IPC session held wait for the IPC daemon to reclaim them), or new.
 * Every change is persisted before the guest hears of it (onStateChange).
 */
function shimIpcp(device: VmpiDevice, log: Logger, restart: Restarter | undefined, kept: DeviceConfig): ShimHvIpcp {
  const opts = { port: device, role: 'host' as const, logger: log, onStateChange: restart ? () => restart.persist() : undefined };
  const saved = restart?.shimSnapshotFor(kept);
  if (saved === undefined) return new ShimHvIpcp(opts);
  try {
    // Flows an IPC session of the last worker held are kept for the IPC daemon to reclaim.
    return ShimHvIpcp.restore({ ...opts, keepFlows: restart?.ipcKeptFlow }, saved);
  } catch (e) {
    log.error({ vmpiId: device.vmpiId, err: (e as Error).message }, "the shim DIF's saved state is unusable; its IPC process starts afresh (the guest's flows over it are not ended by the host)");
    return new ShimHvIpcp(opts);
  }
}

/**
 * A listening socket the last worker kept, if its file is still there. Removed meanwhile (by
 * hand, or a service manager cleaning a runtime directory), nobody could connect to it by path:
 * it is closed and the caller listens on a new socket at that path (connections the old one
 * accepted, the VMs', are resumed all the same).
 */
function keptSocket(restart: Restarter | undefined, fd: number | undefined, path: string | undefined, log: Logger): number | undefined {
  if (fd === undefined || path === undefined || existsSync(path)) return fd;
  log.warn({ socket: path }, 'the socket file of a kept listening socket is gone; listening on a new one at that path');
  safeClose(fd);
  restart?.released(fd);
  return undefined;
}
