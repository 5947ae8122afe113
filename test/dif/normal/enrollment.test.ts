/**
 * enrollment.test.ts — the normal DIF's enrollment (enrollment-enrollee.ts, enrollment-enroller.ts)
 * over CDAP transports joined through the real codec on a ManualClock: success with the DIF's
 * state in several chunks, rejection (wrong DIF, mismatched constants, checked on both sides),
 * timeout after the documented retries, and success under seeded loss with idempotent answers.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Enrollee, type EnrolleeOptions } from '../../../src/dif/normal/enrollment-enrollee.js';
import { Enroller, type EnrollerOptions } from '../../../src/dif/normal/enrollment-enroller.js';
import { EnrollmentError, defaultConstants, type EnrollmentContent, type MemberInfo } from '../../../src/dif/normal/enrollment.js';
import { encodeEnrollmentInfo } from '../../../src/dif/normal/cdap-objects.js';
import { replyTo, type CdapMessage, type CdapRequest } from '../../../src/dif/normal/cdap.js';
import { link, pump } from './mgmt-harness.js';

const DIF = 'n.DIF';
const K = defaultConstants(9000);

function content(nDir = 3): EnrollmentContent {
  return {
    directory: Array.from({ length: nDir }, (_, i) => ({ app: { processName: `app-${i}`, processInstance: 'x'.repeat(20) }, address: 1 + (i % 5), seqnum: i + 1, removed: i % 7 === 6 })),
    neighbours: [{ name: { processName: 'host' }, address: 1, lowerDifs: ['shim-1'] }],
    lowerFlows: [new Uint8Array([1, 2, 3]), new Uint8Array(100).fill(7)],
  };
}

function enroller(clock: ManualClock, over: Partial<EnrollerOptions> = {}) {
  const events: string[] = [];
  const er = new Enroller({
    clock,
    name: { processName: 'host' },
    difName: DIF,
    address: 1,
    constants: K,
    lowerDifs: ['shim-1'],
    pool: { first: 10, last: 99 },
    content: () => content(),
    onEnrolled: (m: MemberInfo, port) => events.push(`enrolled ${m.name.processName} ${m.address} @${port}`),
    onLost: (m: MemberInfo, port, why) => events.push(`lost ${m.name.processName} @${port}: ${why}`),
    ...over,
  });
  return { er, events };
}

function enrollee(clock: ManualClock, transport: EnrolleeOptions['transport'], over: Partial<EnrolleeOptions> = {}) {
  return new Enrollee({ clock, transport, name: { processName: 'vm1' }, difName: DIF, constants: K, lowerDifs: ['shim-1'], invokeIdBase: 100, ...over });
}

t.test('enrollment succeeds and hands over the DIF state', async (t) => {
  const clock = new ManualClock();
  const { er, events } = enroller(clock);
  const l = link(clock);
  er.attach('p1', l.b);
  const ee = enrollee(clock, l.a);
  const r = await pump(clock, ee.enroll());
  t.equal(r.ok, true);
  if (r.ok !== true) return;
  t.equal(r.value.address, 10, 'first address of the pool');
  t.same(r.value.enroller, { processName: 'host' });
  t.same(r.value.directory, content().directory);
  t.same(r.value.neighbours, content().neighbours);
  t.same(r.value.lowerFlows, content().lowerFlows);
  t.equal(ee.state, 'enrolled');
  t.same(events, ['enrolled vm1 10 @p1']);
  t.same(er.memberList(), [{ name: { processName: 'vm1' }, address: 10, lowerDifs: ['shim-1'], lfdbMaxPdu: true }], 'the member said it reads LFDB link limits');
  t.same(
    l.log.map((x) => `${x.dir} ${x.msg.op}`),
    ['a→b M_CONNECT', 'b→a M_CONNECT_R', 'a→b M_START', 'b→a M_START_R', 'a→b M_READ', 'b→a M_READ_R', 'a→b M_STOP', 'b→a M_STOP_R', 'a→b M_START', 'b→a M_START_R'],
  );
  t.equal(ee.stats.retransmissions, 0);
  await t.rejects(ee.enroll(), { code: 'ERR_ENROLL_STATE' }, 'an Enrollee runs once');
});

t.test('a large DIF state travels in chunks under the CDAP size limit', async (t) => {
  const clock = new ManualClock();
  const { er } = enroller(clock, { content: () => content(3000) });
  const l = link(clock);
  er.attach(1, l.b);
  const r = await pump(clock, enrollee(clock, l.a).enroll());
  t.equal(r.ok, true);
  if (r.ok !== true) return;
  t.equal(r.value.directory.length, 3000);
  t.same(r.value.directory, content(3000).directory);
  const reads = l.log.filter((x) => x.msg.op === 'M_READ').length;
  t.ok(reads > 5, `${reads} chunks`);
});

t.test('wrong DIF name is refused with a reason, at connect or at start', async (t) => {
  const clock = new ManualClock();
  const { er } = enroller(clock);
  const l1 = link(clock);
  er.attach(1, l1.b);
  const r1 = await pump(clock, enrollee(clock, l1.a, { difName: 'other.DIF' }).enroll());
  t.equal(r1.ok, false);
  t.match((r1 as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_REJECTED', step: 'connect', message: /not other\.DIF/ });
  const l2 = link(clock);
  er.attach(2, l2.b);
  const r2 = await pump(clock, enrollee(clock, l2.a, { difName: 'other.DIF', enrollerName: { processName: 'host' } }).enroll());
  t.match((r2 as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_REJECTED', step: 'start', message: /wrong DIF.*n\.DIF.*other\.DIF/ });
  t.same(er.memberList(), []);
  t.equal(er.snapshot().members.length, 0, 'no address kept for a refused enrollee');
});

t.test('mismatched data-transfer constants are refused by the enroller, and by the enrollee', async (t) => {
  const clock = new ManualClock();
  const { er } = enroller(clock);
  const l = link(clock);
  er.attach(1, l.b);
  const r = await pump(clock, enrollee(clock, l.a, { constants: { ...K, maxPduSize: 1500, addressWidth: 2 } }).enroll());
  t.match((r as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_REJECTED', step: 'start', message: /addressWidth 2 ≠ 4.*maxPduSize 1500 ≠ 9000/ });
  // A lax peer that accepts anything: the enrollee's own check stops it, and it says so (M_RELEASE).
  const l2 = link(clock);
  l2.b.onReceive((m: CdapMessage) => {
    if (m.op === 'M_CONNECT') l2.b.send({ op: 'M_CONNECT_R', invokeId: m.invokeId, absSyntax: 1, src: { processName: 'lax' }, dst: m.src, result: 0, reason: '' });
    else if (m.op === 'M_START') l2.b.send(replyTo(m as CdapRequest, 0, '', encodeEnrollmentInfo({ address: 5, difName: DIF, lowerDifs: [], constants: { ...K, pciVersion: 2 } })));
  });
  const r2 = await pump(clock, enrollee(clock, l2.a).enroll());
  t.match((r2 as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_CONSTANTS', message: /pciVersion 1 ≠ 2/ });
  t.equal(l2.log.at(-1)?.msg.op, 'M_RELEASE');
});

t.test('no enroller: the enrollee gives up after 1 + retries attempts, timeoutMs apart', async (t) => {
  const clock = new ManualClock();
  const l = link(clock, { loss: 1 });
  const ee = enrollee(clock, l.a, { timeoutMs: 1000, retries: 4 });
  const r = await pump(clock, ee.enroll(), 60_000, 1);
  t.equal(r.ok, false);
  t.match((r as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_TIMEOUT', step: 'connect', message: /M_CONNECT after 5 attempts/ });
  t.equal(r.at, 5000, 'fails at 5 × timeoutMs');
  t.equal(l.counts.sent, 5);
  t.equal(ee.stats.retransmissions, 4);
  t.equal(clock.pending, 0, 'no timer left behind');
});

t.test('a lost step mid-way times out; the enroller drops the silent session and its address', async (t) => {
  const clock = new ManualClock();
  const { er } = enroller(clock, { sessionTimeoutMs: 10_000 });
  const l = link(clock);
  er.attach(1, l.b);
  const ee = enrollee(clock, l.a, { retries: 1 });
  const p = ee.enroll();
  clock.advance(3); // connect done, M_START delivered
  await new Promise<void>((r) => setImmediate(r));
  l.cut();
  const r = await pump(clock, p, 60_000);
  t.match((r as { error: EnrollmentError }).error, { code: 'ERR_ENROLL_TIMEOUT' });
  t.equal(er.snapshot().members.length, 1, 'address reserved while the session lives');
  clock.advance(10_000);
  t.equal(er.snapshot().members.length, 0, 'released after the session timeout');
  t.equal(er.stats.sessionTimeouts, 1);
});

t.test('under seeded loss every enrollment completes, and duplicates get the same answers', async (t) => {
  let dup = 0;
  let rtx = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const clock = new ManualClock();
    const { er } = enroller(clock, { content: () => content(800) });
    const l = link(clock, { loss: 0.3, seed, latencyMs: 3 });
    er.attach(1, l.b);
    // latency 3 ms, timeout 5 ms: some retransmissions cross their replies (duplicates at the enroller)
    const ee = enrollee(clock, l.a, { timeoutMs: 5, retries: 20 });
    const r = await pump(clock, ee.enroll(), 60_000, 1);
    if (r.ok !== true) {
      t.fail(`seed ${seed}: ${String((r as { error?: unknown }).error)}`);
      continue;
    }
    t.same(r.value.directory, content(800).directory, `seed ${seed}: complete state`);
    t.equal(er.memberList().length, 1);
    dup += er.stats.duplicates;
    rtx += ee.stats.retransmissions;
  }
  t.ok(rtx > 0 && dup > 0, `retransmissions ${rtx}, duplicates answered ${dup}`);
});

t.test('the N-1 flow goes away: the enrollee aborts, the enroller reports the member lost', async (t) => {
  const clock = new ManualClock();
  const { er, events } = enroller(clock);
  const l = link(clock);
  er.attach('p1', l.b);
  const ee = enrollee(clock, l.a);
  const p = ee.enroll();
  clock.advance(3);
  ee.abort('N-1 flow deallocated');
  const r = await pump(clock, p);
  t.match((r as { error: Error }).error, { code: 'ERR_ENROLL_ABORTED', message: /N-1 flow deallocated/ });
  t.equal(ee.snapshot().state, 'failed');
  const l2 = link(clock);
  er.attach('p2', l2.b);
  t.equal((await pump(clock, enrollee(clock, l2.a, { invokeIdBase: 500 }).enroll())).ok, true);
  er.flowLost('p2');
  // The half-done enrollment on p1 is dropped (vm1 was never a member: its reserved address goes
  // back to the pool); addresses are handed out round-robin, so vm1 now gets 11.
  t.same(events.slice(-2), ['enrolled vm1 11 @p2', 'lost vm1 @p2: N-1 flow lost']);
  t.same(er.memberList(), [], 'not counted while its flow is gone');
  t.match(er.snapshot().members, [{ name: 'vm1', address: 11, state: 'lost' }], 'but its address stays bound');
});

t.test('a retransmitted M_CONNECT or M_START gets the very same answer', async (t) => {
  const clock = new ManualClock();
  const { er } = enroller(clock);
  const l = link(clock);
  er.attach(1, l.b);
  const replies: CdapMessage[] = [];
  l.a.onReceive((m) => replies.push(m));
  const connect: CdapMessage = { op: 'M_CONNECT', invokeId: 40, absSyntax: 1, src: { processName: 'vm1' }, dst: { processName: DIF } };
  const start: CdapMessage = { op: 'M_START', invokeId: 41, objClass: 'enrollment', objName: '/mgmt/enrollment', value: encodeEnrollmentInfo({ address: 0, difName: DIF, lowerDifs: [], constants: K }) };
  for (const m of [connect, connect, start, start, connect]) {
    l.a.send(m);
    clock.advance(5);
  }
  t.equal(replies.length, 5);
  t.same(replies[1], replies[0], 'same M_CONNECT_R');
  t.same(replies[3], replies[2], 'same M_START_R (same address)');
  t.same(replies[4], replies[0], 'a late M_CONNECT copy does not restart the session');
  t.equal(er.stats.connects, 1);
  t.equal(er.stats.duplicates, 3);
  t.same(er.snapshot().sessions, [{ port: 1, state: 'started' }]);
});
