/**
 * routing-msg.ts — the normal DIF's routing messages as plain typed objects, and their bytes.
 * `encodeRoutingMessage`/`decodeRoutingMessage` are the whole boundary: management carries the
 * bytes (later inside a CDAP object's value) and never looks inside.
 *
 * Layout (big-endian; docs/NORMAL-DIF-ROUTING.md has the table):
 *   u8 version (1) | u8 kind | body
 *   kind 1 LFDB update: u16 count (1..MAX_ENTRIES_PER_MSG), then count × 15 bytes:
 *        u32 from | u32 to | u16 cost | u8 flags (bit 0: up) | u32 seqnum
 *   kind 2 keepalive:   u32 sender address
 *   kind 3 LFDB update with link limits: u16 count (1..MAX_ENTRIES_PER_LIMITS_MSG), then count × 19
 *        bytes: the 15 of kind 1, then u32 maxPdu (the N-1 flow's largest PDU; 0: unknown)
 * Kind 3 goes only to a neighbour that said at enrollment it reads it (EnrollmentInfo.lfdb_max_pdu);
 * every other neighbour gets kind 1, so a member older than kind 3 still interoperates.
 * A message is exactly its layout: short, long, unknown version/kind/flag bits or a bad entry
 * are refused with RoutingMsgError (code ERR_ROUTING_MSG).
 */
import { LfdbError, checkLowerFlow, type LowerFlow } from './lfdb.js';

export const ROUTING_MSG_VERSION = 1;
/** Entries per LFDB update message (keeps a message under 4 KiB: 4 + 256 × 15 = 3844 bytes). */
export const MAX_ENTRIES_PER_MSG = 256;
/** Entries per kind-3 update at most: 4 + 64 × 19 = 1220 bytes. Routing sends fewer per update where the N-1 flow is smaller (routing.ts entriesPerUpdate). */
export const MAX_ENTRIES_PER_LIMITS_MSG = 64;
const ENTRY_LEN = 15;
const LIMITS_ENTRY_LEN = 19;

/**
 * How many entries an LFDB update of at most `bytes` bytes holds (kind 3 with `limits`, else
 * kind 1), capped at the kind's maximum; 0 when not even one fits.
 */
export function entriesThatFit(bytes: number, limits: boolean): number {
  const n = Math.floor((bytes - 4) / (limits ? LIMITS_ENTRY_LEN : ENTRY_LEN));
  return Math.max(0, Math.min(n, limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG));
}

/** `limits`: encode as kind 3 (each entry's maxPdu carried), else kind 1 (maxPdu left out). */
export type RoutingMessage = { kind: 'lfdb'; entries: LowerFlow[]; limits?: boolean } | { kind: 'keepalive'; address: number };

const KIND_LFDB = 1;
const KIND_KEEPALIVE = 2;
const KIND_LFDB_LIMITS = 3;

export class RoutingMsgError extends Error {
  override name = 'RoutingMsgError';
  readonly code = 'ERR_ROUTING_MSG';
}

export function encodeRoutingMessage(msg: RoutingMessage): Uint8Array {
  if (msg.kind === 'keepalive') {
    const b = new Uint8Array(6);
    const v = new DataView(b.buffer);
    b[0] = ROUTING_MSG_VERSION;
    b[1] = KIND_KEEPALIVE;
    v.setUint32(2, msg.address);
    return b;
  }
  const n = msg.entries.length;
  const limits = msg.limits === true;
  const max = limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG;
  if (n < 1 || n > max) throw new RoutingMsgError(`an LFDB update carries 1..${max} entries, not ${n}: split it`);
  const len = limits ? LIMITS_ENTRY_LEN : ENTRY_LEN;
  const b = new Uint8Array(4 + n * len);
  const v = new DataView(b.buffer);
  b[0] = ROUTING_MSG_VERSION;
  b[1] = limits ? KIND_LFDB_LIMITS : KIND_LFDB;
  v.setUint16(2, n);
  let o = 4;
  for (const e of msg.entries) {
    checkLowerFlow(e);
    v.setUint32(o, e.from);
    v.setUint32(o + 4, e.to);
    v.setUint16(o + 8, e.cost);
    v.setUint8(o + 10, e.up ? 1 : 0);
    v.setUint32(o + 11, e.seqnum);
    if (limits) v.setUint32(o + 15, e.maxPdu ?? 0);
    o += len;
  }
  return b;
}

export function decodeRoutingMessage(b: Uint8Array): RoutingMessage {
  if (b.length < 2) throw new RoutingMsgError(`routing message of ${b.length} bytes is shorter than its 2-byte header`);
  if (b[0] !== ROUTING_MSG_VERSION) throw new RoutingMsgError(`routing message version ${b[0]} is not ${ROUTING_MSG_VERSION}`);
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (b[1] === KIND_KEEPALIVE) {
    if (b.length !== 6) throw new RoutingMsgError(`keepalive of ${b.length} bytes, expected 6`);
    return { kind: 'keepalive', address: v.getUint32(2) };
  }
  if (b[1] !== KIND_LFDB && b[1] !== KIND_LFDB_LIMITS) throw new RoutingMsgError(`routing message kind ${b[1]} is unknown (1 LFDB update, 2 keepalive, 3 LFDB update with link limits)`);
  const limits = b[1] === KIND_LFDB_LIMITS;
  const max = limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG;
  const len = limits ? LIMITS_ENTRY_LEN : ENTRY_LEN;
  if (b.length < 4) throw new RoutingMsgError(`LFDB update of ${b.length} bytes is shorter than its 4-byte header`);
  const n = v.getUint16(2);
  if (n < 1 || n > max) throw new RoutingMsgError(`LFDB update states ${n} entries, allowed 1..${max}`);
  if (b.length !== 4 + n * len) throw new RoutingMsgError(`LFDB update of ${b.length} bytes, but ${n} entries need ${4 + n * len}`);
  const entries: LowerFlow[] = [];
  for (let i = 0, o = 4; i < n; i++, o += len) {
    const flags = v.getUint8(o + 10);
    if ((flags & ~1) !== 0) throw new RoutingMsgError(`LFDB entry ${i} has unknown flag bits 0x${flags.toString(16)}`);
    const e: LowerFlow = { from: v.getUint32(o), to: v.getUint32(o + 4), cost: v.getUint16(o + 8), seqnum: v.getUint32(o + 11), up: flags === 1 };
    if (limits) {
      const m = v.getUint32(o + 15);
      if (m !== 0) e.maxPdu = m;
    }
    try {
      checkLowerFlow(e);
    } catch (err) {
      if (err instanceof LfdbError) throw new RoutingMsgError(`LFDB entry ${i}: ${err.message}`);
      throw err;
    }
    entries.push(e);
  }
  return limits ? { kind: 'lfdb', entries, limits: true } : { kind: 'lfdb', entries };
}
