/**
 * rmt.test.ts — the normal DIF's RMT (src/dif/normal/rmt.ts): relaying along chains with the TTL
 * decremented per relay, TTL expiry, no route, per-port queue bounds in PDUs and bytes with
 * backpressure to local senders and counted drops of relayed PDUs (ECN marked first), delivery by
 * type and CEP-id, malformed PDUs dropped by reason, and RMTs driven by converged routing tables.
 */
import t from 'tap';
import { DEFAULT_TTL, PCI_LEN, PciFlag, PduType, decodePci, encodePci, newPci, type Pci } from '../../../src/dif/normal/pci.js';
import { HOP_ADDRESS, Rmt, type EfcpSink, type MgmtSink, type RmtPort } from '../../../src/dif/normal/rmt.js';
import { PORT_BASE, SimNet } from './routing-sim.js';

function pdu(p: Partial<Pci>, payload = 0): Uint8Array {
  const pci = { ...newPci(), ...p, length: payload };
  const buf = new Uint8Array((pci.type >= 0xc0 ? PCI_LEN + 24 : PCI_LEN) + payload);
  encodePci(pci, buf);
  return buf;
}

/** An N-1 flow end: delivers to the peer RMT synchronously while open, refuses while `full`. */
class Wire implements RmtPort {
  full = false;
  sent: Uint8Array[] = [];
  peer: { rmt: Rmt; port: number } | undefined;
  send(p: Uint8Array): boolean {
    if (this.full) return false;
    this.sent.push(p);
    this.peer?.rmt.receive(this.peer.port, p);
    return true;
  }
}

class Sink implements EfcpSink, MgmtSink {
  got: { type: number; ttl: number; flags: number; src: number; cep: number; len: number; port?: number }[] = [];
  receivePdu(pci: Pci, p: Uint8Array, hlen: number): void {
    this.got.push({ type: pci.type, ttl: pci.ttl, flags: pci.flags, src: pci.srcAddr, cep: pci.dstCep, len: p.length - hlen });
  }
  receiveMgmt(pci: Pci, p: Uint8Array, hlen: number, fromPort: number): void {
    this.got.push({ type: pci.type, ttl: pci.ttl, flags: pci.flags, src: pci.srcAddr, cep: pci.dstCep, len: p.length - hlen, port: fromPort });
  }
}

/** RMTs 1..n in a line; port id at node a towards b is PORT_BASE + b; forwarding tables set by hand. */
function chain(n: number) {
  const rmts = new Map<number, Rmt>();
  const sinks = new Map<number, Sink>();
  for (let a = 1; a <= n; a++) {
    const s = new Sink();
    const r = new Rmt({ address: a, mgmt: s });
    r.bindCep(7, s);
    rmts.set(a, r);
    sinks.set(a, s);
  }
  for (let a = 1; a < n; a++) {
    const ab = new Wire();
    const ba = new Wire();
    ab.peer = { rmt: rmts.get(a + 1)!, port: PORT_BASE + a };
    ba.peer = { rmt: rmts.get(a)!, port: PORT_BASE + a + 1 };
    rmts.get(a)!.addPort(PORT_BASE + a + 1, ab);
    rmts.get(a + 1)!.addPort(PORT_BASE + a, ba);
  }
  for (let a = 1; a <= n; a++) {
    const tab = new Map<number, number>();
    for (let d = 1; d <= n; d++) if (d !== a) tab.set(d, PORT_BASE + (d > a ? a + 1 : a - 1));
    rmts.get(a)!.setForwardingTable(tab);
  }
  return { rmts, sinks };
}

t.test('relaying along a chain decrements the TTL once per relay', async (t) => {
  for (let n = 2; n <= 6; n++) {
    const { rmts, sinks } = chain(n);
    t.equal(rmts.get(1)!.send(pdu({ dstAddr: n, srcAddr: 1, dstCep: 7, ttl: DEFAULT_TTL }, 10)), true);
    t.same(sinks.get(n)!.got, [{ type: PduType.DT, ttl: DEFAULT_TTL - (n - 2), flags: 0, src: 1, cep: 7, len: 10 }], `${n} IPCPs, ${n - 2} relays: arrives with TTL ${DEFAULT_TTL} − ${n - 2}`);
    for (let a = 2; a < n; a++) t.equal(rmts.get(a)!.stats.relayed, 1, `IPCP ${a} relayed it`);
    for (let a = 1; a < n; a++) t.same(sinks.get(a)!.got, [], `nothing delivered at ${a}`);
  }
  // The case the issue names: source, 2 relays, destination.
  const { rmts, sinks } = chain(4);
  rmts.get(4)!.send(pdu({ dstAddr: 1, srcAddr: 4, dstCep: 7, ttl: 9 }));
  t.equal(sinks.get(1)!.got[0]!.ttl, 7, 'relayed through the two middle IPCPs: TTL − 2, in the other direction too');
});

t.test('TTL expiry: dropped and counted where it runs out', async (t) => {
  const { rmts, sinks } = chain(4);
  rmts.get(1)!.send(pdu({ dstAddr: 4, dstCep: 7, ttl: 2 }));
  t.equal(rmts.get(2)!.stats.relayed, 1, 'TTL 2 → 1 at the first relay');
  t.equal(rmts.get(3)!.stats.dropTtl, 1, 'TTL 1 → 0 at the second relay: dropped');
  t.same(sinks.get(4)!.got, []);
  rmts.get(1)!.send(pdu({ dstAddr: 4, dstCep: 7, ttl: 3 }));
  t.equal(sinks.get(4)!.got[0]!.ttl, 1, 'TTL 3 just makes it');
  rmts.get(1)!.send(pdu({ dstAddr: 4, dstCep: 7, ttl: 0 }));
  t.equal(rmts.get(2)!.stats.dropTtl, 1, 'TTL 0 never forwarded');
});

t.test('no route: relayed PDUs dropped and counted, local sends refused with a typed error', async (t) => {
  const { rmts } = chain(3);
  rmts.get(1)!.setForwardingTable(new Map([[2, PORT_BASE + 2], [99, PORT_BASE + 2]]));
  rmts.get(1)!.send(pdu({ dstAddr: 99, dstCep: 7 }));
  t.equal(rmts.get(2)!.stats.dropNoRoute, 1, 'the relay has no entry for 99');
  t.throws(() => rmts.get(1)!.send(pdu({ dstAddr: 3 })), { code: 'ERR_RMT_NO_ROUTE' }, 'source without a route');
  t.equal(rmts.get(1)!.stats.noRouteLocal, 1);
  rmts.get(2)!.removePort(PORT_BASE + 3);
  rmts.get(1)!.setForwardingTable(new Map([[3, PORT_BASE + 2]]));
  rmts.get(1)!.send(pdu({ dstAddr: 3 }));
  t.equal(rmts.get(2)!.stats.dropNoRoute, 2, 'an entry whose port is gone counts as no route');
  t.throws(() => rmts.get(1)!.sendOnPort(4242, pdu({ dstAddr: 3 })), { code: 'ERR_RMT_PORT' });
  t.throws(() => rmts.get(1)!.send(new Uint8Array(5)), { code: 'ERR_RMT_PDU' });
});

t.test('a borrowed PDU (EFCP reuses its buffer) is copied when the RMT keeps it, handed over as it is otherwise', async (t) => {
  const r = new Rmt({ address: 1 });
  const w = new Wire();
  r.addPort(5, w);
  r.setForwardingTable(new Map([[2, 5]]));
  const kept: Uint8Array[] = [];
  const lent: boolean[] = [];
  // The EFCP copies (only the payload of) a borrowed PDU it keeps; this sink copies all of it.
  r.bindCep(7, { receivePdu: (_p, p, _h, borrowed) => void (lent.push(borrowed), kept.push(borrowed ? p.slice() : p)) });
  const buf = pdu({ dstAddr: 2, seqNum: 1 }, 8);
  t.ok(r.send(buf, true));
  t.equal(w.sent[0], buf, 'the port took it at once: no copy');
  w.full = true;
  buf.set(pdu({ dstAddr: 2, seqNum: 2 }, 8));
  t.ok(r.send(buf, true), 'queued');
  buf.set(pdu({ dstAddr: 2, seqNum: 3 }, 8)); // the sender builds its next PDU in the same buffer
  w.full = false;
  r.portDrained(5);
  const seq = (p: Uint8Array) => {
    const pci = newPci();
    decodePci(p, pci);
    return pci.seqNum;
  };
  t.equal(seq(w.sent[1]!), 2, 'what was queued is what was sent, not what the buffer holds now');
  const local = pdu({ dstAddr: 1, dstCep: 7, seqNum: 4 }, 8);
  r.send(local, true);
  local.fill(0);
  t.same(lent, [true], 'delivered to this IPCP: the sink is told the PDU is borrowed (no copy by the RMT)');
  t.equal(seq(kept[0]!), 4, 'what the sink copied during the call is the PDU sent');
});

t.test('queue bounds: local senders get backpressure, never a silent drop; FIFO after the drain', async (t) => {
  let writable = 0;
  const r = new Rmt({ address: 1, queueMaxPdus: 4, queueMaxBytes: 10_000, onWritable: () => writable++ });
  const w = new Wire();
  r.addPort(5, w);
  r.setForwardingTable(new Map([[2, 5]]));
  w.full = true;
  const accepted: number[] = [];
  for (let i = 0; i < 6; i++) if (r.send(pdu({ dstAddr: 2, seqNum: i }))) accepted.push(i);
  t.same(accepted, [0, 1, 2, 3], 'the port said full: 4 PDUs queued, then refused');
  t.equal(r.stats.refusedLocal, 2);
  t.equal(r.stats.portStalls, 1);
  t.same(r.queueLength(5), { pdus: 4, bytes: 4 * PCI_LEN });
  t.equal(writable, 0);
  r.portDrained(5); // still full
  t.equal(writable, 0, 'no room yet, no wake-up');
  w.full = false;
  r.portDrained(5);
  t.equal(writable, 1, 'room again: the waiting writer is woken once');
  const out = newPci();
  t.same(w.sent.map((p) => (decodePci(p, out), out.seqNum)), [0, 1, 2, 3], 'in order');
  t.same(r.queueLength(5), { pdus: 0, bytes: 0 });
  t.equal(r.send(pdu({ dstAddr: 2, seqNum: 9 })), true, 'an empty queue sends straight through');
  t.equal(w.sent.length, 5);
  r.portDrained(5);
  t.equal(writable, 1, 'no refusal, no wake-up');

  const rb = new Rmt({ address: 1, queueMaxPdus: 100, queueMaxBytes: 1000 });
  const wb = new Wire();
  wb.full = true;
  rb.addPort(5, wb);
  rb.setForwardingTable(new Map([[2, 5]]));
  let n = 0;
  while (rb.send(pdu({ dstAddr: 2 }, 300 - PCI_LEN)) && n < 100) n++;
  t.equal(n, 3, 'the byte bound (1000 B) holds 3 PDUs of 300 B, long before the PDU bound');
  t.throws(() => rb.send(pdu({ dstAddr: 2 }, 2000)), { code: 'ERR_RMT_PDU' }, 'a PDU larger than the queue can ever hold');
  rb.removePort(5);
  t.equal(rb.stats.dropPortDown, 3, 'a removed port\'s queue is dropped and counted');
});

t.test('relayed PDUs: ECN marked past the threshold, dropped and counted when the queue is full', async (t) => {
  const relay = new Rmt({ address: 2, queueMaxPdus: 8, queueMaxBytes: 1 << 20, ecnThreshold: 0.5 });
  const out = new Wire();
  relay.addPort(3, out);
  relay.setForwardingTable(new Map([[3, 3]]));
  out.full = true;
  for (let i = 0; i < 12; i++) relay.receive(1, pdu({ dstAddr: 3, srcAddr: 1, seqNum: i }));
  t.equal(relay.stats.relayed, 8, '8 queued');
  t.equal(relay.stats.dropQueueFull, 4, 'the 4 that found the queue full are dropped and counted');
  t.equal(relay.stats.ecnMarked, 4, 'those queued behind 4 others are ECN-marked');
  out.full = false;
  relay.portDrained(3);
  const p = newPci();
  t.same(out.sent.map((b) => (decodePci(b, p), [p.seqNum, p.flags & PciFlag.ECN, p.ttl])), [0, 1, 2, 3, 4, 5, 6, 7].map((i) => [i, i >= 4 ? PciFlag.ECN : 0, DEFAULT_TTL - 1]));
});

t.test('delivery up: by type, by CEP-id, to management with the port; problems contained', async (t) => {
  const s = new Sink();
  const r = new Rmt({ address: 9, mgmt: s });
  r.bindCep(7, s);
  t.throws(() => r.bindCep(7, s), { code: 'ERR_RMT_CEP' });
  r.receive(3, pdu({ dstAddr: 9, dstCep: 7, srcAddr: 4 }, 5));
  r.receive(3, pdu({ dstAddr: 9, dstCep: 7, type: PduType.CTRL | 0x04 }));
  r.receive(3, pdu({ dstAddr: 9, type: PduType.MGMT }, 2));
  r.receive(4, pdu({ dstAddr: HOP_ADDRESS, type: PduType.MGMT }, 1));
  t.same(s.got.map((g) => [g.type, g.len, g.port]), [[PduType.DT, 5, undefined], [PduType.CTRL | 0x04, 0, undefined], [PduType.MGMT, 2, 3], [PduType.MGMT, 1, 4]], 'DT and CTRL to the EFCP on CEP 7, MGMT (also to "this hop") to management with its port');
  r.receive(3, pdu({ dstAddr: 9, dstCep: 8 }));
  t.equal(r.stats.dropNoCep, 1, 'nothing bound to CEP 8');
  r.unbindCep(7);
  r.receive(3, pdu({ dstAddr: 9, dstCep: 7 }));
  t.equal(r.stats.dropNoCep, 2, 'unbound');
  t.equal(r.send(pdu({ dstAddr: 9, type: PduType.MGMT })), true, 'a local PDU to our own address loops back up');
  t.equal(r.stats.deliveredMgmt, 3);
  const bad = new Rmt({ address: 9, mgmt: { receiveMgmt: () => { throw new Error('boom'); } } });
  bad.receive(1, pdu({ dstAddr: 9, type: PduType.MGMT }));
  t.equal(bad.stats.upperErrors, 1, 'a throwing handler is counted, not propagated');
  bad.mgmt = undefined;
  bad.receive(1, pdu({ dstAddr: 9, type: PduType.MGMT }));
  t.equal(bad.stats.dropNoMgmt, 1);
});

t.test('malformed PDUs are dropped and counted by reason', async (t) => {
  const s = new Sink();
  const r = new Rmt({ address: 9, mgmt: s });
  r.bindCep(0, s);
  r.setForwardingTable(new Map([[3, 1]]));
  r.addPort(1, new Wire());
  const good = () => pdu({ dstAddr: 9 }, 4);
  const cases: [string, (b: Uint8Array) => Uint8Array][] = [
    ['truncated', (b) => b.subarray(0, 20)],
    ['version', (b) => ((b[0] = 2), b)],
    ['type', (b) => ((b[1] = 0x11), b)],
    ['flags', (b) => ((b[2] = 0x02), b)],
    ['field', (b) => ((b[23] = 1), b)],
    ['length', (b) => b.subarray(0, b.length - 1)],
  ];
  for (const [reason, f] of cases) {
    r.receive(1, f(good()));
    t.equal(r.stats.dropMalformed[reason as 'truncated'], 1, reason);
  }
  const relayBad = pdu({ dstAddr: 3 });
  relayBad[0] = 7;
  r.receive(1, relayBad);
  t.equal(r.stats.dropMalformed.version, 2, 'the relay fast path checks the version too');
  t.same(s.got, [], 'nothing malformed reached the upper layer');
  t.same(r.snapshot().stats.dropMalformed, { truncated: 1, version: 2, type: 1, flags: 1, length: 1, field: 1 });
});

t.test('RMTs on converged routing: the host relays VM to VM', async (t) => {
  const net = new SimNet(11);
  for (let a = 1; a <= 4; a++) net.addNode(a);
  for (let vm = 2; vm <= 4; vm++) net.link(1, vm);
  net.settle();
  const rmts = new Map<number, Rmt>();
  const sinks = new Map<number, Sink>();
  for (const a of net.nodes.keys()) {
    const s = new Sink();
    const r = new Rmt({ address: a, mgmt: s });
    r.bindCep(7, s);
    r.setForwardingTable(net.nodes.get(a)!.forwardingTable());
    rmts.set(a, r);
    sinks.set(a, s);
  }
  for (let vm = 2; vm <= 4; vm++) {
    const up = new Wire();
    const down = new Wire();
    up.peer = { rmt: rmts.get(1)!, port: PORT_BASE + vm };
    down.peer = { rmt: rmts.get(vm)!, port: PORT_BASE + 1 };
    rmts.get(vm)!.addPort(PORT_BASE + 1, up);
    rmts.get(1)!.addPort(PORT_BASE + vm, down);
  }
  rmts.get(2)!.send(pdu({ dstAddr: 3, srcAddr: 2, dstCep: 7 }, 100));
  rmts.get(3)!.send(pdu({ dstAddr: 2, srcAddr: 3, dstCep: 7 }, 200));
  t.same(sinks.get(3)!.got.map((g) => [g.src, g.ttl, g.len]), [[2, DEFAULT_TTL - 1, 100]]);
  t.same(sinks.get(2)!.got.map((g) => [g.src, g.ttl, g.len]), [[3, DEFAULT_TTL - 1, 200]]);
  t.equal(rmts.get(1)!.stats.relayed, 2, 'the host relayed both');
  for (const r of net.nodes.values()) r.stop();
});

t.test('bad RMT configuration is refused', async (t) => {
  t.throws(() => new Rmt({ address: 1, queueMaxPdus: 0 }), { code: 'ERR_RMT_CONFIG' });
  t.throws(() => new Rmt({ address: 1, queueMaxBytes: 8 }), { code: 'ERR_RMT_CONFIG' });
  t.throws(() => new Rmt({ address: 1, ecnThreshold: 0 }), { code: 'ERR_RMT_CONFIG' });
  const r = new Rmt({ address: 1 });
  r.addPort(1, new Wire());
  t.throws(() => r.addPort(1, new Wire()), { code: 'ERR_RMT_PORT' }, 'a port id twice');
});
