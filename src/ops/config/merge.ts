/**
 * config/merge.ts — `vmpi serve`'s flags merged into a config: flag devices after the file's, flag
 * settings over the file's, VMPI-ids left open assigned (lowest free), duplicates refused.
 */
import { resolve } from 'node:path';
import type { LogFormat } from '../../sys/log.js';
import { DEFAULT_SDU_LOG2 } from '../../vmpi/carrier.js';
import { duplicateProblems, echoChannelProblems } from './checks.js';
import { defaultConfig } from './parse.js';
import { ConfigError, MAX_VMPI_ID, type DeviceConfig, type ListenAddress, type LogLevel, type MetricsConfig, type VmpiConfig } from './types.js';

/** Devices and settings given on the command line of `vmpi serve`. */
export interface ServeFlags {
  sockets: string[];
  /** The n-th id belongs to the n-th socket, then to the listen fds in order. */
  vmpiIds: number[];
  listenFds: number[];
  /** Applies to the devices given by flags. */
  maxSduLog2?: number;
  /** --echo-channel: echo channels of the devices given by flags (each of them). */
  echoChannels?: number[];
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  metricsListen?: ListenAddress;
  noMetrics?: boolean;
}

/** One device to serve: from the file, from --socket, or from an inherited fd. */
export interface ServeDevice extends Omit<DeviceConfig, 'socket'> {
  socket?: string;
  listenFd?: number;
  where: string;
}

export interface ServePlan {
  devices: ServeDevice[];
  metrics: MetricsConfig;
  log: { level: LogLevel; format?: LogFormat };
  config: VmpiConfig;
}

/**
 * Merge flags into a config (or the defaults): flag devices come after the file's; flag settings
 * override the file's. VMPI-ids left open are assigned here (lowest free, in order), so a device
 * without an id never takes one that a later device asks for. Throws ConfigError on duplicates.
 */
export function mergeServeOptions(config: VmpiConfig | undefined, flags: ServeFlags): ServePlan {
  const base = config ?? defaultConfig();
  const devices: ServeDevice[] = base.devices.map((d, i) => ({ ...d, where: `devices[${i}]` }));
  const echo = flags.echoChannels ?? [];
  const flagDevice = (n: number): Pick<ServeDevice, 'vmpiId' | 'maxSduLog2' | 'carrier' | 'echoChannels'> => ({
    vmpiId: flags.vmpiIds[n],
    maxSduLog2: flags.maxSduLog2 ?? DEFAULT_SDU_LOG2,
    carrier: 'gpio',
    ...(echo.length > 0 ? { echoChannels: [...echo] } : {}),
  });
  flags.sockets.forEach((s, i) => devices.push({ ...flagDevice(i), socket: resolve(s), where: `--socket #${i + 1}` }));
  flags.listenFds.forEach((fd, j) => devices.push({ ...flagDevice(flags.sockets.length + j), listenFd: fd, where: `--listen-fd ${fd}` }));
  const flagSlots = flags.sockets.length + flags.listenFds.length;
  const problems: string[] = [];
  if (flags.vmpiIds.length > flagSlots) {
    problems.push(`--vmpi-id: ${flags.vmpiIds.length} values for ${flagSlots} device${flagSlots === 1 ? '' : 's'} given by --socket/--listen-fd`);
  }
  problems.push(...echoChannelProblems('--echo-channel', echo));
  if (echo.length > 0 && flagSlots === 0) problems.push('--echo-channel: applies to the devices given by --socket/--listen-fd, and there are none; set echoChannels on the device in the config file');
  problems.push(...duplicateProblems(devices));
  if (problems.length > 0) throw new ConfigError(problems);

  const used = new Set(devices.flatMap((d) => (d.vmpiId === undefined ? [] : [d.vmpiId])));
  let next = 1;
  for (const d of devices) {
    if (d.vmpiId !== undefined) continue;
    while (used.has(next)) next++;
    if (next > MAX_VMPI_ID) throw new ConfigError([`${d.where}: no free VMPI-id left`]);
    d.vmpiId = next;
    used.add(next);
  }

  const enabled = flags.noMetrics ? false : base.metrics.enabled;
  return {
    devices,
    metrics: { ...base.metrics, enabled, listen: flags.metricsListen ?? base.metrics.listen },
    log: { level: flags.logLevel ?? base.log.level, ...((flags.logFormat ?? base.log.format) !== undefined ? { format: flags.logFormat ?? base.log.format } : {}) },
    config: base,
  };
}
