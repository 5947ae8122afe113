/**
 * cdap.ts — encode/decode the normal DIF's CDAP messages (layer management between IPC processes).
 *
 * Owns: the typed `CdapMessage` union, the op code numbering (IRATI/rlite: M_CONNECT = 0 …
 * M_STOP_R = 17), loading cdap.proto (the schema, next to this file) with protobufjs, the size and
 * length bounds, and `CdapError`. Object values (cdap-objects.ts) travel as opaque bytes here.
 *
 * Decoding never throws anything but a `CdapError` (reason: too_large, undecodable,
 * unknown_opcode, missing_field, bad_version, bad_value).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { NamingError, validateAppName, type AppName } from '../naming.js';

/** The version this code writes and the only one it reads. */
export const CDAP_VERSION = 1;
/** The abstract syntax of our object values (the messages of cdap.proto, package v1). */
export const ABS_SYNTAX = 1;
/** Larger management SDUs are refused before decoding; chunked transfers stay well below. */
export const MAX_CDAP_MESSAGE_BYTES = 16384;
export const MAX_OBJ_CLASS_LENGTH = 64;
export const MAX_OBJ_NAME_LENGTH = 512;
/** Reasons longer than this (UTF-16 units) are cut on encode and on decode. */
export const MAX_REASON_LENGTH = 256;

export const CdapOp = {
  M_CONNECT: 0,
  M_CONNECT_R: 1,
  M_RELEASE: 2,
  M_RELEASE_R: 3,
  M_CREATE: 4,
  M_CREATE_R: 5,
  M_DELETE: 6,
  M_DELETE_R: 7,
  M_READ: 8,
  M_READ_R: 9,
  M_CANCELREAD: 10,
  M_CANCELREAD_R: 11,
  M_WRITE: 12,
  M_WRITE_R: 13,
  M_START: 14,
  M_START_R: 15,
  M_STOP: 16,
  M_STOP_R: 17,
} as const;
export type CdapOpName = keyof typeof CdapOp;
const OP_NAMES = Object.keys(CdapOp) as CdapOpName[];

export type CdapRequestOp = 'M_RELEASE' | 'M_CREATE' | 'M_DELETE' | 'M_READ' | 'M_CANCELREAD' | 'M_WRITE' | 'M_START' | 'M_STOP';
export type CdapReplyOp = `${CdapRequestOp}_R`;

export interface CdapConnect {
  readonly op: 'M_CONNECT';
  readonly invokeId: number;
  readonly absSyntax: number;
  /** The connecting IPC process and the one (or the DIF) it wants. */
  readonly src: AppName;
  readonly dst: AppName;
}

export interface CdapConnectR {
  readonly op: 'M_CONNECT_R';
  readonly invokeId: number;
  readonly absSyntax: number;
  readonly src: AppName;
  readonly dst: AppName;
  /** 0 success, negative failure. */
  readonly result: number;
  readonly reason: string;
}

export interface CdapRequest {
  readonly op: CdapRequestOp;
  readonly invokeId: number;
  /** Required except for M_RELEASE. */
  readonly objClass: string;
  readonly objName: string;
  readonly value?: Uint8Array;
}

export interface CdapReply {
  readonly op: CdapReplyOp;
  readonly invokeId: number;
  readonly objClass: string;
  readonly objName: string;
  readonly value?: Uint8Array;
  readonly result: number;
  readonly reason: string;
}

export type CdapMessage = CdapConnect | CdapConnectR | CdapRequest | CdapReply;

export type CdapErrorReason = 'too_large' | 'undecodable' | 'unknown_opcode' | 'missing_field' | 'bad_version' | 'bad_value';

export class CdapError extends Error {
  override name = 'CdapError';
  readonly code = 'ERR_CDAP';
  constructor(
    readonly reason: CdapErrorReason,
    message: string,
  ) {
    super(message);
  }
}

export function isReplyOp(op: CdapOpName): op is CdapReplyOp | 'M_CONNECT_R' {
  return op.endsWith('_R');
}

// ---- schema --------------------------------------------------------------------------------

let root: protobuf.Root | null = null;

/** Where cdap.proto is: next to this module, else src/dif/normal/ under an ancestor directory. */
export function cdapProtoPath(): string {
  const here = fileURLToPath(new URL('./cdap.proto', import.meta.url));
  const tried = [here];
  if (existsSync(here)) return here;
  let dir = dirname(here);
  for (;;) {
    const candidate = join(dir, 'src', 'dif', 'normal', 'cdap.proto');
    tried.push(candidate);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`cdap.proto not found (looked at ${tried.join(', ')})`);
}

/** A message type of cdap.proto by its short name (loaded on first use). */
export function cdapType(name: string): protobuf.Type {
  root ??= protobuf.loadSync(cdapProtoPath());
  return root.lookupType(`vmpi.normal.v1.${name}`);
}

// ---- helpers shared with cdap-objects.ts ---------------------------------------------------

export type Raw = Record<string, unknown>;

export function isRaw(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null;
}

export function clampReason(reason: string): string {
  return reason.length > MAX_REASON_LENGTH ? `${reason.slice(0, MAX_REASON_LENGTH - 1)}…` : reason;
}

export function nameToWire(n: AppName): Raw {
  const out: Raw = { processName: n.processName };
  if (n.processInstance) out.processInstance = n.processInstance;
  if (n.entityName) out.entityName = n.entityName;
  if (n.entityInstance) out.entityInstance = n.entityInstance;
  return out;
}

export function nameFromWire(v: unknown, what: string): AppName {
  if (!isRaw(v)) throw new CdapError('missing_field', `${what} is missing`);
  const n: Record<string, string> = {};
  for (const f of ['processName', 'processInstance', 'entityName', 'entityInstance']) if (typeof v[f] === 'string') n[f] = v[f] as string;
  try {
    return validateAppName(n as unknown as AppName);
  } catch (e) {
    if (e instanceof NamingError) throw new CdapError('bad_value', `${what}: ${e.message}`);
    throw new CdapError('bad_value', `${what} is not a valid application name`);
  }
}

/** Decode `bytes` as message `type` into a plain object; protobufjs errors become CdapErrors. */
export function decodeRaw(type: protobuf.Type, bytes: Uint8Array, what: string): Raw {
  try {
    const m = type.decode(bytes);
    return type.toObject(m, { defaults: false, enums: Number, longs: Number, bytes: Uint8Array as unknown as typeof Array }) as Raw;
  } catch (e) {
    throw new CdapError('undecodable', `not a ${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function encodeRaw(type: protobuf.Type, obj: Raw): Uint8Array {
  return type.encode(type.fromObject(obj)).finish();
}

// ---- encode --------------------------------------------------------------------------------

function checkObj(objClass: string, objName: string, required: boolean): void {
  if (required && objClass === '') throw new CdapError('missing_field', 'a CDAP request needs an obj_class');
  if (objClass.length > MAX_OBJ_CLASS_LENGTH) throw new CdapError('bad_value', `obj_class of ${objClass.length} characters exceeds ${MAX_OBJ_CLASS_LENGTH}`);
  if (objName.length > MAX_OBJ_NAME_LENGTH) throw new CdapError('bad_value', `obj_name of ${objName.length} characters exceeds ${MAX_OBJ_NAME_LENGTH}`);
}

function checkInvokeId(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new CdapError('bad_value', `invoke_id ${id} is not a u32`);
}

/** Encode one CDAP message. Throws a CdapError for a message this end would refuse to decode. */
export function encodeCdap(msg: CdapMessage): Uint8Array {
  checkInvokeId(msg.invokeId);
  const o: Raw = { opCode: CdapOp[msg.op], invokeId: msg.invokeId, version: CDAP_VERSION };
  if (msg.op === 'M_CONNECT' || msg.op === 'M_CONNECT_R') {
    o.absSyntax = msg.absSyntax;
    o.srcApp = nameToWire(validateName(msg.src, 'src_app'));
    o.destApp = nameToWire(validateName(msg.dst, 'dest_app'));
    if (msg.op === 'M_CONNECT_R') {
      o.result = msg.result;
      o.resultReason = clampReason(msg.reason);
    }
  } else {
    checkObj(msg.objClass, msg.objName, msg.op !== 'M_RELEASE' && msg.op !== 'M_RELEASE_R');
    if (msg.objClass !== '') o.objClass = msg.objClass;
    if (msg.objName !== '') o.objName = msg.objName;
    if (msg.value !== undefined) o.objValue = msg.value;
    if (isReplyOp(msg.op)) {
      const r = msg as CdapReply;
      if (!Number.isInteger(r.result) || Math.abs(r.result) > 0x7fffffff) throw new CdapError('bad_value', `result ${r.result} is not an i32`);
      o.result = r.result;
      o.resultReason = clampReason(r.reason);
    }
  }
  const bytes = encodeRaw(cdapType('CDAPMessage'), o);
  if (bytes.byteLength > MAX_CDAP_MESSAGE_BYTES) throw new CdapError('too_large', `CDAP message of ${bytes.byteLength} bytes exceeds ${MAX_CDAP_MESSAGE_BYTES}; send the value in chunks`);
  return bytes;
}

function validateName(n: AppName, what: string): AppName {
  try {
    return validateAppName(n);
  } catch (e) {
    throw new CdapError('bad_value', `${what}: ${(e as Error).message}`);
  }
}

// ---- decode --------------------------------------------------------------------------------

function str(raw: Raw, field: string, max: number, what: string): string {
  const v = raw[field];
  if (typeof v !== 'string') return '';
  if (v.length > max) throw new CdapError('bad_value', `${what} of ${v.length} characters exceeds ${max}`);
  return v;
}

/** Decode one management SDU. Throws a CdapError, and nothing else. */
export function decodeCdap(bytes: Uint8Array): CdapMessage {
  if (!(bytes instanceof Uint8Array)) throw new CdapError('undecodable', 'a CDAP message must be a Uint8Array');
  if (bytes.byteLength > MAX_CDAP_MESSAGE_BYTES) throw new CdapError('too_large', `CDAP message of ${bytes.byteLength} bytes exceeds ${MAX_CDAP_MESSAGE_BYTES}`);
  const raw = decodeRaw(cdapType('CDAPMessage'), bytes, 'CDAP message');
  if (typeof raw.opCode !== 'number') throw new CdapError('missing_field', 'CDAP message has no op_code');
  const op = OP_NAMES[raw.opCode];
  if (op === undefined || CdapOp[op] !== raw.opCode) throw new CdapError('unknown_opcode', `CDAP op_code ${raw.opCode} is unknown (0..17: M_CONNECT … M_STOP_R)`);
  if (typeof raw.version !== 'number') throw new CdapError('missing_field', `${op} has no version`);
  if (raw.version !== CDAP_VERSION) throw new CdapError('bad_version', `${op} has CDAP version ${raw.version}; this end speaks version ${CDAP_VERSION}`);
  const invokeId = typeof raw.invokeId === 'number' ? raw.invokeId : 0;
  const reply = isReplyOp(op);
  let result = 0;
  if (reply) {
    if (typeof raw.result !== 'number') throw new CdapError('missing_field', `${op} has no result`);
    result = raw.result;
  }
  const reason = clampReason(typeof raw.resultReason === 'string' ? raw.resultReason : '');
  if (op === 'M_CONNECT' || op === 'M_CONNECT_R') {
    if (typeof raw.absSyntax !== 'number') throw new CdapError('missing_field', `${op} has no abs_syntax`);
    const src = nameFromWire(raw.srcApp, `${op} src_app`);
    const dst = nameFromWire(raw.destApp, `${op} dest_app`);
    if (op === 'M_CONNECT') return { op, invokeId, absSyntax: raw.absSyntax, src, dst };
    return { op, invokeId, absSyntax: raw.absSyntax, src, dst, result, reason };
  }
  const objClass = str(raw, 'objClass', MAX_OBJ_CLASS_LENGTH, `${op} obj_class`);
  const objName = str(raw, 'objName', MAX_OBJ_NAME_LENGTH, `${op} obj_name`);
  if (objClass === '' && op !== 'M_RELEASE' && op !== 'M_RELEASE_R') throw new CdapError('missing_field', `${op} has no obj_class`);
  const value = raw.objValue instanceof Uint8Array ? raw.objValue : undefined;
  const base = value === undefined ? { invokeId, objClass, objName } : { invokeId, objClass, objName, value };
  if (reply) return { op: op as CdapReplyOp, ...base, result, reason };
  return { op: op as CdapRequestOp, ...base };
}

/** A reply to `req` (same invoke id, class and name). */
export function replyTo(req: CdapRequest, result: number, reason = '', value?: Uint8Array): CdapReply {
  const base = { op: `${req.op}_R` as CdapReplyOp, invokeId: req.invokeId, objClass: req.objClass, objName: req.objName, result, reason };
  return value === undefined ? base : { ...base, value };
}

function varintLen(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

/**
 * The largest value (bytes) `template` (a request or reply, its `value` ignored) can carry while
 * the encoded CDAP message stays within `maxMessageBytes` (and MAX_CDAP_MESSAGE_BYTES); 0 if not
 * even an empty value fits. For cutting state into messages that each fit one N-1 SDU.
 */
export function cdapValueBudget(template: CdapRequest | CdapReply, maxMessageBytes: number): number {
  const limit = Math.min(Math.floor(maxMessageBytes), MAX_CDAP_MESSAGE_BYTES);
  // Everything but the value's bytes and its length prefix (the field's tag included).
  const fixed = encodeCdap({ ...template, value: new Uint8Array(1) }).length - 2;
  const room = limit - fixed;
  if (room < 1) return 0;
  let n = room - 1;
  while (n > 0 && n + varintLen(n) > room) n--;
  return n;
}
