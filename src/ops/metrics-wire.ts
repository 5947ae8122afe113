/**
 * metrics-wire.ts — the framing of a guest's metrics over one shim DIF flow, in one place for
 * both ends: the guest's metrics application (guest-metrics-app.ts) and the host's fetcher
 * (guest-metrics-fetch.ts).
 *
 * One request per flow, the host asking (it allocates the flow to `vmpi-metrics`):
 *   request  (host → guest, one SDU, 12 bytes): "VMPM" | u8 version (1) | u8 type (1: scrape) |
 *            u16 reserved (0) | le32 maxBytes (the most the host takes)
 *   header   (guest → host, one SDU, 16 bytes): "VMPM" | u8 version | u8 type (2: reply) |
 *            u8 status (0 ok, 1 error) | u8 reserved | le32 length | le32 reserved
 *   body     (guest → host): `length` bytes in SDUs of at most the flow's max SDU, in order: the
 *            Prometheus text exposition (status ok) or a UTF-8 error message (status error).
 * The guest then waits for the host to deallocate. Anything else — a short or unknown header,
 * a body longer than announced, a length over the host's budget, the flow ending early — is a
 * typed MetricsWireError; the assembler never holds more than the budget.
 */
import { CodedError } from '../sys/coded-error.js';

export const METRICS_APP = 'vmpi-metrics';
/** The host's end of a metrics flow (its local application name). */
export const METRICS_CLIENT_APP = 'vmpi-metrics-scraper';
export const WIRE_VERSION = 1;
const MAGIC = [0x56, 0x4d, 0x50, 0x4d]; // "VMPM"
const TYPE_SCRAPE = 1;
const TYPE_REPLY = 2;
export const REQUEST_SIZE = 12;
export const HEADER_SIZE = 16;
/** Largest reply body either end accepts, whatever is configured (16 MiB). */
export const MAX_REPLY_BYTES = 16 * 1024 * 1024;

export type MetricsWireErrorCode = 'malformed' | 'oversize' | 'truncated';

export class MetricsWireError extends CodedError<MetricsWireErrorCode> {
  override name = 'MetricsWireError';
}

function hasMagic(b: Uint8Array): boolean {
  return MAGIC.every((m, i) => b[i] === m);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function encodeRequest(maxBytes: number): Uint8Array {
  const b = new Uint8Array(REQUEST_SIZE);
  b.set(MAGIC);
  b[4] = WIRE_VERSION;
  b[5] = TYPE_SCRAPE;
  view(b).setUint32(8, maxBytes, true);
  return b;
}

/** The host's budget from a request SDU; throws MetricsWireError('malformed'). */
export function decodeRequest(sdu: Uint8Array): { maxBytes: number } {
  if (sdu.byteLength !== REQUEST_SIZE || !hasMagic(sdu)) throw new MetricsWireError('malformed', `not a metrics request: ${sdu.byteLength} bytes, expected ${REQUEST_SIZE} starting "VMPM"`);
  if (sdu[4] !== WIRE_VERSION || sdu[5] !== TYPE_SCRAPE) throw new MetricsWireError('malformed', `metrics request of version ${sdu[4]} type ${sdu[5]}: this end speaks version ${WIRE_VERSION} type ${TYPE_SCRAPE}`);
  return { maxBytes: view(sdu).getUint32(8, true) };
}

export type ReplyStatus = 'ok' | 'error';

/** The SDUs of a reply: header, then the body cut to at most `maxSdu` bytes each. */
export function encodeReply(status: ReplyStatus, body: Uint8Array, maxSdu: number): Uint8Array[] {
  if (!Number.isInteger(maxSdu) || maxSdu < HEADER_SIZE) throw new RangeError(`max SDU ${maxSdu} is too small for a ${HEADER_SIZE}-byte reply header`);
  const h = new Uint8Array(HEADER_SIZE);
  h.set(MAGIC);
  h[4] = WIRE_VERSION;
  h[5] = TYPE_REPLY;
  h[6] = status === 'ok' ? 0 : 1;
  view(h).setUint32(8, body.byteLength, true);
  const out: Uint8Array[] = [h];
  for (let off = 0; off < body.byteLength; off += maxSdu) out.push(body.subarray(off, Math.min(off + maxSdu, body.byteLength)));
  return out;
}

/** A reply as it arrives SDU by SDU, within `maxBytes`. */
export class ReplyAssembler {
  private status: ReplyStatus | null = null;
  private length = 0;
  private got = 0;
  private chunks: Uint8Array[] = [];

  constructor(private readonly maxBytes: number) {}

  get done(): boolean {
    return this.status !== null && this.got === this.length;
  }

  /** Take the next SDU; true once the reply is complete. Throws MetricsWireError. */
  push(sdu: Uint8Array): boolean {
    if (this.status === null) {
      if (sdu.byteLength !== HEADER_SIZE || !hasMagic(sdu)) throw new MetricsWireError('malformed', `reply header of ${sdu.byteLength} bytes: expected ${HEADER_SIZE} starting "VMPM"`);
      if (sdu[4] !== WIRE_VERSION || sdu[5] !== TYPE_REPLY || (sdu[6] !== 0 && sdu[6] !== 1)) {
        throw new MetricsWireError('malformed', `reply header of version ${sdu[4]} type ${sdu[5]} status ${sdu[6]}: expected version ${WIRE_VERSION} type ${TYPE_REPLY} status 0 or 1`);
      }
      const length = view(sdu).getUint32(8, true);
      if (length > this.maxBytes) throw new MetricsWireError('oversize', `the guest announced ${length} bytes of metrics; the budget is ${this.maxBytes} (metrics.guestMaxBytes)`);
      this.status = sdu[6] === 0 ? 'ok' : 'error';
      this.length = length;
      return this.done;
    }
    if (this.got + sdu.byteLength > this.length) throw new MetricsWireError('malformed', `the guest sent more than the ${this.length} bytes it announced`);
    this.chunks.push(sdu.slice());
    this.got += sdu.byteLength;
    return this.done;
  }

  /** The flow ended: the complete reply, or MetricsWireError('truncated'). */
  finish(): { status: ReplyStatus; body: Uint8Array } {
    if (!this.done) {
      throw new MetricsWireError('truncated', this.status === null ? 'the flow ended before the reply header' : `the flow ended after ${this.got} of ${this.length} bytes`);
    }
    const body = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      body.set(c, off);
      off += c.byteLength;
    }
    return { status: this.status!, body };
  }
}
