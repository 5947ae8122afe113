/**
 * messages.ts — the vhost-user message codec, both directions.
 *
 * Owns: turning header and payload bytes into typed, validated values and back. Every decoder
 * checks the payload size for its shape and every field against the spec, and throws
 * ProtocolError naming the request and the bad field. The back-end uses the decoders for requests
 * and the encoders for replies; the test front-end (test/frontend) uses them the other way round,
 * so both ends share one definition of the wire format. All integers are little-endian.
 */
import { ProtocolError } from './errors.js';
import {
  CONFIG_SPACE_MAX,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  FLAG_VERSION_MASK,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  MEM_TABLE_MAX_REGIONS,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  requestName,
} from './protocol.js';

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/** One whole message as it came off (or goes onto) the socket. */
export interface Message extends Header {
  payload: Uint8Array;
  fds: number[];
}

export interface VringState {
  index: number;
  num: number;
}

export interface VringAddr {
  index: number;
  flags: number;
  /** Front-end virtual addresses of the three ring parts (translated through the memory table). */
  descUser: number;
  usedUser: number;
  availUser: number;
  /** Guest-physical address of the used-ring log (only with VHOST_VRING_F_LOG). */
  logGuestAddr: number;
}

export interface MemRegionDesc {
  guestPhysAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

export interface ConfigPayload {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}

/** SET_VRING_KICK/CALL/ERR: queue index, and whether an fd is attached. */
export interface VringFd {
  index: number;
  noFd: boolean;
}

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Reads a u64 that must fit a JS number exactly (addresses and sizes do: < 2^53). */
function u64Number(dv: DataView, off: number, req: string, field: string): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi > 0x1fffff) throw new ProtocolError(req, `${field} 0x${dv.getBigUint64(off, true).toString(16)} exceeds 2^53`);
  return hi * 0x1_0000_0000 + lo;
}

function setU64Number(dv: DataView, off: number, value: number): void {
  dv.setUint32(off, value % 0x1_0000_0000, true);
  dv.setUint32(off + 4, Math.floor(value / 0x1_0000_0000), true);
}

// ---------------------------------------------------------------------------------------------
// Header

/** Decode and validate a request header (front-end → back-end). */
export function decodeRequestHeader(b: Uint8Array): Header {
  if (b.byteLength < HEADER_SIZE) throw new ProtocolError('header', `needs ${HEADER_SIZE} bytes, got ${b.byteLength}`, 'bad_header', 'connection');
  const dv = view(b);
  const request = dv.getUint32(0, true);
  const flags = dv.getUint32(4, true);
  const size = dv.getUint32(8, true);
  const name = requestName(request);
  if ((flags & FLAG_VERSION_MASK) !== FLAG_VERSION) {
    throw new ProtocolError(name, `unsupported protocol version ${flags & FLAG_VERSION_MASK} (flags 0x${flags.toString(16)}); only version 1 exists`, 'bad_header', 'connection');
  }
  if (flags & FLAG_REPLY) throw new ProtocolError(name, 'reply flag set on a request', 'bad_header', 'connection');
  if (flags & ~(FLAG_VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY)) {
    throw new ProtocolError(name, `unknown header flags 0x${flags.toString(16)}`, 'bad_header', 'connection');
  }
  if (size > MAX_PAYLOAD_SIZE) throw new ProtocolError(name, `payload size ${size} exceeds the limit of ${MAX_PAYLOAD_SIZE}`, 'bad_header', 'connection');
  return { request, flags, size };
}

/** Decode a reply header (back-end → front-end), checking it answers `expected`. */
export function decodeReplyHeader(b: Uint8Array, expected: number): Header {
  if (b.byteLength < HEADER_SIZE) throw new ProtocolError(requestName(expected), `reply header needs ${HEADER_SIZE} bytes, got ${b.byteLength}`);
  const dv = view(b);
  const request = dv.getUint32(0, true);
  const flags = dv.getUint32(4, true);
  const size = dv.getUint32(8, true);
  if (request !== expected) {
    throw new ProtocolError(requestName(expected), `reply is for ${requestName(request)}`);
  }
  if ((flags & FLAG_VERSION_MASK) !== FLAG_VERSION || !(flags & FLAG_REPLY)) {
    throw new ProtocolError(requestName(expected), `bad reply flags 0x${flags.toString(16)}`);
  }
  if (size > MAX_PAYLOAD_SIZE) throw new ProtocolError(requestName(expected), `reply size ${size} too large`);
  return { request, flags, size };
}

/** Encode header + payload into one buffer ready for sendmsg. */
export function encodeMessage(request: number, flags: number, payload?: Uint8Array): Uint8Array {
  const size = payload?.byteLength ?? 0;
  const out = new Uint8Array(HEADER_SIZE + size);
  const dv = view(out);
  dv.setUint32(0, request, true);
  dv.setUint32(4, flags | FLAG_VERSION, true);
  dv.setUint32(8, size, true);
  if (payload) out.set(payload, HEADER_SIZE);
  return out;
}

export function encodeReply(request: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage(request, FLAG_REPLY, payload);
}

// ---------------------------------------------------------------------------------------------
// Payload decoders: each checks the payload size of its shape (the only size check a request
// gets: the dispatcher decodes every request's payload with one of these before its handler).

/** Requests without a payload (QEMU sends GET_* with size 0). */
export function decodeNone(req: number, p: Uint8Array): undefined {
  if (p.byteLength !== 0) throw new ProtocolError(requestName(req), `payload must be 0 bytes, got ${p.byteLength}`);
  return undefined;
}

export function decodeU64(req: number, p: Uint8Array): bigint {
  if (p.byteLength !== 8) throw new ProtocolError(requestName(req), `u64 payload must be 8 bytes, got ${p.byteLength}`);
  return view(p).getBigUint64(0, true);
}

export function decodeVringState(req: number, p: Uint8Array): VringState {
  if (p.byteLength !== 8) throw new ProtocolError(requestName(req), `vring state must be 8 bytes, got ${p.byteLength}`);
  const dv = view(p);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

export function decodeVringAddr(req: number, p: Uint8Array): VringAddr {
  const name = requestName(req);
  if (p.byteLength !== 40) throw new ProtocolError(name, `vring address must be 40 bytes, got ${p.byteLength}`);
  const dv = view(p);
  return {
    index: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    descUser: u64Number(dv, 8, name, 'descriptor table address'),
    usedUser: u64Number(dv, 16, name, 'used ring address'),
    availUser: u64Number(dv, 24, name, 'available ring address'),
    logGuestAddr: u64Number(dv, 32, name, 'log address'),
  };
}

export function decodeVringFd(req: number, p: Uint8Array): VringFd {
  const v = decodeU64(req, p);
  if (v & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK)) {
    throw new ProtocolError(requestName(req), `unknown bits in 0x${v.toString(16)} (only queue index and the no-fd bit 0x100 are defined)`);
  }
  return { index: Number(v & BigInt(VRING_IDX_MASK)), noFd: (v & BigInt(VRING_NOFD_MASK)) !== 0n };
}

function decodeRegion(dv: DataView, off: number, name: string): MemRegionDesc {
  const r: MemRegionDesc = {
    guestPhysAddr: u64Number(dv, off, name, 'guest_phys_addr'),
    size: u64Number(dv, off + 8, name, 'memory_size'),
    userAddr: u64Number(dv, off + 16, name, 'userspace_addr'),
    mmapOffset: u64Number(dv, off + 24, name, 'mmap_offset'),
  };
  if (r.size === 0) throw new ProtocolError(name, `region at guest address 0x${r.guestPhysAddr.toString(16)} has size 0`);
  if (r.guestPhysAddr + r.size > Number.MAX_SAFE_INTEGER || r.userAddr + r.size > Number.MAX_SAFE_INTEGER || r.mmapOffset + r.size > Number.MAX_SAFE_INTEGER) {
    throw new ProtocolError(name, `region at guest address 0x${r.guestPhysAddr.toString(16)} size 0x${r.size.toString(16)} overflows the address space`);
  }
  return r;
}

/** SET_MEM_TABLE: u32 nregions, u32 padding, nregions × {u64 gpa, u64 size, u64 uva, u64 mmap_offset}. */
export function decodeMemTable(req: number, p: Uint8Array): MemRegionDesc[] {
  const name = requestName(req);
  if (p.byteLength < 8 || p.byteLength > 8 + 32 * MEM_TABLE_MAX_REGIONS) {
    throw new ProtocolError(name, `memory table payload of ${p.byteLength} bytes is out of range 8..${8 + 32 * MEM_TABLE_MAX_REGIONS}`);
  }
  const dv = view(p);
  const n = dv.getUint32(0, true);
  if (n === 0 || n > MEM_TABLE_MAX_REGIONS) throw new ProtocolError(name, `region count ${n} is out of range 1..${MEM_TABLE_MAX_REGIONS}`);
  if (p.byteLength < 8 + 32 * n) throw new ProtocolError(name, `${n} regions need ${8 + 32 * n} bytes, got ${p.byteLength}`);
  const regions: MemRegionDesc[] = [];
  for (let i = 0; i < n; i++) regions.push(decodeRegion(dv, 8 + 32 * i, name));
  return regions;
}

/** ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region. */
export function decodeMemRegion(req: number, p: Uint8Array): MemRegionDesc {
  const name = requestName(req);
  if (p.byteLength !== 40) throw new ProtocolError(name, `memory region message must be 40 bytes, got ${p.byteLength}`);
  return decodeRegion(view(p), 8, name);
}

/** GET_CONFIG / SET_CONFIG: u32 offset, u32 size, u32 flags, u8 payload[size]. */
export function decodeConfig(req: number, p: Uint8Array): ConfigPayload {
  const name = requestName(req);
  if (p.byteLength < 12 || p.byteLength > 12 + CONFIG_SPACE_MAX) {
    throw new ProtocolError(name, `config payload of ${p.byteLength} bytes is out of range 12..${12 + CONFIG_SPACE_MAX}`);
  }
  const dv = view(p);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if (size > CONFIG_SPACE_MAX || offset > CONFIG_SPACE_MAX || offset + size > CONFIG_SPACE_MAX) {
    throw new ProtocolError(name, `config range offset ${offset} size ${size} exceeds the ${CONFIG_SPACE_MAX}-byte config space`);
  }
  if (p.byteLength < 12 + size) throw new ProtocolError(name, `config of size ${size} needs ${12 + size} bytes, got ${p.byteLength}`);
  if (flags > 1) throw new ProtocolError(name, `unknown config flags 0x${flags.toString(16)}`);
  return { offset, size, flags, data: p.subarray(12, 12 + size) };
}

// ---------------------------------------------------------------------------------------------
// Payload encoders

export function encodeU64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  view(b).setBigUint64(0, BigInt(v), true);
  return b;
}

export function encodeVringState(s: VringState): Uint8Array {
  const b = new Uint8Array(8);
  const dv = view(b);
  dv.setUint32(0, s.index, true);
  dv.setUint32(4, s.num, true);
  return b;
}

export function encodeVringAddr(a: VringAddr): Uint8Array {
  const b = new Uint8Array(40);
  const dv = view(b);
  dv.setUint32(0, a.index, true);
  dv.setUint32(4, a.flags, true);
  setU64Number(dv, 8, a.descUser);
  setU64Number(dv, 16, a.usedUser);
  setU64Number(dv, 24, a.availUser);
  setU64Number(dv, 32, a.logGuestAddr);
  return b;
}

function encodeRegionAt(dv: DataView, off: number, r: MemRegionDesc): void {
  setU64Number(dv, off, r.guestPhysAddr);
  setU64Number(dv, off + 8, r.size);
  setU64Number(dv, off + 16, r.userAddr);
  setU64Number(dv, off + 24, r.mmapOffset);
}

export function encodeMemTable(regions: readonly MemRegionDesc[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = view(b);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => encodeRegionAt(dv, 8 + 32 * i, r));
  return b;
}

export function encodeMemRegion(r: MemRegionDesc): Uint8Array {
  const b = new Uint8Array(40);
  encodeRegionAt(view(b), 8, r);
  return b;
}

export function encodeConfig(c: { offset: number; flags: number; data: Uint8Array }): Uint8Array {
  const b = new Uint8Array(12 + c.data.byteLength);
  const dv = view(b);
  dv.setUint32(0, c.offset, true);
  dv.setUint32(4, c.data.byteLength, true);
  dv.setUint32(8, c.flags, true);
  b.set(c.data, 12);
  return b;
}

export function encodeVringFd(index: number, noFd: boolean): Uint8Array {
  return encodeU64(BigInt(index & VRING_IDX_MASK) | (noFd ? BigInt(VRING_NOFD_MASK) : 0n));
}
