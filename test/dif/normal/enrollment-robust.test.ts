/**
 * enrollment-robust.test.ts — what a peer can send never breaks the management state machines:
 * (fast-check, seeded) random CDAP messages — random op codes, object classes and names, random
 * value bytes — fed to an Enroller, an Enrollee and a FlowAllocator never throw, and a real
 * enrollment still succeeds on the same enroller afterwards (its state stays consistent).
 */
import t from 'tap';
import fc from 'fast-check';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { CdapOp, type CdapMessage, type CdapOpName } from '../../../src/dif/normal/cdap.js';
import { CepAllocator } from '../../../src/dif/normal/cep-alloc.js';
import { Enrollee } from '../../../src/dif/normal/enrollment-enrollee.js';
import { Enroller } from '../../../src/dif/normal/enrollment-enroller.js';
import { defaultConstants, type CdapTransport } from '../../../src/dif/normal/enrollment.js';
import { FlowAllocator } from '../../../src/dif/normal/flow-alloc.js';
import { encodeEnrollmentInfo, encodeOperationalStatus } from '../../../src/dif/normal/cdap-objects.js';
import { link, pump } from './mgmt-harness.js';

const SEED = Number(process.env.FC_SEED ?? 777);
const K = defaultConstants(9000);
const OPS = Object.keys(CdapOp) as CdapOpName[];

const arbMsg: fc.Arbitrary<CdapMessage> = fc
  .record({
    op: fc.constantFrom(...OPS),
    invokeId: fc.oneof(fc.nat(5), fc.nat()),
    objClass: fc.constantFrom('enrollment', 'enrollment_chunk', 'operational_status', 'flow', 'x'),
    objName: fc.oneof(fc.constantFrom('/mgmt/enrollment', '/mgmt/enrollment/chunk/0', '/mgmt/enrollment/chunk/99999', '/fa/flows/5-1'), fc.string({ maxLength: 20 })),
    value: fc.option(
      fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.constant(encodeEnrollmentInfo({ address: 0, difName: 'n.DIF', lowerDifs: [], constants: K })),
        fc.constant(encodeOperationalStatus(true)),
      ),
      { nil: undefined },
    ),
    result: fc.integer({ min: -3, max: 1 }),
    name: fc.constantFrom('a', 'b', 'n.DIF', 'host'),
  })
  .map((r): CdapMessage => {
    if (r.op === 'M_CONNECT') return { op: r.op, invokeId: r.invokeId, absSyntax: 1, src: { processName: r.name }, dst: { processName: 'n.DIF' } };
    if (r.op === 'M_CONNECT_R') return { op: r.op, invokeId: r.invokeId, absSyntax: 1, src: { processName: r.name }, dst: { processName: 'x' }, result: r.result, reason: '' };
    const base = { invokeId: r.invokeId, objClass: r.objClass, objName: r.objName, ...(r.value ? { value: r.value } : {}) };
    if (r.op.endsWith('_R')) return { op: r.op as never, ...base, result: r.result, reason: 'r' };
    return { op: r.op as never, ...base };
  });

t.test('random messages never throw out of the state machines; a real enrollment still works', async (t) => {
  const prop = fc.asyncProperty(fc.array(fc.tuple(fc.nat(2), arbMsg, fc.nat(50)), { maxLength: 60 }), async (steps) => {
    const clock = new ManualClock();
    const er = new Enroller({ clock, name: { processName: 'host' }, difName: 'n.DIF', address: 1, constants: K, pool: { first: 10, last: 20 }, content: () => ({ directory: [], neighbours: [], lowerFlows: [] }) });
    const handlers: ((m: CdapMessage) => void)[] = [];
    const sink = (): CdapTransport => ({ send: () => {}, onReceive: (h) => void handlers.push(h) });
    er.attach(1, sink());
    er.attach(2, sink());
    new Enrollee({ clock, transport: sink(), name: { processName: 'vm' }, difName: 'n.DIF', constants: K, invokeIdBase: 0 }).enroll().catch(() => {});
    const fa = new FlowAllocator({ clock, localAddress: () => 1, lookup: () => 5, send: () => {}, onRequest: () => ({ accept: true, port: 3 }), ceps: new CepAllocator({ clock }) });
    for (const [to, msg, wait] of steps) {
      handlers[to]!(msg);
      fa.receive(5, msg);
      clock.advance(wait);
    }
    clock.advance(120_000);
    const l = link(clock);
    er.attach('real', l.b);
    const r = await pump(clock, new Enrollee({ clock, transport: l.a, name: { processName: 'late' }, difName: 'n.DIF', constants: K }).enroll());
    if (r.ok !== true) throw new Error(`enrollment after the noise failed: ${String((r as { error?: unknown }).error)}`);
  });
  const r = await fc.check(prop, { seed: SEED, numRuns: 150 });
  t.notOk(r.failed, `seed ${SEED}: ${r.counterexample ? JSON.stringify(r.counterexample).slice(0, 2000) : ''} ${String(r.errorInstance ?? '')}`);
});
