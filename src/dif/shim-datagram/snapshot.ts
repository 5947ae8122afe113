/**
 * snapshot.ts — the persisted state of one datagram shim IPC process (shim-udp, shim-eth: the
 * flow table of ./ipcp.ts), so that a new process of the same server carries its flows on after
 * a restart (`vmpi serve` under the keeper or systemd): its types, the version, and the decoder
 * that checks a snapshot another process wrote before an IPC process resumes from it.
 *
 * Plain JSON: the IPC process's identity (type, DIF name, its address: the bound "IPv4:port" or
 * the MAC), the counters that must not go back (the next flow id: ids are never reused, so a late
 * datagram of an old flow stays 'stale'; the next port-id), every allocated flow (ids, peer,
 * names, max SDU), the allocations this end had asked for, and the peers' requests no
 * application had answered. Registrations are not in it: they belong to the applications (the
 * IPC daemon's resumed sessions register again). Statistics are not persisted.
 *
 * Decoding refuses with a DatagramStateError: 'state_version' for another `version`,
 * 'state_invalid' for anything else wrong (a missing or ill-typed field, a value out of range, a
 * duplicate id or port-id, unknown fields).
 */
import { NamingError, parseAppName } from '../naming.js';
import { CodedError } from '../../sys/coded-error.js';

/** The `version` this code writes and the only one it restores. */
export const DATAGRAM_SNAPSHOT_VERSION = 1;

/** Most flows, asked allocations or waiting requests a snapshot may list (each). */
export const MAX_SNAPSHOT_ENTRIES = 1 << 20;

export interface DatagramSnapshotFlow {
  /** This end's flow id. */
  id: number;
  portId: number;
  /** The peer's address as text ("IPv4:port", a MAC). */
  peer: string;
  remoteId: number;
  localApp: string;
  remoteApp: string;
  maxSdu: number;
}

export interface DatagramShimSnapshot {
  version: typeof DATAGRAM_SNAPSHOT_VERSION;
  ipcpType: 'shim-udp' | 'shim-eth';
  difName: string;
  /** This IPC process's own address: the bound "IPv4:port" (shim-udp), the MAC (shim-eth). */
  address: string;
  nextId: number;
  nextPortId: number;
  flows: DatagramSnapshotFlow[];
  /** Allocations this end had asked for (ALLOC_REQ sent, no answer yet): given up on restore. */
  asked: { id: number; peer: string }[];
  /** A peer's requests no application had answered: refused on restore (the peer may ask again). */
  waiting: { peer: string; remoteId: number }[];
}

export type DatagramStateErrorCode = 'state_version' | 'state_invalid';

/** A snapshot this code cannot resume from; nothing was taken from it. */
export class DatagramStateError extends CodedError<DatagramStateErrorCode> {
  override name = 'DatagramStateError';
}

const U32_MAX = 0xffffffff;

function bad(what: string): DatagramStateError {
  return new DatagramStateError('state_invalid', `datagram shim snapshot: ${what}: it is not a snapshot this code wrote; the IPC process starts without its flows`);
}

function fields(o: unknown, where: string, names: readonly string[]): Record<string, unknown> {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw bad(`${where} is not an object`);
  for (const k of Object.keys(o)) if (!names.includes(k)) throw bad(`${where} has an unknown field ${JSON.stringify(k)}`);
  for (const k of names) if (!(k in o)) throw bad(`${where} lacks ${k}`);
  return o as Record<string, unknown>;
}

function u32(v: unknown, where: string, min = 0): number {
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > U32_MAX) throw bad(`${where} is not an integer ${min}..${U32_MAX}`);
  return v as number;
}

function str(v: unknown, where: string, max = 1024): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`${where} is not a string of 1..${max} characters`);
  return v;
}

function app(v: unknown, where: string): string {
  const s = str(v, where);
  try {
    parseAppName(s);
  } catch (e) {
    if (e instanceof NamingError) throw bad(`${where} is not an application name (${e.message})`);
    throw e;
  }
  return s;
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v) || v.length > MAX_SNAPSHOT_ENTRIES) throw bad(`${where} is not a list of at most ${MAX_SNAPSHOT_ENTRIES}`);
  return v;
}

/** Check `j` (as read back from a file) is a snapshot of this version. Throws DatagramStateError. */
export function parseDatagramSnapshot(j: unknown): DatagramShimSnapshot {
  if (typeof j === 'object' && j !== null && (j as { version?: unknown }).version !== DATAGRAM_SNAPSHOT_VERSION) {
    throw new DatagramStateError('state_version', `datagram shim snapshot: version ${String((j as { version?: unknown }).version)}; this vmpi reads version ${DATAGRAM_SNAPSHOT_VERSION} only: the IPC process starts without its flows`);
  }
  const o = fields(j, 'the snapshot', ['version', 'ipcpType', 'difName', 'address', 'nextId', 'nextPortId', 'flows', 'asked', 'waiting']);
  if (o.ipcpType !== 'shim-udp' && o.ipcpType !== 'shim-eth') throw bad('ipcpType is neither shim-udp nor shim-eth');
  const ids = new Set<number>();
  const ports = new Set<number>();
  const flows = list(o.flows, 'flows').map((x, i): DatagramSnapshotFlow => {
    const w = `flows[${i}]`;
    const f = fields(x, w, ['id', 'portId', 'peer', 'remoteId', 'localApp', 'remoteApp', 'maxSdu']);
    const id = u32(f.id, `${w}.id`, 1);
    const portId = u32(f.portId, `${w}.portId`, 1);
    if (ids.has(id)) throw bad(`${w}.id ${id} appears twice`);
    if (ports.has(portId)) throw bad(`${w}.portId ${portId} appears twice`);
    ids.add(id);
    ports.add(portId);
    return { id, portId, peer: str(f.peer, `${w}.peer`, 64), remoteId: u32(f.remoteId, `${w}.remoteId`, 1), localApp: app(f.localApp, `${w}.localApp`), remoteApp: app(f.remoteApp, `${w}.remoteApp`), maxSdu: u32(f.maxSdu, `${w}.maxSdu`) };
  });
  const asked = list(o.asked, 'asked').map((x, i) => {
    const a = fields(x, `asked[${i}]`, ['id', 'peer']);
    return { id: u32(a.id, `asked[${i}].id`, 1), peer: str(a.peer, `asked[${i}].peer`, 64) };
  });
  const waiting = list(o.waiting, 'waiting').map((x, i) => {
    const a = fields(x, `waiting[${i}]`, ['peer', 'remoteId']);
    return { peer: str(a.peer, `waiting[${i}].peer`, 64), remoteId: u32(a.remoteId, `waiting[${i}].remoteId`, 1) };
  });
  return {
    version: DATAGRAM_SNAPSHOT_VERSION,
    ipcpType: o.ipcpType,
    difName: str(o.difName, 'difName'),
    address: str(o.address, 'address', 64),
    nextId: u32(o.nextId, 'nextId', 1),
    nextPortId: u32(o.nextPortId, 'nextPortId', 1),
    flows,
    asked,
    waiting,
  };
}
