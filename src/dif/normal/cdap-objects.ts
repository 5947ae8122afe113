/**
 * cdap-objects.ts — the object values CDAP messages carry in the normal DIF (obj_value bytes):
 * enrollment info and data-transfer constants, neighbours, directory entries, enrollment chunks,
 * flow allocation requests/responses and operational status.
 *
 * Owns: their TS types, encode/decode through cdap.proto, and the checks a received value
 * passes (names valid, numbers in range, counts bounded). Decoding throws only `CdapError`.
 */
import type { AppName } from '../naming.js';
import { CdapError, cdapType, clampReason, decodeRaw, encodeRaw, isRaw, nameFromWire, nameToWire, type Raw } from './cdap.js';

export const MAX_LOWER_DIFS = 16;
export const MAX_DIF_NAME_LENGTH = 255;
/** Items per decoded list (directory update, chunk); larger lists are refused. */
export const MAX_LIST_ITEMS = 4096;
/** Bytes of one opaque lower-flow database record. */
export const MAX_LOWER_FLOW_RECORD_BYTES = 4096;

export interface DataTransferConstants {
  readonly pciVersion: number;
  readonly addressWidth: number;
  readonly cepIdWidth: number;
  readonly qosIdWidth: number;
  readonly seqnumWidth: number;
  readonly lengthWidth: number;
  readonly maxPduSize: number;
  readonly maxPduLifetimeMs: number;
}

export interface EnrollmentInfo {
  /** Proposed (enrollee → enroller; 0 for none) or assigned (enroller → enrollee) address. */
  readonly address: number;
  readonly difName: string;
  readonly lowerDifs: readonly string[];
  readonly constants?: DataTransferConstants;
  /** Enrollee → enroller: already a member at `address` (an adjacency): keep it, assign none. */
  readonly member?: boolean;
  /** Enrollee → enroller: it enrolls others and asks for a block of addresses. */
  readonly wantsPool?: boolean;
  /** A block of addresses: the one the enrollee held (→), or the one delegated to it (←). */
  readonly pool?: AddressRange;
  /** Both ways: this member reads LFDB updates with link limits (routing message kind 3). */
  readonly lfdbMaxPdu?: boolean;
}

/** Addresses first..last inclusive. */
export interface AddressRange {
  readonly first: number;
  readonly last: number;
}

export interface Neighbour {
  readonly name: AppName;
  readonly address: number;
  readonly lowerDifs: readonly string[];
}

export interface DirectoryEntry {
  readonly app: AppName;
  readonly address: number;
  readonly seqnum: number;
  /** A tombstone: the registration with this seqnum is withdrawn. */
  readonly removed: boolean;
}

export interface EnrollmentChunk {
  readonly index: number;
  readonly total: number;
  readonly directory: readonly DirectoryEntry[];
  readonly neighbours: readonly Neighbour[];
  readonly lowerFlows: readonly Uint8Array[];
}

export interface FlowRequest {
  readonly srcApp: AppName;
  readonly dstApp: AppName;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly srcAddr: number;
  readonly dstAddr: number;
  readonly srcCep: number;
  readonly dstCep: number;
  readonly qosCube: number;
  readonly result: number;
  readonly reason: string;
  /** First EFCP sequence number of the requester's PDUs, and of the responder's (in the answer). */
  readonly srcInitSeq?: number;
  readonly dstInitSeq?: number;
  /** The flow's max SDU in bytes (0 or absent: the DIF's maximum); in the answer, the agreed one. */
  readonly maxSdu?: number;
  /** The requester's application left the max SDU open: the responder may lower it (cdap.proto). */
  readonly maxSduOpen?: boolean;
}

// ---- field checks --------------------------------------------------------------------------

function u32(raw: Raw, field: string, what: string, required = false): number {
  const v = raw[field];
  if (v === undefined) {
    if (required) throw new CdapError('missing_field', `${what} has no ${field}`);
    return 0;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new CdapError('bad_value', `${what} ${field} is not a u32`);
  return v;
}

function list(raw: Raw, field: string, what: string, max = MAX_LIST_ITEMS): unknown[] {
  const v = raw[field];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new CdapError('bad_value', `${what} ${field} is not a list`);
  if (v.length > max) throw new CdapError('too_large', `${what} has ${v.length} ${field}; at most ${max}`);
  return v;
}

function difNames(raw: Raw, field: string, what: string): string[] {
  return list(raw, field, what, MAX_LOWER_DIFS).map((d) => {
    if (typeof d !== 'string' || d.length > MAX_DIF_NAME_LENGTH) throw new CdapError('bad_value', `${what} ${field} has a bad DIF name`);
    return d;
  });
}

function sub(v: unknown, what: string): Raw {
  if (!isRaw(v)) throw new CdapError('missing_field', `${what} is missing`);
  return v;
}

// ---- data-transfer constants and enrollment info -------------------------------------------

const DTC_FIELDS = ['pciVersion', 'addressWidth', 'cepIdWidth', 'qosIdWidth', 'seqnumWidth', 'lengthWidth', 'maxPduSize', 'maxPduLifetimeMs'] as const;

function constantsFromRaw(raw: Raw): DataTransferConstants {
  const out: Record<string, number> = {};
  for (const f of DTC_FIELDS) out[f] = u32(raw, f, 'data-transfer constants', true);
  return out as unknown as DataTransferConstants;
}

/** The fields on which `a` and `b` differ (empty when they agree). */
export function constantsMismatch(a: DataTransferConstants, b: DataTransferConstants): string[] {
  return DTC_FIELDS.filter((f) => a[f] !== b[f]).map((f) => `${f} ${a[f]} ≠ ${b[f]}`);
}

export function encodeEnrollmentInfo(v: EnrollmentInfo): Uint8Array {
  const o: Raw = { address: v.address, difName: v.difName, lowerDifs: [...v.lowerDifs] };
  if (v.constants) o.constants = { ...v.constants };
  if (v.member) o.member = true;
  if (v.wantsPool) o.wantsPool = true;
  if (v.lfdbMaxPdu) o.lfdbMaxPdu = true;
  if (v.pool) {
    o.poolFirst = v.pool.first;
    o.poolLast = v.pool.last;
  }
  return encodeRaw(cdapType('EnrollmentInfo'), o);
}

export function decodeEnrollmentInfo(bytes: Uint8Array | undefined): EnrollmentInfo {
  if (!bytes) throw new CdapError('missing_field', 'enrollment message has no value');
  const raw = decodeRaw(cdapType('EnrollmentInfo'), bytes, 'enrollment info');
  if (typeof raw.difName !== 'string') throw new CdapError('missing_field', 'enrollment info has no dif_name');
  if (raw.difName.length > MAX_DIF_NAME_LENGTH) throw new CdapError('bad_value', 'enrollment info dif_name is too long');
  const info: { -readonly [K in keyof EnrollmentInfo]: EnrollmentInfo[K] } = { address: u32(raw, 'address', 'enrollment info'), difName: raw.difName, lowerDifs: difNames(raw, 'lowerDifs', 'enrollment info') };
  if (raw.constants !== undefined) info.constants = constantsFromRaw(sub(raw.constants, 'constants'));
  if (raw.member === true) info.member = true;
  if (raw.wantsPool === true) info.wantsPool = true;
  if (raw.lfdbMaxPdu === true) info.lfdbMaxPdu = true;
  const first = u32(raw, 'poolFirst', 'enrollment info');
  const last = u32(raw, 'poolLast', 'enrollment info');
  if (first !== 0 || last !== 0) {
    if (first === 0 || last < first) throw new CdapError('bad_value', `enrollment info pool ${first}..${last} is not a range of addresses above 0`);
    info.pool = { first, last };
  }
  return info;
}

// ---- neighbours and directory entries ------------------------------------------------------

function neighbourToRaw(n: Neighbour): Raw {
  return { name: nameToWire(n.name), address: n.address, lowerDifs: [...n.lowerDifs] };
}

function neighbourFromRaw(v: unknown): Neighbour {
  const raw = sub(v, 'neighbour');
  return { name: nameFromWire(raw.name, 'neighbour name'), address: u32(raw, 'address', 'neighbour', true), lowerDifs: difNames(raw, 'lowerDifs', 'neighbour') };
}

function entryToRaw(e: DirectoryEntry): Raw {
  return { app: nameToWire(e.app), address: e.address, seqnum: e.seqnum, removed: e.removed };
}

function entryFromRaw(v: unknown): DirectoryEntry {
  const raw = sub(v, 'directory entry');
  const seq = raw.seqnum;
  if (typeof seq !== 'number') throw new CdapError('missing_field', 'directory entry has no seqnum');
  if (!Number.isSafeInteger(seq) || seq < 0) throw new CdapError('bad_value', 'directory entry seqnum is beyond 2^53');
  return { app: nameFromWire(raw.app, 'directory entry app'), address: u32(raw, 'address', 'directory entry', true), seqnum: seq, removed: raw.removed === true };
}

export function encodeDirectoryUpdate(entries: readonly DirectoryEntry[]): Uint8Array {
  return encodeRaw(cdapType('DirectoryUpdate'), { entries: entries.map(entryToRaw) });
}

export function decodeDirectoryUpdate(bytes: Uint8Array | undefined): DirectoryEntry[] {
  if (!bytes) throw new CdapError('missing_field', 'directory update has no value');
  const raw = decodeRaw(cdapType('DirectoryUpdate'), bytes, 'directory update');
  return list(raw, 'entries', 'directory update').map(entryFromRaw);
}

// ---- enrollment chunks ---------------------------------------------------------------------

export function encodeEnrollmentChunk(c: EnrollmentChunk): Uint8Array {
  return encodeRaw(cdapType('EnrollmentChunk'), {
    index: c.index,
    total: c.total,
    directory: c.directory.map(entryToRaw),
    neighbours: c.neighbours.map(neighbourToRaw),
    lowerFlows: [...c.lowerFlows],
  });
}

export function decodeEnrollmentChunk(bytes: Uint8Array | undefined): EnrollmentChunk {
  if (!bytes) throw new CdapError('missing_field', 'enrollment chunk has no value');
  const raw = decodeRaw(cdapType('EnrollmentChunk'), bytes, 'enrollment chunk');
  const index = u32(raw, 'index', 'enrollment chunk', true);
  const total = u32(raw, 'total', 'enrollment chunk', true);
  if (index >= total) throw new CdapError('bad_value', `enrollment chunk ${index} of ${total}`);
  const lowerFlows = list(raw, 'lowerFlows', 'enrollment chunk').map((b) => {
    if (!(b instanceof Uint8Array) || b.byteLength > MAX_LOWER_FLOW_RECORD_BYTES) throw new CdapError('bad_value', 'enrollment chunk has a bad lower-flow record');
    return new Uint8Array(b); // a copy: a record outlives the message it came in
  });
  return {
    index,
    total,
    directory: list(raw, 'directory', 'enrollment chunk').map(entryFromRaw),
    neighbours: list(raw, 'neighbours', 'enrollment chunk').map(neighbourFromRaw),
    lowerFlows,
  };
}

// ---- flow allocation and operational status ------------------------------------------------

export function encodeFlowRequest(f: FlowRequest): Uint8Array {
  return encodeRaw(cdapType('FlowRequest'), {
    srcApp: nameToWire(f.srcApp),
    dstApp: nameToWire(f.dstApp),
    srcPort: f.srcPort,
    dstPort: f.dstPort,
    srcAddr: f.srcAddr,
    dstAddr: f.dstAddr,
    srcCep: f.srcCep,
    dstCep: f.dstCep,
    qosCube: f.qosCube,
    result: f.result,
    reason: clampReason(f.reason),
    srcInitSeq: f.srcInitSeq,
    dstInitSeq: f.dstInitSeq,
    maxSdu: f.maxSdu,
    maxSduOpen: f.maxSduOpen === true ? true : undefined,
  });
}

export function decodeFlowRequest(bytes: Uint8Array | undefined): FlowRequest {
  if (!bytes) throw new CdapError('missing_field', 'flow message has no value');
  const raw = decodeRaw(cdapType('FlowRequest'), bytes, 'flow request');
  const w = 'flow request';
  const result = typeof raw.result === 'number' ? raw.result : 0;
  const extra: { srcInitSeq?: number; dstInitSeq?: number; maxSdu?: number; maxSduOpen?: boolean } = {};
  for (const f of ['srcInitSeq', 'dstInitSeq', 'maxSdu'] as const) if (raw[f] !== undefined) extra[f] = u32(raw, f, w);
  if (raw.maxSduOpen === true) extra.maxSduOpen = true;
  return {
    ...extra,
    srcApp: nameFromWire(raw.srcApp, 'flow request src_app'),
    dstApp: nameFromWire(raw.dstApp, 'flow request dst_app'),
    srcPort: u32(raw, 'srcPort', w),
    dstPort: u32(raw, 'dstPort', w),
    srcAddr: u32(raw, 'srcAddr', w, true),
    dstAddr: u32(raw, 'dstAddr', w, true),
    srcCep: u32(raw, 'srcCep', w, true),
    dstCep: u32(raw, 'dstCep', w),
    qosCube: u32(raw, 'qosCube', w),
    result,
    reason: clampReason(typeof raw.reason === 'string' ? raw.reason : ''),
  };
}

export function encodeOperationalStatus(running: boolean): Uint8Array {
  return encodeRaw(cdapType('OperationalStatus'), { running });
}

export function decodeOperationalStatus(bytes: Uint8Array | undefined): boolean {
  if (!bytes) throw new CdapError('missing_field', 'operational status has no value');
  const raw = decodeRaw(cdapType('OperationalStatus'), bytes, 'operational status');
  if (typeof raw.running !== 'boolean') throw new CdapError('missing_field', 'operational status has no running flag');
  return raw.running;
}
