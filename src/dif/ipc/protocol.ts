/**
 * protocol.ts — the IPC daemon's control protocol (application ↔ daemon, one Unix stream socket
 * per application): framing, the message types and their validation.
 *
 * Framing: a 4-byte big-endian length N (1..MAX_MESSAGE_BYTES) followed by N bytes of UTF-8
 * JSON, one object per frame. JSON rather than protobuf: the messages are few, small and off the
 * data path (SDUs never cross this socket), and a person can read them with strace.
 *
 * Versioning: every message carries `v` (= IPC_PROTOCOL_VERSION). The daemon answers a message
 * of another version, or one it cannot read, with an `error` of code 'malformed' whose message
 * says why, and keeps the connection (the framing is still in step). A bad frame length cannot be
 * resynchronised: the daemon answers and closes.
 *
 * Requests (application → daemon) carry an `id` (1..2^31-1) echoed by the answer: `result` or
 * `error`. Events (daemon → application) carry none. The per-flow fd of an `allocate` or `accept`
 * result travels with that result's first byte (SCM_RIGHTS); the daemon accepts no fds. The
 * flow's `datapath` says what the fd is: 'socket' (absent in older daemons), the daemon's
 * SOCK_SEQPACKET end with tagged records; 'vmpi_file', the guest driver's file bound to the
 * flow's channel, one untagged SDU per read/write (datapath.ts); 'ring', that socket (then only
 * doorbells and end of file) and a second fd, a sealed memfd of two shared-memory rings of
 * `ring.bytes` data bytes per direction (ring.ts). A daemon answers 'ring' only to a request
 * with `rings: true` ("this client reads rings"): an older client, which does not send it, keeps
 * 'socket', and an older daemon ignores the field.
 *
 * `list_ipcps` and `inspect_dif` are read-only (inspect.ts): `state` is the IPC process's own
 * plain-data dump, and a result whose lists would not fit in one message has them cut, each cut
 * named in `truncated` ({path, total, shown}).
 *
 *   list_difs {}                                 → result {difs: [{name, address}]}
 *   list_ipcps {}                                → result {ipcps: [{dif, type, name, address}], truncated?}
 *   inspect_dif {dif}                            → result {inspect: {dif, type, name, address, state, truncated?}}
 *   register {dif, app}                          → result {}
 *   unregister {dif, app}                        → result {}
 *   allocate {dif, src, dst, qos?, timeoutMs?, rings?} → result {flow: FlowInfo} + fd (+ ring fd)
 *   accept {request, rings?}                     → result {flow: FlowInfo} + fd (+ ring fd)
 *   reject {request, reason}                     → result {}
 *   deallocate {flow, reason?}                   → result {}   (then close your fd)
 *   event flow_request {dif, app, request, remoteApp, qos}
 *   event request_cancelled {request, reason}
 *   event flow_deallocated {flow, reason, cause}
 *   error {id: number|null, code, message, peerReason?}
 */
import type { DeallocationCause, DifErrorCode, QosRequest, QosSpec } from '../api.js';
import { appNameKey, type AppName } from '../naming.js';

export const IPC_PROTOCOL_VERSION = 1;
/** Largest frame body; a longer announced length ends the connection. */
export const MAX_MESSAGE_BYTES = 65536;
export const MAX_REASON_CHARS = 256;
const MAX_ID = 2 ** 31 - 1;
const MAX_STRING = 1024;

/** Where `vmpi serve` listens by default, and where clients look (env VMPI_IPC_SOCKET overrides). */
export const DEFAULT_IPC_SOCKET = '/run/vmpi/ipc.sock';

export function defaultIpcSocketPath(): string {
  const env = process.env.VMPI_IPC_SOCKET;
  return env !== undefined && env !== '' ? env : DEFAULT_IPC_SOCKET;
}

/**
 * The key of a registration of `app` in DIF `dif`, the same for every spelling of the name
 * (client and daemon both index their registrations by it). Throws a NamingError for a bad name.
 */
export function registrationKey(dif: string, app: AppName | string): string {
  return `${dif}\n${appNameKey(app)}`;
}

export interface FlowInfo {
  /** The daemon's handle for the flow on this connection. */
  flow: number;
  portId: number;
  dif: string;
  localApp: string;
  remoteApp: string;
  qos: QosSpec;
  /** What the flow's fd is (see the file comment); default 'socket'. */
  datapath?: FlowDatapath;
  /** With datapath 'ring': the ring's data bytes per direction (the memfd is HEADER_BYTES + 2 × bytes). */
  ring?: { bytes: number };
}

export type FlowDatapath = 'socket' | 'vmpi_file' | 'ring';

export interface DifInfo {
  name: string;
  address: number;
}

/** One hosted IPC process, as `list_ipcps` shows it ('unknown': a type without observe.ts). */
export interface IpcpInfo {
  dif: string;
  type: 'shim-hv' | 'shim-udp' | 'shim-eth' | 'normal' | 'unknown';
  name: string;
  address: number;
}

/** A list cut short to fit in one message. */
export interface TruncationInfo {
  path: string;
  total: number;
  shown: number;
}

/** The `inspect_dif` result: who, and the IPC process's state (plain JSON, shape per type). */
export interface DifInspection extends IpcpInfo {
  state: Record<string, unknown>;
  truncated?: TruncationInfo[];
}

export type ClientRequest =
  | { op: 'list_difs'; id: number }
  | { op: 'list_ipcps'; id: number }
  | { op: 'inspect_dif'; id: number; dif: string }
  | { op: 'register'; id: number; dif: string; app: string }
  | { op: 'unregister'; id: number; dif: string; app: string }
  | { op: 'allocate'; id: number; dif: string; src: string; dst: string; qos: QosRequest; timeoutMs?: number; rings?: boolean }
  | { op: 'accept'; id: number; request: number; rings?: boolean }
  | { op: 'reject'; id: number; request: number; reason: string }
  | { op: 'deallocate'; id: number; flow: number; reason?: string };

export type ClientOp = ClientRequest['op'];

/** Every wire error code: the DIF's own, plus the daemon's. */
export type IpcErrorCode = DifErrorCode;

export interface ResultMessage {
  op: 'result';
  id: number;
  difs?: DifInfo[];
  flow?: FlowInfo;
  ipcps?: IpcpInfo[];
  inspect?: DifInspection;
  truncated?: TruncationInfo[];
}

export type DaemonMessage =
  | ResultMessage
  | { op: 'error'; id: number | null; code: IpcErrorCode; message: string; peerReason?: string }
  | { op: 'flow_request'; dif: string; app: string; request: number; remoteApp: string; qos: QosSpec }
  | { op: 'request_cancelled'; request: number; reason: string }
  | { op: 'flow_deallocated'; flow: number; reason: string; cause: DeallocationCause };

/** A message that could not be accepted; `id` when the request's id was readable. */
export class IpcProtocolError extends Error {
  override name = 'IpcProtocolError';
  constructor(
    message: string,
    readonly id: number | null = null,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Framing

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** One frame: length prefix + JSON with `v` added. */
export function encodeFrame(msg: object): Buffer {
  const body = encoder.encode(JSON.stringify({ v: IPC_PROTOCOL_VERSION, ...msg }));
  if (body.byteLength > MAX_MESSAGE_BYTES) throw new RangeError(`IPC control message of ${body.byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`);
  const out = Buffer.allocUnsafe(4 + body.byteLength);
  out.writeUInt32BE(body.byteLength, 0);
  out.set(body, 4);
  return out;
}

/** Parse one frame body into a JSON object with the right version. Throws IpcProtocolError. */
export function decodeBody(body: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(body));
  } catch (e) {
    throw new IpcProtocolError(`not JSON: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new IpcProtocolError('a message must be a JSON object');
  const obj = value as Record<string, unknown>;
  const id = typeof obj.id === 'number' && Number.isInteger(obj.id) && obj.id >= 1 && obj.id <= MAX_ID ? obj.id : null;
  if (obj.v !== IPC_PROTOCOL_VERSION) throw new IpcProtocolError(`unsupported protocol version ${shown(obj.v)}; this daemon speaks v=${IPC_PROTOCOL_VERSION}`, id);
  return obj;
}

// ---------------------------------------------------------------------------------------------
// Field checks

/**
 * A received value as error messages quote it: at most 64 characters of a string, the type of a
 * list or object. An error message goes back to the peer in an `error` frame, so it must stay
 * far below MAX_MESSAGE_BYTES whatever the peer sent (and never walk a deeply nested value).
 */
function shown(v: unknown): string {
  if (typeof v === 'string') return v.length > 64 ? `${JSON.stringify(v.slice(0, 64))}…` : JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object' && v !== null) return 'an object';
  return String(v);
}

function field(obj: Record<string, unknown>, key: string, id: number | null): unknown {
  if (!(key in obj)) throw new IpcProtocolError(`missing field "${key}"`, id);
  return obj[key];
}

function str(obj: Record<string, unknown>, key: string, id: number | null, max = MAX_STRING): string {
  const v = field(obj, key, id);
  if (typeof v !== 'string') throw new IpcProtocolError(`field "${key}" must be a string`, id);
  if (v.length > max) throw new IpcProtocolError(`field "${key}" is longer than ${max} characters`, id);
  return v;
}

function int(obj: Record<string, unknown>, key: string, id: number | null, min: number, max: number): number {
  const v = field(obj, key, id);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new IpcProtocolError(`field "${key}" must be an integer ${min}..${max}`, id);
  return v;
}

function optional<T>(obj: Record<string, unknown>, key: string, get: () => T): T | undefined {
  return obj[key] === undefined ? undefined : get();
}

function qosRequest(v: unknown, id: number | null): QosRequest {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IpcProtocolError('field "qos" must be an object', id);
  const q = v as Record<string, unknown>;
  for (const k of Object.keys(q)) if (k !== 'reliable' && k !== 'inOrder' && k !== 'maxSdu') throw new IpcProtocolError(`unknown QoS field ${shown(k)}`, id);
  const out: { -readonly [K in keyof QosSpec]?: QosSpec[K] } = {};
  for (const k of ['reliable', 'inOrder'] as const) {
    if (q[k] === undefined) continue;
    if (typeof q[k] !== 'boolean') throw new IpcProtocolError(`QoS field "${k}" must be a boolean`, id);
    out[k] = q[k];
  }
  if (q.maxSdu !== undefined) out.maxSdu = int(q, 'maxSdu', id, 0, 2 ** 32 - 1);
  return out;
}

/** Validate a request from an application. Throws IpcProtocolError (with the id when readable). */
export function parseClientRequest(obj: Record<string, unknown>): ClientRequest {
  const rawId = obj.id;
  const id = typeof rawId === 'number' && Number.isInteger(rawId) && rawId >= 1 && rawId <= MAX_ID ? rawId : null;
  if (typeof obj.op !== 'string') throw new IpcProtocolError('missing field "op"', id);
  if (id === null) throw new IpcProtocolError(`field "id" must be an integer 1..${MAX_ID}`);
  const op = obj.op;
  switch (op) {
    case 'list_difs':
    case 'list_ipcps':
      return { op, id };
    case 'inspect_dif':
      return { op, id, dif: str(obj, 'dif', id) };
    case 'register':
    case 'unregister':
      return { op, id, dif: str(obj, 'dif', id), app: str(obj, 'app', id) };
    case 'allocate': {
      const timeoutMs = optional(obj, 'timeoutMs', () => int(obj, 'timeoutMs', id, 1, MAX_ID));
      const base = { op, id, dif: str(obj, 'dif', id), src: str(obj, 'src', id), dst: str(obj, 'dst', id), qos: qosRequest(obj.qos, id), ...(obj.rings === true ? { rings: true } : {}) } as const;
      return timeoutMs === undefined ? base : { ...base, timeoutMs };
    }
    case 'accept':
      return { op, id, request: int(obj, 'request', id, 1, MAX_ID), ...(obj.rings === true ? { rings: true } : {}) };
    case 'reject':
      return { op, id, request: int(obj, 'request', id, 1, MAX_ID), reason: str(obj, 'reason', id).slice(0, MAX_REASON_CHARS) };
    case 'deallocate': {
      const reason = optional(obj, 'reason', () => str(obj, 'reason', id).slice(0, MAX_REASON_CHARS));
      const base = { op, id, flow: int(obj, 'flow', id, 1, MAX_ID) } as const;
      return reason === undefined ? base : { ...base, reason };
    }
    default:
      throw new IpcProtocolError(`unknown op ${shown(op)}`, id);
  }
}

function qosSpec(v: unknown): QosSpec {
  if (typeof v !== 'object' || v === null) throw new IpcProtocolError('bad QoS in a daemon message');
  const q = v as Record<string, unknown>;
  if (typeof q.reliable !== 'boolean' || typeof q.inOrder !== 'boolean' || typeof q.maxSdu !== 'number' || !Number.isInteger(q.maxSdu) || q.maxSdu < 0) {
    throw new IpcProtocolError('bad QoS in a daemon message');
  }
  return { reliable: q.reliable, inOrder: q.inOrder, maxSdu: q.maxSdu };
}

function flowInfo(v: unknown): FlowInfo {
  if (typeof v !== 'object' || v === null) throw new IpcProtocolError('bad flow in a daemon message');
  const f = v as Record<string, unknown>;
  return {
    flow: int(f, 'flow', null, 1, MAX_ID),
    portId: int(f, 'portId', null, 0, Number.MAX_SAFE_INTEGER),
    dif: str(f, 'dif', null),
    localApp: str(f, 'localApp', null),
    remoteApp: str(f, 'remoteApp', null),
    qos: qosSpec(f.qos),
    datapath: datapath(f.datapath),
    ...(f.datapath === 'ring' ? { ring: { bytes: int(record(f.ring, 'flow ring'), 'bytes', null, 4096, 2 ** 31 - 1) } } : {}),
  };
}

function datapath(v: unknown): FlowDatapath {
  if (v === undefined || v === 'socket') return 'socket';
  if (v === 'vmpi_file' || v === 'ring') return v;
  throw new IpcProtocolError(`unknown flow datapath ${shown(v)}: a newer daemon? update the client`);
}

const IPCP_TYPES: readonly IpcpInfo['type'][] = ['shim-hv', 'shim-udp', 'shim-eth', 'normal', 'unknown'];

function record(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IpcProtocolError(`bad ${what} in a daemon message`);
  return v as Record<string, unknown>;
}

function ipcpInfo(v: unknown): IpcpInfo {
  const r = record(v, 'IPC process');
  // A type this client does not know (a newer daemon) reads as 'unknown' rather than failing the list.
  const type = IPCP_TYPES.includes(r.type as IpcpInfo['type']) ? (r.type as IpcpInfo['type']) : 'unknown';
  return { dif: str(r, 'dif', null), type, name: str(r, 'name', null), address: int(r, 'address', null, 0, Number.MAX_SAFE_INTEGER) };
}

function truncations(v: unknown): TruncationInfo[] {
  if (!Array.isArray(v)) throw new IpcProtocolError('bad truncated list in a daemon message');
  return v.map((t: unknown) => {
    const r = record(t, 'truncation');
    return { path: str(r, 'path', null, 4096), total: int(r, 'total', null, 0, Number.MAX_SAFE_INTEGER), shown: int(r, 'shown', null, 0, Number.MAX_SAFE_INTEGER) };
  });
}

function inspection(v: unknown): DifInspection {
  const r = record(v, 'inspection');
  const out: DifInspection = { ...ipcpInfo(r), state: record(r.state, 'IPC process state') };
  if (r.truncated !== undefined) out.truncated = truncations(r.truncated);
  return out;
}

const CAUSES: readonly DeallocationCause[] = ['local', 'peer', 'port_down', 'closed'];

/** Validate a message from the daemon (client side). Throws IpcProtocolError. */
export function parseDaemonMessage(obj: Record<string, unknown>): DaemonMessage {
  switch (obj.op) {
    case 'result': {
      const id = int(obj, 'id', null, 1, MAX_ID);
      const out: ResultMessage = { op: 'result', id };
      if (obj.flow !== undefined) out.flow = flowInfo(obj.flow);
      if (obj.ipcps !== undefined) {
        if (!Array.isArray(obj.ipcps)) throw new IpcProtocolError('bad ipcps');
        out.ipcps = obj.ipcps.map(ipcpInfo);
      }
      if (obj.truncated !== undefined) out.truncated = truncations(obj.truncated);
      if (obj.inspect !== undefined) out.inspect = inspection(obj.inspect);
      if (obj.difs !== undefined) {
        if (!Array.isArray(obj.difs)) throw new IpcProtocolError('bad difs');
        out.difs = obj.difs.map((d: unknown) => {
          const r = (typeof d === 'object' && d !== null ? d : {}) as Record<string, unknown>;
          return { name: str(r, 'name', null), address: int(r, 'address', null, 0, Number.MAX_SAFE_INTEGER) };
        });
      }
      return out;
    }
    case 'error': {
      const id = obj.id === null ? null : int(obj, 'id', null, 1, MAX_ID);
      const peerReason = typeof obj.peerReason === 'string' ? obj.peerReason : undefined;
      const base = { op: 'error' as const, id, code: str(obj, 'code', null, 64) as IpcErrorCode, message: str(obj, 'message', null, 4096) };
      return peerReason === undefined ? base : { ...base, peerReason };
    }
    case 'flow_request':
      return { op: 'flow_request', dif: str(obj, 'dif', null), app: str(obj, 'app', null), request: int(obj, 'request', null, 1, MAX_ID), remoteApp: str(obj, 'remoteApp', null), qos: qosSpec(obj.qos) };
    case 'request_cancelled':
      return { op: 'request_cancelled', request: int(obj, 'request', null, 1, MAX_ID), reason: str(obj, 'reason', null) };
    case 'flow_deallocated': {
      const cause = obj.cause as DeallocationCause;
      if (!CAUSES.includes(cause)) throw new IpcProtocolError('bad cause');
      return { op: 'flow_deallocated', flow: int(obj, 'flow', null, 1, MAX_ID), reason: str(obj, 'reason', null), cause };
    }
    default:
      throw new IpcProtocolError(`unknown daemon message ${shown(obj.op)}`);
  }
}
