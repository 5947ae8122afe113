/**
 * inspect-cli.ts — what `vmpi ipcp list` and `vmpi dif show NAME` run once cli/inspect.ts has
 * parsed the flags: ask the IPC daemon (`list_ipcps`, `inspect_dif`) and print a table, a readable
 * dump, or the JSON as it came.
 *
 * The dump reads the known parts of each IPC process type's state (normal: NormalIpcp.inspect(),
 * shim-hv: ShimHvIpcp.inspect(), shim-udp: ShimUdpIpcp.inspect(), shim-eth: ShimEthIpcp.inspect()) and prints what is there; a part a daemon does not send is left
 * out, so an older or newer daemon still gets a dump. `--json` prints the state whole.
 */
import { IpcClient } from '../dif/ipc/client.js';
import { formatAppName, type AppName } from '../dif/naming.js';
import type { DifInspection, IpcpInfo, TruncationInfo } from '../dif/ipc/protocol.js';

type Out = (line: string) => void;
type Obj = Record<string, unknown>;

export interface InspectArgs {
  ipcSocket?: string;
  json: boolean;
}

async function withClient<T>(socket: string | undefined, fn: (c: IpcClient) => Promise<T>): Promise<T> {
  const client = await IpcClient.connect(socket);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Left-aligned columns, two spaces apart. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)];
}

function truncNote(t: TruncationInfo[] | undefined, out: Out): void {
  for (const c of t ?? []) out(`(cut to fit one IPC message: ${c.path || 'the list'} shows ${c.shown} of ${c.total})`);
}

export async function ipcpList(a: InspectArgs, out: Out): Promise<number> {
  const r = await withClient(a.ipcSocket, (c) => c.listIpcps());
  if (a.json) {
    out(JSON.stringify(r, null, 2));
    return 0;
  }
  if (r.ipcps.length === 0) {
    out('no IPC processes');
    return 0;
  }
  for (const l of table(['DIF', 'TYPE', 'NAME', 'ADDRESS'], r.ipcps.map((i: IpcpInfo) => [i.dif, i.type, i.name, String(i.address)]))) out(l);
  truncNote(r.truncated, out);
  return 0;
}

export async function difShow(a: InspectArgs & { dif: string }, out: Out): Promise<number> {
  const d = await withClient(a.ipcSocket, (c) => c.inspectDif(a.dif));
  if (a.json) out(JSON.stringify(d, null, 2));
  else for (const l of formatInspection(d)) out(l);
  return 0;
}

const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const s = (v: unknown): string => (v === undefined || v === null ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
/** An application name as the state carries it (a string, or an AppName object). */
const appName = (v: unknown): string => {
  if (typeof v === 'string') return v;
  try {
    return formatAppName(v as AppName);
  } catch {
    return s(v);
  }
};

function section(lines: string[], title: string, header: string[], rows: string[][]): void {
  lines.push('', `${title} (${rows.length}):`);
  if (rows.length > 0) for (const l of table(header, rows)) lines.push(`  ${l}`);
}

/** The readable dump of one IPC process. */
export function formatInspection(d: DifInspection): string[] {
  const st = d.state;
  const lines = [`DIF ${d.dif}: ${d.type} IPC process ${d.name}, address ${d.address}`];
  if (d.type === 'normal') formatNormal(st, lines);
  else if (d.type === 'shim-hv') formatShim(st, lines);
  else if (d.type === 'shim-udp') formatShimUdp(st, lines);
  else if (d.type === 'shim-eth') formatShimEth(st, lines);
  else lines.push(JSON.stringify(st, null, 2));
  for (const c of d.truncated ?? []) lines.push(`(cut to fit one IPC message: ${c.path} shows ${c.shown} of ${c.total})`);
  return lines;
}

function formatNormal(st: Obj, lines: string[]): void {
  const enrollee = obj(st.enrollee);
  lines.push(`role ${s(st.role)}, max SDU ${s(st.maxSdu)}${st.enrollee ? `, enrollment ${s(enrollee.state)} (enroller ${s(enrollee.enroller)})` : ''}`);
  const enroller = st.enroller ? obj(st.enroller) : null;
  if (enroller) section(lines, 'Members', ['NAME', 'ADDRESS', 'STATE'], list(enroller.members).map((m) => [s(obj(m).name), s(obj(m).address), s(obj(m).state)]));
  const routing = obj(st.routing);
  section(lines, 'Neighbours', ['ADDRESS', 'N-1 FLOW', 'COST'], list(routing.neighbours).map((n) => [s(obj(n).addr), s(obj(n).portId), s(obj(n).cost)]));
  section(lines, 'Lower flows', ['ID', 'DIF', 'PORT', 'REMOTE', 'MAX SDU', 'NEIGHBOUR'], list(st.lowerFlows).map((f) => {
    const o = obj(f);
    return [s(o.id), s(o.dif), s(o.portId), s(o.remoteApp), s(o.maxSdu), o.neighbour === 0 ? '-' : s(o.neighbour)];
  }));
  section(lines, 'Forwarding table', ['DESTINATION', 'N-1 FLOW'], list(obj(st.rmt).forwarding).map((e) => list(e).map(s)));
  const dir = obj(st.directory);
  section(lines, 'Directory', ['APPLICATION', 'ADDRESS', 'STATE'], list(dir.entries).map((e) => {
    const o = obj(e);
    return [appName(o.app ?? o.name), s(o.address), o.removed === true ? 'removed' : 'live'];
  }));
  section(lines, 'Flows', ['NAME', 'LOCAL', 'REMOTE', 'PEER ADDRESS', 'CEPS'], list(obj(st.flowAllocator).flows).map((f) => {
    const o = obj(f);
    return [s(o.name), appName(o.initiator === true ? o.srcApp : o.dstApp), appName(o.initiator === true ? o.dstApp : o.srcApp), s(o.remoteAddr), `${s(o.localCep)}→${s(o.remoteCep)}`];
  }));
}

function formatShim(st: Obj, lines: string[]): void {
  lines.push(`role ${s(st.role)}, VMPI-id ${s(st.vmpiId)}, port ${s(st.port)}, channels 1..${s(st.maxChannel)}, ${s(st.rxQueuedBytes)} bytes queued`);
  lines.push(`registered: ${list(st.registered).map(s).join(', ') || 'none'}`);
  section(lines, 'Channels in use', ['CHANNEL', 'STATE', 'PORT ID', 'LOCAL', 'REMOTE', 'DATA FILE'], list(st.channels).map((c) => {
    const o = obj(c);
    return [s(o.channel), s(o.state), s(o.portId), s(o.localApp), s(o.remoteApp), o.dataFile === undefined ? '-' : o.dataFile ? 'yes' : 'no'];
  }));
}

function formatShimUdp(st: Obj, lines: string[]): void {
  lines.push(`bind ${s(st.bind)}, MTU ${s(st.mtu)} (max SDU ${s(st.maxSdu)}), keepalive ${s(st.keepaliveMs)} ms, peer timeout ${s(st.keepaliveTimeoutMs)} ms, ${s(st.rxQueuedBytes)} bytes queued`);
  lines.push(`registered: ${list(st.registered).map(s).join(', ') || 'none'}`);
  section(lines, 'Peers', ['NAME', 'ADDRESS'], Object.entries(obj(st.peers)).map(([k, v]) => [k, s(v)]));
  section(lines, 'Flows', ['ID', 'STATE', 'PORT ID', 'PEER', 'PEER ID', 'LOCAL', 'REMOTE'], list(st.flows).map((f) => {
    const o = obj(f);
    return [s(o.id), s(o.state), s(o.portId), s(o.peer), s(o.remoteId), s(o.localApp), s(o.remoteApp)];
  }));
  const drops = obj(obj(st.stats).drops);
  lines.push('', `drops: ${Object.entries(drops).map(([k, v]) => `${k} ${s(v)}`).join(', ') || 'none'}`);
}

function formatShimEth(st: Obj, lines: string[]): void {
  lines.push(`interface ${s(st.interface)}${st.vlan !== undefined ? ` VLAN ${s(st.vlan)}` : ''}, MAC ${s(st.mac)}, link ${st.linkUp === true ? 'up' : 'down'}, MTU ${s(st.mtu)} (max SDU ${s(st.maxSdu)}), keepalive ${s(st.keepaliveMs)} ms, peer timeout ${s(st.keepaliveTimeoutMs)} ms, ${s(st.rxQueuedBytes)} bytes queued`);
  lines.push(`registered: ${list(st.registered).map(s).join(', ') || 'none'}`);
  section(lines, 'Resolved names', ['NAME', 'MAC', 'EXPIRES IN'], list(st.cache).map((c) => [s(obj(c).name), s(obj(c).mac), `${s(obj(c).expiresInMs)} ms`]));
  if (list(st.resolving).length > 0) section(lines, 'Resolving', ['NAME', 'WAITING'], list(st.resolving).map((r) => [s(obj(r).name), s(obj(r).waiting)]));
  section(lines, 'Flows', ['ID', 'STATE', 'PORT ID', 'PEER', 'PEER ID', 'LOCAL', 'REMOTE'], list(st.flows).map((f) => {
    const o = obj(f);
    return [s(o.id), s(o.state), s(o.portId), s(o.peer), s(o.remoteId), s(o.localApp), s(o.remoteApp)];
  }));
  const stats = obj(st.stats);
  lines.push('', `frames: tx ${s(stats.txFrames)} rx ${s(stats.rxFrames)}, resolutions: requests sent ${s(stats.arpRequestsSent)}, answered ${s(stats.arpRequestsAnswered)}, resolved ${s(stats.resolved)}, unresolved ${s(stats.unresolved)}`);
  const drops = obj(stats.drops);
  lines.push(`drops: ${Object.entries(drops).map(([k, v]) => `${k} ${s(v)}`).join(', ') || 'none'}`);
}
