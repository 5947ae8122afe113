/**
 * ipcp.ts — the normal IPC process: one member of a normal DIF, offering the IPC API (api.ts) so
 * the IPC daemon serves it like any other IPC process, and reaching its N-1 DIFs only through the
 * IPC API of lower IPC processes (never a VMPI port or a shim DIF's internals).
 *
 * Owns: the assembly of the DIF's parts and their glue: N-1 flows as RMT ports (n1-port.ts),
 * registrations, the enrollment roles, and routing's view of neighbours. Management PDUs (CDAP
 * dispatched to enrollment, directory, routing and the flow allocator) are ipcp-mgmt.ts';
 * application flows (allocation, EFCP per flow, their end) ipcp-flows.ts'; their Flow objects
 * ipcp-flow.ts'; the N-1 flows this IPCP allocates and enrolls over, ipcp-links.ts'.
 *
 * Roles. The enroller is the DIF's first member: it holds the DIF's address pool. Any IPCP given
 * `lower` DIFs registers its name there and, once it has an address, accepts N-1 flows (one
 * enrollment session each): from members adding an adjacency (they keep their address), and from
 * new members if it has addresses to assign: the enroller, or a member with `acceptEnrollment`,
 * which is delegated a block of addresses at its own enrollment (docs/NORMAL-DIF-ENROLLMENT.md).
 * A member allocates an N-1 flow through `enroll.lower` to `enroll.enrollerName` and enrolls over
 * it, then one to each of its `neighbours`; each is retried every `retryMs` until it succeeds,
 * and again whenever its N-1 flow is lost. So the members and their N-1 flows form any graph.
 *
 * Loss. A lost N-1 flow (or missed keepalives) takes the neighbour down in routing; members that
 * become unreachable have their flows ended with cause 'port_down' and a reason naming the
 * member; every other flow carries on.
 *
 * Max SDU. A flow's max SDU is `maxPduSize` (a DIF constant, the same at every member) or the
 * smallest N-1 link on the route to its destination, whichever is smaller, minus the PCI: routing
 * floods each link's max PDU with the lower-flow database (routing.ts `pathMaxPdu`), and
 * allocateFlow() offers that limit (or refuses a QoS maxSdu above it, saying which path limits
 * it; an offer the application did not ask for the responder may lower to its route back's), so
 * a write above it is refused at the writer. `maxSdu` (the IPCP's) is the largest any
 * flow can get: `maxPduSize` or its largest N-1 flow, minus the PCI.
 *
 * Budgets: RMT queues (PDUs and bytes per port), EFCP queues per flow, rxQueueLimit SDUs per flow
 * before delivery pauses (the EFCP window then stops the sender), flows bounded by the flow
 * allocator's maxFlows; management PDUs that find no room are dropped and counted (every
 * management exchange retries on its own timer). docs/NORMAL-DIF-IPCP.md describes all of it.
 */
import { EventEmitter } from 'node:events';
import { DifError, type AllocateOptions, type DeallocationCause, type Flow, type FlowRequestHandler, type IpcProcess, type QosRequest, type Registration } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';
import { nameArg } from '../core/args.js';
import type { EnrollmentState, IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations } from '../core/registrations.js';
import { normalCounters } from './ipcp-counters.js';
import { realClock, type Clock } from './clock.js';
import { Directory, type DirectoryOptions } from './directory.js';
import type { AddressRange } from './cdap-objects.js';
import { defaultConstants, type CdapTransport } from './enrollment.js';
import type { EnrollmentResult } from './enrollment-enrollee.js';
import { Enroller } from './enrollment-enroller.js';
import type { CubeChoice } from './efcp/index.js';
import { IpcpFlows } from './ipcp-flows.js';
import { IpcpLinks, type LinkHost, type LinkTarget } from './ipcp-links.js';
import { MgmtPlane, type PortInfo } from './ipcp-mgmt.js';
import { N1Port } from './n1-port.js';
import { PCI_LEN } from './pci.js';
import { HOP_ADDRESS, Rmt } from './rmt.js';
import { Routing } from './routing.js';

export { REASON_UNKNOWN_APPLICATION } from './ipcp-flows.js';
export const DEFAULT_MAX_PDU_SIZE = 65536;

export interface NormalIpcpOptions {
  difName: string;
  /** This IPC process's name, registered in the lower DIFs (default `<difName>.<role>`). */
  name?: AppName | string;
  role: 'enroller' | 'member';
  /** Lower IPC processes whose DIFs this IPCP listens on (its name registered, N-1 flows accepted once it has an address). Enroller: required. */
  lower?: IpcProcess[];
  /** Member: where and to whom to enroll. */
  enroll?: { lower: IpcProcess; enrollerName: AppName | string };
  /** Member: enroll new members too (on `lower`), with a block of addresses its enroller delegates to it. */
  acceptEnrollment?: boolean;
  /** Further members to keep an N-1 adjacency with (after enrolling), each through a lower IPC process. */
  neighbours?: LinkTarget[];
  /** Enroller: its own address (default 1) and the pool it hands out (default 2..65535). */
  address?: number;
  pool?: AddressRange;
  /** The DIF's largest PDU (a DIF-wide constant, checked at enrollment). Default 65536. */
  maxPduSize?: number;
  clock?: Clock;
  /** Member: wait between enrollment attempts. Default 1000 ms. */
  retryMs?: number;
  /** SDUs waiting unread per flow before delivery pauses. Default 256. */
  rxQueueLimit?: number;
  /** Default allocateFlow() timeout. Default 15 000 ms. */
  allocateTimeoutMs?: number;
  /** Keepalive period / misses on N-1 flows (routing). Defaults 10 000 ms, 3. */
  keepaliveMs?: number;
  keepaliveMisses?: number;
  cube?: CubeChoice;
  /** RMT queue bounds per N-1 flow. */
  queueMaxPdus?: number;
  queueMaxBytes?: number;
  /** Directory soft state and bounds (directory.ts defaults: refresh 30 s, max age 150 s, 1024 names per member). */
  directory?: Pick<DirectoryOptions, 'refreshMs' | 'maxAgeMs' | 'maxEntries' | 'maxEntriesPerMember' | 'tombstoneMs'>;
}

export interface NormalIpcpEvents {
  /** This member has an address (enrolled, or re-enrolled). */
  enrolled: [address: number];
  /** An enrollment attempt failed (it is retried). */
  enrollFailed: [error: Error];
  flowAllocated: [flow: Flow];
  flowDeallocated: [flow: Flow, reason: string, cause: DeallocationCause];
}

export class NormalIpcp extends EventEmitter<NormalIpcpEvents> implements IpcProcess, ObservableIpcp {
  readonly ipcpType = 'normal' as const;
  readonly difName: string;
  readonly name: AppName;
  readonly role: 'enroller' | 'member';
  readonly rxQueueLimit: number;
  readonly stats = {
    mgmtTx: 0, mgmtRx: 0, mgmtBad: 0, mgmtDropped: 0, mgmtNoRoute: 0, n1Up: 0, n1Lost: 0, enrollAttempts: 0, enrollFailures: 0,
  };
  private readonly clock: Clock;
  private readonly maxPduSize: number;
  private addr = 0;
  private readonly rmt: Rmt;
  private readonly directory: Directory;
  private readonly mgmt: MgmtPlane;
  private readonly appFlows: IpcpFlows;
  private routing: Routing | undefined;
  private readonly enroller: Enroller | undefined;
  private readonly links: IpcpLinks;
  private readonly ports = new Map<number, PortInfo>();
  private nextN1 = 1;
  private readonly regs: Registrations<FlowRequestHandler>;
  private readonly lowerRegs: Registration[] = [];
  /** While an N-1 loss is being handled: its reason, for the flows it ends. */
  private lossReason: string | undefined;
  private closed = false;

  constructor(private readonly o: NormalIpcpOptions) {
    super();
    if (typeof o.difName !== 'string' || o.difName === '' || o.difName.length > 255) throw new DifError('invalid_argument', 'difName must be a non-empty string of at most 255 characters');
    if (o.role !== 'enroller' && o.role !== 'member') throw new DifError('invalid_argument', `role must be 'enroller' or 'member', not ${String(o.role)}`);
    this.difName = o.difName;
    this.role = o.role;
    this.name = nameArg(o.name ?? `${o.difName}.${o.role}`, 'IPC process');
    this.regs = new Registrations(this.difName);
    this.clock = o.clock ?? realClock;
    this.maxPduSize = o.maxPduSize ?? DEFAULT_MAX_PDU_SIZE;
    this.rxQueueLimit = o.rxQueueLimit ?? 256;
    this.rmt = new Rmt({ address: 0, clock: this.clock, queueMaxPdus: o.queueMaxPdus, queueMaxBytes: o.queueMaxBytes, mgmt: { receiveMgmt: (p, pdu, hlen, from) => this.mgmt.receive(p, pdu, hlen, from) }, onWritable: () => this.appFlows.lowerWritable() });
    this.directory = new Directory({
      clock: this.clock,
      flood: (entries, from) => this.mgmt.floodDirectory(entries, from),
      reachable: (a) => a === this.addr || this.rmt.forwardingTable().has(a),
      ...o.directory,
    });
    const self = this;
    this.mgmt = new MgmtPlane({
      get address() {
        return self.addr;
      },
      rmt: this.rmt,
      stats: this.stats,
      ports: this.ports,
      directory: this.directory,
      routing: () => this.routing,
      flowMessage: (src, m) => this.appFlows.fa.receive(src, m),
    });
    this.appFlows = new IpcpFlows({
      difName: this.difName,
      name: this.name,
      clock: this.clock,
      rmt: this.rmt,
      rxQueueLimit: this.rxQueueLimit,
      get address() {
        return self.addr;
      },
      get maxSdu() {
        return self.maxSdu;
      },
      pathMaxSdu: (addr: number) => this.pathMaxSdu(addr),
      allocateTimeoutMs: o.allocateTimeoutMs ?? 15_000,
      cube: o.cube,
      get closed() {
        return self.closed;
      },
      checkOpen: () => this.checkOpen(),
      lookup: (app) => this.directory.lookup(app),
      lostAt: (app) => this.directory.lostAt(app),
      registration: (app) => this.regs.get(app),
      sendMgmt: (dst, msg) => void this.mgmt.send(dst, msg),
      emit: (event: 'flowAllocated' | 'flowDeallocated', flow: Flow, reason?: string, cause?: DeallocationCause) => {
        if (event === 'flowAllocated') this.emit('flowAllocated', flow);
        else this.emit('flowDeallocated', flow, reason!, cause!);
      },
    });
    const constants = defaultConstants(this.maxPduSize);
    if (o.role === 'member' && !o.enroll) throw new DifError('invalid_argument', 'a member needs enroll: { lower, enrollerName }');
    if (o.role === 'enroller' || (o.lower?.length ?? 0) > 0) {
      this.enroller = new Enroller({
        clock: this.clock,
        name: this.name,
        difName: this.difName,
        address: 0,
        constants,
        pool: o.role === 'enroller' ? (o.pool ?? { first: 2, last: 0xffff }) : undefined,
        used: () => this.rmt.forwardingTable().keys(),
        content: () => ({ directory: this.directory.entries(), neighbours: [{ name: this.name, address: this.addr, lowerDifs: [] }], lowerFlows: [] }),
        onEnrolled: (m, port) => this.neighbourUp(Number(port), m.address, m.lfdbMaxPdu === true),
        onLost: (m, port, why) => this.neighbourGone(Number(port), m.address, why), // why: the N-1 flow's end, for the flows' reason
      });
    }
    this.links = new IpcpLinks(this.linkHost(), o.role === 'member' && o.enroll ? { lower: o.enroll.lower, name: o.enroll.enrollerName } : undefined, o.neighbours);
    if (o.role === 'enroller') this.becomeMember(o.address ?? 1);
    for (const lower of o.lower ?? []) this.listen(lower);
    this.links.start();
    if (this.addr !== 0) this.links.addressSet();
  }

  get address(): number {
    return this.addr;
  }

  /** Largest SDU any flow of this IPCP can carry: the DIF's max PDU or its largest N-1 flow's, minus the PCI (0 without N-1 flows). */
  get maxSdu(): number {
    let lower = 0;
    for (const p of this.ports.values()) lower = Math.max(lower, p.port.maxPdu);
    return Math.max(0, Math.min(this.maxPduSize, lower) - PCI_LEN);
  }

  /**
   * Largest SDU a flow to member `addr` can carry: the DIF's max PDU or the smallest N-1 link on
   * the route there (as routing knows it), minus the PCI. undefined: no route.
   */
  pathMaxSdu(addr: number): number | undefined {
    const path = this.routing?.pathMaxPdu(addr);
    if (path === undefined) return undefined;
    return Math.max(0, Math.min(this.maxPduSize, path) - PCI_LEN);
  }

  get isEnrolled(): boolean {
    return this.addr !== 0;
  }

  // ---- registration ---------------------------------------------------------------------------

  register(app: AppName | string, onFlowRequest: FlowRequestHandler): Registration {
    this.checkOpen();
    const reg = this.regs.add(app, onFlowRequest, (appName, key) => {
      if (this.addr !== 0) this.directoryRegister(appName);
      return { appName, key, handler: onFlowRequest };
    });
    return { appName: reg.appName, difName: this.difName, unregister: () => this.regs.get(reg.appName) === reg && this.unregister(reg.appName) };
  }

  unregister(app: AppName | string): void {
    const reg = this.regs.find(app);
    this.regs.remove(reg);
    this.directory.unregister(reg.appName);
    this.appFlows.cancelRequests(reg.key, 'application unregistered');
  }

  isRegistered(app: AppName | string): boolean {
    return this.regs.has(app);
  }

  private directoryRegister(app: AppName): void {
    try {
      this.directory.register(app);
    } catch (e) {
      throw new DifError('invalid_argument', `cannot register ${formatAppName(app)} in ${this.difName}: ${(e as Error).message}`, { cause: e });
    }
  }

  // ---- flows ---------------------------------------------------------------------------------

  allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}): Promise<Flow> {
    let q: QosRequest;
    try {
      q = this.pathQos(remoteApp, qos);
    } catch (e) {
      return Promise.reject(e);
    }
    // No max SDU asked for: the route's limit offered in `q` may be lowered by the responder.
    const open = typeof qos === 'object' && qos !== null && !qos.maxSdu;
    return this.appFlows.allocate(localApp, remoteApp, q, opts, open);
  }

  /**
   * The QoS asked for, with the path's limit on the max SDU: offered when none is asked for
   * (0), refused with the path named when more is. Anything else wrong is left to allocate()'s
   * checks (it says what).
   */
  private pathQos(remoteApp: AppName | string, qos: QosRequest): QosRequest {
    if (typeof qos !== 'object' || qos === null || this.closed) return qos;
    let where: number | undefined;
    try {
      where = this.directory.lookup(nameArg(remoteApp, 'remote application'));
    } catch {
      return qos;
    }
    const limit = where === undefined ? undefined : this.pathMaxSdu(where);
    if (limit === undefined || limit >= this.maxSdu) return qos;
    const asked = qos.maxSdu ?? 0;
    if (typeof asked !== 'number' || asked === 0) return { ...qos, maxSdu: limit };
    if (asked > limit) {
      throw new DifError('invalid_qos', `QoS maxSdu ${asked} exceeds the ${limit} bytes the route to member ${where} of ${this.difName} carries (its smallest N-1 link's max PDU, less the ${PCI_LEN}-byte PCI): ask for at most ${limit}`);
    }
    return qos;
  }

  flows(): Flow[] {
    return this.appFlows.flows();
  }

  // ---- N-1 flows ------------------------------------------------------------------------------

  private listen(lower: IpcProcess): void {
    try {
      this.lowerRegs.push(
        lower.register(this.name, (req) => {
          if (this.closed) return req.reject(`${formatAppName(this.name)} is closed`);
          if (this.addr === 0) return req.reject(`${formatAppName(this.name)} is not enrolled in ${this.difName} yet; try again later`);
          let flow: Flow;
          try {
            flow = req.accept();
          } catch {
            return;
          }
          const id = this.addPort(flow);
          if (id !== undefined) this.enroller!.attach(id, this.transport(id));
        }),
      );
    } catch (e) {
      throw new DifError('invalid_argument', `cannot register ${formatAppName(this.name)} in the lower DIF ${lower.difName}: ${(e as Error).message}`, { cause: e });
    }
  }

  private addPort(flow: Flow): number | undefined {
    if (flow.qos.maxSdu < PCI_LEN + 64) {
      flow.deallocate(`the N-1 flow's max SDU of ${flow.qos.maxSdu} bytes is too small for ${this.difName}`);
      return undefined;
    }
    const id = this.nextN1++;
    const port = new N1Port(id, flow, {
      receiveBatch: (pid, batch, from) => this.rmt.receiveBatch(pid, batch, from),
      receive: (pid, pdu) => this.rmt.receive(pid, pdu),
      drained: (pid) => this.rmt.portDrained(pid),
      lost: (pid, reason) => this.portLost(pid, reason),
    });
    this.ports.set(id, { port, neighbour: 0, enrollRx: undefined, early: [] });
    this.rmt.addPort(id, port);
    this.stats.n1Up++;
    return id;
  }

  private transport(id: number): CdapTransport {
    const maxPdu = this.ports.get(id)?.port.maxPdu;
    return {
      ...(maxPdu !== undefined ? { maxMessageBytes: maxPdu - PCI_LEN } : {}),
      send: (m) => void this.mgmt.send(HOP_ADDRESS, m, id),
      onReceive: (h) => {
        const p = this.ports.get(id);
        if (p) p.enrollRx = h;
      },
    };
  }

  private portLost(id: number, reason: string): void {
    const p = this.ports.get(id);
    if (!p) return;
    this.ports.delete(id);
    this.stats.n1Lost++;
    this.rmt.removePort(id);
    this.enroller?.flowLost(id, reason);
    if (p.neighbour !== 0) this.neighbourGone(id, p.neighbour, reason);
    this.links.portLost(id, reason);
  }

  private neighbourUp(id: number, addr: number, limits: boolean): void {
    const p = this.ports.get(id);
    if (!p || !this.routing) return;
    p.neighbour = addr;
    p.limits = limits;
    this.routing.neighbourUp(addr, id, 1, { maxPdu: p.port.maxPdu, limits });
    const early = p.early;
    p.early = [];
    for (const m of early) this.mgmt.neighbourMessage(p, id, m);
    // Registrations made since the new member's snapshot was taken.
    this.mgmt.sendDirectory(id, this.directory.entries());
  }

  private neighbourGone(id: number, addr: number, reason = 'N-1 flow lost'): void {
    const p = this.ports.get(id);
    if (p && p.neighbour === addr) p.neighbour = 0;
    // Another N-1 flow to the same neighbour (each end made one): routing moves over to it.
    for (const [other, q] of this.ports) {
      if (other !== id && q.neighbour === addr) {
        this.routing?.neighbourUp(addr, other, 1, { maxPdu: q.port.maxPdu, limits: q.limits === true });
        return;
      }
    }
    this.lossReason = reason;
    try {
      this.routing?.neighbourDown(addr, 'flow-lost');
    } finally {
      this.lossReason = undefined;
    }
  }

  // ---- enrollment (as the enrollee: ipcp-links.ts) ----------------------------------------------

  private linkHost(): LinkHost {
    const self = this;
    return {
      name: this.name,
      difName: this.difName,
      clock: this.clock,
      maxPduSize: this.maxPduSize,
      retryMs: this.o.retryMs ?? 1000,
      get closed() {
        return self.closed;
      },
      get address() {
        return self.addr;
      },
      wantsPool: this.o.acceptEnrollment === true && this.enroller !== undefined,
      stats: this.stats,
      pool: () => this.enroller?.addressRange,
      addPort: (flow) => this.addPort(flow),
      transport: (id) => this.transport(id),
      closePort: (id, reason) => this.ports.get(id)?.port.close(reason),
      neighboursBesides: (except) => {
        let n = 0;
        for (const [id, p] of this.ports) if (id !== except && p.neighbour !== 0) n++;
        return n;
      },
      joined: (id, r, peer) => this.joined(id, r, peer),
      adjacent: (id, r, peer, join) => {
        this.directory.applyRemote(r.directory, peer);
        if (join && this.o.acceptEnrollment && r.pool) this.enroller?.setPool(r.pool);
        this.neighbourUp(id, peer, r.lfdbMaxPdu === true);
        if (join) this.emit('enrolled', this.addr);
      },
      failed: (err) => {
        if (this.listenerCount('enrollFailed') > 0) this.emit('enrollFailed', err);
      },
    };
  }

  private joined(id: number, r: EnrollmentResult, enrollerAddr: number): void {
    // The DIF's directory first, then our address and registrations: a registration of ours
    // re-made after a restart goes above the DIF's old copy of it, not under it.
    this.directory.applyRemote(r.directory, enrollerAddr);
    this.becomeMember(r.address, id);
    if (this.o.acceptEnrollment) this.enroller?.setPool(r.pool);
    this.neighbourUp(id, enrollerAddr, r.lfdbMaxPdu === true);
    this.links.addressSet();
    this.emit('enrolled', r.address);
  }

  /**
   * This IPCP has `address` now: routing, the RMT and local registrations follow. A new address
   * (a re-join that got another) ends every other N-1 adjacency, which is then made again, so no
   * neighbour keeps routing to the old one.
   */
  private becomeMember(address: number, viaPort?: number): void {
    const old = this.addr;
    if (this.routing && this.routing.address !== address) {
      this.routing.stop();
      this.routing = undefined;
    }
    this.addr = address;
    this.rmt.address = address;
    this.enroller?.setAddress(address);
    if (old !== 0 && old !== address) {
      for (const [id, p] of [...this.ports]) if (id !== viaPort) p.port.close(`${formatAppName(this.name)}'s address changed from ${old} to ${address}`);
    }
    this.routing ??= new Routing({
      clock: this.clock,
      address,
      send: (id, msg) => this.mgmt.sendRouting(id, msg),
      onForwardingTable: (t) => this.rmt.setForwardingTable(t),
      onUnreachable: (addrs) => this.unreachable(addrs),
      onNeighbourDown: (_addr, id, cause) => {
        if (cause === 'keepalive') this.ports.get(id)?.port.close('keepalives missed');
      },
      keepaliveMs: this.o.keepaliveMs,
      keepaliveMisses: this.o.keepaliveMisses,
    });
    this.directory.setLocalAddress(address);
    for (const reg of this.regs.values()) this.directoryRegister(reg.appName);
  }

  /** Members routing no longer reaches: their flows end (the N-1 loss that caused it, if known, in the reason). */
  private unreachable(addrs: number[]): void {
    const why = this.lossReason;
    for (const a of addrs) {
      this.directory.memberUnreachable(a);
      this.appFlows.memberLost(a, `member ${a} of ${this.difName} is unreachable${why ? ` (${why})` : ''}`);
    }
  }

  get ipcpName(): string {
    return formatAppName(this.name);
  }

  /** The counters in the shape every IPC process shows (core/observe.ts). */
  counters(): IpcpCounters {
    let neighbours = 0;
    for (const p of this.ports.values()) if (p.neighbour !== 0) neighbours++;
    const rmtQueuedPdus = this.rmt.snapshot().ports.reduce((a, p) => a + p.queuedPdus, 0);
    const ds = this.directory.stats;
    return normalCounters(this.appFlows.stats, this.rmt.stats, this.stats, {
      neighbours, rmtQueuedPdus, enrolled: this.isEnrolled, efcp: this.appFlows.efcpTotals(),
      enrollment: this.enrollmentStates(),
      directory: { entries: this.directory.size, dropped: { full: ds.droppedFull, member_full: ds.droppedMemberFull } },
      efcpQueuedPdus: this.appFlows.efcpQueues(),
      lingeringFlows: this.appFlows.lingeringCount,
    });
  }

  /** Enrollment with each neighbour now: the members this IPCP enrolled, and those it enrolled with. */
  private enrollmentStates(): { neighbour: string; state: EnrollmentState }[] {
    const theirs = (this.enroller?.snapshot().members ?? []).map((m) => ({ neighbour: m.name, state: (m.state === 'enrolled' || m.state === 'lost' ? m.state : 'enrolling') as EnrollmentState }));
    return [...theirs, ...this.links.states()];
  }

  /** The operator's dump (core/observe.ts): the snapshot plus the N-1 flows and who is at their other end, and the EFCP totals. */
  inspect(): Record<string, unknown> {
    const lowerFlows = [...this.ports.values()].map(({ port: p, neighbour }) => ({ id: p.id, dif: p.flow.difName, portId: p.flow.portId, remoteApp: formatAppName(p.flow.remoteApp), maxSdu: p.flow.qos.maxSdu, neighbour }));
    // EFCP totals too (ended flows included): where a flow's losses, duplicates and stalls show.
    return { ...this.snapshot(), lowerFlows, efcp: this.appFlows.efcpTotals() };
  }

  snapshot(): Record<string, unknown> {
    return {
      difName: this.difName,
      name: formatAppName(this.name),
      role: this.role,
      address: this.addr,
      maxSdu: this.maxSdu,
      rmt: this.rmt.snapshot(),
      routing: this.routing?.snapshot(),
      directory: this.directory.snapshot(),
      flowAllocator: this.appFlows.fa.snapshot(),
      flows: { ...this.appFlows.stats },
      enroller: this.enroller?.snapshot(),
      links: this.links.snapshot(),
      stats: { ...this.stats },
    };
  }

  /** Deallocate every flow, give up the N-1 flows and lower registrations, stop all timers. Idempotent. */
  close(reason = 'IPC process closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.links.close(reason);
    this.appFlows.closeAll(reason);
    for (const p of [...this.ports.values()]) p.port.close(reason);
    for (const r of this.lowerRegs) r.unregister();
    // After the ports: their losses ran as usual; now the timers they set (address holds) go too.
    this.enroller?.close();
    this.routing?.stop();
    this.directory.stop();
    this.rmt.close();
    this.regs.clear();
  }

  private checkOpen(): void {
    if (this.closed) throw new DifError('closed', `${this.difName}'s IPC process is closed`);
  }
}
