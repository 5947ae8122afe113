/**
 * enrollment-reenroll.test.ts — the enroller's member and address handling: re-enrollment of a
 * member it still counts as a neighbour, on a new flow and on the same one (IRATI #462), many
 * members enrolling at once under loss getting distinct addresses, no reuse of a known member's
 * address, proposals, pool exhaustion, and the address hold after a lost flow.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Enrollee } from '../../../src/dif/normal/enrollment-enrollee.js';
import { Enroller, type EnrollerOptions } from '../../../src/dif/normal/enrollment-enroller.js';
import { defaultConstants, type MemberInfo } from '../../../src/dif/normal/enrollment.js';
import { link, pump, type Link } from './mgmt-harness.js';

const DIF = 'n.DIF';
const K = defaultConstants(9000);

function setup(over: Partial<EnrollerOptions> = {}) {
  const clock = new ManualClock();
  const events: string[] = [];
  const er = new Enroller({
    clock,
    name: { processName: 'host' },
    difName: DIF,
    address: 1,
    constants: K,
    pool: { first: 10, last: 99 },
    content: () => ({ directory: [], neighbours: [], lowerFlows: [] }),
    onEnrolled: (m: MemberInfo, port) => events.push(`enrolled ${m.name.processName} ${m.address} @${port}`),
    onLost: (m: MemberInfo, port, why) => events.push(`lost ${m.name.processName} @${port}: ${why}`),
    ...over,
  });
  let invoke = 1000;
  const join = (name: string, l: Link, extra: { proposedAddress?: number; timeoutMs?: number; retries?: number } = {}) =>
    new Enrollee({ clock, transport: l.a, name: { processName: name }, difName: DIF, constants: K, invokeIdBase: (invoke += 1000), ...extra }).enroll();
  return { clock, er, events, join };
}

t.test('#462: a member still counted as a neighbour re-enrolls on a new flow', async (t) => {
  const { clock, er, events, join } = setup();
  const l1 = link(clock);
  er.attach('p1', l1.b);
  const r1 = await pump(clock, join('vm1', l1));
  t.equal(r1.ok, true);
  // vm1's side of the flow breaks; the enroller has not noticed and still counts vm1 on p1.
  l1.cut();
  const l2 = link(clock);
  er.attach('p2', l2.b);
  const r2 = await pump(clock, join('vm1', l2));
  t.equal(r2.ok, true, 'the enroller accepts the new M_CONNECT');
  if (r1.ok !== true || r2.ok !== true) return;
  t.equal(r2.value.address, r1.value.address, 'same address back');
  t.same(events, ['enrolled vm1 10 @p1', 'lost vm1 @p1: re-enrolling on another flow', 'enrolled vm1 10 @p2']);
  t.same(er.snapshot().sessions, [{ port: 'p2', state: 'enrolled' }], 'the stale session is gone');
  t.equal(er.memberList().length, 1);
  t.equal(er.stats.reenrollments, 1);
});

t.test('#462: a member re-enrolls on the same flow (it restarted; the flow survived)', async (t) => {
  const { clock, er, events, join } = setup();
  const l = link(clock);
  er.attach(7, l.b);
  t.equal((await pump(clock, join('vm1', l))).ok, true);
  const r = await pump(clock, join('vm1', l));
  t.equal(r.ok, true, 'a new M_CONNECT resets the enrolled session');
  t.same(events, ['enrolled vm1 10 @7', 'lost vm1 @7: re-enrolling', 'enrolled vm1 10 @7']);
  t.equal(er.memberList().length, 1);
});

t.test('many members enroll at once under loss and get distinct addresses', async (t) => {
  const { clock, er, join } = setup();
  const results = [];
  for (let i = 0; i < 12; i++) {
    const l = link(clock, { loss: 0.2, seed: 100 + i, latencyMs: 2 });
    er.attach(i, l.b);
    results.push(join(`vm${i}`, l, { timeoutMs: 10, retries: 20 }));
  }
  const all = await pump(clock, Promise.all(results), 60_000, 1);
  t.equal(all.ok, true);
  if (all.ok !== true) return;
  const addrs = all.value.map((r) => r.address);
  t.equal(new Set(addrs).size, 12, `distinct: ${addrs.join(',')}`);
  t.ok(addrs.every((a) => a >= 10 && a <= 99 && a !== 1));
  t.equal(er.memberList().length, 12);
});

t.test('addresses: proposals, no reuse while a member is known, exhaustion, hold after loss', async (t) => {
  const { clock, er, join } = setup({ pool: { first: 10, last: 12 }, addressHoldMs: 60_000 });
  const ls = [link(clock), link(clock), link(clock), link(clock)];
  ls.forEach((l, i) => er.attach(i, l.b));
  const a = await pump(clock, join('a', ls[0]!, { proposedAddress: 12 }));
  t.equal(a.ok === true && a.value.address, 12, 'a free proposal is honoured');
  const b = await pump(clock, join('b', ls[1]!, { proposedAddress: 12 }));
  t.equal(b.ok === true && b.value.address, 10, 'a taken one is not');
  const c = await pump(clock, join('c', ls[2]!, { proposedAddress: 1 }));
  t.equal(c.ok === true && c.value.address, 11, "nor the enroller's own");
  // a's flow is lost: a is still known (routing may still reach it), so 12 is not handed out.
  er.flowLost(0);
  const d = await pump(clock, join('d', ls[3]!));
  t.equal(d.ok, false);
  t.match((d as { error: Error }).error, { code: 'ERR_ENROLL_REJECTED', message: /pool 10\.\.12 is exhausted/ });
  // a comes back within the hold: same address.
  const la = link(clock);
  er.attach('a2', la.b);
  const a2 = await pump(clock, join('a', la));
  t.equal(a2.ok === true && a2.value.address, 12);
  // b's flow is lost and the hold expires: its address returns to the pool.
  er.flowLost(1);
  clock.advance(60_000);
  const ld = link(clock);
  er.attach('d2', ld.b);
  const d2 = await pump(clock, join('d', ld));
  t.equal(d2.ok === true && d2.value.address, 10, "b's address after its hold");
  er.forgetMember({ processName: 'c' });
  t.same(er.snapshot().members.map((m) => m.address).sort(), [10, 12]);
});

t.test('requests outside a session, replies and unknown objects are answered or ignored, never thrown', async (t) => {
  const { clock, er } = setup();
  const l = link(clock);
  er.attach(1, l.b);
  const got: string[] = [];
  l.a.onReceive((m) => got.push(`${m.op} ${'result' in m ? m.result : ''}`));
  l.a.send({ op: 'M_START', invokeId: 1, objClass: 'enrollment', objName: '/mgmt/enrollment' });
  l.a.send({ op: 'M_STOP_R', invokeId: 2, objClass: 'enrollment', objName: '', result: 0, reason: '' });
  l.a.send({ op: 'M_CONNECT', invokeId: 3, absSyntax: 1, src: { processName: 'x' }, dst: { processName: DIF } });
  l.a.send({ op: 'M_START', invokeId: 4, objClass: 'enrollment', objName: '/mgmt/enrollment', value: new Uint8Array([0xff]) });
  l.a.send({ op: 'M_WRITE', invokeId: 5, objClass: 'policy', objName: '/x' });
  l.a.send({ op: 'M_READ', invokeId: 6, objClass: 'enrollment_chunk', objName: '/mgmt/enrollment/chunk/0' });
  l.a.send({ op: 'M_CONNECT', invokeId: 7, absSyntax: 9, src: { processName: 'x' }, dst: { processName: DIF } });
  clock.advance(10);
  t.same(got, ['M_START_R -1', 'M_CONNECT_R 0', 'M_START_R -1', 'M_WRITE_R -1', 'M_READ_R -1', 'M_CONNECT_R -1']);
  t.equal(er.stats.ignored, 1);
});

t.test('after enrollment, other management on the flow goes to the caller, not to enrollment', async (t) => {
  const other: string[] = [];
  const { clock, er } = setup({ onOtherMessage: (port, m) => other.push(`enroller@${port} ${m.op}`) });
  const l = link(clock);
  er.attach(1, l.b);
  const ee = new Enrollee({ clock, transport: l.a, name: { processName: 'vm1' }, difName: DIF, constants: K, onOtherMessage: (m) => other.push(`enrollee ${m.op}`) });
  t.equal((await pump(clock, ee.enroll())).ok, true);
  l.a.send({ op: 'M_CREATE', invokeId: 1, objClass: 'directory', objName: '/mgmt/directory' });
  l.b.send({ op: 'M_CREATE', invokeId: 2, objClass: 'directory', objName: '/mgmt/directory' });
  clock.advance(5);
  t.same(other, ['enroller@1 M_CREATE', 'enrollee M_CREATE']);
  t.equal(l.log.filter((x) => x.msg.op === 'M_CREATE_R').length, 0, 'not refused as "not part of enrollment"');
});
