/**
 * control.ts — encode/decode the shim DIF for hypervisors' control messages (VMPI channel 0).
 *
 * Owns: the typed `ControlMessage` union and the checks every incoming message passes before
 * the IPC process sees it. The schema is control.proto next to this file (the source of truth),
 * loaded once with protobufjs on first use; a build that emits to dist/ finds it back in src/.
 *
 * Decoding never throws anything but a `ControlMessageError` (reason: undecodable, too large,
 * unsupported version, no body, missing field, channel 0, bad name, bad value). When the message
 * was at least readable as an allocate request with a usable channel, the error says so
 * (`kind`, `channel`), so the receiver can answer with a REJECT instead of leaving the requester
 * to time out.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { NamingError, validateAppName, type AppName } from '../naming.js';
import type { QosSpec } from '../api.js';
import { MAX_CHANNEL } from '../../vmpi/port.js';

/** The `version` this code writes and the only one it reads. */
export const CONTROL_VERSION = 1;
/** The VMPI channel that carries control messages. */
export { CONTROL_CHANNEL } from '../../vmpi/port.js';
/** Highest channel id a message may name (VMPI channels are u32). */
export const MAX_CHANNEL_ID = MAX_CHANNEL;
/** Largest value of a u32 field (QoS max_sdu). */
const U32_MAX = 0xffffffff;
/** Larger SDUs on channel 0 are refused before decoding (two maximal names fit easily). */
export const MAX_CONTROL_MESSAGE_BYTES = 4096;
/** Reasons longer than this (in UTF-16 units) are cut on encode and on decode. */
export const MAX_REASON_LENGTH = 256;
export const MAX_DIF_NAME_LENGTH = 255;

export interface AllocateRequestMsg {
  readonly kind: 'allocate_request';
  readonly channel: number;
  readonly src: AppName;
  readonly dst: AppName;
  readonly qos: QosSpec;
  /** The requester's DIF name; '' when not stated. */
  readonly difName: string;
}

export interface AllocateResponseMsg {
  readonly kind: 'allocate_response';
  readonly channel: number;
  readonly result: 'accept' | 'reject';
  readonly reason: string;
}

export interface DeallocateMsg {
  readonly kind: 'deallocate';
  readonly channel: number;
  readonly reason: string;
  /** True when answering the peer's Deallocate (the channel is free at the sender). */
  readonly confirm: boolean;
}

export type ControlMessage = AllocateRequestMsg | AllocateResponseMsg | DeallocateMsg;
export type ControlKind = ControlMessage['kind'];

export type MalformedReason =
  | 'too_large'
  | 'undecodable'
  | 'unsupported_version'
  | 'no_body'
  | 'missing_field'
  | 'bad_channel'
  | 'bad_name'
  | 'bad_value';

export class ControlMessageError extends Error {
  override name = 'ControlMessageError';
  constructor(
    readonly reason: MalformedReason,
    message: string,
    /** What the message was, when that much could be read. */
    readonly kind?: ControlKind,
    /** Its channel, when readable and non-zero. */
    readonly channel?: number,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Schema loading

let controlType: protobuf.Type | null = null;

/**
 * Where control.proto is: next to this module (running from src/ with tsx, or a build that
 * copies it), else `src/dif/shim-hv/control.proto` under the nearest ancestor directory (a tsc
 * build into dist/ does not copy .proto files, so dist/src/dif/shim-hv/control.js finds it in
 * the source tree).
 */
export function controlProtoPath(): string {
  const here = fileURLToPath(new URL('./control.proto', import.meta.url));
  const tried = [here];
  if (existsSync(here)) return here;
  let dir = dirname(here);
  for (;;) {
    const candidate = join(dir, 'src', 'dif', 'shim-hv', 'control.proto');
    tried.push(candidate);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`control.proto not found (looked at ${tried.join(', ')})`);
}

/** The protobufjs reflection type of ControlMessage (loaded on first use). */
export function controlMessageType(): protobuf.Type {
  if (controlType) return controlType;
  const root = protobuf.loadSync(controlProtoPath());
  controlType = root.lookupType('vmpi.shimhv.v1.ControlMessage');
  return controlType;
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Proto field values for an AppName ('' for the components left out). */
function nameToWire(n: AppName): Record<string, string> {
  return {
    processName: n.processName,
    processInstance: n.processInstance ?? '',
    entityName: n.entityName ?? '',
    entityInstance: n.entityInstance ?? '',
  };
}

export function clampReason(reason: string): string {
  return reason.length > MAX_REASON_LENGTH ? `${reason.slice(0, MAX_REASON_LENGTH - 1)}…` : reason;
}

function checkOutgoingChannel(channel: number): void {
  if (!Number.isInteger(channel) || channel < 1 || channel > MAX_CHANNEL_ID) {
    throw new ControlMessageError('bad_channel', `channel ${channel} cannot carry a flow (1..${MAX_CHANNEL_ID})`);
  }
}

export interface EncodeOptions {
  /** Write this version instead of CONTROL_VERSION (tests of the receiver's checks). */
  version?: number;
  /** Skip the checks on the message (tests of the receiver's checks). */
  unchecked?: boolean;
}

/** Encode one control message. Throws a ControlMessageError if the message is invalid. */
export function encodeControl(msg: ControlMessage, opts: EncodeOptions = {}): Uint8Array {
  const T = controlMessageType();
  const check = opts.unchecked !== true;
  let body: Record<string, unknown>;
  switch (msg.kind) {
    case 'allocate_request': {
      if (check) {
        checkOutgoingChannel(msg.channel);
        try {
          validateAppName(msg.src);
          validateAppName(msg.dst);
        } catch (e) {
          throw new ControlMessageError('bad_name', (e as Error).message, msg.kind, msg.channel);
        }
        checkQos(msg.qos, msg.kind, msg.channel);
        if (msg.difName.length > MAX_DIF_NAME_LENGTH) throw new ControlMessageError('bad_value', 'DIF name too long', msg.kind, msg.channel);
      }
      body = {
        allocateRequest: {
          channel: msg.channel,
          src: nameToWire(msg.src),
          dst: nameToWire(msg.dst),
          qos: { reliable: msg.qos.reliable, inOrder: msg.qos.inOrder, maxSdu: msg.qos.maxSdu },
          difName: msg.difName,
        },
      };
      break;
    }
    case 'allocate_response':
      if (check) checkOutgoingChannel(msg.channel);
      body = {
        allocateResponse: {
          channel: msg.channel,
          result: msg.result === 'accept' ? 1 : 2,
          reason: clampReason(msg.reason),
        },
      };
      break;
    case 'deallocate':
      if (check) checkOutgoingChannel(msg.channel);
      body = { deallocate: { channel: msg.channel, reason: clampReason(msg.reason), confirm: msg.confirm } };
      break;
  }
  const bytes = T.encode(T.fromObject({ version: opts.version ?? CONTROL_VERSION, ...body })).finish();
  if (check && bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) {
    throw new ControlMessageError('too_large', `control message of ${bytes.byteLength} bytes exceeds ${MAX_CONTROL_MESSAGE_BYTES}`, msg.kind);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** The decoded protobufjs object, every field unknown until checked. */
type Raw = Record<string, unknown>;

function isRaw(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null;
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function nameFromWire(v: unknown, field: 'src' | 'dst', kind: ControlKind, channel: number): AppName {
  if (!isRaw(v)) throw new ControlMessageError('missing_field', `${kind} has no ${field} application name`, kind, channel);
  const n: { processName: string; processInstance?: string; entityName?: string; entityInstance?: string } = { processName: str(v.processName) };
  const opt = ['processInstance', 'entityName', 'entityInstance'] as const;
  for (const f of opt) {
    const s = str(v[f]);
    if (s !== '') n[f] = s;
  }
  try {
    return validateAppName(n);
  } catch (e) {
    if (e instanceof NamingError) throw new ControlMessageError('bad_name', `${kind} ${field} name: ${e.message}`, kind, channel);
    throw e;
  }
}

function checkQos(q: QosSpec, kind: ControlKind, channel: number): void {
  if (typeof q.reliable !== 'boolean' || typeof q.inOrder !== 'boolean') throw new ControlMessageError('bad_value', 'QoS flags must be booleans', kind, channel);
  if (!Number.isInteger(q.maxSdu) || q.maxSdu < 0 || q.maxSdu > U32_MAX) throw new ControlMessageError('bad_value', `QoS max_sdu ${q.maxSdu} is not a u32`, kind, channel);
}

/**
 * Decode one control SDU. Throws a ControlMessageError, and nothing else, for anything that is
 * not a valid version-1 message.
 */
export function decodeControl(bytes: Uint8Array): ControlMessage {
  if (bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) {
    throw new ControlMessageError('too_large', `control SDU of ${bytes.byteLength} bytes exceeds ${MAX_CONTROL_MESSAGE_BYTES}`);
  }
  const T = controlMessageType();
  let raw: Raw;
  try {
    const decoded = T.decode(bytes);
    raw = T.toObject(decoded, { defaults: false, enums: Number, longs: Number, oneofs: true }) as Raw;
  } catch (e) {
    throw new ControlMessageError('undecodable', `not a control message: ${(e as Error).message}`);
  }

  const which = raw.body;
  const kind: ControlKind | undefined =
    which === 'allocateRequest' ? 'allocate_request' : which === 'allocateResponse' ? 'allocate_response' : which === 'deallocate' ? 'deallocate' : undefined;
  const inner = which === undefined ? undefined : raw[which as string];
  const channel = isRaw(inner) ? num(inner.channel) : 0;
  const knownChannel = channel > 0 ? channel : undefined;

  const version = num(raw.version);
  if (version !== CONTROL_VERSION) {
    const what = version === 0 ? 'has no version' : `has version ${version}`;
    throw new ControlMessageError('unsupported_version', `control message ${what}; this end speaks version ${CONTROL_VERSION}`, kind, knownChannel);
  }
  if (kind === undefined || !isRaw(inner)) throw new ControlMessageError('no_body', 'control message has no body');
  if (knownChannel === undefined) {
    throw new ControlMessageError('bad_channel', `${kind} names channel 0 (or none): channel 0 is the control channel`, kind);
  }

  switch (kind) {
    case 'allocate_request': {
      const src = nameFromWire(inner.src, 'src', kind, channel);
      const dst = nameFromWire(inner.dst, 'dst', kind, channel);
      if (!isRaw(inner.qos)) throw new ControlMessageError('missing_field', 'allocate_request has no QoS spec', kind, channel);
      const qos: QosSpec = { reliable: inner.qos.reliable === true, inOrder: inner.qos.inOrder === true, maxSdu: num(inner.qos.maxSdu) };
      const difName = str(inner.difName);
      if (difName.length > MAX_DIF_NAME_LENGTH) throw new ControlMessageError('bad_value', `DIF name of ${difName.length} characters is too long`, kind, channel);
      return { kind, channel, src, dst, qos, difName };
    }
    case 'allocate_response': {
      const result = num(inner.result);
      if (result === 0) throw new ControlMessageError('missing_field', 'allocate_response has no result', kind, channel);
      if (result !== 1 && result !== 2) throw new ControlMessageError('bad_value', `allocate_response result ${result} is neither ACCEPT nor REJECT`, kind, channel);
      return { kind, channel, result: result === 1 ? 'accept' : 'reject', reason: clampReason(str(inner.reason)) };
    }
    case 'deallocate':
      return { kind, channel, reason: clampReason(str(inner.reason)), confirm: inner.confirm === true };
  }
}
