/**
 * routing-split.test.ts — LFDB updates cut to fit the link (issue #12): a DIF whose lower-flow
 * database is larger than one N-1 SDU still converges over small links. The simulated links drop
 * every routing message whose MGMT PDU exceeds the link's max PDU, as the RMT does (too_big); on
 * main the updates were cut only by entry count (256 kind-1 entries: 3844 bytes; 64 kind-3: 1220),
 * so the new member behind the small link never got most of the database.
 */
import t from 'tap';
import { encodeMgmtPdu, ROUTING_CLASS, ROUTING_NAME } from '../../../src/dif/normal/mgmt-pdu.js';
import { MAX_ENTRIES_PER_LIMITS_MSG, MAX_ENTRIES_PER_MSG, encodeRoutingMessage } from '../../../src/dif/normal/routing-msg.js';
import { entriesPerUpdate } from '../../../src/dif/normal/routing.js';
import { SimNet, sorted } from './routing-sim.js';

const UDP = 1472;

/** A star of `leaves` members around member 1 over big links: 2 × leaves LFDB entries. */
function star(seed: number, leaves: number): SimNet {
  const net = new SimNet(seed);
  net.enforceMaxPdu = true;
  net.addNode(1);
  for (let a = 2; a < 2 + leaves; a++) {
    net.addNode(a);
    net.link(1, a, 1, 1, { maxPdu: 9000 });
  }
  net.settle();
  return net;
}

t.test('entriesPerUpdate: each update fits one MGMT PDU within the link, within the kind\'s maximum', async (t) => {
  for (const limits of [false, true]) {
    for (const maxPdu of [200, 600, 1000, UDP, 1500, 9000, 65536]) {
      const n = entriesPerUpdate(maxPdu, limits);
      const entries = Array.from({ length: n }, (_, i) => ({ from: 0xfffffff0, to: i + 1, cost: 0xffff, seqnum: 0xffffffff, up: true, maxPdu: 0xffffffff }));
      const size = (k: number) => encodeMgmtPdu(0xffffffff, 0, { op: 'M_WRITE', invokeId: 0, objClass: ROUTING_CLASS, objName: ROUTING_NAME, value: encodeRoutingMessage({ kind: 'lfdb', entries: entries.slice(0, k), ...(limits ? { limits: true } : {}) }) }).length;
      t.ok(size(n) <= maxPdu, `kind ${limits ? 3 : 1}, link ${maxPdu}: ${n} entries make ${size(n)} bytes`);
      const cap = limits ? MAX_ENTRIES_PER_LIMITS_MSG : MAX_ENTRIES_PER_MSG;
      if (n < cap) t.ok(size(n) + (limits ? 19 : 15) > maxPdu, `one more entry would not fit ${maxPdu}`);
    }
  }
  t.equal(entriesPerUpdate(undefined, false), MAX_ENTRIES_PER_MSG, 'unknown link: the kind\'s maximum');
  t.equal(entriesPerUpdate(60, true), 1, 'a link too small for one entry still gets one per update');
});

t.test('an older member behind a 1472-byte link gets kind-1 updates that fit it, and converges', async (t) => {
  const net = star(21, 150); // 300 entries: one kind-1 update of 256 would be 3844 bytes
  net.addNode(500);
  net.link(1, 500, 1, 1, { maxPdu: UDP, limits: [true, false] }); // 500 is old: reads kind 1 only
  net.settle();
  t.equal(net.tooBig, 0, 'no update was larger than its link');
  t.ok(net.largest.get('1>500')! <= UDP, `largest PDU to the old member: ${net.largest.get('1>500')} bytes`);
  t.ok(net.sent.filter((m) => m.from === 1 && m.to === 500 && m.kind === 1).length >= 4, 'the database went in several kind-1 updates');
  t.same(sorted(net.tables()), sorted(net.expected()), 'converged, the old member included');
  t.equal(net.nodes.get(500)!.snapshot().lfdb.length, 302, 'the old member holds the whole database');
});

t.test('kind-3 updates over a 600-byte link, with the new member relaying onward over another small link', async (t) => {
  const net = star(22, 40); // 80 entries, 1540 bytes of kind 3
  net.addNode(600);
  net.addNode(601);
  net.link(1, 600, 1, 1, { maxPdu: 600 });
  net.link(600, 601, 1, 1, { maxPdu: 300 });
  net.settle();
  t.equal(net.tooBig, 0, 'no update was larger than its link');
  t.ok(net.largest.get('1>600')! <= 600 && net.largest.get('600>601')! <= 300, 'every PDU fits its link');
  t.same(sorted(net.tables()), sorted(net.expected()), 'converged');
  t.equal(net.nodes.get(601)!.pathMaxPdu(2), 300, 'the far member knows the path limit (its own small link)');
  t.equal(net.nodes.get(2)!.pathMaxPdu(601), 300, 'and the DIF knows it');
});

t.test('a lost part costs only its own entries: the refresh brings them back', async (t) => {
  const net = star(23, 40);
  net.addNode(700);
  let dropped = 0;
  // Drop the first update to 700 on the way (the others still install theirs).
  const orig = net.nodes.get(700)!.receiveBytes.bind(net.nodes.get(700)!);
  net.nodes.get(700)!.receiveBytes = (port, bytes) => {
    if (dropped === 0 && bytes[1] === 3) {
      dropped++;
      return;
    }
    orig(port, bytes);
  };
  net.link(1, 700, 1, 1, { maxPdu: 600 });
  net.settle();
  t.equal(dropped, 1, 'one part lost');
  const partial = net.nodes.get(700)!.snapshot().lfdb.length;
  t.ok(partial > 2 && partial < 82, `the other parts installed their entries (${partial} of 82)`);
  net.run(31_000);
  t.same(sorted(net.tables()), sorted(net.expected()), 'converged after one refresh');
  t.equal(net.nodes.get(700)!.snapshot().lfdb.length, 82, 'the whole database');
});
