/**
 * ipcp-mgmt.ts — the management PDUs of a normal IPC process (ipcp.ts): CDAP messages in MGMT
 * PDUs (mgmt-pdu.ts) sent to a member or one hop over an N-1 port, and those received dispatched
 * to the flow allocator, routing, the directory or the enrollment of their N-1 port.
 *
 * Owns: that dispatch, the early-message buffer of an N-1 port whose neighbour is not up yet
 * (at most EARLY_LIMIT), directory flooding to the neighbours, and the management counters
 * (undecodable, dropped for no room, no route).
 */
import { CdapError, type CdapMessage } from './cdap.js';
import { decodeDirectoryUpdate } from './cdap-objects.js';
import { DIRECTORY_CLASS, DIRECTORY_NAME, directoryUpdateBudget, directoryUpdateValues, type Directory } from './directory.js';
import { FLOW_CLASS } from './flow-alloc.js';
import { decodeMgmtPdu, encodeMgmtPdu, routingMgmtMessage, ROUTING_CLASS } from './mgmt-pdu.js';
import type { N1Port } from './n1-port.js';
import type { Pci } from './pci.js';
import { HOP_ADDRESS, type Rmt } from './rmt.js';
import { encodeRoutingMessage, type RoutingMessage } from './routing-msg.js';
import type { Routing } from './routing.js';

export interface PortInfo {
  readonly port: N1Port;
  /** The neighbour's address once enrolled over this flow. */
  neighbour: number;
  /** The enrollment state machine's receive handler. */
  enrollRx: ((m: CdapMessage) => void) | undefined;
  /**
   * Routing and directory messages that arrived before this end took the neighbour up (the
   * enroller takes it up when the member's last request arrives, before the member sees the
   * reply): replayed then. At most EARLY_LIMIT.
   */
  early: CdapMessage[];
  /** The neighbour reads LFDB updates with link limits (said at enrollment). */
  limits?: boolean;
}

export const EARLY_LIMIT = 64;

export interface MgmtStats {
  mgmtTx: number;
  mgmtRx: number;
  mgmtBad: number;
  mgmtDropped: number;
  mgmtNoRoute: number;
}

/** What the management plane needs from its IPC process. */
export interface MgmtHost {
  /** 0 while not enrolled. */
  readonly address: number;
  readonly rmt: Rmt;
  readonly stats: MgmtStats;
  readonly ports: ReadonlyMap<number, PortInfo>;
  readonly directory: Directory;
  routing(): Routing | undefined;
  /** A flow allocator message from member `src`. */
  flowMessage(src: number, m: CdapMessage): void;
}

export type DirectoryEntries = Parameters<typeof directoryUpdateValues>[0];

export class MgmtPlane {
  constructor(private readonly h: MgmtHost) {}

  send(dst: number, msg: CdapMessage, portId?: number): boolean {
    let pdu: Uint8Array;
    try {
      pdu = encodeMgmtPdu(this.h.address, dst, msg);
    } catch {
      this.h.stats.mgmtBad++;
      return false;
    }
    try {
      const ok = portId === undefined ? this.h.rmt.send(pdu) : this.h.rmt.sendOnPort(portId, pdu);
      if (!ok) {
        this.h.stats.mgmtDropped++;
        return false;
      }
    } catch {
      this.h.stats.mgmtNoRoute++;
      return false;
    }
    this.h.stats.mgmtTx++;
    return true;
  }

  sendRouting(portId: number, msg: RoutingMessage): boolean {
    return this.send(HOP_ADDRESS, routingMgmtMessage(encodeRoutingMessage(msg)), portId);
  }

  floodDirectory(entries: DirectoryEntries, from: number | undefined): void {
    for (const [id, p] of this.h.ports) if (p.neighbour !== 0 && p.neighbour !== from) this.sendDirectory(id, entries);
  }

  sendDirectory(portId: number, entries: DirectoryEntries): void {
    // Cut to fit the N-1 flow: an update larger than its max SDU would be dropped (too_big).
    for (const value of directoryUpdateValues(entries, directoryUpdateBudget(this.h.ports.get(portId)?.port.maxPdu))) this.send(HOP_ADDRESS, { op: 'M_CREATE', invokeId: 0, objClass: DIRECTORY_CLASS, objName: DIRECTORY_NAME, value }, portId);
  }

  receive(p: Pci, pdu: Uint8Array, hlen: number, fromPort: number): void {
    let m: CdapMessage;
    try {
      m = decodeMgmtPdu(p, pdu, hlen);
    } catch (e) {
      if (!(e instanceof CdapError)) throw e;
      this.h.stats.mgmtBad++;
      return;
    }
    this.h.stats.mgmtRx++;
    const cls = 'objClass' in m ? m.objClass : '';
    const port = this.h.ports.get(fromPort);
    if (cls === FLOW_CLASS) {
      this.h.flowMessage(p.srcAddr, m);
    } else if (cls === ROUTING_CLASS || cls === DIRECTORY_CLASS) {
      if (!port) return;
      if (port.neighbour !== 0) this.neighbourMessage(port, fromPort, m);
      else if (port.early.length < EARLY_LIMIT) port.early.push(m);
      else this.h.stats.mgmtDropped++;
    } else if (port?.enrollRx) {
      port.enrollRx(m);
    } else {
      this.h.stats.mgmtBad++;
    }
  }

  /** A routing or directory message from the neighbour on port `id`. */
  neighbourMessage(p: PortInfo, id: number, m: CdapMessage): void {
    if (!('value' in m) || !m.value) {
      this.h.stats.mgmtBad++;
      return;
    }
    if (m.objClass === ROUTING_CLASS) {
      this.h.routing()?.receiveBytes(id, m.value);
      return;
    }
    try {
      this.h.directory.applyRemote(decodeDirectoryUpdate(m.value), p.neighbour);
    } catch {
      this.h.stats.mgmtBad++;
    }
  }
}
