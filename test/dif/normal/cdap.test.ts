/**
 * cdap.test.ts — the normal DIF's CDAP codec (src/dif/normal/cdap.ts) and object values
 * (cdap-objects.ts): round trips, op code numbering, malformed/truncated/oversized input refused
 * with a typed CdapError, and (fast-check, seeded) random bytes never throw anything else.
 */
import t from 'tap';
import fc from 'fast-check';
import {
  CdapError,
  CdapOp,
  MAX_CDAP_MESSAGE_BYTES,
  cdapType,
  decodeCdap,
  encodeCdap,
  encodeRaw,
  replyTo,
  type CdapMessage,
  type CdapRequest,
} from '../../../src/dif/normal/cdap.js';
import {
  constantsMismatch,
  decodeDirectoryUpdate,
  decodeEnrollmentChunk,
  decodeEnrollmentInfo,
  decodeFlowRequest,
  decodeOperationalStatus,
  encodeDirectoryUpdate,
  encodeEnrollmentChunk,
  encodeEnrollmentInfo,
  encodeFlowRequest,
  encodeOperationalStatus,
  type DataTransferConstants,
} from '../../../src/dif/normal/cdap-objects.js';

const SEED = Number(process.env.FC_SEED ?? 12345);
const a = { processName: 'ipcp-a', processInstance: '1' };
const b = { processName: 'normal.DIF' };

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof CdapError) return e.reason;
    return `not a CdapError: ${String(e)}`;
  }
  return 'no error';
}

t.test('op codes are numbered as in IRATI and rlite', async (t) => {
  t.equal(CdapOp.M_CONNECT, 0);
  t.equal(CdapOp.M_CREATE, 4);
  t.equal(CdapOp.M_READ_R, 9);
  t.equal(CdapOp.M_START, 14);
  t.equal(CdapOp.M_STOP_R, 17);
  t.equal(Object.keys(CdapOp).length, 18);
});

t.test('round trips', async (t) => {
  const value = new Uint8Array([1, 2, 3, 0, 255]);
  const msgs: CdapMessage[] = [
    { op: 'M_CONNECT', invokeId: 1, absSyntax: 1, src: a, dst: b },
    { op: 'M_CONNECT_R', invokeId: 1, absSyntax: 1, src: b, dst: a, result: -1, reason: 'no' },
    { op: 'M_START', invokeId: 0xffffffff, objClass: 'enrollment', objName: '/mgmt/enrollment', value },
    { op: 'M_STOP_R', invokeId: 7, objClass: 'enrollment', objName: '', result: 0, reason: '' },
    { op: 'M_RELEASE', invokeId: 3, objClass: '', objName: '' },
    { op: 'M_CREATE', invokeId: 9, objClass: 'flow', objName: '/fa/1-2', value: new Uint8Array(0) },
  ];
  for (const m of msgs) t.same(decodeCdap(encodeCdap(m)), m, m.op);
  const req = msgs[2] as CdapRequest;
  t.same(replyTo(req, -3, 'why'), { op: 'M_START_R', invokeId: req.invokeId, objClass: 'enrollment', objName: '/mgmt/enrollment', result: -3, reason: 'why' });
  const long = decodeCdap(encodeCdap({ op: 'M_READ_R', invokeId: 1, objClass: 'x', objName: '', result: -1, reason: 'r'.repeat(1000) }));
  t.ok(long.op === 'M_READ_R' && long.reason.length === 256, 'reasons are clamped');
});

t.test('object values round trip', async (t) => {
  const constants: DataTransferConstants = { pciVersion: 1, addressWidth: 4, cepIdWidth: 4, qosIdWidth: 2, seqnumWidth: 4, lengthWidth: 4, maxPduSize: 9000, maxPduLifetimeMs: 4000 };
  const info = { address: 17, difName: 'n.DIF', lowerDifs: ['shim1', 'shim2'], constants };
  t.same(decodeEnrollmentInfo(encodeEnrollmentInfo(info)), info);
  t.same(decodeEnrollmentInfo(encodeEnrollmentInfo({ ...info, lfdbMaxPdu: true })), { ...info, lfdbMaxPdu: true }, 'lfdb_max_pdu (reads routing kind 3) round trips');
  t.notOk('lfdbMaxPdu' in decodeEnrollmentInfo(encodeEnrollmentInfo(info)), 'and is absent from an older member\'s message');
  t.same(constantsMismatch(constants, { ...constants, maxPduSize: 1500 }), ['maxPduSize 9000 ≠ 1500']);
  const entries = [
    { app: { processName: 'srv' }, address: 5, seqnum: 2 ** 40, removed: false },
    { app: { processName: 'x', entityName: 'e' }, address: 0xffffffff, seqnum: 0, removed: true },
  ];
  t.same(decodeDirectoryUpdate(encodeDirectoryUpdate(entries)), entries);
  const chunk = { index: 1, total: 3, directory: entries, neighbours: [{ name: a, address: 3, lowerDifs: ['s'] }], lowerFlows: [new Uint8Array([9, 9])] };
  t.same(decodeEnrollmentChunk(encodeEnrollmentChunk(chunk)), chunk);
  const fr = { srcApp: a, dstApp: b, srcPort: 1, dstPort: 2, srcAddr: 3, dstAddr: 4, srcCep: 5, dstCep: 6, qosCube: 1, result: -2, reason: 'busy' };
  t.same(decodeFlowRequest(encodeFlowRequest(fr)), fr);
  t.equal(decodeOperationalStatus(encodeOperationalStatus(true)), true);
  t.equal(reason(() => decodeEnrollmentChunk(encodeEnrollmentChunk({ ...chunk, index: 3 }))), 'bad_value', 'chunk index beyond total');
  t.equal(reason(() => decodeEnrollmentInfo(undefined)), 'missing_field');
  t.equal(reason(() => decodeEnrollmentInfo(encodeRaw(cdapType('EnrollmentInfo'), { address: 1 }))), 'missing_field', 'no DIF name');
  t.equal(reason(() => decodeEnrollmentInfo(encodeRaw(cdapType('EnrollmentInfo'), { difName: 'd', constants: { pciVersion: 1 } }))), 'missing_field', 'incomplete constants');
  t.equal(reason(() => decodeFlowRequest(encodeRaw(cdapType('FlowRequest'), { srcApp: { processName: 'a' }, dstApp: { processName: '' }, srcAddr: 1, dstAddr: 2, srcCep: 3 }))), 'bad_value', 'empty dst name');
  t.equal(reason(() => decodeDirectoryUpdate(encodeRaw(cdapType('DirectoryUpdate'), { entries: [{ app: { processName: 'a' }, address: 1 }] }))), 'missing_field', 'entry without seqnum');
});

t.test('malformed input is refused with its reason', async (t) => {
  const T = cdapType('CDAPMessage');
  const raw = (o: Record<string, unknown>) => encodeRaw(T, o);
  t.equal(reason(() => decodeCdap(new Uint8Array(MAX_CDAP_MESSAGE_BYTES + 1))), 'too_large');
  t.equal(reason(() => decodeCdap(new Uint8Array([0xff, 0xff, 0xff]))), 'undecodable');
  t.equal(reason(() => decodeCdap(raw({ invokeId: 1, version: 1 }))), 'missing_field', 'no op code');
  // field 1 (op_code) = 18, field 10 (version) = 1, written by hand: fromObject drops unknown enum values.
  t.equal(reason(() => decodeCdap(new Uint8Array([0x08, 18, 0x50, 1]))), 'unknown_opcode');
  t.equal(reason(() => decodeCdap(raw({ opCode: 4, objClass: 'x' }))), 'missing_field', 'no version');
  t.equal(reason(() => decodeCdap(raw({ opCode: 4, objClass: 'x', version: 2 }))), 'bad_version');
  t.equal(reason(() => decodeCdap(raw({ opCode: 4, version: 1 }))), 'missing_field', 'request without obj_class');
  t.equal(reason(() => decodeCdap(raw({ opCode: 5, objClass: 'x', version: 1 }))), 'missing_field', 'reply without result');
  t.equal(reason(() => decodeCdap(raw({ opCode: 0, version: 1, srcApp: { processName: 'a' }, destApp: { processName: 'b' } }))), 'missing_field', 'connect without abs_syntax');
  t.equal(reason(() => decodeCdap(raw({ opCode: 0, version: 1, absSyntax: 1, srcApp: { processName: 'a' } }))), 'missing_field', 'connect without dest');
  t.equal(reason(() => decodeCdap(raw({ opCode: 0, version: 1, absSyntax: 1, srcApp: { processName: 'a/b' }, destApp: { processName: 'b' } }))), 'bad_value', 'bad name');
  t.equal(reason(() => decodeCdap(raw({ opCode: 4, version: 1, objClass: 'x'.repeat(65) }))), 'bad_value', 'obj_class too long');
  t.equal(reason(() => encodeCdap({ op: 'M_WRITE', invokeId: 1, objClass: 'x', objName: '', value: new Uint8Array(MAX_CDAP_MESSAGE_BYTES) })), 'too_large', 'encode refuses oversize');
  t.equal(reason(() => encodeCdap({ op: 'M_WRITE', invokeId: -1, objClass: 'x', objName: '' })), 'bad_value');
  // Every truncation of a valid message is refused or decodes to something valid; never a crash.
  const full = encodeCdap({ op: 'M_CONNECT', invokeId: 77, absSyntax: 1, src: a, dst: b });
  for (let n = 0; n < full.length; n++) {
    const r = reason(() => decodeCdap(full.subarray(0, n)));
    t.ok(r === 'no error' || ['undecodable', 'missing_field', 'bad_value', 'unknown_opcode', 'bad_version'].includes(r), `truncated to ${n}: ${r}`);
  }
});

t.test('random bytes never throw anything but a CdapError (fast-check)', async (t) => {
  const decoders = [decodeCdap, decodeEnrollmentInfo, decodeEnrollmentChunk, decodeDirectoryUpdate, decodeFlowRequest, decodeOperationalStatus];
  const prop = fc.property(fc.uint8Array({ maxLength: 512 }), fc.nat(decoders.length - 1), (bytes, i) => {
    try {
      decoders[i]!(bytes);
    } catch (e) {
      if (!(e instanceof CdapError)) throw e;
    }
  });
  const r = fc.check(prop, { seed: SEED, numRuns: 3000 });
  t.notOk(r.failed, `seed ${SEED}: ${r.counterexample ? JSON.stringify(r.counterexample) : ''} ${String(r.errorInstance ?? '')}`);
  // Mutations of a valid message too: flip bytes of an encoded M_START.
  const base = encodeCdap({ op: 'M_START', invokeId: 5, objClass: 'enrollment', objName: '/e', value: encodeEnrollmentInfo({ address: 1, difName: 'd', lowerDifs: ['x'] }) });
  const mut = fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { maxLength: 6 }), (flips) => {
    const b = base.slice();
    for (const [i, v] of flips) b[i] = v;
    try {
      const m = decodeCdap(b);
      if ('value' in m && m.value) decodeEnrollmentInfo(m.value);
    } catch (e) {
      if (!(e instanceof CdapError)) throw e;
    }
  });
  const r2 = fc.check(mut, { seed: SEED, numRuns: 3000 });
  t.notOk(r2.failed, `seed ${SEED}: ${r2.counterexample ? JSON.stringify(r2.counterexample) : ''} ${String(r2.errorInstance ?? '')}`);
});
