/**
 * normal-dif-path.ts — `npm run bench:normal-dif -- path` (NDIF_PATH=1): the normal DIF's own
 * data path per PDU, with nothing below it: VM1's EFCP + RMT → the host's RMT (relay) → VM2's
 * RMT + EFCP, joined by in-memory links that copy each PDU into a reused buffer (what a VMPI
 * ring costs) and hand the receiving RMT either a copy of its own (`rx: 'copy'`: what a shim
 * flow's receive queue gave an N-1 port before borrowed reads) or the ring slot itself, borrowed
 * for the call (`rx: 'borrow'`: N1Port over a BudgetedFlow now; the RMT copies only what it keeps,
 * so the relay hop copies nothing). Every hop's work runs, none of the shim DIF's or the IPC API's.
 *
 * Measures CPU µs per SDU for the flow-control and reliable cubes (the same QoS as
 * bench:normal-dif's series), and, as a yardstick, what one `Uint8Array.slice` of the PDU costs.
 * bench/normal-dif.ts prints these beside its topology table.
 */
import { realClock } from '../src/dif/normal/clock.js';
import { EfcpConnection, QOS_CUBES, type QosCube } from '../src/dif/normal/efcp/index.js';
import { PCI_LEN } from '../src/dif/normal/pci.js';
import { Rmt, type RmtPort } from '../src/dif/normal/rmt.js';

/** A link direction: PDUs wait (copied, as into a ring) until pumped into the peer RMT. */
class Link implements RmtPort {
  private readonly ring: Uint8Array[] = [];
  private readonly lens: number[] = [];
  private n = 0;
  private head = 0;
  constructor(
    private readonly slots: number,
    maxPdu: number,
    private readonly borrow: boolean,
  ) {
    for (let i = 0; i < slots; i++) this.ring.push(new Uint8Array(maxPdu));
  }
  to: { rmt: Rmt; port: number } | undefined;
  send(pdu: Uint8Array): boolean {
    if (this.n === this.slots) return false;
    const i = (this.head + this.n) % this.slots;
    this.ring[i]!.set(pdu);
    this.lens[i] = pdu.length;
    this.n++;
    return true;
  }
  /** Deliver what waits; returns how many. */
  pump(): number {
    const k = this.n;
    for (let j = 0; j < k; j++) {
      const i = this.head;
      this.head = (this.head + 1) % this.slots;
      this.n--;
      // copy: the receiving RMT owns what it is given (a shim flow's receive queue copied likewise);
      // borrow: the slot is lent for the call (the ring reuses it next time round).
      if (this.borrow) this.to!.rmt.receive(this.to!.port, this.ring[i]!.subarray(0, this.lens[i]), true);
      else this.to!.rmt.receive(this.to!.port, this.ring[i]!.slice(0, this.lens[i]));
    }
    return k;
  }
}

export type PathRx = 'copy' | 'borrow';

export interface PathSample {
  cube: string;
  rx: PathRx;
  size: number;
  sdus: number;
  cpuUsPerSdu: number;
  sliceUs: number;
}

/** Push SDUs VM1 → VM2 for `seconds` of wall time; CPU µs per SDU delivered. */
export function measurePath(cube: QosCube, size: number, seconds: number, rx: PathRx = 'borrow'): PathSample {
  const maxPdu = size + PCI_LEN + 64;
  const [a, h, b] = [2, 1, 3];
  const waiting = new Set<EfcpConnection>();
  const lowerReady = () => {
    for (const e of [...waiting]) {
      waiting.delete(e);
      e.lowerReady();
    }
  };
  const ra = new Rmt({ address: a, onWritable: lowerReady });
  const rh = new Rmt({ address: h });
  const rb = new Rmt({ address: b, onWritable: lowerReady });
  const borrow = rx === 'borrow';
  const links = [new Link(256, maxPdu, borrow), new Link(256, maxPdu, borrow), new Link(256, maxPdu, borrow), new Link(256, maxPdu, borrow)];
  // ports: a:1 ↔ h:1, h:2 ↔ b:1
  ra.addPort(1, links[0]!);
  rh.addPort(1, links[1]!);
  rh.addPort(2, links[2]!);
  rb.addPort(1, links[3]!);
  links[0]!.to = { rmt: rh, port: 1 };
  links[1]!.to = { rmt: ra, port: 1 };
  links[2]!.to = { rmt: rb, port: 1 };
  links[3]!.to = { rmt: rh, port: 2 };
  ra.setForwardingTable(new Map([[b, 1], [h, 1]]));
  rb.setForwardingTable(new Map([[a, 1], [h, 1]]));
  rh.setForwardingTable(new Map([[a, 1], [b, 2]]));
  let got = 0;
  let writable = true;
  // As the IPC process wires them (ipcp-flows.ts): the RMT copies the PDUs it keeps, and the
  // user (NormalFlow) copies a lent SDU it keeps.
  const common = { cube, clock: realClock, maxSdu: size + 16, sendPduCopies: true, deliverLends: true };
  const ea: EfcpConnection = new EfcpConnection({ ...common, localAddr: a, remoteAddr: b, localCep: 10, remoteCep: 20, sendPdu: (p) => ra.send(p, true) || (waiting.add(ea), false), deliver: () => {}, onDrain: () => (writable = true) });
  const eb: EfcpConnection = new EfcpConnection({ ...common, localAddr: b, remoteAddr: a, localCep: 20, remoteCep: 10, sendPdu: (p) => rb.send(p, true) || (waiting.add(eb), false), deliver: () => void got++ });
  ra.bindCep(10, { receivePdu: (p, pdu, _h, borrowed) => ea.receive(pdu, p, borrowed) });
  rb.bindCep(20, { receivePdu: (p, pdu, _h, borrowed) => eb.receive(pdu, p, borrowed) });
  const sdu = new Uint8Array(size);
  const cpu0 = process.cpuUsage();
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 64 && writable; i++) if (!ea.write(sdu)) writable = false;
    let moved = 1;
    while (moved > 0) {
      moved = 0;
      for (const l of links) moved += l.pump();
      for (const p of [1, 2]) rh.portDrained(p);
      ra.portDrained(1);
      rb.portDrained(1);
    }
  }
  const cpu = process.cpuUsage(cpu0);
  if (process.env.NDIF_DEBUG) console.log(cube.name, size, ea.stats, eb.stats);
  ea.close();
  eb.close();
  // Yardstick: one copy of a PDU into a fresh buffer (what a receive queue's private copy costs).
  const pdu = new Uint8Array(size + PCI_LEN);
  const n = 200_000;
  const c0 = process.cpuUsage();
  let keep = 0;
  for (let i = 0; i < n; i++) keep += pdu.slice().length;
  const c1 = process.cpuUsage(c0);
  if (keep < 0) console.log(keep);
  return { cube: cube.name, rx, size, sdus: got, cpuUsPerSdu: (cpu.user + cpu.system) / Math.max(1, got), sliceUs: (c1.user + c1.system) / n };
}

export { QOS_CUBES };
