/**
 * mgmt-fit.test.ts — management messages cut to fit one N-1 SDU: every enrollment chunk (as the
 * M_READ_R that carries it) and every directory update (as the M_CREATE MGMT PDU that floods it)
 * fits the link it is cut for, for any mix of name lengths, and nothing is lost on the way.
 */
import t from 'tap';
import { encodeCdap, cdapValueBudget } from '../../../src/dif/normal/cdap.js';
import { decodeDirectoryUpdate, decodeEnrollmentChunk, type DirectoryEntry } from '../../../src/dif/normal/cdap-objects.js';
import { DIRECTORY_CLASS, DIRECTORY_NAME, directoryUpdateBudget, directoryUpdateValues, DEFAULT_DIRECTORY_UPDATE_BYTES } from '../../../src/dif/normal/directory.js';
import { CHUNK_CLASS, CHUNK_NAME_PREFIX, DEFAULT_CHUNK_BYTES, buildChunks, chunkBudget } from '../../../src/dif/normal/enrollment.js';
import { encodeMgmtPdu } from '../../../src/dif/normal/mgmt-pdu.js';
import { PCI_LEN } from '../../../src/dif/normal/pci.js';
import { mulberry32 } from './routing-sim.js';

function entries(seed: number, n: number): DirectoryEntry[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, (_, i) => ({
    app: { processName: `app-${i}-${'x'.repeat(Math.floor(rand() * 120))}`, ...(rand() < 0.5 ? { processInstance: String(i), entityName: 'e'.repeat(Math.floor(rand() * 40)) } : {}) },
    address: 1 + Math.floor(rand() * 0xfffffff),
    seqnum: Math.floor(rand() * 0xffffffff),
    removed: rand() < 0.2,
  }));
}

t.test('cdapValueBudget: the largest value that fits, exactly', async (t) => {
  const tpl = { op: 'M_CREATE', invokeId: 0, objClass: DIRECTORY_CLASS, objName: DIRECTORY_NAME } as const;
  for (const max of [40, 127, 128, 129, 200, 1000, 1440, 16384, 20000]) {
    const n = cdapValueBudget(tpl, max);
    t.ok(encodeCdap({ ...tpl, value: new Uint8Array(n) }).length <= Math.min(max, 16384), `${max}: a value of ${n} fits`);
    if (max < 16384) t.ok(encodeCdap({ ...tpl, value: new Uint8Array(n + 1) }).length > max, `${max}: one more byte does not`);
  }
  t.equal(cdapValueBudget(tpl, 5), 0, 'not even the envelope: 0');
});

for (const link of [200, 600, 1472, 9000]) {
  t.test(`a ${link}-byte link: enrollment chunks and directory updates each fit it`, async (t) => {
    const dir = entries(link, 400);
    const budget = chunkBudget({ send: () => {}, onReceive: () => {}, maxMessageBytes: link - PCI_LEN });
    t.ok(budget <= DEFAULT_CHUNK_BYTES, `chunk budget ${budget}`);
    const built = buildChunks({ directory: dir, neighbours: [{ name: { processName: 'host.n' }, address: 1, lowerDifs: [] }], lowerFlows: [] }, budget);
    t.ok(built, 'the state fits the chunk limit');
    let got = 0;
    let worst = 0;
    for (const [i, c] of built!.chunks.entries()) {
      const pdu = encodeMgmtPdu(1, 0, { op: 'M_READ_R', invokeId: 0xffffffff, objClass: CHUNK_CLASS, objName: `${CHUNK_NAME_PREFIX}${i}`, value: c, result: 0, reason: '' });
      worst = Math.max(worst, pdu.length);
      got += decodeEnrollmentChunk(c).directory.length;
    }
    t.ok(worst <= link, `${built!.chunks.length} chunks, the largest M_READ_R PDU ${worst} bytes`);
    t.equal(got + built!.skipped, 400, `every entry in a chunk or counted as skipped (${built!.skipped} too large for this link)`);
    if (link >= 600) t.equal(built!.skipped, 0, 'none skipped');

    const ub = directoryUpdateBudget(link);
    t.ok(ub <= DEFAULT_DIRECTORY_UPDATE_BYTES, `directory update budget ${ub}`);
    let n = 0;
    let big = 0;
    for (const v of directoryUpdateValues(dir, ub)) {
      const pdu = encodeMgmtPdu(1, 0, { op: 'M_CREATE', invokeId: 0, objClass: DIRECTORY_CLASS, objName: DIRECTORY_NAME, value: v });
      const k = decodeDirectoryUpdate(v).length;
      n += k;
      if (pdu.length > link && k > 1) big++;
    }
    t.equal(big, 0, 'no update of two or more entries is larger than the link');
    t.equal(n, 400, 'every entry sent');
  });
}
