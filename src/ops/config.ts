/**
 * config.ts — the vmpi configuration file: parse (YAML or JSON, by extension), validate, merge.
 * This module is the public face; the parts live in config/, one job each:
 *   types.ts (VmpiConfig, ConfigError, constants), schema.ts (JSON Schema + ajv), parse.ts (read,
 *   parse, validate, defaults), checks.ts (what a schema cannot express), messages.ts (ajv errors
 *   → one line each), listen.ts (HOST:PORT), merge.ts (serve flags into a config).
 *
 * Covers: the JSON Schema of the file (`CONFIG_SCHEMA`, validated with ajv, `allErrors: true`), the
 * checks a schema cannot express (duplicate VMPI-ids and socket paths, the metrics address), and
 * turning every problem into one line that names the field path and the bad value, e.g.
 * `devices[1].vmpiId: 70000 is above the maximum 65535`. All problems are reported at once, in a
 * ConfigError. The result is a typed VmpiConfig with defaults filled in.
 *
 * A file looks like this (YAML; the same keys in JSON):
 *
 *   devices:
 *     - socket: /run/vmpi/vm1.sock   # relative paths are relative to the config file's directory
 *       vmpiId: 1                    # optional: lowest free id when omitted
 *       maxSduLog2: 16               # optional, 10..20 (default 16 = 64 KiB)
 *       carrier: gpio                # optional, the only carrier today
 *       owner: libvirt-qemu          # optional: user name or numeric uid
 *       group: kvm                   # optional: group name or numeric gid
 *       mode: "0660"                 # optional: a QUOTED octal string
 *       echoChannels: [1024]         # optional: channels the server echoes (a test instrument)
 *   metrics: { enabled: true, listen: "127.0.0.1:19464" }
 *   log: { level: info }
 *   ipc:                             # optional: the IPC daemon's limits (docs/IPC.md), defaults shown
 *     maxSessions: 256               # applications connected at once
 *     maxSessionsPerUid: 64          # … per user (SO_PEERCRED)
 *     maxFlowsPerUid: 256            # flows allocated or being allocated, per user
 *     maxRegistrationsPerUid: 64
 *     maxAllocateTimeoutMs: 60000    # longer allocation timeouts are clamped
 *     idleTimeoutMs: 300000          # sessions holding nothing and silent this long are closed
 *     outputHighWater: 262144        # bytes of answers queued per session before its requests wait
 *     unlimitedUids: []              # users the per-user limits do not apply to
 *     maxRingBytes: 268435456        # shared-memory flow rings in all (then the socket); 0: none
 *   normal: { dif: n.DIF }       # optional: a normal DIF over every device's shim DIF (below)
 *   difs: []    # [{ name, type }]: type "normal" declares the normal DIF (same as normal.dif)
 *   ipcps: []   # placeholders for other IPC processes: [{ name, type, ... }]
 *
 * The normal DIF: `vmpi serve` runs its enroller (IPCP name `<dif>.host`, or normal.name) over
 * every device's shim DIF; `vmpi guest --config FILE` (or --normal-dif) runs a member that
 * enrolls through its shim DIF to normal.enroller (default `<dif>.host`). Only the DIF name is
 * required; maxPduSize (default 65536) must be the same on every member. A member with
 * `acceptEnrollment: true` enrolls new members too (serve: on every lower DIF, e.g. its VMs while
 * it is itself enrolled to another host), and `neighbours: [{ name, dif }]` adds N-1 adjacencies
 * to further members over named lower DIFs, so the DIF is a mesh (docs/NORMAL-DIF-IPCP.md).
 * `keepaliveMs` (default 10 000) and `keepaliveMisses` (default 3) set routing's neighbour
 * liveness on every N-1 adjacency (the same at every member).
 *
 * The shim DIF over UDP (`shimUdp`: dif, bind IPv4:PORT, peers name → IPv4:PORT, allow, mtu,
 * keepaliveMs, keepaliveTimeoutMs, allocateTimeoutMs): `vmpi serve` runs its IPC process, which
 * needs no device; with `normal.role: member` the normal DIF enrolls through it.
 *
 * The shim DIF over Ethernet (`shimEth`: dif, interface, vlan, allow, mtu, keepaliveMs,
 * keepaliveTimeoutMs, allocateTimeoutMs, resolveCacheSize, resolveCacheMs): the same, on one
 * network interface (a VLAN interface, or the parent with vlan).
 *
 * Flags (`vmpi serve --socket … --vmpi-id …`) become more devices after the file's (see
 * `mergeServeOptions`), and the duplicate checks run again over the merged list.
 */
export {
  ConfigError,
  DEFAULT_METRICS_LISTEN,
  ECHO_CHANNEL_MIN,
  LOG_LEVELS,
  MAX_VMPI_ID,
  type ConfigFormat,
  type DeviceConfig,
  type DifConfig,
  type IpcpConfig,
  type ListenAddress,
  type LogLevel,
  type MetricsConfig,
  type NormalConfig,
  type NormalNeighbourConfig,
  type ShimUdpConfig,
  type ShimEthConfig,
  type VmpiConfig,
} from './config/types.js';
export { CONFIG_SCHEMA } from './config/schema.js';
export { defaultConfig, loadConfigFile, parseConfig, validateConfig, type ParseOptions } from './config/parse.js';
export { configWarnings, duplicateProblems, echoChannelProblems, type DeviceIdentity } from './config/checks.js';
export { formatListenAddress, parseListenAddress } from './config/listen.js';
export { mergeServeOptions, type ServeDevice, type ServeFlags, type ServePlan } from './config/merge.js';
