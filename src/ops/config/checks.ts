/**
 * config/checks.ts — the checks a schema cannot express: duplicate VMPI-ids and socket paths,
 * duplicate DIF/IPCP names, the one normal DIF, and the warnings for what is valid but probably
 * not meant (a world-connectable socket).
 */
import { parseAppName } from '../../dif/naming.js';
import { isRecord } from './messages.js';
import { MAX_CHANNEL } from '../../vmpi/port.js';
import { ECHO_CHANNEL_MIN, type NormalConfig, type NormalNeighbourConfig, type ShimEthConfig, type ShimUdpConfig } from './types.js';
import { parseMac } from '../../dif/shim-eth/wire.js';
import { parseUdpAddress } from '../../dif/shim-udp/ipcp.js';
import { parseHostPort } from '../../dif/shim-udp/resolve.js';

export interface DeviceIdentity {
  /** Where the device came from, for messages: `devices[1]`, `--socket #2`, `--listen-fd 3`. */
  where: string;
  vmpiId?: number;
  socket?: string;
}

/** Duplicate VMPI-ids and socket paths, each reported once with every place it appears. */
export function duplicateProblems(list: DeviceIdentity[]): string[] {
  const problems: string[] = [];
  const byId = new Map<number, string[]>();
  const bySocket = new Map<string, string[]>();
  for (const d of list) {
    if (d.vmpiId !== undefined) byId.set(d.vmpiId, [...(byId.get(d.vmpiId) ?? []), d.where]);
    if (d.socket !== undefined) bySocket.set(d.socket, [...(bySocket.get(d.socket) ?? []), d.where]);
  }
  for (const [id, where] of byId) {
    if (where.length > 1) problems.push(`${where[1]}.vmpiId: ${id} is already used by ${where[0]}${where.length > 2 ? ` (and by ${where.slice(2).join(', ')})` : ''}; VMPI-ids must be unique on a host`);
  }
  for (const [socket, where] of bySocket) {
    if (where.length > 1) problems.push(`${where[1]}.socket: ${JSON.stringify(socket)} is already used by ${where[0]}${where.length > 2 ? ` (and by ${where.slice(2).join(', ')})` : ''}; each device needs its own socket`);
  }
  return problems;
}

/**
 * Echo channels (`where` names the list: `devices[0].echoChannels`, `--echo-channel`): each inside
 * ECHO_CHANNEL_MIN..MAX_CHANNEL, away from the shim DIF's control channel and flow channels, and
 * listed once. Entries that are not integers are the schema's to report.
 */
export function echoChannelProblems(where: string, list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  const problems: string[] = [];
  const seen = new Map<number, number>();
  list.forEach((ch: unknown, i) => {
    if (typeof ch !== 'number' || !Number.isInteger(ch) || ch < 0 || ch > MAX_CHANNEL) return;
    if (ch < ECHO_CHANNEL_MIN) {
      const what = ch === 0 ? "is the shim DIF's control channel" : `is in the shim DIF's flow channels 1..${ECHO_CHANNEL_MIN - 1}`;
      problems.push(`${where}[${i}]: channel ${ch} ${what}; an echo channel must be ${ECHO_CHANNEL_MIN}..${MAX_CHANNEL}`);
      return;
    }
    const first = seen.get(ch);
    if (first !== undefined) problems.push(`${where}[${i}]: channel ${ch} is already listed at ${where}[${first}]; list each echo channel once`);
    else seen.set(ch, i);
  });
  return problems;
}

export function duplicateNames(field: string, list: unknown): string[] {
  const seen = new Map<string, number>();
  const problems: string[] = [];
  if (!Array.isArray(list)) return problems;
  list.forEach((o: unknown, i) => {
    if (!isRecord(o) || typeof o.name !== 'string') return;
    const first = seen.get(o.name);
    if (first !== undefined) problems.push(`${field}[${i}].name: ${JSON.stringify(o.name)} is already used by ${field}[${first}]`);
    else seen.set(o.name, i);
  });
  return problems;
}


/**
 * The normal DIF from `normal` or a `difs` entry of type "normal" (at most one, names valid
 * application names); problems are appended to `problems`.
 */
export function normalProblems(data: Record<string, unknown>, problems: string[]): NormalConfig | undefined {
  let out: NormalConfig | undefined;
  let from = '';
  const n = isRecord(data.normal) ? data.normal : undefined;
  if (n && typeof n.dif === 'string' && n.dif !== '') {
    out = { dif: n.dif };
    from = 'normal.dif';
    for (const f of ['name', 'enroller'] as const) {
      const v = n[f];
      if (typeof v !== 'string' || v === '') continue;
      try {
        parseAppName(v);
        out[f] = v;
      } catch (e) {
        problems.push(`normal.${f}: ${JSON.stringify(v)} is not an IPC process name: ${(e as Error).message}`);
      }
    }
    if (typeof n.maxPduSize === 'number') out.maxPduSize = n.maxPduSize;
    for (const f of ['keepaliveMs', 'keepaliveMisses'] as const) if (typeof n[f] === 'number' && Number.isInteger(n[f])) out[f] = n[f];
    const ka = out.keepaliveMs ?? 10_000;
    const misses = out.keepaliveMisses ?? 3;
    // Each within its range (the schema says so otherwise), but together too short to survive a busy moment.
    if (ka >= 20 && misses >= 1 && misses <= 100 && ka * misses < 100) problems.push(`normal.keepaliveMisses: ${misses} × keepaliveMs ${ka} declares a neighbour down after ${ka * misses} ms of silence; allow at least 100 ms (raise keepaliveMs or keepaliveMisses)`);
    if (n.role === 'enroller' || n.role === 'member') out.role = n.role;
    if (typeof n.acceptEnrollment === 'boolean') out.acceptEnrollment = n.acceptEnrollment;
    const neighbours = neighbourProblems(data, n, out, problems);
    if (neighbours) out.neighbours = neighbours;
  }
  const difs = Array.isArray(data.difs) ? data.difs : [];
  difs.forEach((d: unknown, i) => {
    if (!isRecord(d) || d.type !== 'normal' || typeof d.name !== 'string' || d.name === '') return;
    if (out && out.dif !== d.name) problems.push(`difs[${i}].name: ${JSON.stringify(d.name)}: only one normal DIF is supported, and ${from} already declares ${JSON.stringify(out.dif)}`);
    else if (!out) {
      out = { dif: d.name };
      from = `difs[${i}]`;
    }
  });
  return out;
}

/** A device's shim DIF name (its VMPI-id may be given at run time, so any id is accepted). */
const DEVICE_DIF = /^hv\.vmpi-\d+$/;

/**
 * `normal.neighbours`: each a valid IPC process name over a lower DIF this process has (the
 * shimUdp or shimEth DIF, or a device's hv.vmpi-<id>), listed once, and neither this IPC process
 * nor the enroller it enrolls to already; problems are appended to `problems`.
 */
function neighbourProblems(data: Record<string, unknown>, n: Record<string, unknown>, out: NormalConfig, problems: string[]): NormalNeighbourConfig[] | undefined {
  if (!Array.isArray(n.neighbours)) return undefined;
  const lowerNamed = [isRecord(data.shimUdp) ? data.shimUdp.dif : undefined, isRecord(data.shimEth) ? data.shimEth.dif : undefined].filter((d): d is string => typeof d === 'string' && d !== '');
  const known = (d: string): boolean => lowerNamed.includes(d) || DEVICE_DIF.test(d);
  const device = 'a device\'s "hv.vmpi-<VMPI-id>"';
  const have = lowerNamed.length > 0 ? `use ${lowerNamed.map((d) => JSON.stringify(d)).join(', ')} or ${device}` : `use ${device} (no shimUdp or shimEth DIF is configured)`;
  const seen = new Map<string, number>();
  const list: NormalNeighbourConfig[] = [];
  n.neighbours.forEach((e: unknown, i) => {
    if (!isRecord(e) || typeof e.name !== 'string' || e.name === '' || typeof e.dif !== 'string' || e.dif === '') return; // the schema's to report
    const where = `normal.neighbours[${i}]`;
    try {
      parseAppName(e.name);
    } catch (err) {
      problems.push(`${where}.name: ${JSON.stringify(e.name)} is not an IPC process name: ${(err as Error).message}`);
      return;
    }
    if (out.name !== undefined && e.name === out.name) return void problems.push(`${where}.name: ${JSON.stringify(e.name)} is this IPC process itself (normal.name); name another member`);
    if (out.role !== 'enroller' && e.name === (out.enroller ?? `${out.dif}.host`)) return void problems.push(`${where}.name: ${JSON.stringify(e.name)} is the enroller this member enrolls to already (normal.enroller); list further members only`);
    if (!known(e.dif)) return void problems.push(`${where}.dif: ${JSON.stringify(e.dif)} is not a lower DIF of this process; ${have}`);
    const key = `${e.name}\u0000${e.dif}`;
    const first = seen.get(key);
    if (first !== undefined) return void problems.push(`${where}: ${JSON.stringify(e.name)} over ${JSON.stringify(e.dif)} is already listed at normal.neighbours[${first}]; list each neighbour once`);
    seen.set(key, i);
    list.push({ name: e.name, dif: e.dif });
  });
  return list;
}

/**
 * The shim DIF over UDP from `shimUdp`: addresses IPv4:PORT, peer names valid application names,
 * the keepalive timeout at least two periods; problems are appended to `problems`.
 */
export function shimUdpProblems(data: Record<string, unknown>, problems: string[]): ShimUdpConfig | undefined {
  const u = isRecord(data.shimUdp) ? data.shimUdp : undefined;
  if (!u || typeof u.dif !== 'string' || u.dif === '' || typeof u.bind !== 'string') return undefined;
  const before = problems.length;
  const addr = (where: string, v: unknown, allowZero: boolean): void => {
    if (typeof v !== 'string') return;
    try {
      parseUdpAddress(v, allowZero);
    } catch (e) {
      problems.push(`${where}: ${JSON.stringify(v)} ${(e as Error).message}`);
    }
  };
  addr('shimUdp.bind', u.bind, true);
  const peers: Record<string, string> = {};
  for (const [k, v] of Object.entries(isRecord(u.peers) ? u.peers : {})) {
    try {
      parseAppName(k);
    } catch (e) {
      problems.push(`shimUdp.peers: ${JSON.stringify(k)} is not an application name: ${(e as Error).message}`);
    }
    if (typeof v === 'string' && !/^[0-9.]+:\d+$/.test(v)) {
      try {
        parseHostPort(v); // HOST:PORT, resolved by DNS
      } catch (e) {
        problems.push(`shimUdp.peers[${JSON.stringify(k)}]: ${JSON.stringify(v)} ${(e as Error).message}`);
      }
    } else addr(`shimUdp.peers[${JSON.stringify(k)}]`, v, false);
    if (typeof v === 'string') peers[k] = v;
  }
  const allow = Array.isArray(u.allow) ? u.allow.filter((v): v is string => typeof v === 'string') : [];
  allow.forEach((v, i) => addr(`shimUdp.allow[${i}]`, v, false));
  for (const f of ['name'] as const) {
    const v = u[f];
    if (typeof v !== 'string' || v === '') continue;
    try {
      parseAppName(v);
    } catch (e) {
      problems.push(`shimUdp.${f}: ${JSON.stringify(v)} is not an IPC process name: ${(e as Error).message}`);
    }
  }
  const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
  const ka = num(u.keepaliveMs) ?? 1000;
  const kt = num(u.keepaliveTimeoutMs);
  if (kt !== undefined && kt < 2 * ka) problems.push(`shimUdp.keepaliveTimeoutMs: ${kt} is less than two keepalive periods (keepaliveMs ${ka}); make it at least ${2 * ka}`);
  if (problems.length > before) return undefined;
  return {
    dif: u.dif,
    bind: u.bind,
    peers,
    allow,
    ...(typeof u.name === 'string' ? { name: u.name } : {}),
    ...(typeof u.hostsFile === 'string' && u.hostsFile !== '' ? { hostsFile: u.hostsFile } : {}),
    ...(num(u.peerPort) !== undefined ? { peerPort: num(u.peerPort) } : {}),
    ...(num(u.mtu) !== undefined ? { mtu: num(u.mtu) } : {}),
    ...(num(u.keepaliveMs) !== undefined ? { keepaliveMs: num(u.keepaliveMs) } : {}),
    ...(kt !== undefined ? { keepaliveTimeoutMs: kt } : {}),
    ...(num(u.allocateTimeoutMs) !== undefined ? { allocateTimeoutMs: num(u.allocateTimeoutMs) } : {}),
    ...(Array.isArray(u.dnsServers) ? { dnsServers: u.dnsServers.filter((v): v is string => typeof v === 'string') } : {}),
    ...(num(u.resolveTimeoutMs) !== undefined ? { resolveTimeoutMs: num(u.resolveTimeoutMs) } : {}),
    ...(num(u.resolveCacheMs) !== undefined ? { resolveCacheMs: num(u.resolveCacheMs) } : {}),
  };
}

/**
 * The shim DIF over Ethernet from `shimEth`: MACs in allow, the IPC process name a valid name,
 * the keepalive timeout at least two periods, no vlan on a VLAN interface's name; problems are
 * appended to `problems`.
 */
export function shimEthProblems(data: Record<string, unknown>, problems: string[]): ShimEthConfig | undefined {
  const u = isRecord(data.shimEth) ? data.shimEth : undefined;
  if (!u || typeof u.dif !== 'string' || u.dif === '' || typeof u.interface !== 'string' || u.interface === '') return undefined;
  const before = problems.length;
  const allow = Array.isArray(u.allow) ? u.allow.filter((v): v is string => typeof v === 'string') : undefined;
  allow?.forEach((v, i) => {
    try {
      parseMac(v);
    } catch (e) {
      problems.push(`shimEth.allow[${i}]: ${JSON.stringify(v)} ${(e as Error).message}`);
    }
  });
  if (typeof u.name === 'string' && u.name !== '') {
    try {
      parseAppName(u.name);
    } catch (e) {
      problems.push(`shimEth.name: ${JSON.stringify(u.name)} is not an IPC process name: ${(e as Error).message}`);
    }
  }
  const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
  const ka = num(u.keepaliveMs) ?? 1000;
  const kt = num(u.keepaliveTimeoutMs);
  if (kt !== undefined && kt < 2 * ka) problems.push(`shimEth.keepaliveTimeoutMs: ${kt} is less than two keepalive periods (keepaliveMs ${ka}); make it at least ${2 * ka}`);
  const vlan = num(u.vlan);
  if (vlan !== undefined && /\.\d+$/.test(u.interface)) problems.push(`shimEth.vlan: ${vlan} with ${JSON.stringify(u.interface)}, which looks like a VLAN interface already (its kernel tags the frames): give the parent interface with vlan, or the VLAN interface alone`);
  if (problems.length > before) return undefined;
  const out: ShimEthConfig = { dif: u.dif, interface: u.interface };
  if (typeof u.name === 'string') out.name = u.name;
  if (vlan !== undefined) out.vlan = vlan;
  if (allow !== undefined) out.allow = allow;
  for (const f of ['mtu', 'keepaliveMs', 'keepaliveTimeoutMs', 'allocateTimeoutMs', 'resolveCacheSize', 'resolveCacheMs'] as const) {
    const v = num(u[f]);
    if (v !== undefined) out[f] = v;
  }
  return out;
}

/**
 * What is valid but probably not meant, one line each (check-config prints them, serve logs them):
 * a vhost-user socket that every local user may connect to lets any of them play a VM's
 * front-end, i.e. hand the server memory and rings of its choosing.
 */
export function configWarnings(devices: readonly { where: string; mode?: number }[]): string[] {
  const out: string[] = [];
  for (const d of devices) {
    if (d.mode !== undefined && (d.mode & 0o002) !== 0) {
      out.push(`${d.where}.mode: "${d.mode.toString(8).padStart(4, '0')}" lets every local user connect to this vhost-user socket and act as the VM's front-end; use "0660" with group: kvm (or the group QEMU runs as)`);
    }
  }
  return out;
}
