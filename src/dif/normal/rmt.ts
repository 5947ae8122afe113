/**
 * rmt.ts — the normal DIF's Relaying and Multiplexing Task: what happens to a PDU between EFCP /
 * management and the N-1 flows ("ports").
 *
 * Owns: the PDU forwarding table (destination address → port id, installed whole by routing),
 * one bounded output queue per port (PDUs AND bytes) with backpressure both ways, relaying of PDUs
 * not addressed to this IPCP (TTL decremented in place, ECN marked when a queue is filling),
 * delivery of PDUs addressed to this IPCP (DT/CTRL → the EFCP bound to the destination CEP-id,
 * MGMT → management), and the counters of everything dropped, by reason.
 *
 * Ports: `RmtPort.send(pdu)` returns false when the N-1 flow is full and did NOT take the PDU; the
 * RMT keeps it queued and retries when the integration calls `portDrained(id)`. Locally originated
 * PDUs are never dropped silently: when the queue is at its bound `send` returns false and the RMT
 * calls `onWritable` once there is room again. Relayed PDUs that find a full queue are dropped and
 * counted (the sender's flow control / retransmission is the remedy; ECN warned it earlier).
 *
 * Buffers: a PDU handed to `send`/`sendOnPort`/`receive` belongs to the RMT afterwards (relaying
 * rewrites its TTL/ECN bytes in place and may queue it); callers must not reuse it. Except a PDU
 * sent as `borrowed` (EFCP's reused buffers): the RMT copies it when it keeps it (queued, or
 * delivered to this IPCP), and hands it to a port as it is: `RmtPort.send` must not keep a PDU
 * after it returns (N-1 flows' write() copies, every IPC process's does).
 *
 * Hot path: no allocation per PDU (one reused `Pci`; queues are rings); upper handlers are objects
 * registered once, not per-PDU closures.
 */
import { PCI_LEN, PCI_VERSION, PciError, PduType, decodePci, decrementTtl, markEcn, newPci, peekDstAddr, type Pci, type PciErrorReason } from './pci.js';
import { PduQueue } from './pdu-queue.js';

/** An N-1 flow as the RMT sees it. */
export interface RmtPort {
  /** Hand a PDU to the N-1 flow. false: full, the PDU was NOT taken; wait for `portDrained`. */
  send(pdu: Uint8Array): boolean;
}

/** The EFCP instance bound to a CEP-id (DT and CTRL PDUs addressed to it). */
export interface EfcpSink {
  /** `pdu[0, hlen)` is the header already decoded into `pci` (reused: copy what you keep). */
  receivePdu(pci: Pci, pdu: Uint8Array, hlen: number): void;
}

/** Layer management (MGMT PDUs addressed to this IPCP or to "this hop", address 0). */
export interface MgmtSink {
  receiveMgmt(pci: Pci, pdu: Uint8Array, hlen: number, fromPort: number): void;
}

export interface RmtOptions {
  /** This IPCP's address in the DIF (0 until enrolled). */
  address: number;
  /** Bound of each port's output queue, in PDUs (default 256). */
  queueMaxPdus?: number;
  /** Bound of each port's output queue, in bytes (default 1 MiB). */
  queueMaxBytes?: number;
  /** A PDU queued while the queue holds at least this fraction of either bound gets ECN (default 0.5). */
  ecnThreshold?: number;
  /** Called (once per refusal episode) when a port that refused a local PDU has room again. */
  onWritable?: () => void;
  mgmt?: MgmtSink;
}

export type RmtErrorCode = 'ERR_RMT_CONFIG' | 'ERR_RMT_NO_ROUTE' | 'ERR_RMT_PORT' | 'ERR_RMT_CEP' | 'ERR_RMT_PDU';

export class RmtError extends Error {
  override name = 'RmtError';
  constructor(
    readonly code: RmtErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The address that means "the IPCP at the other end of this N-1 flow" (enrollment, routing). */
export const HOP_ADDRESS = 0;

export interface RmtStats {
  /** PDUs received from ports. */
  rxPdus: number;
  /** PDUs handed to ports (taken by them). */
  txPdus: number;
  relayed: number;
  deliveredEfcp: number;
  deliveredMgmt: number;
  /** Relayed PDUs whose TTL ran out. */
  dropTtl: number;
  /** Relayed PDUs with no forwarding entry (or whose port is gone). */
  dropNoRoute: number;
  /** Relayed PDUs that found their output queue full. */
  dropQueueFull: number;
  /** DT/CTRL PDUs for a CEP-id nothing is bound to. */
  dropNoCep: number;
  /** MGMT PDUs while no management sink is set. */
  dropNoMgmt: number;
  /** Queued PDUs dropped because their port was removed. */
  dropPortDown: number;
  /** Malformed PDUs, by PciError reason. */
  dropMalformed: Record<PciErrorReason, number>;
  /** Local sends refused because the output queue was at its bound (backpressure, not a drop). */
  refusedLocal: number;
  /** Local sends with no route (thrown to the caller as ERR_RMT_NO_ROUTE). */
  noRouteLocal: number;
  /** Times a port said "full". */
  portStalls: number;
  ecnMarked: number;
  /** Exceptions thrown by an upper handler (contained, counted). */
  upperErrors: number;
}

interface PortState {
  readonly id: number;
  readonly port: RmtPort;
  readonly queue: PduQueue;
  /** The port said full; nothing is handed to it until `portDrained`. */
  blocked: boolean;
  /** A local send was refused here; call onWritable when there is room. */
  localWaiting: boolean;
}

export interface RmtSnapshot {
  address: number;
  forwarding: [number, number][];
  ports: { id: number; queuedPdus: number; queuedBytes: number; blocked: boolean }[];
  ceps: number[];
  stats: RmtStats;
}

function zeroMalformed(): Record<PciErrorReason, number> {
  return { truncated: 0, version: 0, type: 0, flags: 0, length: 0, field: 0 };
}

export class Rmt {
  address: number;
  readonly stats: RmtStats = {
    rxPdus: 0, txPdus: 0, relayed: 0, deliveredEfcp: 0, deliveredMgmt: 0, dropTtl: 0, dropNoRoute: 0, dropQueueFull: 0, dropNoCep: 0, dropNoMgmt: 0,
    dropPortDown: 0, dropMalformed: zeroMalformed(), refusedLocal: 0, noRouteLocal: 0, portStalls: 0, ecnMarked: 0, upperErrors: 0,
  };
  mgmt: MgmtSink | undefined;
  onWritable: (() => void) | undefined;
  private readonly ports = new Map<number, PortState>();
  private forwarding = new Map<number, number>();
  private readonly ceps = new Map<number, EfcpSink>();
  private readonly pci: Pci = newPci();
  private readonly maxPdus: number;
  private readonly maxBytes: number;
  private readonly ecnPdus: number;
  private readonly ecnBytes: number;

  constructor(opts: RmtOptions) {
    this.address = opts.address;
    this.maxPdus = opts.queueMaxPdus ?? 256;
    this.maxBytes = opts.queueMaxBytes ?? 1 << 20;
    const ecn = opts.ecnThreshold ?? 0.5;
    if (!(this.maxPdus >= 1) || !(this.maxBytes >= PCI_LEN) || !(ecn > 0 && ecn <= 1)) {
      throw new RmtError('ERR_RMT_CONFIG', `RMT queue bounds ${this.maxPdus} PDUs / ${this.maxBytes} B / ECN ${ecn} are invalid: need ≥1 PDU, ≥${PCI_LEN} B, 0 < ECN threshold ≤ 1`);
    }
    this.ecnPdus = Math.ceil(this.maxPdus * ecn);
    this.ecnBytes = Math.ceil(this.maxBytes * ecn);
    this.mgmt = opts.mgmt;
    this.onWritable = opts.onWritable;
  }

  // ---- configuration ------------------------------------------------------------------------

  addPort(id: number, port: RmtPort): void {
    if (this.ports.has(id)) throw new RmtError('ERR_RMT_PORT', `RMT port ${id} is already attached; remove it first`);
    this.ports.set(id, { id, port, queue: new PduQueue(this.maxPdus, this.maxBytes), blocked: false, localWaiting: false });
  }

  /** Detach a port (its N-1 flow is gone); its queued PDUs are dropped and counted. */
  removePort(id: number): void {
    const ps = this.ports.get(id);
    if (!ps) return;
    this.stats.dropPortDown += ps.queue.clear();
    this.ports.delete(id);
    if (ps.localWaiting) this.onWritable?.();
  }

  /** Replace the whole forwarding table (destination address → port id); routing calls this. */
  setForwardingTable(table: ReadonlyMap<number, number>): void {
    this.forwarding = new Map(table);
  }

  forwardingTable(): ReadonlyMap<number, number> {
    return this.forwarding;
  }

  bindCep(cep: number, sink: EfcpSink): void {
    if (this.ceps.has(cep)) throw new RmtError('ERR_RMT_CEP', `CEP-id ${cep} is already bound to an EFCP instance`);
    this.ceps.set(cep, sink);
  }

  unbindCep(cep: number): void {
    this.ceps.delete(cep);
  }

  // ---- down: from EFCP / management ---------------------------------------------------------

  /**
   * Send a locally originated PDU towards its destination address. true: taken (sent or queued).
   * false: the output queue is full, nothing was taken; `onWritable` fires when there is room.
   * A PDU for this IPCP's own address is delivered up directly. Throws RmtError ERR_RMT_NO_ROUTE
   * when no forwarding entry exists (the caller decides: fail the flow, or retry after routing).
   * `borrowed`: the caller reuses `pdu` once this returns (the RMT copies what it keeps).
   */
  send(pdu: Uint8Array, borrowed = false): boolean {
    if (pdu.length < PCI_LEN) throw new RmtError('ERR_RMT_PDU', `RMT send of a ${pdu.length}-byte PDU, shorter than the ${PCI_LEN}-byte PCI`);
    const dst = peekDstAddr(pdu);
    if (dst === this.address && dst !== HOP_ADDRESS) {
      this.deliverLocal(borrowed ? pdu.slice() : pdu, -1);
      return true;
    }
    const portId = this.forwarding.get(dst);
    const ps = portId === undefined ? undefined : this.ports.get(portId);
    if (!ps) {
      this.stats.noRouteLocal++;
      throw new RmtError('ERR_RMT_NO_ROUTE', `no route to address ${dst}: routing has no next hop for it (not enrolled yet, or the member left)`);
    }
    return this.enqueueLocal(ps, pdu, borrowed);
  }

  /** Send a PDU on one port, whatever its destination (management to a neighbour). Same contract as send. */
  sendOnPort(portId: number, pdu: Uint8Array): boolean {
    const ps = this.ports.get(portId);
    if (!ps) throw new RmtError('ERR_RMT_PORT', `RMT port ${portId} is not attached`);
    return this.enqueueLocal(ps, pdu);
  }

  private enqueueLocal(ps: PortState, pdu: Uint8Array, borrowed = false): boolean {
    if (pdu.length > this.maxBytes) throw new RmtError('ERR_RMT_PDU', `PDU of ${pdu.length} B can never fit the ${this.maxBytes}-byte output queue; the DIF's max SDU is set too high`);
    if (ps.queue.length === 0 && !ps.blocked) {
      if (ps.port.send(pdu)) {
        this.stats.txPdus++;
        return true;
      }
      this.stats.portStalls++;
      ps.blocked = true;
    }
    if (!ps.queue.fits(pdu.length)) {
      this.stats.refusedLocal++;
      ps.localWaiting = true;
      return false;
    }
    this.queue(ps, borrowed ? pdu.slice() : pdu);
    return true;
  }

  private queue(ps: PortState, pdu: Uint8Array): void {
    if (ps.queue.length >= this.ecnPdus || ps.queue.bytes + pdu.length > this.ecnBytes) {
      markEcn(pdu);
      this.stats.ecnMarked++;
    }
    ps.queue.push(pdu);
  }

  /** The port can take PDUs again: flush its queue until empty or full again. */
  portDrained(portId: number): void {
    const ps = this.ports.get(portId);
    if (!ps) return;
    ps.blocked = false;
    for (let pdu = ps.queue.peek(); pdu !== undefined; pdu = ps.queue.peek()) {
      if (!ps.port.send(pdu)) {
        this.stats.portStalls++;
        ps.blocked = true;
        break;
      }
      ps.queue.shift();
      this.stats.txPdus++;
    }
    if (ps.localWaiting && ps.queue.length < this.maxPdus && ps.queue.bytes < this.maxBytes) {
      ps.localWaiting = false;
      this.onWritable?.();
    }
  }

  // ---- up: from ports -----------------------------------------------------------------------

  /** A PDU arrived on port `fromPort`: relay it, or deliver it up. Never throws. */
  receive(fromPort: number, pdu: Uint8Array): void {
    this.stats.rxPdus++;
    if (pdu.length < PCI_LEN) {
      this.stats.dropMalformed.truncated++;
      return;
    }
    const dst = peekDstAddr(pdu);
    if (dst === this.address || dst === HOP_ADDRESS) {
      this.deliverLocal(pdu, fromPort);
      return;
    }
    // Relay fast path: only the bytes the RMT needs (version, TTL, dst); the destination decodes the rest.
    if (pdu[0] !== PCI_VERSION) {
      this.stats.dropMalformed.version++;
      return;
    }
    const portId = this.forwarding.get(dst);
    const ps = portId === undefined ? undefined : this.ports.get(portId);
    if (!ps) {
      this.stats.dropNoRoute++;
      return;
    }
    if (decrementTtl(pdu) === 0) {
      this.stats.dropTtl++;
      return;
    }
    if (ps.queue.length === 0 && !ps.blocked) {
      if (ps.port.send(pdu)) {
        this.stats.txPdus++;
        this.stats.relayed++;
        return;
      }
      this.stats.portStalls++;
      ps.blocked = true;
    }
    if (!ps.queue.fits(pdu.length)) {
      this.stats.dropQueueFull++;
      return;
    }
    this.queue(ps, pdu);
    this.stats.relayed++;
  }

  private deliverLocal(pdu: Uint8Array, fromPort: number): void {
    const pci = this.pci;
    let hlen: number;
    try {
      hlen = decodePci(pdu, pci);
    } catch (e) {
      if (e instanceof PciError) this.stats.dropMalformed[e.reason]++;
      else this.stats.upperErrors++;
      return;
    }
    try {
      if (pci.type === PduType.MGMT) {
        if (!this.mgmt) {
          this.stats.dropNoMgmt++;
          return;
        }
        this.stats.deliveredMgmt++;
        this.mgmt.receiveMgmt(pci, pdu, hlen, fromPort);
        return;
      }
      const sink = this.ceps.get(pci.dstCep);
      if (!sink) {
        this.stats.dropNoCep++;
        return;
      }
      this.stats.deliveredEfcp++;
      sink.receivePdu(pci, pdu, hlen);
    } catch {
      this.stats.upperErrors++;
    }
  }

  // ---- inspection ---------------------------------------------------------------------------

  queueLength(portId: number): { pdus: number; bytes: number } | undefined {
    const ps = this.ports.get(portId);
    return ps && { pdus: ps.queue.length, bytes: ps.queue.bytes };
  }

  snapshot(): RmtSnapshot {
    return {
      address: this.address,
      forwarding: [...this.forwarding].sort((a, b) => a[0] - b[0]),
      ports: [...this.ports.values()].map((p) => ({ id: p.id, queuedPdus: p.queue.length, queuedBytes: p.queue.bytes, blocked: p.blocked })),
      ceps: [...this.ceps.keys()].sort((a, b) => a - b),
      stats: { ...this.stats, dropMalformed: { ...this.stats.dropMalformed } },
    };
  }
}
