/**
 * normal-pdu.ts — fuzz targets for the normal DIF's wire formats, now that its PDUs exist.
 *
 * `normal-pdu`: a hostile peer's PDUs into an EFCP connection of each QoS cube (src/dif/normal/
 * pci.ts + efcp/): raw bytes, well-formed DT/CTRL headers with arbitrary fields (window edges,
 * sequence numbers near the wrap, wrong CEP-ids), then byte mutations, all through decodePci and
 * EfcpConnection.receive on a ManualClock, with timers advanced between PDUs. Only PciError and
 * EfcpError may escape; the receiver never holds more than its credit, never delivers more bytes
 * than a PDU carried, and close() leaves no timer behind.
 *
 * `cdap`: one management message (raw, a CDAPMessage with arbitrary fields, mutated) into
 * decodeCdap. Only CdapError may escape; an accepted message re-encodes and decodes to itself.
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { CdapError, cdapType, decodeCdap, encodeCdap } from '../../../src/dif/normal/cdap.js';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { EfcpConnection, EfcpError, QOS_CUBES } from '../../../src/dif/normal/efcp/index.js';
import { CTRL_ACK, CTRL_FC, PciError, PduType, decodePci, encodePci, headerLength, newPci, type Pci } from '../../../src/dif/normal/pci.js';
import { InvariantError, type FuzzTarget } from '../runner.js';
import { hex, mutate, mutation } from './util.js';

const u32 = fc.oneof(fc.constantFrom(0, 1, 2, 63, 64, 65, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff), fc.nat(), fc.integer({ min: 0xffffff00, max: 0xffffffff }));
const pduType = fc.constantFrom(PduType.DT, PduType.DT, PduType.DT, PduType.CTRL | CTRL_ACK, PduType.CTRL | CTRL_FC, PduType.CTRL | CTRL_FC | CTRL_ACK, PduType.MGMT);

const LOCAL = { addr: 1, cep: 10 };
const REMOTE = { addr: 2, cep: 20 };

const headerFields = fc.record({
  type: pduType,
  flags: fc.constantFrom(0, 0x80, 0x01, 0x81),
  ttl: fc.integer({ min: 0, max: 255 }),
  dstAddr: fc.oneof({ weight: 6, arbitrary: fc.constant(LOCAL.addr) }, { weight: 1, arbitrary: u32 }),
  srcAddr: fc.oneof({ weight: 6, arbitrary: fc.constant(REMOTE.addr) }, { weight: 1, arbitrary: u32 }),
  dstCep: fc.oneof({ weight: 6, arbitrary: fc.constant(LOCAL.cep) }, { weight: 1, arbitrary: u32 }),
  srcCep: fc.oneof({ weight: 6, arbitrary: fc.constant(REMOTE.cep) }, { weight: 1, arbitrary: u32 }),
  qosId: fc.constantFrom(1, 2, 3, 0, 0xffff),
  seqNum: fc.oneof(fc.integer({ min: 0, max: 200 }), u32),
  lastCtrlSeqRcvd: u32,
  ackNackSeq: fc.oneof(fc.integer({ min: 0, max: 200 }), u32),
  newRightWinEdge: fc.oneof(fc.integer({ min: 0, max: 300 }), u32),
  newLeftWinEdge: fc.oneof(fc.integer({ min: 0, max: 200 }), u32),
  myLeftWinEdge: fc.oneof(fc.integer({ min: 0, max: 200 }), u32),
  myRightWinEdge: fc.oneof(fc.integer({ min: 0, max: 300 }), u32),
});

function build(p: Omit<Pci, 'length'>, payload: number): Uint8Array {
  const pci = { ...p, length: payload };
  const buf = new Uint8Array(headerLength(p.type) + payload);
  encodePci(pci, buf);
  return buf;
}

const pdu: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }) },
  { weight: 6, arbitrary: fc.tuple(headerFields, fc.integer({ min: 0, max: 600 })).map(([h, n]) => build(h, n)) },
  { weight: 2, arbitrary: fc.tuple(headerFields, fc.integer({ min: 0, max: 64 }), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([h, n, ms]) => mutate(build(h, n), ms)) },
);

interface PduCase {
  cube: 'reliable' | 'flow-control' | 'unreliable';
  initialSeq: number;
  steps: { pdu: Uint8Array; advanceMs: number; write: number }[];
}

const pduCase: fc.Arbitrary<PduCase> = fc.record({
  cube: fc.constantFrom('reliable' as const, 'flow-control' as const, 'unreliable' as const),
  initialSeq: fc.oneof(fc.constant(0), fc.constant(0xffffff80), fc.nat()),
  steps: fc.array(fc.record({ pdu, advanceMs: fc.constantFrom(0, 0, 1, 5, 50, 1000), write: fc.constantFrom(0, 0, 1, 3, 20) }), { minLength: 1, maxLength: 40 }),
});

const CREDIT = 32;
const outcomes = new Map<string, number>();

function runPduCase(c: PduCase): void {
  const clock = new ManualClock();
  let deliveredCount = 0;
  let sent = 0;
  const conn = new EfcpConnection({
    cube: QOS_CUBES[c.cube],
    clock,
    localAddr: LOCAL.addr,
    remoteAddr: REMOTE.addr,
    localCep: LOCAL.cep,
    remoteCep: REMOTE.cep,
    credit: CREDIT,
    peerCredit: CREDIT,
    initialSeq: c.initialSeq,
    peerInitialSeq: 0,
    maxRetries: 3,
    sendPdu: () => {
      sent++;
      return sent % 7 !== 0; // the lower side is sometimes full
    },
    deliver: (sdu) => {
      deliveredCount++;
      if (sdu.byteLength > 600) throw new InvariantError(`delivered an SDU of ${sdu.byteLength} bytes, larger than any PDU sent`);
      return deliveredCount % 5 !== 0; // the reader sometimes pauses
    },
  });
  const pci = newPci();
  let accepted = 0;
  let refused = 0;
  for (const s of c.steps) {
    try {
      decodePci(s.pdu, pci);
    } catch (e) {
      if (e instanceof PciError) {
        refused++;
        continue;
      }
      throw e;
    }
    accepted++;
    try {
      conn.receive(s.pdu, pci);
      for (let i = 0; i < s.write; i++) conn.write(new Uint8Array(i % 3 === 0 ? 0 : 100));
    } catch (e) {
      if (!(e instanceof EfcpError)) throw e;
    }
    if (deliveredCount % 5 === 0) conn.resumeDelivery();
    conn.lowerReady();
    clock.advance(s.advanceMs);
    const snap = conn.snapshot();
    if (snap.receiver.bufferedPdus > CREDIT) throw new InvariantError(`receiver holds ${snap.receiver.bufferedPdus} PDUs, credit ${CREDIT}`);
  }
  conn.close();
  clock.advance(10_000);
  if (clock.pending > 0) throw new InvariantError(`${clock.pending} timers left after close()`);
  const key = `${c.cube}:${accepted > 0 ? 'accepted' : 'none'}${refused > 0 ? '+refused' : ''}${deliveredCount > 0 ? '+delivered' : ''}`;
  outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
}

export const normalPduTarget: FuzzTarget<PduCase> = {
  name: 'normal-pdu',
  description: 'hostile PDUs (raw / well-formed DT+CTRL with arbitrary fields / mutated) → decodePci + EfcpConnection of each cube',
  arbitrary: pduCase,
  expected: (e) => e instanceof PciError || e instanceof EfcpError,
  caseTimeoutMs: 2000,
  run: runPduCase,
  outcomes: () => Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])),
};

// ---------------------------------------------------------------------------------------------
// CDAP

const text = fc.oneof(fc.constantFrom('', 'enrollment', '/mgmt/enrollment', 'x'.repeat(600), '\ud800'), fc.string({ maxLength: 16 }));
const cdapObject = fc.record(
  {
    opCode: fc.oneof(fc.integer({ min: 0, max: 17 }), u32),
    invokeId: u32,
    flags: u32,
    objClass: text,
    objName: text,
    objInst: u32,
    objValue: fc.uint8Array({ maxLength: 64 }),
    result: fc.integer({ min: -5, max: 5 }),
    resultReason: text,
    absSyntax: u32,
    version: fc.constantFrom(0, 1, 2),
    srcApName: text,
    destApName: text,
  },
  { requiredKeys: [] },
);

function encodeLoose(o: Record<string, unknown>): Uint8Array {
  const T = cdapType('CDAPMessage');
  const known = Object.fromEntries(Object.entries(o).filter(([k]) => T.fields[k] !== undefined));
  return T.encode(T.fromObject(known)).finish();
}

const cdapBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 96 }) },
  { weight: 4, arbitrary: cdapObject.map(encodeLoose) },
  { weight: 2, arbitrary: fc.tuple(cdapObject.map(encodeLoose), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([b, ms]) => mutate(b, ms)) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 16380, maxLength: 16400 }) },
);

/** Bytes as arrays (a Buffer and a Uint8Array of the same bytes are the same value here). */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return [...v];
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

export const cdapTarget: FuzzTarget<Uint8Array> = {
  name: 'cdap',
  description: 'one CDAP message (raw / protobuf with arbitrary fields / mutated / oversized) → decodeCdap',
  arbitrary: cdapBytes,
  expected: (e) => e instanceof CdapError,
  show: hex,
  run(bytes) {
    const m = decodeCdap(bytes);
    let again;
    try {
      again = decodeCdap(encodeCdap(m));
    } catch (e) {
      throw new InvariantError(`a decoded CDAP message does not re-encode: ${(e as Error).message}`);
    }
    if (!isDeepStrictEqual(plain(again), plain(m))) {
      throw new InvariantError('a decoded CDAP message changes when re-encoded');
    }
  },
};
