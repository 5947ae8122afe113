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
 * calls `onWritable` once there is room again.
 *
 * Relaying under overload is hop-by-hop backpressure (docs/NORMAL-DIF-IPCP.md, "Relaying under
 * overload"): a relayed PDU that finds its output queue at its bound is still queued, in a bounded
 * overdraft above it, and the port it came from is paused (`RmtPort.pause`: the N-1 flow stops being
 * read, so what follows waits under the N-1 flow's own bounds, and a flow-controlled N-1 flow closes
 * its window upstream). Paused ports resume when the queue is back to half its bound. So a flow that
 * respects its window is never dropped here, whatever the sum of the windows through the port; a
 * peer that ignores windows is held in its N-1 flow, not in this IPCP's memory. Against deadlock
 * (two relays each waiting for the other to read): a watchdog resumes the ports waiting on an output
 * that took nothing for `stallMs`; relayed PDUs for that stuck output are then dropped and counted
 * (`dropQueueFull`, `stuckEpisodes`) until it takes a PDU again. Relayed PDUs beyond the overdraft,
 * or on a port that cannot pause, are dropped and counted as before.
 *
 * Buffers: a PDU handed to `send`/`sendOnPort`/`receive` belongs to the RMT afterwards (relaying
 * rewrites its TTL/ECN bytes in place and may queue it); callers must not reuse it. Except a PDU
 * sent or received as `borrowed` (EFCP's reused buffers; an N-1 flow's receive buffer, valid only
 * during the call): the RMT copies it when it keeps it (queued, or given to management; the EFCP
 * is handed a borrowed PDU as such and copies only the payload it keeps), and
 * hands it to a port as it is: `RmtPort.send` must not keep a PDU after it returns (N-1 flows'
 * write() copies, every IPC process's does).
 *
 * Batches: `receiveBatch` takes the PDUs of one N-1 read (an SduBatch) in one loop; each EFCP sink
 * they reach is told where the batch begins and ends (EfcpSink.beginBatch/endBatch), so it answers
 * the batch with one control PDU. The loop stops early when the input port is paused meanwhile
 * (relay backpressure) and says how far it got: the port keeps the rest.
 *
 * Hot path: no allocation per PDU (one reused `Pci`; queues are rings); upper handlers are objects
 * registered once, not per-PDU closures.
 */
import type { SduBatch } from '../api.js';
import { PCI_LEN, PCI_VERSION, PciError, PduType, decodePci, decrementTtl, markEcn, newPci, peekDstAddr, type Pci, type PciErrorReason } from './pci.js';
import { realClock, type Clock, type TimerHandle } from './clock.js';
import { PduQueue } from './pdu-queue.js';

/** An N-1 flow as the RMT sees it. */
export interface RmtPort {
  /** Hand a PDU to the N-1 flow. false: full, the PDU was NOT taken; wait for `portDrained`. */
  send(pdu: Uint8Array): boolean;
  /**
   * Stop handing received PDUs to the RMT until `resume` (the relay's output queue is full). A port
   * may still deliver a PDU or two already on their way; the overdraft takes them. Optional: a port
   * without it is never paused, and its relayed PDUs past the overdraft are dropped and counted.
   */
  pause?(): void;
  resume?(): void;
  /** Largest PDU the port carries (read once, at addPort): a larger one is dropped and counted (`dropTooBig`). */
  readonly maxPdu?: number;
}

/** The EFCP instance bound to a CEP-id (DT and CTRL PDUs addressed to it). */
export interface EfcpSink {
  /**
   * `pdu[0, hlen)` is the header already decoded into `pci` (reused: copy what you keep).
   * `borrowed`: `pdu` is valid only during the call (copy the payload if you keep it); else it
   * is the sink's to keep.
   */
  receivePdu(pci: Pci, pdu: Uint8Array, hlen: number, borrowed: boolean): void;
  /**
   * Optional, in pairs: PDUs of one batch (receiveBatch) are coming / have come. The RMT calls
   * beginBatch before the first PDU of a batch it hands this sink and endBatch after the batch's
   * last (the EFCP sends one control PDU per batch then, not one per PDU).
   */
  beginBatch?(): void;
  endBatch?(): void;
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
  /**
   * Room above the bounds for relayed PDUs only, taken while the ports they came from are paused
   * (default 64 PDUs and the byte bound again). Past it relayed PDUs are dropped and counted.
   */
  overdraftPdus?: number;
  overdraftBytes?: number;
  /** An output queue that takes nothing for this long while ports wait on it is stuck: they resume (default 2000 ms). */
  stallMs?: number;
  clock?: Clock;
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
  /** Relayed PDUs that found their output queue full past its overdraft, or stuck. */
  dropQueueFull: number;
  /** Times a port was paused because a relayed PDU from it found its output queue at its bound. */
  relayPauses: number;
  /** Times an output queue took nothing for stallMs while ports waited on it (they resumed). */
  stuckEpisodes: number;
  /** DT/CTRL PDUs for a CEP-id nothing is bound to. */
  dropNoCep: number;
  /** MGMT PDUs while no management sink is set. */
  dropNoMgmt: number;
  /** Queued PDUs dropped because their port was removed. */
  dropPortDown: number;
  /** PDUs larger than their output port's max PDU (a route changed to a smaller link since the flow's max SDU was set). */
  dropTooBig: number;
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
  /** As an output: the input ports paused until this queue is back to half its bound. */
  readonly waiters: PortState[];
  /** As an output: PDUs the port took, at the watchdog's last look. */
  txAtCheck: number;
  /** As an output: PDUs the port took (the watchdog's measure of progress). */
  tx: number;
  /** As an output: took nothing for stallMs while ports waited; relayed overflow is dropped until it takes a PDU. */
  stuck: boolean;
  /** As an input: how many outputs it waits on (paused while > 0). */
  waitingOn: number;
  readonly maxPdu: number;
}

export interface RmtSnapshot {
  address: number;
  forwarding: [number, number][];
  ports: { id: number; queuedPdus: number; queuedBytes: number; blocked: boolean; paused: boolean; stuck: boolean }[];
  ceps: number[];
  stats: RmtStats;
}

/** What toPort() did with a PDU. */
const PORT_SENT = 0;
const PORT_DROPPED = 1;
const PORT_QUEUE = 2;
type PortOutcome = typeof PORT_SENT | typeof PORT_DROPPED | typeof PORT_QUEUE;

function zeroMalformed(): Record<PciErrorReason, number> {
  return { truncated: 0, version: 0, type: 0, flags: 0, length: 0, field: 0 };
}

export class Rmt {
  address: number;
  readonly stats: RmtStats = {
    rxPdus: 0, txPdus: 0, relayed: 0, deliveredEfcp: 0, deliveredMgmt: 0, dropTtl: 0, dropNoRoute: 0, dropQueueFull: 0, relayPauses: 0, stuckEpisodes: 0, dropNoCep: 0, dropNoMgmt: 0,
    dropPortDown: 0, dropTooBig: 0, dropMalformed: zeroMalformed(), refusedLocal: 0, noRouteLocal: 0, portStalls: 0, ecnMarked: 0, upperErrors: 0,
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
  private readonly overPdus: number;
  private readonly overBytes: number;
  private readonly stallMs: number;
  private readonly clock: Clock;
  /** Output ports with paused input ports waiting on them (the watchdog's list). */
  private readonly congested = new Set<PortState>();
  private watchdog: TimerHandle | undefined;
  /** Inside receiveBatch(): the sinks that were told beginBatch (told endBatch at its end). */
  private batching = false;
  private readonly batchSinks: EfcpSink[] = [];

  constructor(opts: RmtOptions) {
    this.address = opts.address;
    this.maxPdus = opts.queueMaxPdus ?? 256;
    this.maxBytes = opts.queueMaxBytes ?? 1 << 20;
    this.overPdus = opts.overdraftPdus ?? 64;
    this.overBytes = opts.overdraftBytes ?? this.maxBytes;
    this.stallMs = opts.stallMs ?? 2000;
    this.clock = opts.clock ?? realClock;
    const ecn = opts.ecnThreshold ?? 0.5;
    if (!(this.maxPdus >= 1) || !(this.maxBytes >= PCI_LEN) || !(ecn > 0 && ecn <= 1)) {
      throw new RmtError('ERR_RMT_CONFIG', `RMT queue bounds ${this.maxPdus} PDUs / ${this.maxBytes} B / ECN ${ecn} are invalid: need ≥1 PDU, ≥${PCI_LEN} B, 0 < ECN threshold ≤ 1`);
    }
    if (!(Number.isInteger(this.overPdus) && this.overPdus >= 0) || !(Number.isInteger(this.overBytes) && this.overBytes >= 0) || !(this.stallMs > 0)) {
      throw new RmtError('ERR_RMT_CONFIG', `RMT overdraft ${this.overPdus} PDUs / ${this.overBytes} B / stall ${this.stallMs} ms is invalid: need whole numbers ≥ 0 and a stall time > 0`);
    }
    this.ecnPdus = Math.ceil(this.maxPdus * ecn);
    this.ecnBytes = Math.ceil(this.maxBytes * ecn);
    this.mgmt = opts.mgmt;
    this.onWritable = opts.onWritable;
  }

  // ---- configuration ------------------------------------------------------------------------

  addPort(id: number, port: RmtPort): void {
    if (this.ports.has(id)) throw new RmtError('ERR_RMT_PORT', `RMT port ${id} is already attached; remove it first`);
    const queue = new PduQueue(this.maxPdus + this.overPdus, this.maxBytes + this.overBytes);
    this.ports.set(id, { id, port, queue, blocked: false, localWaiting: false, waiters: [], txAtCheck: 0, tx: 0, stuck: false, waitingOn: 0, maxPdu: port.maxPdu ?? Infinity });
  }

  /** Detach a port (its N-1 flow is gone); its queued PDUs are dropped and counted. */
  removePort(id: number): void {
    const ps = this.ports.get(id);
    if (!ps) return;
    this.stats.dropPortDown += ps.queue.clear();
    this.ports.delete(id);
    // As an output: whoever waited on it goes on. As an input: it waits on nothing any more.
    this.releaseWaiters(ps);
    for (const out of this.congested) {
      const i = out.waiters.indexOf(ps);
      if (i >= 0) out.waiters.splice(i, 1);
      if (out.waiters.length === 0) this.congested.delete(out);
    }
    ps.waitingOn = 0;
    if (ps.localWaiting) this.onWritable?.();
  }

  /** Stop the watchdog and let every paused port go (the IPC process is closing). */
  close(): void {
    for (const out of [...this.congested]) this.releaseWaiters(out);
    this.clock.clearTimer(this.watchdog);
    this.watchdog = undefined;
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
      this.deliverLocal(pdu, -1, borrowed);
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
    if (this.toPort(ps, pdu) !== PORT_QUEUE) return true;
    if (!this.underBound(ps, pdu.length)) {
      this.stats.refusedLocal++;
      ps.localWaiting = true;
      return false;
    }
    this.queue(ps, borrowed ? pdu.slice() : pdu);
    return true;
  }

  /**
   * The part of sending that local and relayed PDUs share: one larger than the port carries is
   * dropped and counted (PORT_DROPPED); with nothing queued before it and the port not blocked it
   * goes straight to the port (PORT_SENT); else the caller queues it (PORT_QUEUE; a refusal just
   * now marks the port blocked).
   */
  private toPort(ps: PortState, pdu: Uint8Array): PortOutcome {
    if (pdu.length > ps.maxPdu) {
      this.stats.dropTooBig++;
      return PORT_DROPPED;
    }
    if (ps.queue.length === 0 && !ps.blocked) {
      if (ps.port.send(pdu)) {
        this.stats.txPdus++;
        ps.tx++;
        return PORT_SENT;
      }
      this.stats.portStalls++;
      ps.blocked = true;
    }
    return PORT_QUEUE;
  }

  /** Would a PDU of `size` bytes fit under the queue's bounds (not counting the overdraft)? */
  private underBound(ps: PortState, size: number): boolean {
    return ps.queue.length < this.maxPdus && ps.queue.bytes + size <= this.maxBytes;
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
      ps.tx++;
    }
    if (ps.stuck && ps.tx !== ps.txAtCheck) ps.stuck = false;
    if (ps.waiters.length > 0 && ps.queue.length <= this.maxPdus >> 1 && ps.queue.bytes <= this.maxBytes >> 1) this.releaseWaiters(ps);
    if (ps.localWaiting && ps.queue.length < this.maxPdus && ps.queue.bytes < this.maxBytes) {
      ps.localWaiting = false;
      this.onWritable?.();
    }
  }

  // ---- relaying under overload: pause the input, resume at half the bound, watchdog ----------

  /** `input` waits on `out` (paused when it starts waiting on its first output). */
  private pauseFor(input: PortState, out: PortState): void {
    if (out.waiters.includes(input)) return;
    out.waiters.push(input);
    if (input.waitingOn++ === 0) {
      this.stats.relayPauses++;
      input.port.pause!();
    }
    if (!this.congested.has(out)) {
      this.congested.add(out);
      out.txAtCheck = out.tx;
    }
    if (this.watchdog === undefined) this.watchdog = this.clock.setTimer(this.stallMs, () => this.checkStalls());
  }

  private releaseWaiters(out: PortState): void {
    this.congested.delete(out);
    const waiters = out.waiters.splice(0);
    for (const w of waiters) if (--w.waitingOn === 0 && this.ports.get(w.id) === w) w.port.resume!();
  }

  /** Every stallMs while ports wait: an output that took nothing since the last look is stuck. */
  private checkStalls(): void {
    this.watchdog = undefined;
    for (const out of [...this.congested]) {
      if (out.tx === out.txAtCheck) {
        out.stuck = true;
        this.stats.stuckEpisodes++;
        this.releaseWaiters(out);
      } else {
        out.txAtCheck = out.tx;
      }
    }
    if (this.congested.size > 0) this.watchdog = this.clock.setTimer(this.stallMs, () => this.checkStalls());
  }

  // ---- up: from ports -----------------------------------------------------------------------

  /**
   * A PDU arrived on port `fromPort`: relay it, or deliver it up. Never throws. `borrowed`: `pdu`
   * is valid only during this call (the RMT copies it when it keeps it).
   */
  receive(fromPort: number, pdu: Uint8Array, borrowed = false): void {
    this.stats.rxPdus++;
    if (pdu.length < PCI_LEN) {
      this.stats.dropMalformed.truncated++;
      return;
    }
    const dst = peekDstAddr(pdu);
    if (dst === this.address || dst === HOP_ADDRESS) {
      this.deliverLocal(pdu, fromPort, borrowed);
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
    const r = this.toPort(ps, pdu);
    if (r === PORT_SENT) this.stats.relayed++;
    if (r !== PORT_QUEUE) return;
    if (!this.underBound(ps, pdu.length)) {
      // Over the bound: hold the sender back hop by hop (see the header), unless this output is stuck.
      const input = this.ports.get(fromPort);
      if (ps.stuck || !ps.queue.fits(pdu.length) || input?.port.pause === undefined || input.port.resume === undefined) {
        this.stats.dropQueueFull++;
        return;
      }
      this.pauseFor(input, ps);
    }
    this.queue(ps, borrowed ? pdu.slice() : pdu);
    this.stats.relayed++;
  }

  /**
   * The PDUs `batch[from, count)` arrived together on `fromPort`, each borrowed (valid only during
   * the call): receive() for each in one loop, the EFCP sinks reached told the batch's bounds.
   * Returns the index of the first PDU not taken: `batch.count`, or less when `fromPort` was
   * paused during the loop (relay backpressure): the caller keeps those and hands them over after
   * the port's resume(). Never throws.
   */
  receiveBatch(fromPort: number, batch: SduBatch, from = 0): number {
    const n = batch.count;
    const input = this.ports.get(fromPort);
    const outer = this.batching;
    this.batching = true;
    let i = from;
    try {
      for (; i < n; i++) {
        if (input !== undefined && input.waitingOn > 0) break;
        this.receive(fromPort, batch.sdu(i), true);
      }
    } finally {
      if (!outer) this.endBatch();
    }
    return i;
  }

  private endBatch(): void {
    this.batching = false;
    const sinks = this.batchSinks;
    // Not while iterating: an endBatch may send, and sending may deliver locally (own address).
    for (let k = 0; k < sinks.length; k++) {
      try {
        sinks[k]!.endBatch!();
      } catch {
        this.stats.upperErrors++;
      }
    }
    sinks.length = 0;
  }

  /**
   * Decode and hand up. A borrowed PDU is copied only for management (which may keep it); the
   * EFCP is told it is borrowed and copies just the payload of a DT PDU it keeps (none for CTRL
   * PDUs, duplicates or PDUs it drops): one allocation per received SDU at most.
   */
  private deliverLocal(pdu: Uint8Array, fromPort: number, borrowed: boolean): void {
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
        this.mgmt.receiveMgmt(pci, borrowed ? pdu.slice() : pdu, hlen, fromPort);
        return;
      }
      const sink = this.ceps.get(pci.dstCep);
      if (!sink) {
        this.stats.dropNoCep++;
        return;
      }
      this.stats.deliveredEfcp++;
      if (this.batching && sink.beginBatch !== undefined && !this.batchSinks.includes(sink)) {
        this.batchSinks.push(sink);
        sink.beginBatch();
      }
      sink.receivePdu(pci, pdu, hlen, borrowed);
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
      ports: [...this.ports.values()].map((p) => ({ id: p.id, queuedPdus: p.queue.length, queuedBytes: p.queue.bytes, blocked: p.blocked, paused: p.waitingOn > 0, stuck: p.stuck })),
      ceps: [...this.ceps.keys()].sort((a, b) => a - b),
      stats: { ...this.stats, dropMalformed: { ...this.stats.dropMalformed } },
    };
  }
}
