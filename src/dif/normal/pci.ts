/**
 * pci.ts — the normal DIF's Protocol Control Information: the fixed header in front of every PDU
 * (data transfer, control, management), its encoding and its checks. docs/NORMAL-DIF-PCI.md
 * describes every field; this file and that page change together.
 *
 * Owns: the wire layout (big-endian, fixed widths, no per-DIF "flavours": one DIF, one format,
 * version 1), `encodePci`/`decodePci`, the cheap in-place accessors the RMT uses to relay a PDU
 * without decoding it (destination address, TTL), and `PciError` for everything malformed.
 * rlite and IRATI write their headers in host byte order; this one is the same on every host.
 *
 * Hot path: `decodePci` fills a caller-owned `Pci` object (no allocation per PDU); the accessors
 * read and write the buffer in place.
 */

/** The version this code writes and the only one it reads. */
export const PCI_VERSION = 1;
/** Bytes of the base header every PDU has. */
export const PCI_LEN = 32;
/** Bytes a control PDU carries after the base header (flow control and acknowledgement). */
export const CTRL_LEN = 24;
/** Default time to live of a PDU, in hops (an RMT decrements it when relaying). */
export const DEFAULT_TTL = 64;
/** Largest payload length the length field can state; a DIF's own max SDU is far below it. */
export const MAX_PDU_LEN = 0xffffffff;

/** PDU types (the `type` byte). */
export const PduType = {
  /** Data transfer (DTP): an SDU, or a fragment of one, of a flow. */
  DT: 0x80,
  /** Layer management (CDAP) between IPC processes: enrollment, directory, routing, flow allocation. */
  MGMT: 0x40,
  /** Control (DTCP): flow control and/or acknowledgement; the FC and ACK bits say which. */
  CTRL: 0xc0,
} as const;
/** Bits of a CTRL type byte. */
export const CTRL_FC = 0x08;
export const CTRL_ACK = 0x04;

/** Flag bits (the `flags` byte). */
export const PciFlag = {
  /** Data Run Flag: the first PDU of a run; the receiver resets its expected sequence number. */
  DRF: 0x80,
  /** Explicit congestion notification, set by an RMT whose queue is filling. */
  ECN: 0x01,
} as const;
const KNOWN_FLAGS = PciFlag.DRF | PciFlag.ECN;

/** Byte offsets of the base header's fields. */
export const PciOffset = {
  version: 0,
  type: 1,
  flags: 2,
  ttl: 3,
  dstAddr: 4,
  srcAddr: 8,
  dstCep: 12,
  srcCep: 16,
  qosId: 20,
  reserved: 22,
  length: 24,
  seqNum: 28,
} as const;

/** The decoded base header (and, for CTRL PDUs, the control fields). */
export interface Pci {
  type: number;
  flags: number;
  ttl: number;
  dstAddr: number;
  srcAddr: number;
  dstCep: number;
  srcCep: number;
  qosId: number;
  /** Payload bytes after the header(s). */
  length: number;
  seqNum: number;
  /** CTRL only: the control fields; zero otherwise. */
  lastCtrlSeqRcvd: number;
  ackNackSeq: number;
  newRightWinEdge: number;
  newLeftWinEdge: number;
  myLeftWinEdge: number;
  myRightWinEdge: number;
}

export function newPci(): Pci {
  return { type: PduType.DT, flags: 0, ttl: DEFAULT_TTL, dstAddr: 0, srcAddr: 0, dstCep: 0, srcCep: 0, qosId: 0, length: 0, seqNum: 0, lastCtrlSeqRcvd: 0, ackNackSeq: 0, newRightWinEdge: 0, newLeftWinEdge: 0, myLeftWinEdge: 0, myRightWinEdge: 0 };
}

export type PciErrorReason = 'truncated' | 'version' | 'type' | 'flags' | 'length' | 'field';

/** A PDU that cannot be used; `reason` is what a drop counter is labelled with. */
export class PciError extends Error {
  override name = 'PciError';
  readonly code = 'ERR_PCI';
  constructor(
    readonly reason: PciErrorReason,
    message: string,
  ) {
    super(message);
  }
}

export function isCtrlType(type: number): boolean {
  return (type & 0xf0) === PduType.CTRL;
}

function validType(type: number): boolean {
  if (type === PduType.DT || type === PduType.MGMT) return true;
  // CTRL with any mix of FC and ACK, nothing else.
  return isCtrlType(type) && (type & ~(PduType.CTRL | CTRL_FC | CTRL_ACK)) === 0 && (type & (CTRL_FC | CTRL_ACK)) !== 0;
}

/** Header bytes of a PDU of this type: the base header, plus the control fields for CTRL. */
export function headerLength(type: number): number {
  return isCtrlType(type) ? PCI_LEN + CTRL_LEN : PCI_LEN;
}

function u32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new PciError('field', `PCI ${name} ${v} is not a u32`);
}

function u16(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new PciError('field', `PCI ${name} ${v} is not a u16`);
}

/**
 * Write `p`'s header(s) at `buf[offset…]`; returns the header length. `p.length` must already be
 * the payload length that follows. Throws PciError for a field out of range or a short buffer.
 */
export function encodePci(p: Pci, buf: Uint8Array, offset = 0): number {
  if (!validType(p.type)) throw new PciError('type', `PCI type 0x${p.type.toString(16)} is not DT, MGMT or CTRL with FC/ACK`);
  if ((p.flags & ~KNOWN_FLAGS) !== 0 || !Number.isInteger(p.flags)) throw new PciError('flags', `PCI flags 0x${p.flags.toString(16)} has unknown bits`);
  if (!Number.isInteger(p.ttl) || p.ttl < 0 || p.ttl > 255) throw new PciError('field', `PCI ttl ${p.ttl} is not a u8`);
  u32('dstAddr', p.dstAddr);
  u32('srcAddr', p.srcAddr);
  u32('dstCep', p.dstCep);
  u32('srcCep', p.srcCep);
  u16('qosId', p.qosId);
  u32('length', p.length);
  u32('seqNum', p.seqNum);
  const hlen = headerLength(p.type);
  if (offset < 0 || buf.length - offset < hlen) throw new PciError('truncated', `PCI needs ${hlen} bytes, the buffer has ${buf.length - offset}`);
  // Byte writes, not a DataView: no object per PDU (the EFCP encodes every control PDU here).
  const o = offset;
  buf[o + PciOffset.version] = PCI_VERSION;
  buf[o + PciOffset.type] = p.type;
  buf[o + PciOffset.flags] = p.flags;
  buf[o + PciOffset.ttl] = p.ttl;
  wr32(buf, o + PciOffset.dstAddr, p.dstAddr);
  wr32(buf, o + PciOffset.srcAddr, p.srcAddr);
  wr32(buf, o + PciOffset.dstCep, p.dstCep);
  wr32(buf, o + PciOffset.srcCep, p.srcCep);
  buf[o + PciOffset.qosId] = p.qosId >>> 8;
  buf[o + PciOffset.qosId + 1] = p.qosId & 0xff;
  buf[o + PciOffset.reserved] = 0;
  buf[o + PciOffset.reserved + 1] = 0;
  wr32(buf, o + PciOffset.length, p.length);
  wr32(buf, o + PciOffset.seqNum, p.seqNum);
  if (hlen > PCI_LEN) {
    u32('lastCtrlSeqRcvd', p.lastCtrlSeqRcvd);
    u32('ackNackSeq', p.ackNackSeq);
    u32('newRightWinEdge', p.newRightWinEdge);
    u32('newLeftWinEdge', p.newLeftWinEdge);
    u32('myLeftWinEdge', p.myLeftWinEdge);
    u32('myRightWinEdge', p.myRightWinEdge);
    const c = o + PCI_LEN;
    wr32(buf, c + 0, p.lastCtrlSeqRcvd);
    wr32(buf, c + 4, p.ackNackSeq);
    wr32(buf, c + 8, p.newRightWinEdge);
    wr32(buf, c + 12, p.newLeftWinEdge);
    wr32(buf, c + 16, p.myLeftWinEdge);
    wr32(buf, c + 20, p.myRightWinEdge);
  }
  return hlen;
}

/**
 * Read the header(s) of the PDU in `buf[offset, offset+size)` into `out`; returns the header
 * length (the payload is the `out.length` bytes after it). Throws PciError: truncated header,
 * unknown version, type or flag bits, nonzero reserved field, or a length that disagrees with the
 * bytes present (a PDU is exactly header + length: nothing may trail it, nothing may be missing).
 */
export function decodePci(buf: Uint8Array, out: Pci, offset = 0, size = buf.length - offset): number {
  if (size < PCI_LEN || offset < 0 || offset + size > buf.length) throw new PciError('truncated', `PDU of ${size} bytes is shorter than the ${PCI_LEN}-byte PCI`);
  // Byte reads, not a DataView: no object per PDU on the hot path.
  const o = offset;
  const version = buf[o + PciOffset.version]!;
  if (version !== PCI_VERSION) throw new PciError('version', `PCI version ${version} is not ${PCI_VERSION}`);
  const type = buf[o + PciOffset.type]!;
  if (!validType(type)) throw new PciError('type', `PCI type 0x${type.toString(16)} is unknown`);
  const flags = buf[o + PciOffset.flags]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new PciError('flags', `PCI flags 0x${flags.toString(16)} has unknown bits`);
  if ((buf[o + PciOffset.reserved]! | buf[o + PciOffset.reserved + 1]!) !== 0) throw new PciError('field', 'PCI reserved field is not zero');
  const hlen = headerLength(type);
  if (size < hlen) throw new PciError('truncated', `control PDU of ${size} bytes is shorter than its ${hlen}-byte header`);
  const length = rd32(buf, o + PciOffset.length);
  if (length !== size - hlen) throw new PciError('length', `PCI length ${length} disagrees with the ${size - hlen} payload bytes present`);
  out.type = type;
  out.flags = flags;
  out.ttl = buf[o + PciOffset.ttl]!;
  out.dstAddr = rd32(buf, o + PciOffset.dstAddr);
  out.srcAddr = rd32(buf, o + PciOffset.srcAddr);
  out.dstCep = rd32(buf, o + PciOffset.dstCep);
  out.srcCep = rd32(buf, o + PciOffset.srcCep);
  out.qosId = (buf[o + PciOffset.qosId]! << 8) | buf[o + PciOffset.qosId + 1]!;
  out.length = length;
  out.seqNum = rd32(buf, o + PciOffset.seqNum);
  if (hlen > PCI_LEN) {
    const c = o + PCI_LEN;
    out.lastCtrlSeqRcvd = rd32(buf, c + 0);
    out.ackNackSeq = rd32(buf, c + 4);
    out.newRightWinEdge = rd32(buf, c + 8);
    out.newLeftWinEdge = rd32(buf, c + 12);
    out.myLeftWinEdge = rd32(buf, c + 16);
    out.myRightWinEdge = rd32(buf, c + 20);
  } else {
    out.lastCtrlSeqRcvd = out.ackNackSeq = out.newRightWinEdge = out.newLeftWinEdge = out.myLeftWinEdge = out.myRightWinEdge = 0;
  }
  return hlen;
}

/** Write `v` (a u32, checked by the caller) big-endian at `buf[o…]` (the caller has checked the length); byte writes, no DataView. */
export function wr32(buf: Uint8Array, o: number, v: number): void {
  buf[o] = v >>> 24;
  buf[o + 1] = (v >>> 16) & 0xff;
  buf[o + 2] = (v >>> 8) & 0xff;
  buf[o + 3] = v & 0xff;
}

/** Big-endian u32 at `buf[o…]` (the caller has checked the length). */
function rd32(buf: Uint8Array, o: number): number {
  return ((buf[o]! << 24) >>> 0) + ((buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!);
}

// ---- in place, for the RMT (no decode, no allocation) ----------------------------------------

/** The destination address of the PDU at `buf[offset…]` (the caller has checked its length). */
export function peekDstAddr(buf: Uint8Array, offset = 0): number {
  const o = offset + PciOffset.dstAddr;
  return ((buf[o]! << 24) >>> 0) + (buf[o + 1]! << 16) + (buf[o + 2]! << 8) + buf[o + 3]!;
}

export function peekTtl(buf: Uint8Array, offset = 0): number {
  return buf[offset + PciOffset.ttl]!;
}

/** Decrement the TTL in place; returns the new value (0 means: drop, do not forward). */
export function decrementTtl(buf: Uint8Array, offset = 0): number {
  const o = offset + PciOffset.ttl;
  const ttl = buf[o]!;
  if (ttl === 0) return 0;
  buf[o] = ttl - 1;
  return ttl - 1;
}

/** Set the ECN flag in place (an RMT whose output queue is filling). */
export function markEcn(buf: Uint8Array, offset = 0): void {
  buf[offset + PciOffset.flags] |= PciFlag.ECN;
}
