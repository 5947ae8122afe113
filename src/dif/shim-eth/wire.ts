/**
 * wire.ts — the frames of the shim DIF over Ethernet (ipcp.ts): the Ethernet header (with an
 * optional 802.1Q tag) and the ARP-style name resolution messages, encoded and decoded by pure
 * functions; a decoder refuses anything malformed or truncated with a typed error.
 *
 * Every frame of the DIF has ethertype 0xD1F0 (rlite's and IRATI's). Its payload is a u16 length
 * L and L bytes of message; what follows is Ethernet's padding of short frames (a frame is at
 * least 60 bytes on the wire, so a 0-byte SDU would otherwise grow 41 zero bytes on the way):
 * allowed only in a frame of at most 64 bytes, and only zeros. The message is either
 *   - a name resolution message: an ARP packet (RFC 826 layout) whose protocol type is 0xD1F0
 *     and whose protocol addresses are application names (UTF-8, zero-padded to one length):
 *       htype u16 = 1 | ptype u16 = 0xD1F0 | hlen u8 = 6 | plen u8 (1..255) | oper u16 (1 request,
 *       2 reply) | sha[6] | spa[plen] | tha[6] | tpa[plen]
 *     Its first byte is 0x00 (htype's high byte), which no flow message starts with; or
 *   - a flow message of the shim DIF over UDP's format (../shim-udp/wire.ts: DATA with a 5-byte
 *     header kind + receiver's flow id, ALLOC_REQ, ALLOC_RESP, DEALLOC, KEEPALIVE), the flow
 *     being (peer MAC, flow id) instead of (peer address, flow id).
 *
 * Why ARP inside 0xD1F0 and not ethertype 0x0806 (rlite) or 0x4305 (IRATI): one socket and one
 * kernel filter take every frame of the DIF; a socket bound to ETH_P_ARP would be woken by every
 * IPv4 ARP frame on the segment, and the host's ARP code would parse ours too.
 */
export const ETHERTYPE_RINA = 0xd1f0;
export const ETHERTYPE_VLAN = 0x8100;
export const ETH_HEADER_BYTES = 14;
export const VLAN_TAG_BYTES = 4;
export const ARP_HTYPE_ETHERNET = 1;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;
/** Longest application name a resolution carries (ARP's plen is a u8). */
export const MAX_ARP_NAME_BYTES = 255;
export const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export type EthWireErrorReason = 'truncated' | 'bad_field' | 'bad_utf8' | 'trailing_bytes';

/** A frame or resolution message that cannot be read. */
export class EthWireError extends Error {
  override name = 'EthWireError';
  constructor(
    readonly reason: EthWireErrorReason,
    message: string,
  ) {
    super(message);
  }
}

export interface EthHeader {
  dst: Uint8Array;
  src: Uint8Array;
  /** The VLAN id of an 802.1Q tag, or undefined when untagged. */
  vlan?: number;
  /** The priority (PCP) bits of the tag (0..7). */
  pcp?: number;
  ethertype: number;
  /** Where the payload starts. */
  headerBytes: number;
}

/** "aa:bb:cc:dd:ee:ff" of 6 bytes. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** The 6 bytes of "aa:bb:cc:dd:ee:ff" (also "-" separated, any case); throws an Error completing "<text> …". */
export function parseMac(text: string): Uint8Array {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text);
  if (!m) throw new Error('is not a MAC address (for example "02:00:00:00:00:01")');
  return Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
}

/** Whether the first 6 bytes of `a` and `b` are the same address (no string made). */
export function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3] && a[4] === b[4] && a[5] === b[5];
}

/**
 * The text form (formatMac) of the source addresses of received frames, made once per address:
 * a frame's source is looked up by its 48 bits as a number, so the per-frame cost is a Map
 * lookup, not six toString/padStart and a join. At most `max` addresses are kept (then it starts
 * over), so a flood of forged sources cannot grow it without bound.
 */
export class MacNames {
  private readonly names = new Map<number, string>();
  constructor(readonly max = 1024) {}

  /** formatMac(mac), from the cache when seen before. */
  name(mac: Uint8Array): string {
    const key = ((mac[0]! << 8) | mac[1]!) * 0x100000000 + (((mac[2]! << 24) | (mac[3]! << 16) | (mac[4]! << 8) | mac[5]!) >>> 0);
    let s = this.names.get(key);
    if (s === undefined) {
      if (this.names.size >= this.max) this.names.clear();
      s = formatMac(mac);
      this.names.set(key, s);
    }
    return s;
  }

  /** Addresses kept now. */
  get size(): number {
    return this.names.size;
  }
}

export function isMulticastMac(mac: Uint8Array): boolean {
  return (mac[0]! & 1) !== 0;
}

/** Header length for `vlan` (undefined: untagged). */
export function headerBytes(vlan?: number): number {
  return vlan === undefined ? ETH_HEADER_BYTES : ETH_HEADER_BYTES + VLAN_TAG_BYTES;
}

/** Write an Ethernet header at `out[0..)`; returns its length. Throws RangeError on a bad field. */
export function writeEthHeader(out: Uint8Array, dst: Uint8Array, src: Uint8Array, ethertype: number, vlan?: number, pcp = 0): number {
  if (dst.byteLength !== 6 || src.byteLength !== 6) throw new RangeError('a MAC address is 6 bytes');
  if (!Number.isInteger(ethertype) || ethertype < 0x0600 || ethertype > 0xffff) throw new RangeError(`ethertype ${ethertype} is not 0x0600..0xffff`);
  const n = headerBytes(vlan);
  if (out.byteLength < n) throw new RangeError(`${out.byteLength} bytes do not hold a ${n}-byte header`);
  // Byte writes, no DataView: this runs once per data frame sent (ipcp.ts sendData).
  out.set(dst, 0);
  out.set(src, 6);
  if (vlan !== undefined) {
    if (!Number.isInteger(vlan) || vlan < 0 || vlan > 4094) throw new RangeError(`VLAN id ${vlan} is not 0..4094`);
    if (!Number.isInteger(pcp) || pcp < 0 || pcp > 7) throw new RangeError(`priority ${pcp} is not 0..7`);
    out[12] = ETHERTYPE_VLAN >> 8;
    out[13] = ETHERTYPE_VLAN & 0xff;
    const tci = (pcp << 13) | vlan;
    out[14] = tci >> 8;
    out[15] = tci & 0xff;
  }
  out[n - 2] = ethertype >> 8;
  out[n - 1] = ethertype & 0xff;
  return n;
}

/** Read an Ethernet header (one 802.1Q tag at most); views into `frame`. Throws EthWireError. */
export function readEthHeader(frame: Uint8Array): EthHeader {
  if (frame.byteLength < ETH_HEADER_BYTES) throw new EthWireError('truncated', `a frame of ${frame.byteLength} bytes (an Ethernet header is ${ETH_HEADER_BYTES})`);
  // Byte reads, no DataView: this runs once per frame received.
  const dst = frame.subarray(0, 6);
  const src = frame.subarray(6, 12);
  let type = (frame[12]! << 8) | frame[13]!;
  if (type < 0x0600) throw new EthWireError('bad_field', `an 802.3 length field (${type}), not an ethertype`);
  if (type !== ETHERTYPE_VLAN) return { dst, src, ethertype: type, headerBytes: ETH_HEADER_BYTES };
  if (frame.byteLength < ETH_HEADER_BYTES + VLAN_TAG_BYTES) throw new EthWireError('truncated', `a tagged frame of ${frame.byteLength} bytes (its header is 18)`);
  const tci = (frame[14]! << 8) | frame[15]!;
  type = (frame[16]! << 8) | frame[17]!;
  if (type === ETHERTYPE_VLAN || type === 0x88a8) throw new EthWireError('bad_field', 'a stacked VLAN tag (QinQ) is not supported');
  if (type < 0x0600) throw new EthWireError('bad_field', `an 802.3 length field (${type}) after the VLAN tag`);
  const vlan = tci & 0x0fff;
  if (vlan === 0x0fff) throw new EthWireError('bad_field', 'VLAN id 4095 is reserved');
  return { dst, src, vlan, pcp: tci >> 13, ethertype: type, headerBytes: ETH_HEADER_BYTES + VLAN_TAG_BYTES };
}

/** One name resolution message (ARP layout, names as protocol addresses). */
export interface ArpMessage {
  op: 'request' | 'reply';
  senderMac: Uint8Array;
  /** request: the application asking; reply: the application found. */
  senderName: string;
  /** request: zero (unknown); reply: the asker's MAC. */
  targetMac: Uint8Array;
  /** request: the application looked for; reply: the asking application. */
  targetName: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Whether a payload is a resolution message (first byte 0: ARP's htype), not a flow message. */
export function isArpPayload(payload: Uint8Array): boolean {
  return payload.byteLength > 0 && payload[0] === 0;
}

/** Bytes of an encoded resolution message for names of these UTF-8 lengths. */
export function arpBytes(senderNameBytes: number, targetNameBytes: number): number {
  return 8 + 2 * (6 + Math.max(senderNameBytes, targetNameBytes, 1));
}

/** Encode a resolution message. Throws RangeError for a name over 255 bytes, a NUL in a name, or a bad MAC. */
export function encodeArp(m: ArpMessage): Uint8Array {
  const sn = encoder.encode(m.senderName);
  const tn = encoder.encode(m.targetName);
  for (const n of [sn, tn]) {
    if (n.byteLength > MAX_ARP_NAME_BYTES) throw new RangeError(`a name of ${n.byteLength} bytes does not fit ARP's 255-byte protocol address`);
    if (n.includes(0)) throw new RangeError('a name with a NUL byte cannot be zero-padded');
  }
  if (m.senderMac.byteLength !== 6 || m.targetMac.byteLength !== 6) throw new RangeError('a MAC address is 6 bytes');
  const plen = Math.max(sn.byteLength, tn.byteLength, 1);
  const out = new Uint8Array(8 + 2 * (6 + plen));
  const v = new DataView(out.buffer);
  v.setUint16(0, ARP_HTYPE_ETHERNET);
  v.setUint16(2, ETHERTYPE_RINA);
  out[4] = 6;
  out[5] = plen;
  v.setUint16(6, m.op === 'request' ? ARP_REQUEST : ARP_REPLY);
  out.set(m.senderMac, 8);
  out.set(sn, 14);
  out.set(m.targetMac, 14 + plen);
  out.set(tn, 20 + plen);
  return out;
}

/** Decode a resolution message (copies). Throws EthWireError. */
export function decodeArp(buf: Uint8Array): ArpMessage {
  if (buf.byteLength < 8) throw new EthWireError('truncated', `a resolution message of ${buf.byteLength} bytes (its fixed part is 8)`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint16(0) !== ARP_HTYPE_ETHERNET) throw new EthWireError('bad_field', `ARP hardware type ${v.getUint16(0)} (only 1, Ethernet)`);
  if (v.getUint16(2) !== ETHERTYPE_RINA) throw new EthWireError('bad_field', `ARP protocol type 0x${v.getUint16(2).toString(16)} (only 0xd1f0)`);
  if (buf[4] !== 6) throw new EthWireError('bad_field', `ARP hardware address length ${buf[4]} (only 6)`);
  const plen = buf[5]!;
  if (plen === 0) throw new EthWireError('bad_field', 'ARP protocol address length 0');
  const op = v.getUint16(6);
  if (op !== ARP_REQUEST && op !== ARP_REPLY) throw new EthWireError('bad_field', `ARP operation ${op} (1 request, 2 reply)`);
  const need = 8 + 2 * (6 + plen);
  if (buf.byteLength < need) throw new EthWireError('truncated', `a resolution message of ${buf.byteLength} bytes, ${need} needed for names of ${plen} bytes`);
  if (buf.byteLength > need) throw new EthWireError('trailing_bytes', `${buf.byteLength - need} bytes after the resolution message`);
  const name = (at: number, what: string): string => {
    const raw = buf.subarray(at, at + plen);
    let end = raw.byteLength;
    while (end > 0 && raw[end - 1] === 0) end--;
    if (raw.subarray(0, end).includes(0)) throw new EthWireError('bad_field', `${what} has a NUL byte inside`);
    try {
      return decoder.decode(raw.subarray(0, end));
    } catch {
      throw new EthWireError('bad_utf8', `${what} is not UTF-8`);
    }
  };
  return {
    op: op === ARP_REQUEST ? 'request' : 'reply',
    senderMac: buf.slice(8, 14),
    senderName: name(14, 'the sender name'),
    targetMac: buf.slice(14 + plen, 20 + plen),
    targetName: name(20 + plen, 'the target name'),
  };
}

/** The length prefix before each message. */
export const LENGTH_BYTES = 2;
/** Frames up to this size may carry padding after the message (60 + a 4-byte tag). */
export const MAX_PADDED_FRAME = 64;

/** Write the length prefix of a `messageBytes`-byte message at out[at..at+2). */
export function writeLength(out: Uint8Array, at: number, messageBytes: number): void {
  if (!Number.isInteger(messageBytes) || messageBytes < 1 || messageBytes > 0xffff) throw new RangeError(`a message of ${messageBytes} bytes`);
  out[at] = messageBytes >> 8;
  out[at + 1] = messageBytes & 0xff;
}

/** The message of a frame's payload (a view), padding checked. `frameBytes`: the whole frame's length. Throws EthWireError. */
export function readMessage(payload: Uint8Array, frameBytes: number): Uint8Array {
  if (payload.byteLength < LENGTH_BYTES + 1) throw new EthWireError('truncated', `a payload of ${payload.byteLength} bytes (a length and at least 1 byte)`);
  const n = (payload[0]! << 8) | payload[1]!;
  if (n === 0) throw new EthWireError('bad_field', 'a message of length 0');
  const end = LENGTH_BYTES + n;
  if (payload.byteLength < end) throw new EthWireError('truncated', `a message of ${n} bytes in a payload of ${payload.byteLength - LENGTH_BYTES}`);
  if (payload.byteLength > end) {
    if (frameBytes > MAX_PADDED_FRAME) throw new EthWireError('trailing_bytes', `${payload.byteLength - end} bytes after the message in a frame of ${frameBytes} bytes (only frames of at most ${MAX_PADDED_FRAME} are padded)`);
    for (let i = end; i < payload.byteLength; i++) if (payload[i] !== 0) throw new EthWireError('trailing_bytes', 'padding after the message that is not zero');
  }
  return payload.subarray(LENGTH_BYTES, end);
}

/**
 * A whole frame: header, length prefix, `message` (or, for DATA, the 5-byte data header of
 * ../shim-udp/wire.ts written here from `dataDst`, then `message` as the SDU), in one new buffer.
 */
export function buildFrame(dst: Uint8Array, src: Uint8Array, vlan: number | undefined, message: Uint8Array, dataDst?: number): Uint8Array {
  const h = headerBytes(vlan);
  const extra = dataDst === undefined ? 0 : 5;
  const out = new Uint8Array(h + LENGTH_BYTES + extra + message.byteLength);
  writeEthHeader(out, dst, src, ETHERTYPE_RINA, vlan);
  writeLength(out, h, extra + message.byteLength);
  if (dataDst !== undefined) {
    out[h + 2] = 0x01;
    new DataView(out.buffer).setUint32(h + 3, dataDst >>> 0);
  }
  out.set(message, h + LENGTH_BYTES + extra);
  return out;
}
