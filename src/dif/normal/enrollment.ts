/**
 * enrollment.ts — what both sides of the normal DIF's enrollment share: the message transport
 * interface, object classes and names, timing defaults, `EnrollmentError`, and the chunking of
 * what a new member receives. docs/NORMAL-DIF-ENROLLMENT.md describes the exchange.
 *
 * The enrollee drives every step (request → reply) and retries each on a timeout; the enroller
 * only answers, and answers a retransmitted request with the same reply. So no step depends on
 * the N-1 flow being reliable (rlite's does: it waits 7 s and gives up).
 */
import type { AppName } from '../naming.js';
import type { CdapMessage } from './cdap.js';
import { MAX_CDAP_MESSAGE_BYTES, cdapValueBudget } from './cdap.js';
import {
  MAX_LIST_ITEMS,
  MAX_LOWER_FLOW_RECORD_BYTES,
  encodeDirectoryUpdate,
  encodeEnrollmentChunk,
  type AddressRange,
  type DataTransferConstants,
  type DirectoryEntry,
  type Neighbour,
} from './cdap-objects.js';
import { PCI_LEN, PCI_VERSION } from './pci.js';

/** One N-1 flow's management messages, as the integration provides it (codec on its side). */
export interface CdapTransport {
  send(msg: CdapMessage): void;
  /** The state machine installs its handler; the transport calls it for each message received. */
  onReceive(handler: (msg: CdapMessage) => void): void;
  /** Largest encoded CDAP message the N-1 flow carries in one SDU (its max SDU less the PCI); absent: no limit below CDAP's own. */
  readonly maxMessageBytes?: number;
}

export const ENROLLMENT_CLASS = 'enrollment';
export const ENROLLMENT_NAME = '/mgmt/enrollment';
export const CHUNK_CLASS = 'enrollment_chunk';
export const CHUNK_NAME_PREFIX = '/mgmt/enrollment/chunk/';
export const OPSTATUS_CLASS = 'operational_status';
export const OPSTATUS_NAME = '/mgmt/operational_status';

/** Per step: wait this long for the reply, then send the same request again. */
export const DEFAULT_STEP_TIMEOUT_MS = 1000;
/** Retransmissions per step before the enrollment fails (so 1 + 4 attempts). */
export const DEFAULT_STEP_RETRIES = 4;
/** Budget of one chunk's encoded value (a chunk plus its CDAP header stays under the CDAP limit). */
export const DEFAULT_CHUNK_BYTES = 8192;
/** Chunks per enrollment; a DIF whose state needs more refuses new members with a reason. */
export const MAX_ENROLLMENT_CHUNKS = 1024;

export type EnrollmentErrorCode =
  | 'ERR_ENROLL_REJECTED'
  | 'ERR_ENROLL_TIMEOUT'
  | 'ERR_ENROLL_CONSTANTS'
  | 'ERR_ENROLL_DIF_NAME'
  | 'ERR_ENROLL_BAD_REPLY'
  | 'ERR_ENROLL_RELEASED'
  | 'ERR_ENROLL_ABORTED'
  | 'ERR_ENROLL_STATE';

export class EnrollmentError extends Error {
  override name = 'EnrollmentError';
  constructor(
    readonly code: EnrollmentErrorCode,
    message: string,
    /** The step that failed (connect, start, read, stop, operational). */
    readonly step: string,
  ) {
    super(message);
  }
}

/** The data-transfer constants of this implementation's PCI (docs/NORMAL-DIF-PCI.md). */
export function defaultConstants(maxPduSize: number, maxPduLifetimeMs = 4000): DataTransferConstants {
  return { pciVersion: PCI_VERSION, addressWidth: 4, cepIdWidth: 4, qosIdWidth: 2, seqnumWidth: 4, lengthWidth: 4, maxPduSize: Math.max(maxPduSize, PCI_LEN), maxPduLifetimeMs };
}

/**
 * The budget of one chunk's value sent over `transport`: `chunkBytes`, or less where the N-1 flow
 * cannot carry an M_READ_R that large (every chunk must cross in one SDU, or the enrollee never
 * gets it and the enrollment fails after its retries).
 */
export function chunkBudget(transport: CdapTransport, chunkBytes = DEFAULT_CHUNK_BYTES): number {
  if (transport.maxMessageBytes === undefined) return chunkBytes;
  const reply = { op: 'M_READ_R', invokeId: 0xffffffff, objClass: CHUNK_CLASS, objName: `${CHUNK_NAME_PREFIX}999999`, result: 0, reason: '' } as const;
  return Math.min(chunkBytes, cdapValueBudget(reply, transport.maxMessageBytes));
}

/** What a new member receives: the enroller's view at the time of M_START. */
export interface EnrollmentContent {
  readonly directory: readonly DirectoryEntry[];
  readonly neighbours: readonly Neighbour[];
  /** Lower-flow database records, opaque (the routing module encodes them). */
  readonly lowerFlows: readonly Uint8Array[];
}

export interface MemberInfo {
  readonly name: AppName;
  readonly address: number;
  readonly lowerDifs: readonly string[];
  /** The block of addresses delegated to it (it enrolls others). */
  readonly pool?: AddressRange;
  /** It reads LFDB updates with link limits (said in its M_START). */
  readonly lfdbMaxPdu?: boolean;
}

/**
 * Cut `content` into encoded EnrollmentChunk values of at most `budget` bytes each. Returns
 * undefined when more than `maxChunks` would be needed. Records too large for a chunk are left
 * out and counted in `skipped`.
 */
export function buildChunks(content: EnrollmentContent, budget = DEFAULT_CHUNK_BYTES, maxChunks = MAX_ENROLLMENT_CHUNKS): { chunks: Uint8Array[]; skipped: number } | undefined {
  budget = Math.min(budget, MAX_CDAP_MESSAGE_BYTES - 1024);
  type Part = { directory: DirectoryEntry[]; neighbours: Neighbour[]; lowerFlows: Uint8Array[] };
  const parts: Part[] = [];
  let cur: Part = { directory: [], neighbours: [], lowerFlows: [] };
  let bytes = 16;
  let items = 0;
  let skipped = 0;
  const add = (size: number, put: (p: Part) => void): boolean => {
    if (size + 16 > budget) {
      skipped++;
      return true;
    }
    if (bytes + size > budget || items >= MAX_LIST_ITEMS) {
      parts.push(cur);
      if (parts.length >= maxChunks) return false;
      cur = { directory: [], neighbours: [], lowerFlows: [] };
      bytes = 16;
      items = 0;
    }
    put(cur);
    bytes += size;
    items++;
    return true;
  };
  for (const e of content.directory) if (!add(encodeDirectoryUpdate([e]).length, (p) => p.directory.push(e))) return undefined;
  for (const n of content.neighbours) {
    const size = encodeEnrollmentChunk({ index: 0, total: 1, directory: [], neighbours: [n], lowerFlows: [] }).length;
    if (!add(size, (p) => p.neighbours.push(n))) return undefined;
  }
  for (const r of content.lowerFlows) {
    if (r.byteLength > MAX_LOWER_FLOW_RECORD_BYTES) {
      skipped++;
      continue;
    }
    if (!add(r.byteLength + 6, (p) => p.lowerFlows.push(r))) return undefined;
  }
  parts.push(cur);
  if (parts.length > maxChunks) return undefined;
  const total = parts.length;
  return { chunks: parts.map((p, index) => encodeEnrollmentChunk({ index, total, ...p })), skipped };
}
