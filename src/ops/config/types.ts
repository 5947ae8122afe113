/**
 * config/types.ts — the vmpi configuration's types and constants: what a validated file becomes
 * (VmpiConfig and its parts), the log levels, the default metrics address, the VMPI-id range, and
 * ConfigError (every problem found, one line each).
 */
import type { LogFormat } from '../../sys/log.js';
import type { IpcLimits } from '../../dif/ipc/daemon.js';
import { DEFAULT_MAX_CHANNEL } from '../../dif/shim-hv/types.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/**
 * 19464: 9464 is the default of OpenTelemetry's Prometheus exporter (and taken in Prometheus'
 * list of default port allocations, whose 9100-9999 range is full); the Prometheus docs advise
 * software that is not in that list to stay outside its range.
 */
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:19464';
export const MAX_VMPI_ID = 0xffff;
/**
 * The lowest echo channel: every server device runs a shim DIF IPC process with the default
 * channel space (channel 0 control, flows 1..DEFAULT_MAX_CHANNEL, and it refuses requests above
 * it), so echo channels live above that space and can never take a flow's channel.
 */
export const ECHO_CHANNEL_MIN = DEFAULT_MAX_CHANNEL + 1;
/** Echo channels per device (a handful is what a test uses). */
export const MAX_ECHO_CHANNELS = 64;

export interface DeviceConfig {
  /** Absolute path of the vhost-user socket to create. */
  socket: string;
  /** Fixed VMPI-id; undefined = allocated (lowest free) at start-up. */
  vmpiId?: number;
  maxSduLog2: number;
  carrier: string;
  /** Socket file owner / group: a name (resolved at start-up) or a numeric id. */
  owner?: string | number;
  group?: string | number;
  /** Socket file permission bits, e.g. 0o660. */
  mode?: number;
  /**
   * Accept guest memory that is not a shrink-sealed memfd (memory-backend-file, hugetlbfs, an
   * unsealed memfd). Such a file can be truncated under the server, which then dies of SIGBUS:
   * only for a trusted QEMU. Present (true) only when set.
   */
  allowUnsealedMemory?: boolean;
  /**
   * Channels on which the server echoes every SDU back to the guest (src/vmpi/echo.ts; a test
   * instrument for `vmpi-perf loop|stream`). Outside the shim DIF's channels (ECHO_CHANNEL_MIN..).
   * Present (non-empty) only when set.
   */
  echoChannels?: number[];
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface MetricsConfig {
  enabled: boolean;
  listen: ListenAddress;
  /** serve: bound on one fetch of a guest's metrics through its VMPI (default 1000). */
  guestTimeoutMs?: number;
  /** serve: largest guest metrics reply, in bytes (default 1 MiB). */
  guestMaxBytes?: number;
}

/** The normal DIF of this host or guest (`normal`, or a `difs` entry of type "normal"). */
export interface NormalConfig {
  dif: string;
  /** This IPC process's name (default `<dif>.host` on the host, `<dif>.vm<VMPI-id>` in a guest). */
  name?: string;
  /** Guest: the enroller's IPC process name (default `<dif>.host`). */
  enroller?: string;
  /** The DIF's largest PDU, the same at every member (default 65536). */
  maxPduSize?: number;
  /** Keepalive period on each N-1 adjacency, ms (default 10 000). */
  keepaliveMs?: number;
  /** Silent keepalive periods before a neighbour is down (default 3). */
  keepaliveMisses?: number;
  /** serve: enroller (default) or member (enrolls to `enroller` through the first lower DIF). */
  role?: 'enroller' | 'member';
  /** Member: enroll new members too, from a block of addresses its enroller delegates to it. */
  acceptEnrollment?: boolean;
  /** Further members to keep an N-1 adjacency with, each over a named lower DIF. */
  neighbours?: NormalNeighbourConfig[];
}

/** One further neighbour of the normal DIF's IPC process: its IPC process name, over which lower DIF. */
export interface NormalNeighbourConfig {
  name: string;
  dif: string;
}

/** The shim DIF over UDP (`shimUdp`); see src/dif/shim-udp/ipcp.ts for the defaults. */
export interface ShimUdpConfig {
  dif: string;
  name?: string;
  bind: string;
  peers: Record<string, string>;
  allow: string[];
  dnsServers?: string[];
  resolveTimeoutMs?: number;
  resolveCacheMs?: number;
  /** Absolute path of a hosts file to resolve names not in `peers`, at `peerPort`. */
  hostsFile?: string;
  peerPort?: number;
  mtu?: number;
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  allocateTimeoutMs?: number;
}

/** The shim DIF over Ethernet (`shimEth`); see src/dif/shim-eth/ipcp.ts for the defaults. */
export interface ShimEthConfig {
  dif: string;
  name?: string;
  /** A network interface of this namespace: a VLAN interface (eth0.100), or the parent with `vlan`. */
  interface: string;
  vlan?: number;
  allow?: string[];
  mtu?: number;
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  allocateTimeoutMs?: number;
  resolveCacheSize?: number;
  resolveCacheMs?: number;
}

/** A DIF declaration; type "normal" is the normal DIF, other types are placeholders. */
export interface DifConfig {
  name: string;
  type: string;
  [key: string]: unknown;
}

/** Placeholder: the shim DIF (next step) defines the rest of these objects. */
export interface IpcpConfig {
  name: string;
  type: string;
  [key: string]: unknown;
}

export interface VmpiConfig {
  devices: DeviceConfig[];
  metrics: MetricsConfig;
  log: { level: LogLevel; format?: LogFormat };
  difs: DifConfig[];
  ipcps: IpcpConfig[];
  /** The normal DIF, if one is configured. */
  normal?: NormalConfig;
  /** The shim DIF over UDP, if one is configured. */
  shimUdp?: ShimUdpConfig;
  /** The shim DIF over Ethernet, if one is configured. */
  shimEth?: ShimEthConfig;
  /**
   * The IPC daemon's limits (what is not given keeps the daemon's defaults), and `maxRingBytes`,
   * the memory of all its flow rings at most (IpcDaemonOptions.maxRingBytes).
   */
  ipc: Partial<IpcLimits> & { maxRingBytes?: number };
}

export type ConfigFormat = 'yaml' | 'json';

/** Every problem found, one line each (`path: what is wrong`). */
export class ConfigError extends Error {
  override name = 'ConfigError';
  /** What callers test for (instanceof works too): the configuration is invalid. */
  readonly code = 'ERR_VMPI_CONFIG';
  constructor(
    readonly problems: string[],
    readonly source?: string,
  ) {
    super(problems.map((p) => (source ? `${source}: ${p}` : p)).join('\n'));
  }
}
