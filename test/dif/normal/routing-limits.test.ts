/**
 * routing-limits.test.ts — path-aware max PDU in the normal DIF's routing (issue #12): each member
 * floods its N-1 links' max PDU in kind-3 LFDB updates to neighbours that read them, and
 * `pathMaxPdu(dst)` is the smallest link on the route. A member that does not read kind 3 (an
 * older one) only ever gets kind 1 and routing still converges; a route change to a smaller link
 * lowers the limit.
 */
import t from 'tap';
import { Lfdb } from '../../../src/dif/normal/lfdb.js';
import { MAX_ENTRIES_PER_LIMITS_MSG, RoutingMsgError, decodeRoutingMessage, encodeRoutingMessage } from '../../../src/dif/normal/routing-msg.js';
import { SimNet, sorted } from './routing-sim.js';

t.test('a chain: the limit of a destination is its route\'s smallest link, both ways', async (t) => {
  const net = new SimNet(7);
  for (let a = 1; a <= 4; a++) net.addNode(a);
  net.link(1, 2, 1, 1, { maxPdu: 9000 });
  net.link(2, 3, 1, 1, { maxPdu: 1500 });
  net.link(3, 4, 1, 1, { maxPdu: 9000 });
  net.settle();
  t.same(sorted(net.tables()), sorted(net.expected()), 'converged');
  const n1 = net.nodes.get(1)!;
  t.same([2, 3, 4].map((d) => n1.pathMaxPdu(d)), [9000, 1500, 1500], 'node 1: 9000 to its neighbour, 1500 past the small link');
  t.same([1, 2, 3].map((d) => net.nodes.get(4)!.pathMaxPdu(d)), [1500, 1500, 9000], 'node 4 the same, the other way');
  t.equal(n1.pathMaxPdu(99), undefined, 'no route: no limit');
  t.ok(net.sent.filter((m) => m.kind === 1).length === 0, 'members that all read limits exchange kind 3 only');
  t.same(n1.snapshot().lfdb.find((e) => e.from === 2 && e.to === 3)?.maxPdu, 1500, 'the snapshot shows each entry\'s limit');
});

t.test('an older member in the middle: it only gets kind 1, routing converges, known limits still count', async (t) => {
  const net = new SimNet(8);
  for (let a = 1; a <= 4; a++) net.addNode(a);
  net.link(1, 2, 1, 1, { maxPdu: 9000 });
  net.link(2, 3, 1, 1, { maxPdu: 1500, limits: [true, false] }); // 3 is old: it neither reads nor sends limits
  net.link(3, 4, 1, 1, { maxPdu: 9000, limits: [false, true] });
  net.settle();
  t.same(sorted(net.tables()), sorted(net.expected()), 'converged with the old member relaying');
  t.ok(net.sent.some((m) => m.to === 3 && m.kind === 1), 'the old member gets kind-1 updates');
  t.notOk(net.sent.some((m) => m.to === 3 && m.kind === 3), 'never kind 3');
  t.equal(net.nodes.get(3)!.stats.msgsBad, 0, 'nothing the old member could not read');
  t.equal(net.nodes.get(1)!.pathMaxPdu(4), 1500, 'node 1 still knows the 2–3 link limit from node 2\'s own entry');
});

t.test('the route moves to a smaller link: the limit follows', async (t) => {
  const net = new SimNet(9);
  for (let a = 1; a <= 3; a++) net.addNode(a);
  net.link(1, 2, 1, 1, { maxPdu: 9000 });
  net.link(2, 3, 1, 1, { maxPdu: 1500 });
  net.link(1, 3, 1, 1, { maxPdu: 9000 });
  net.settle();
  t.equal(net.nodes.get(1)!.pathMaxPdu(3), 9000, 'direct link');
  net.unlink(1, 3);
  net.settle();
  t.equal(net.nodes.get(1)!.forwardingTable().get(3), 1002, 'now through node 2');
  t.equal(net.nodes.get(1)!.pathMaxPdu(3), 1500, 'and limited by the 2–3 link');
});

t.test('kind 3 on the wire: round trip, bounds, and the merge learning a limit', async (t) => {
  const e = { from: 1, to: 2, cost: 3, seqnum: 7, up: true, maxPdu: 1472 };
  const b = encodeRoutingMessage({ kind: 'lfdb', entries: [e], limits: true });
  t.equal(b.length, 4 + 19);
  t.equal(b[1], 3);
  t.same(decodeRoutingMessage(b), { kind: 'lfdb', entries: [e], limits: true });
  const old = encodeRoutingMessage({ kind: 'lfdb', entries: [e] });
  t.same(decodeRoutingMessage(old), { kind: 'lfdb', entries: [{ from: 1, to: 2, cost: 3, seqnum: 7, up: true }] }, 'kind 1 leaves the limit out');
  const zero = encodeRoutingMessage({ kind: 'lfdb', entries: [{ from: 1, to: 2, cost: 3, seqnum: 7, up: true }], limits: true });
  t.same(decodeRoutingMessage(zero), { kind: 'lfdb', entries: [{ from: 1, to: 2, cost: 3, seqnum: 7, up: true }], limits: true }, 'unknown travels as 0 and comes back absent');
  const many = Array.from({ length: MAX_ENTRIES_PER_LIMITS_MSG + 1 }, (_, i) => ({ ...e, to: i + 2 }));
  t.throws(() => encodeRoutingMessage({ kind: 'lfdb', entries: many, limits: true }), RoutingMsgError);
  t.throws(() => decodeRoutingMessage(b.subarray(0, b.length - 1)), RoutingMsgError, 'a short kind-3 message is refused');

  const db = new Lfdb();
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: true }, 0), 'new');
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: true, maxPdu: 1472 }, 1), 'updated', 'the same seqnum with the limit teaches it');
  t.equal(db.merge({ from: 1, to: 2, cost: 1, seqnum: 5, up: true }, 2), 'refreshed', 'a copy without it does not unlearn it');
  t.equal(db.get(1, 2)?.maxPdu, 1472);
  t.equal(db.linkLimit(2, 1), 1472, 'a link limit is either direction\'s');
});
