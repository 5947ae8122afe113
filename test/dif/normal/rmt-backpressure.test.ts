/**
 * rmt-backpressure.test.ts — the RMT's relaying under overload (src/dif/normal/rmt.ts): a relayed
 * PDU that finds its output queue at its bound is queued in the overdraft and its input port is
 * paused, resumed at half the bound; a port that ignores the pause (or cannot pause) is held to
 * the bound plus the overdraft, the rest dropped and counted; an output that takes nothing for
 * stallMs lets its waiters go (the deadlock breaker); a ring of relays each waiting for the next
 * (the deadlock the watchdog exists for) makes progress again once it fires.
 */
import t from 'tap';
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { PCI_LEN, PduType, decodePci, encodePci, newPci, type Pci } from '../../../src/dif/normal/pci.js';
import { Rmt, type RmtPort } from '../../../src/dif/normal/rmt.js';

function pdu(p: Partial<Pci>, payload = 0): Uint8Array {
  const pci = { ...newPci(), type: PduType.DT, ...p, length: payload };
  const buf = new Uint8Array(PCI_LEN + payload);
  encodePci(pci, buf);
  return buf;
}

function seqOf(p: Uint8Array): number {
  const pci = newPci();
  decodePci(p, pci);
  return pci.seqNum;
}

/** An output N-1 flow that refuses while `full`, and records what it took. */
class Out implements RmtPort {
  full = true;
  sent: Uint8Array[] = [];
  send(p: Uint8Array): boolean {
    if (this.full) return false;
    this.sent.push(p);
    return true;
  }
}

/** An input N-1 flow that can pause; `ignore`: it keeps delivering anyway (a broken or hostile port). */
class In implements RmtPort {
  paused = false;
  pauses = 0;
  resumes = 0;
  send(): boolean {
    return true;
  }
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
    this.resumes++;
  }
}

function relay(opts: { clock?: ManualClock } = {}) {
  const r = new Rmt({ address: 2, queueMaxPdus: 8, queueMaxBytes: 1 << 20, overdraftPdus: 4, stallMs: 1000, clock: opts.clock });
  const out = new Out();
  const inp = new In();
  r.addPort(10, inp);
  r.addPort(20, out);
  r.setForwardingTable(new Map([[3, 20], [1, 10]]));
  return { r, out, inp };
}

t.test('past the bound a relayed PDU is queued and its input paused; resumed at half the bound; nothing dropped', async (t) => {
  const { r, out, inp } = relay();
  let seq = 0;
  // An honest input: it stops delivering once paused (here: we stop calling receive).
  while (!inp.paused && seq < 100) r.receive(10, pdu({ dstAddr: 3, srcAddr: 1, seqNum: seq++ }, 10));
  t.equal(seq, 9, '8 fill the queue, the 9th finds it at its bound and pauses the input');
  t.equal(r.stats.dropQueueFull, 0, 'nothing dropped');
  t.equal(r.stats.relayPauses, 1);
  t.equal(r.queueLength(20)!.pdus, 9, 'the 9th waits in the overdraft');
  t.equal(r.snapshot().ports.find((p) => p.id === 10)!.paused, true, 'the snapshot shows the input paused');
  // The output drains, but only 3 PDUs: 6 left > half the bound (4), still paused.
  out.full = false;
  const orig = out.send.bind(out);
  let budget = 3;
  out.send = (p) => budget-- > 0 && orig(p);
  r.portDrained(20);
  t.equal(inp.paused, true, 'still paused above half the bound');
  budget = 2;
  r.portDrained(20);
  t.equal(inp.paused, false, 'resumed at half the bound');
  t.equal(inp.resumes, 1);
  out.send = orig;
  r.portDrained(20);
  t.same(out.sent.map(seqOf), Array.from({ length: 9 }, (_, i) => i), 'all 9, in order');
});

t.test('a port that ignores the pause is held to the bound plus the overdraft; the rest is dropped and counted', async (t) => {
  const { r, inp } = relay();
  for (let i = 0; i < 1000; i++) r.receive(10, pdu({ dstAddr: 3, srcAddr: 1, seqNum: i }, 100));
  t.equal(inp.paused, true);
  t.equal(r.queueLength(20)!.pdus, 12, 'bound 8 + overdraft 4, never more');
  t.equal(r.stats.dropQueueFull, 1000 - 12, 'the rest dropped and counted');
  t.equal(r.stats.relayPauses, 1, 'paused once, not once per PDU');
  // A port without pause() is never paused: past the bound, its relayed PDUs are dropped.
  const r2 = new Rmt({ address: 2, queueMaxPdus: 8 });
  const o2 = new Out();
  r2.addPort(10, { send: () => true });
  r2.addPort(20, o2);
  r2.setForwardingTable(new Map([[3, 20]]));
  for (let i = 0; i < 20; i++) r2.receive(10, pdu({ dstAddr: 3 }));
  t.equal(r2.queueLength(20)!.pdus, 8, 'no overdraft for a port that cannot pause');
  t.equal(r2.stats.dropQueueFull, 12);
});

t.test('the byte bound counts too: a large PDU over the bytes pauses the input the same way', async (t) => {
  const r = new Rmt({ address: 2, queueMaxPdus: 100, queueMaxBytes: 4000, overdraftPdus: 4, overdraftBytes: 2000 });
  const out = new Out();
  const inp = new In();
  r.addPort(10, inp);
  r.addPort(20, out);
  r.setForwardingTable(new Map([[3, 20]]));
  for (let i = 0; i < 4; i++) r.receive(10, pdu({ dstAddr: 3 }, 1000 - PCI_LEN));
  t.equal(inp.paused, false, '4000 B: at the bound, not past it');
  r.receive(10, pdu({ dstAddr: 3 }, 1000 - PCI_LEN));
  t.equal(inp.paused, true, 'the 5th is past it: paused');
  r.receive(10, pdu({ dstAddr: 3 }, 1000 - PCI_LEN));
  r.receive(10, pdu({ dstAddr: 3 }, 1000 - PCI_LEN));
  t.equal(r.queueLength(20)!.bytes, 6000, 'bound + byte overdraft');
  t.equal(r.stats.dropQueueFull, 1, 'the one past the byte overdraft dropped');
});

t.test('an output that takes nothing for stallMs lets its waiters go; its overflow is dropped until it moves', async (t) => {
  const clock = new ManualClock();
  const { r, out, inp } = relay({ clock });
  for (let i = 0; i < 9; i++) r.receive(10, pdu({ dstAddr: 3, seqNum: i }));
  t.equal(inp.paused, true);
  clock.advance(999);
  t.equal(inp.paused, true, 'before stallMs: still waiting');
  clock.advance(1);
  t.equal(inp.paused, false, 'stuck for stallMs: the input reads again');
  t.equal(r.stats.stuckEpisodes, 1);
  t.equal(r.snapshot().ports.find((p) => p.id === 20)!.stuck, true);
  // Other traffic from the input flows again: here, PDUs to a stuck output are dropped and counted.
  r.receive(10, pdu({ dstAddr: 3, seqNum: 100 }));
  t.equal(inp.paused, false, 'not paused again by a stuck output');
  t.equal(r.stats.dropQueueFull, 1, 'dropped and counted');
  // The output moves: no longer stuck, and the next overflow pauses again.
  out.full = false;
  r.portDrained(20);
  t.equal(r.snapshot().ports.find((p) => p.id === 20)!.stuck, false, 'it took PDUs: not stuck');
  out.full = true;
  for (let i = 0; i < 9; i++) r.receive(10, pdu({ dstAddr: 3, seqNum: 200 + i }));
  t.equal(inp.paused, true, 'paused again');
  // An output that moves slowly but moves is not stuck.
  for (let k = 0; k < 5; k++) {
    let one = 1;
    out.full = false;
    const orig = Out.prototype.send;
    out.send = function (p) {
      return one-- > 0 && orig.call(this, p);
    };
    r.portDrained(20);
    clock.advance(1000);
  }
  t.equal(r.stats.stuckEpisodes, 1, 'a PDU per stallMs is progress: no new episode');
  r.removePort(20);
  t.equal(inp.paused, false, 'its output gone: the input goes on');
  r.close();
});

t.test('removing a paused input port forgets it; close() lets every paused port go', async (t) => {
  const { r, inp } = relay();
  for (let i = 0; i < 9; i++) r.receive(10, pdu({ dstAddr: 3 }));
  t.equal(inp.paused, true);
  r.removePort(10);
  t.equal(r.snapshot().ports.find((p) => p.id === 20)!.queuedPdus, 9, 'what it sent stays queued');
  const inp2 = new In();
  r.addPort(11, inp2);
  r.receive(11, pdu({ dstAddr: 3 }));
  t.equal(inp2.paused, true);
  r.close();
  t.equal(inp2.paused, false, 'close() resumed it');
});

t.test('a ring of relays each waiting for the next (a buffer cycle) moves again once the watchdog fires', async (t) => {
  // Three RMTs in a ring, each sending to the node two hops on: every relayed PDU crosses one
  // relay. An N-1 link delivers only while its receiving port is not paused, and holds at most
  // `cap` PDUs (a flow-controlled N-1 flow): so a paused port fills its link and the upstream's
  // queue — the cyclic wait hop-by-hop backpressure can build.
  const clock = new ManualClock();
  const n = 3;
  const cap = 4;
  interface Link extends RmtPort {
    fifo: Uint8Array[];
    paused: boolean;
  }
  const rmts: Rmt[] = [];
  const links: Link[] = []; // links[i]: i → i+1
  const delivered = [0, 0, 0];
  for (let i = 0; i < n; i++) {
    const r = new Rmt({ address: i + 1, queueMaxPdus: 8, overdraftPdus: 4, stallMs: 500, clock });
    r.bindCep(7, { receivePdu: () => void delivered[i]!++ });
    rmts.push(r);
  }
  for (let i = 0; i < n; i++) {
    const link: Link = {
      fifo: [],
      paused: false,
      send(p) {
        if (this.fifo.length >= cap) return false;
        this.fifo.push(p.slice());
        return true;
      },
    };
    links.push(link);
  }
  // Ports: at node i, port 1 = out to i+1 (link i); port 2 = in from i-1 (link i-1), pausable.
  for (let i = 0; i < n; i++) {
    const inLink = links[(i + n - 1) % n]!;
    rmts[i]!.addPort(1, links[i]!);
    rmts[i]!.addPort(2, {
      send: () => true,
      pause: () => void (inLink.paused = true),
      resume: () => void (inLink.paused = false),
    });
    rmts[i]!.setForwardingTable(new Map([[((i + 1) % n) + 1, 1], [((i + 2) % n) + 1, 1]]));
  }
  /** One round: every link delivers what its receiver reads; every node offers local PDUs. */
  const round = (): number => {
    let moved = 0;
    for (let i = 0; i < n; i++) {
      const link = links[i]!;
      const to = rmts[(i + 1) % n]!;
      while (link.fifo.length > 0 && !link.paused) {
        to.receive(2, link.fifo.shift()!);
        moved++;
      }
      rmts[i]!.portDrained(1);
    }
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 4; k++) {
        if (!rmts[i]!.send(pdu({ dstAddr: ((i + 2) % n) + 1, srcAddr: i + 1, dstCep: 7 }, 10))) break;
        moved++;
      }
    }
    return moved;
  };
  let rounds = 0;
  while (round() > 0 && rounds < 1000) rounds++;
  t.ok(rounds < 1000, `the ring locks up (after ${rounds} rounds): every link paused, every queue full`);
  t.ok(links.every((l) => l.paused), 'every link is paused');
  const before = delivered.reduce((a, b) => a + b, 0);
  clock.advance(500);
  t.equal(rmts.reduce((a, r) => a + r.stats.stuckEpisodes, 0) > 0, true, 'the watchdog found stuck outputs');
  for (let k = 0; k < 20; k++) round();
  const after = delivered.reduce((a, b) => a + b, 0);
  t.ok(after > before, `PDUs are delivered again (${before} → ${after})`);
  t.ok(rmts.some((r) => r.stats.dropQueueFull > 0), 'what broke the cycle was dropped and counted');
  for (const r of rmts) r.close();
});
