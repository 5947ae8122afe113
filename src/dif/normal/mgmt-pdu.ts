/**
 * mgmt-pdu.ts — management PDUs of the normal DIF: a CDAP message (cdap.ts) behind a MGMT PCI.
 * Destination HOP_ADDRESS (0) means "the IPC process at the other end of this N-1 flow"
 * (enrollment, routing, directory floods); any other address is routed by the RMT (flow
 * allocation). Object classes of the messages that are not enrollment's own live here too.
 */
import { decodeCdap, encodeCdap, type CdapMessage, type CdapRequest } from './cdap.js';
import { DEFAULT_TTL, PCI_LEN, PduType, encodePci, newPci, type Pci } from './pci.js';

/** Routing messages (routing-msg.ts bytes) travel as M_WRITE of this class. */
export const ROUTING_CLASS = 'routing';
export const ROUTING_NAME = '/mgmt/routing';

/** The management message a routing message travels in, without its value (routing.ts sizes updates by it). */
export const ROUTING_ENVELOPE: Readonly<CdapRequest> = Object.freeze({ op: 'M_WRITE', invokeId: 0, objClass: ROUTING_CLASS, objName: ROUTING_NAME });

/** The management message carrying routing message bytes `value` (routing-msg.ts). */
export function routingMgmtMessage(value: Uint8Array): CdapRequest {
  return { ...ROUTING_ENVELOPE, value };
}

const pci: Pci = newPci();

/** One MGMT PDU from `src` to `dst` carrying `msg`. Throws CdapError for a message too large. */
export function encodeMgmtPdu(src: number, dst: number, msg: CdapMessage): Uint8Array {
  const body = encodeCdap(msg);
  const pdu = new Uint8Array(PCI_LEN + body.length);
  pci.type = PduType.MGMT;
  pci.flags = 0;
  pci.ttl = DEFAULT_TTL;
  pci.dstAddr = dst;
  pci.srcAddr = src;
  pci.dstCep = 0;
  pci.srcCep = 0;
  pci.qosId = 0;
  pci.length = body.length;
  pci.seqNum = 0;
  encodePci(pci, pdu);
  pdu.set(body, PCI_LEN);
  return pdu;
}

/** The CDAP message of a MGMT PDU whose header (`hlen` bytes, `p` decoded) the RMT read. Throws CdapError. */
export function decodeMgmtPdu(p: Pci, pdu: Uint8Array, hlen: number): CdapMessage {
  return decodeCdap(pdu.subarray(hlen, hlen + p.length));
}
