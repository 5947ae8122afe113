/**
 * snapshot.ts — the persisted state of one shim IPC process for hypervisors (ipcp.ts): its
 * types, the version, and the decoder that checks a snapshot another process wrote before the
 * IPC process resumes from it (ShimHvIpcp.restore / the `resume` option).
 *
 * A snapshot is plain JSON (numbers, strings, booleans, arrays, objects; no fds, no functions):
 * the IPC process's identity (role, DIF name, VMPI-id, channel space), its counters that must
 * not go back (next port-id, the channel cursor), the names of the applications registered at
 * this end, and every channel that is not free with what the protocol needs to end it cleanly
 * (state, port-id, names, QoS, who asked). Application names are in their string form
 * (apn/api/aen/aei). Statistics are not persisted (they are per process, like any counter).
 *
 * The flow allocation protocol (control.proto) has no sequence numbers, keepalives or
 * registration messages: applications register at their own end only, so the guest's
 * registrations live in the guest and are not part of the host's state.
 *
 * Decoding refuses, with a ShimHvStateError: code 'state_version' for a `version` other than
 * SHIM_HV_SNAPSHOT_VERSION, code 'state_invalid' for anything else that is wrong (a missing,
 * extra or ill-typed field, a value out of range, a duplicate channel or port-id, a channel of
 * the wrong parity for its state). Unknown fields are refused too: additions bump the version.
 */
import { MAX_DIF_NAME_LENGTH, MAX_CHANNEL_ID } from './control.js';
import { NamingError, appNameKey, formatAppName, parseAppName, type AppName } from '../naming.js';
import type { QosSpec } from '../api.js';
import { CodedError } from '../../sys/coded-error.js';

/** Which end an IPC process is (the same as types.ts's ShimHvRole). */
export type ShimHvSnapshotRole = 'host' | 'guest';

/** The `version` this code writes and the only one it restores. */
export const SHIM_HV_SNAPSHOT_VERSION = 1;

/** Largest number of registrations a snapshot may list. */
export const MAX_SNAPSHOT_REGISTRATIONS = 65_536;

const U32_MAX = 0xffffffff;

export interface ShimHvSnapshotQos {
  reliable: boolean;
  inOrder: boolean;
  maxSdu: number;
}

/** This end asked for a flow on `channel` (its own parity) and waits for the peer's answer. */
export interface SnapshotPending {
  channel: number;
  state: 'pending';
  portId: number;
  localApp: string;
  remoteApp: string;
  qos: ShimHvSnapshotQos;
}

/** The peer asked for a flow on `channel` (its parity); the local application had not decided. */
export interface SnapshotIncoming {
  channel: number;
  state: 'incoming';
  /** The registered application asked for. */
  localApp: string;
  remoteApp: string;
  qos: ShimHvSnapshotQos;
}

/** A flow runs on `channel`. */
export interface SnapshotAllocated {
  channel: number;
  state: 'allocated';
  portId: number;
  localApp: string;
  remoteApp: string;
  qos: ShimHvSnapshotQos;
  /** Which end asked for the flow. */
  requester: 'local' | 'peer';
  /** Whether this end's SDUs went through a data file handed to an application (guest side only). */
  dataFile: boolean;
}

/** This end sent Deallocate on `channel` and waits for the peer's confirmation. */
export interface SnapshotClosing {
  channel: number;
  state: 'closing';
  /** The port-id of the flow that ended, or null for an allocation given up before an answer. */
  portId: number | null;
}

export type ShimHvSnapshotChannel = SnapshotPending | SnapshotIncoming | SnapshotAllocated | SnapshotClosing;

export interface ShimHvSnapshot {
  version: typeof SHIM_HV_SNAPSHOT_VERSION;
  role: ShimHvSnapshotRole;
  difName: string;
  vmpiId: number;
  maxChannel: number;
  /** The port-id the next flow gets (port-ids are never reused by one IPC process). */
  nextPortId: number;
  /** Where this end's next channel search starts (index into its half of the channel space). */
  cursor: number;
  /**
   * Applications registered at this end (string form, sorted): their handlers died with the
   * process, so a restored IPC process only uses the names to say why it refuses a request
   * for one of them until it registers again.
   */
  registrations: string[];
  /** Every channel that is not free, by channel. */
  channels: ShimHvSnapshotChannel[];
}

export type ShimHvStateErrorCode = 'state_version' | 'state_invalid';

/** A snapshot that cannot be restored; `code` says whether it is another version or broken. */
export class ShimHvStateError extends CodedError<ShimHvStateErrorCode> {
  override name = 'ShimHvStateError';
}

// ---------------------------------------------------------------------------------------------
// Decoding

type Obj = Record<string, unknown>;

function invalid(where: string, what: string): ShimHvStateError {
  return new ShimHvStateError('state_invalid', `shim-hv snapshot: ${where} ${what}; the snapshot is damaged or was not written by this IPC process: start without it`);
}

function obj(v: unknown, where: string, keys: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(where, 'is not an object');
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw invalid(`${where}.${k}`, 'is not a field of a version 1 snapshot');
  for (const k of keys) if (!(k in o)) throw invalid(`${where}.${k}`, 'is missing');
  return o;
}

function int(v: unknown, where: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(where, `must be an integer ${min}..${max}, not ${JSON.stringify(v)}`);
  return v;
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw invalid(where, `must be a boolean, not ${JSON.stringify(v)}`);
  return v;
}

function name(v: unknown, where: string): string {
  if (typeof v !== 'string') throw invalid(where, 'must be an application name string');
  let n: AppName;
  try {
    n = parseAppName(v);
  } catch (e) {
    if (e instanceof NamingError) throw invalid(where, `is not an application name: ${e.message}`);
    throw e;
  }
  return formatAppName(n);
}

function qos(v: unknown, where: string): ShimHvSnapshotQos {
  const o = obj(v, where, ['reliable', 'inOrder', 'maxSdu']);
  return { reliable: bool(o.reliable, `${where}.reliable`), inOrder: bool(o.inOrder, `${where}.inOrder`), maxSdu: int(o.maxSdu, `${where}.maxSdu`, 1, U32_MAX) };
}

/** True if `role` allocates `channel` (host even, guest odd). */
export function ownsChannel(role: ShimHvSnapshotRole, channel: number): boolean {
  return role === 'host' ? channel % 2 === 0 : channel % 2 === 1;
}

/** How many channels `role` allocates in 1..maxChannel. */
export function ownChannelCount(role: ShimHvSnapshotRole, maxChannel: number): number {
  const first = role === 'host' ? 2 : 1;
  return maxChannel < first ? 0 : Math.floor((maxChannel - first) / 2) + 1;
}

function channelEntry(v: unknown, where: string, role: ShimHvSnapshotRole, maxChannel: number, nextPortId: number): ShimHvSnapshotChannel {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(where, 'is not an object');
  const state = (v as Obj).state;
  const channelOf = (o: Obj): number => int(o.channel, `${where}.channel`, 1, maxChannel);
  const portIdOf = (o: Obj): number => int(o.portId, `${where}.portId`, 1, nextPortId - 1);
  switch (state) {
    case 'pending': {
      const o = obj(v, where, ['channel', 'state', 'portId', 'localApp', 'remoteApp', 'qos']);
      const channel = channelOf(o);
      if (!ownsChannel(role, channel)) throw invalid(`${where}.channel`, `${channel} is pending but the ${role} does not allocate it`);
      return { channel, state, portId: portIdOf(o), localApp: name(o.localApp, `${where}.localApp`), remoteApp: name(o.remoteApp, `${where}.remoteApp`), qos: qos(o.qos, `${where}.qos`) };
    }
    case 'incoming': {
      const o = obj(v, where, ['channel', 'state', 'localApp', 'remoteApp', 'qos']);
      const channel = channelOf(o);
      if (ownsChannel(role, channel)) throw invalid(`${where}.channel`, `${channel} is incoming but the ${role} allocates it itself`);
      return { channel, state, localApp: name(o.localApp, `${where}.localApp`), remoteApp: name(o.remoteApp, `${where}.remoteApp`), qos: qos(o.qos, `${where}.qos`) };
    }
    case 'allocated': {
      const o = obj(v, where, ['channel', 'state', 'portId', 'localApp', 'remoteApp', 'qos', 'requester', 'dataFile']);
      const channel = channelOf(o);
      if (o.requester !== 'local' && o.requester !== 'peer') throw invalid(`${where}.requester`, `must be "local" or "peer", not ${JSON.stringify(o.requester)}`);
      if (ownsChannel(role, channel) !== (o.requester === 'local')) throw invalid(`${where}.requester`, `is ${o.requester} but channel ${channel} is allocated by the ${o.requester === 'local' ? 'peer' : role}`);
      return {
        channel,
        state,
        portId: portIdOf(o),
        localApp: name(o.localApp, `${where}.localApp`),
        remoteApp: name(o.remoteApp, `${where}.remoteApp`),
        qos: qos(o.qos, `${where}.qos`),
        requester: o.requester,
        dataFile: bool(o.dataFile, `${where}.dataFile`),
      };
    }
    case 'closing': {
      const o = obj(v, where, ['channel', 'state', 'portId']);
      return { channel: channelOf(o), state, portId: o.portId === null ? null : portIdOf(o) };
    }
    default:
      throw invalid(`${where}.state`, `must be pending, incoming, allocated or closing, not ${JSON.stringify(state)}`);
  }
}

/**
 * Check a snapshot read back from JSON and return it in normal form (a fresh object). Throws a
 * ShimHvStateError: 'state_version' for another version, 'state_invalid' for anything else.
 */
export function parseShimHvSnapshot(value: unknown): ShimHvSnapshot {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('the snapshot', 'is not an object');
  const version = (value as Obj).version;
  if (typeof version !== 'number') throw invalid('version', 'is missing or not a number');
  if (version !== SHIM_HV_SNAPSHOT_VERSION) {
    throw new ShimHvStateError('state_version', `shim-hv snapshot version ${version} is not supported (this code restores version ${SHIM_HV_SNAPSHOT_VERSION}): start without it, or run the version that wrote it`);
  }
  const o = obj(value, 'the snapshot', ['version', 'role', 'difName', 'vmpiId', 'maxChannel', 'nextPortId', 'cursor', 'registrations', 'channels']);
  const role = o.role;
  if (role !== 'host' && role !== 'guest') throw invalid('role', `must be "host" or "guest", not ${JSON.stringify(role)}`);
  const difName = o.difName;
  if (typeof difName !== 'string' || difName === '' || difName.length > MAX_DIF_NAME_LENGTH) throw invalid('difName', `must be a non-empty string of at most ${MAX_DIF_NAME_LENGTH} characters`);
  const vmpiId = int(o.vmpiId, 'vmpiId', 0, U32_MAX);
  const maxChannel = int(o.maxChannel, 'maxChannel', 2, MAX_CHANNEL_ID);
  const nextPortId = int(o.nextPortId, 'nextPortId', 1, Number.MAX_SAFE_INTEGER);
  const count = ownChannelCount(role, maxChannel);
  const cursor = int(o.cursor, 'cursor', 0, Math.max(0, count - 1));

  if (!Array.isArray(o.registrations)) throw invalid('registrations', 'is not an array');
  if (o.registrations.length > MAX_SNAPSHOT_REGISTRATIONS) throw invalid('registrations', `lists ${o.registrations.length} applications, more than ${MAX_SNAPSHOT_REGISTRATIONS}`);
  const registrations: string[] = [];
  const regKeys = new Set<string>();
  o.registrations.forEach((r, i) => {
    const n = name(r, `registrations[${i}]`);
    const key = appNameKey(n);
    if (regKeys.has(key)) throw invalid(`registrations[${i}]`, `lists ${n} twice`);
    regKeys.add(key);
    registrations.push(n);
  });

  if (!Array.isArray(o.channels)) throw invalid('channels', 'is not an array');
  if (o.channels.length > maxChannel) throw invalid('channels', `lists ${o.channels.length} channels, more than maxChannel ${maxChannel}`);
  const channels: ShimHvSnapshotChannel[] = [];
  const seenChannels = new Set<number>();
  const seenPorts = new Set<number>();
  o.channels.forEach((c, i) => {
    const entry = channelEntry(c, `channels[${i}]`, role, maxChannel, nextPortId);
    if (seenChannels.has(entry.channel)) throw invalid(`channels[${i}].channel`, `${entry.channel} is listed twice`);
    seenChannels.add(entry.channel);
    if ('portId' in entry && entry.portId !== null) {
      if (seenPorts.has(entry.portId)) throw invalid(`channels[${i}].portId`, `${entry.portId} is listed twice`);
      seenPorts.add(entry.portId);
    }
    channels.push(entry);
  });
  channels.sort((a, b) => a.channel - b.channel);
  return { version: SHIM_HV_SNAPSHOT_VERSION, role, difName, vmpiId, maxChannel, nextPortId, cursor, registrations: registrations.sort(), channels };
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers (ipcp.ts builds the snapshot from its live state)

export function qosToSnapshot(q: QosSpec): ShimHvSnapshotQos {
  return { reliable: q.reliable, inOrder: q.inOrder, maxSdu: q.maxSdu };
}

export function qosFromSnapshot(q: ShimHvSnapshotQos): QosSpec {
  return Object.freeze({ reliable: q.reliable, inOrder: q.inOrder, maxSdu: q.maxSdu });
}
