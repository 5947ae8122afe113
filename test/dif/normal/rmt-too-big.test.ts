/**
 * rmt-too-big.test.ts — a PDU larger than its output port's max PDU (a route that changed to a
 * smaller N-1 link after the flow's max SDU was set) is dropped and counted by reason
 * (`dropTooBig`, metric reason too_big), whether relayed or sent locally; smaller PDUs pass.
 */
import t from 'tap';
import { PCI_LEN, encodePci, newPci, type Pci } from '../../../src/dif/normal/pci.js';
import { Rmt, type RmtPort } from '../../../src/dif/normal/rmt.js';

function pdu(p: Partial<Pci>, payload: number): Uint8Array {
  const pci = { ...newPci(), ...p, length: payload };
  const buf = new Uint8Array(PCI_LEN + payload);
  encodePci(pci, buf);
  return buf;
}

class Port implements RmtPort {
  sent: Uint8Array[] = [];
  constructor(readonly maxPdu?: number) {}
  send(p: Uint8Array): boolean {
    this.sent.push(p);
    return true;
  }
}

t.test('too big for the output link: dropped and counted, relayed or local', async (t) => {
  const rmt = new Rmt({ address: 2 });
  const small = new Port(1000);
  const input = new Port(9000);
  rmt.addPort(1, input);
  rmt.addPort(2, small);
  rmt.setForwardingTable(new Map([[3, 2]]));
  rmt.receive(1, pdu({ srcAddr: 1, dstAddr: 3 }, 2000));
  t.equal(small.sent.length, 0, 'a relayed 2032-byte PDU does not go onto the 1000-byte link');
  t.equal(rmt.stats.dropTooBig, 1, 'it is counted as too_big');
  rmt.receive(1, pdu({ srcAddr: 1, dstAddr: 3 }, 1000 - PCI_LEN));
  t.equal(small.sent.length, 1, 'one that fits is relayed');
  t.equal(rmt.send(pdu({ srcAddr: 2, dstAddr: 3 }, 1500)), true, 'a local send of a PDU too big for the route is taken (not retried forever)…');
  t.equal(rmt.stats.dropTooBig, 2, '…and counted as too_big');
  t.equal(small.sent.length, 1);
  const plain = new Port();
  rmt.addPort(3, plain);
  rmt.setForwardingTable(new Map([[3, 3]]));
  rmt.receive(1, pdu({ srcAddr: 1, dstAddr: 3 }, 5000));
  t.equal(plain.sent.length, 1, 'a port that states no limit takes any size');
});
