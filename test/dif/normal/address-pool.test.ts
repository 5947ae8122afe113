/**
 * address-pool.test.ts — the addresses an enroller hands out (address-pool.ts) and the enroller's
 * adjacency enrollment: blocks are disjoint and never hold a bound, own or routed address; a
 * proposed block is honoured when free; a range too small delegates none; a member adding an
 * adjacency keeps its address, and a claim of another member's address is refused.
 */
import t from 'tap';
import { AddressPool } from '../../../src/dif/normal/address-pool.js';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { Enrollee } from '../../../src/dif/normal/enrollment-enrollee.js';
import { Enroller } from '../../../src/dif/normal/enrollment-enroller.js';
import { defaultConstants } from '../../../src/dif/normal/enrollment.js';
import { link, pump } from './mgmt-harness.js';

t.test('blocks: disjoint, clear of bound, own and routed addresses; proposals; small ranges', async (t) => {
  const used = new Set<number>([60_000]);
  const p = new AddressPool({ first: 2, last: 65_535 }, () => 1, () => used);
  p.bind('x', 65_000);
  const b1 = p.delegate('m1')!;
  const b2 = p.delegate('m2')!;
  t.ok(b1 && b2, 'two blocks');
  t.ok(b1.last < b2.first || b2.last < b1.first, `disjoint: ${b1.first}..${b1.last}, ${b2.first}..${b2.last}`);
  for (const b of [b1, b2]) t.notOk((65_000 >= b.first && 65_000 <= b.last) || (60_000 >= b.first && 60_000 <= b.last), 'clear of the bound and the routed address');
  t.same(p.delegate('m1'), b1, 'the same member gets its block back');
  for (let i = 0; i < 200; i++) {
    const a = p.next()!;
    if (a === 1 || used.has(a) || (a >= b1.first && a <= b1.last) || (a >= b2.first && a <= b2.last)) t.fail(`address ${a} is inside a block, routed or own`);
    p.bind(`n${i}`, a);
  }
  t.pass('200 single addresses, none inside a block, routed or own');
  const q = new AddressPool({ first: 100, last: 199 }, () => 0);
  t.same(q.delegate('r', { first: 150, last: 159 }), { first: 150, last: 159 }, 'a free proposed block is honoured');
  t.notSame(q.delegate('s', { first: 155, last: 160 }), { first: 155, last: 160 }, 'an overlapping one is not');
  t.equal(new AddressPool({ first: 2, last: 40 }, () => 1).delegate('m'), undefined, 'a range too small to split delegates none');
});

t.test('adjacency enrollment: the member keeps its address; another member\'s is refused', async (t) => {
  const clock = new ManualClock();
  const K = defaultConstants(9000);
  const er = new Enroller({ clock, name: { processName: 'B' }, difName: 'n.DIF', address: 5, constants: K, pool: { first: 10, last: 20 }, content: () => ({ directory: [], neighbours: [], lowerFlows: [] }) });
  const join = (name: string, o: { proposedAddress?: number; keepAddress?: boolean }) => {
    const l = link(clock);
    er.attach(name + String(Math.random()), l.b);
    return pump(clock, new Enrollee({ clock, transport: l.a, name: { processName: name }, difName: 'n.DIF', constants: K, ...o }).enroll());
  };
  const c = await join('C', { proposedAddress: 900, keepAddress: true });
  t.equal(c.ok === true && c.value.address, 900, 'C keeps 900 (outside this enroller\'s pool)');
  const d = await join('D', { proposedAddress: 900, keepAddress: true });
  t.match(d.ok === false && String(d.error), /held by another member/, 'D cannot claim C\'s address');
  const own = await join('E', { proposedAddress: 5, keepAddress: true });
  t.match(own.ok === false && String(own.error), /this member's own/, 'nor the enroller\'s own');
  const f = await join('F', {});
  t.ok(f.ok === true && f.value.address >= 10 && f.value.address <= 20, 'a new member still gets one from the pool');
  const none = new Enroller({ clock, name: { processName: 'G' }, difName: 'n.DIF', address: 6, constants: K, content: () => ({ directory: [], neighbours: [], lowerFlows: [] }) });
  const l = link(clock);
  none.attach('p', l.b);
  const h = await pump(clock, new Enrollee({ clock, transport: l.a, name: { processName: 'H' }, difName: 'n.DIF', constants: K }).enroll());
  t.match(h.ok === false && String(h.error), /G has no addresses to assign/, 'a member with no range refuses a new member, saying why');
});
