/**
 * ipcp.ts — the normal IPC process: one member of a normal DIF, offering the IPC API (api.ts) so
 * the IPC daemon serves it like any other IPC process, and reaching its N-1 DIFs only through the
 * IPC API of lower IPC processes (never a VMPI port or a shim DIF's internals).
 *
 * Owns: the assembly of the DIF's parts and their glue: N-1 flows as RMT ports (n1-port.ts), MGMT
 * PDUs carrying CDAP (mgmt-pdu.ts) dispatched to enrollment, directory, routing and the flow
 * allocator, one EfcpConnection per application flow bound to its CEP-id in the RMT, and the
 * application's Flow objects (ipcp-flow.ts).
 *
 * Roles. The enroller holds the address pool, registers its IPCP name in every lower DIF it is
 * given and accepts N-1 flows there (one enrollment session each). A member allocates an N-1 flow
 * through `enroll.lower` to the enroller's IPCP name and enrolls over it, retrying every
 * `retryMs` until it succeeds, and again whenever that N-1 flow is lost.
 *
 * Loss. A lost N-1 flow (or missed keepalives) takes the neighbour down in routing; members that
 * become unreachable have their flows ended with cause 'port_down' and a reason naming the
 * member; every other flow carries on. The IPCP's max SDU is `maxPduSize` (a DIF constant, the
 * same at every member) or the smallest lower flow's max SDU, whichever is smaller, minus the PCI.
 *
 * Budgets: RMT queues (PDUs and bytes per port), EFCP queues per flow, rxQueueLimit SDUs per flow
 * before delivery pauses (the EFCP window then stops the sender), flows bounded by the flow
 * allocator's maxFlows; management PDUs that find no room are dropped and counted (every
 * management exchange retries on its own timer).
 */
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type AllocateOptions, type DeallocationCause, type Flow, type FlowRequestHandler, type IpcProcess, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { appNameEquals, appNameKey, formatAppName, NamingError, toAppName, type AppName } from '../naming.js';
import { CdapError, type CdapMessage } from './cdap.js';
import { decodeDirectoryUpdate, type FlowRequest as FaRequest } from './cdap-objects.js';
import { CepAllocator } from './cep-alloc.js';
import { realClock, type Clock, type TimerHandle } from './clock.js';
import { Directory, DIRECTORY_CLASS, DIRECTORY_NAME, directoryUpdateValues } from './directory.js';
import { EfcpConnection, EfcpError, cubeById, cubeForQos, type CubeChoice } from './efcp/index.js';
import { defaultConstants, type CdapTransport } from './enrollment.js';
import { Enrollee } from './enrollment-enrollee.js';
import { Enroller } from './enrollment-enroller.js';
import { FLOW_CLASS, FlowAllocError, FlowAllocator, type FlowDecision, type FlowInfo } from './flow-alloc.js';
import { NormalFlow, NormalFlowRequest } from './ipcp-flow.js';
import { decodeMgmtPdu, encodeMgmtPdu, ROUTING_CLASS, ROUTING_NAME } from './mgmt-pdu.js';
import { N1Port } from './n1-port.js';
import { PCI_LEN, type Pci } from './pci.js';
import { HOP_ADDRESS, Rmt } from './rmt.js';
import { encodeRoutingMessage, type RoutingMessage } from './routing-msg.js';
import { Routing } from './routing.js';

export const REASON_UNKNOWN_APPLICATION = 'unknown application';
export const DEFAULT_MAX_PDU_SIZE = 65536;

export interface NormalIpcpOptions {
  difName: string;
  /** This IPC process's name, registered in the lower DIFs (default `<difName>.<role>`). */
  name?: AppName | string;
  role: 'enroller' | 'member';
  /** Lower IPC processes whose DIFs this IPCP listens on (its name registered, N-1 flows accepted). Enroller: required. */
  lower?: IpcProcess[];
  /** Member: where and to whom to enroll. */
  enroll?: { lower: IpcProcess; enrollerName: AppName | string };
  /** Enroller: its own address (default 1) and the pool it hands out (default 2..65535). */
  address?: number;
  pool?: { first: number; last: number };
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
}

export interface NormalIpcpEvents {
  /** This member has an address (enrolled, or re-enrolled). */
  enrolled: [address: number];
  /** An enrollment attempt failed (it is retried). */
  enrollFailed: [error: Error];
  flowAllocated: [flow: Flow];
  flowDeallocated: [flow: Flow, reason: string, cause: DeallocationCause];
}

interface Reg {
  readonly appName: AppName;
  readonly key: string;
  readonly handler: FlowRequestHandler;
}

interface PortInfo {
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
}

const EARLY_LIMIT = 64;

export class NormalIpcp extends EventEmitter<NormalIpcpEvents> implements IpcProcess {
  readonly difName: string;
  readonly name: AppName;
  readonly role: 'enroller' | 'member';
  readonly rxQueueLimit: number;
  readonly stats = {
    mgmtTx: 0, mgmtRx: 0, mgmtBad: 0, mgmtDropped: 0, mgmtNoRoute: 0, dataNoRoute: 0, n1Up: 0, n1Lost: 0, enrollAttempts: 0, enrollFailures: 0,
    flowsAllocated: 0, flowsDeallocated: 0, incomingRequests: 0, incomingRejected: 0,
  };
  private readonly clock: Clock;
  private readonly maxPduSize: number;
  private addr = 0;
  private minLowerSdu = Infinity;
  private readonly rmt: Rmt;
  private readonly directory: Directory;
  private readonly fa: FlowAllocator;
  private routing: Routing | undefined;
  private readonly enroller: Enroller | undefined;
  private enrollee: Enrollee | undefined;
  private enrollPort: number | undefined;
  private enrollTimer: TimerHandle | undefined;
  private readonly ports = new Map<number, PortInfo>();
  private nextN1 = 1;
  private readonly regs = new Map<string, Reg>();
  private readonly lowerRegs: Registration[] = [];
  private readonly byPort = new Map<number, NormalFlow>();
  private readonly byFaName = new Map<string, NormalFlow>();
  private readonly waitingLower = new Set<EfcpConnection>();
  private readonly pendingRequests = new Set<NormalFlowRequest>();
  private nextPortId = 1;
  private lossReason: string | undefined;
  private closed = false;

  constructor(private readonly o: NormalIpcpOptions) {
    super();
    if (typeof o.difName !== 'string' || o.difName === '' || o.difName.length > 255) throw new DifError('invalid_argument', 'difName must be a non-empty string of at most 255 characters');
    if (o.role !== 'enroller' && o.role !== 'member') throw new DifError('invalid_argument', `role must be 'enroller' or 'member', not ${String(o.role)}`);
    this.difName = o.difName;
    this.role = o.role;
    this.name = nameArg(o.name ?? `${o.difName}.${o.role}`, 'IPC process');
    this.clock = o.clock ?? realClock;
    this.maxPduSize = o.maxPduSize ?? DEFAULT_MAX_PDU_SIZE;
    this.rxQueueLimit = o.rxQueueLimit ?? 256;
    this.rmt = new Rmt({ address: 0, queueMaxPdus: o.queueMaxPdus, queueMaxBytes: o.queueMaxBytes, mgmt: { receiveMgmt: (p, pdu, hlen, from) => this.receiveMgmt(p, pdu, hlen, from) }, onWritable: () => this.lowerWritable() });
    this.directory = new Directory({ clock: this.clock, flood: (entries, from) => this.floodDirectory(entries, from) });
    const ceps = new CepAllocator({ clock: this.clock });
    this.fa = new FlowAllocator({
      clock: this.clock,
      ceps,
      localAddress: () => this.addr,
      lookup: (app) => this.directory.lookup(app),
      send: (dst, msg) => void this.sendMgmt(dst, msg),
      onRequest: (fr) => this.onFlowRequest(fr),
      onEstablished: (info) => this.establish(info),
      onDeleted: (info, reason) => this.flowDeleted(info, reason),
    });
    const constants = defaultConstants(this.maxPduSize);
    if (o.role === 'enroller') {
      this.addr = o.address ?? 1;
      this.enroller = new Enroller({
        clock: this.clock,
        name: this.name,
        difName: this.difName,
        address: this.addr,
        constants,
        pool: o.pool ?? { first: 2, last: 0xffff },
        content: () => ({ directory: this.directory.entries(), neighbours: [{ name: this.name, address: this.addr, lowerDifs: [] }], lowerFlows: [] }),
        onEnrolled: (m, port) => this.neighbourUp(Number(port), m.address),
        onLost: (m, port) => this.neighbourGone(Number(port), m.address),
      });
      this.becomeMember(this.addr);
    } else if (!o.enroll) {
      throw new DifError('invalid_argument', 'a member needs enroll: { lower, enrollerName }');
    }
    for (const lower of o.lower ?? []) this.listen(lower);
    if (o.role === 'member') this.scheduleEnroll(0);
  }

  get address(): number {
    return this.addr;
  }

  /** Largest SDU a flow of this IPCP carries (0 before any N-1 flow). */
  get maxSdu(): number {
    const lower = Math.min(this.maxPduSize, this.minLowerSdu);
    return lower === Infinity ? 0 : Math.max(0, lower - PCI_LEN);
  }

  get isEnrolled(): boolean {
    return this.addr !== 0;
  }

  // ---- registration ---------------------------------------------------------------------------

  register(app: AppName | string, onFlowRequest: FlowRequestHandler): Registration {
    this.checkOpen();
    const appName = nameArg(app, 'application');
    if (typeof onFlowRequest !== 'function') throw new DifError('invalid_argument', 'register() needs a flow request handler');
    const key = appNameKey(appName);
    if (this.regs.has(key)) throw new DifError('already_registered', `${key} is already registered in ${this.difName}`);
    if (this.addr !== 0) this.directoryRegister(appName);
    const reg: Reg = { appName, key, handler: onFlowRequest };
    this.regs.set(key, reg);
    return { appName, difName: this.difName, unregister: () => this.regs.get(key) === reg && this.unregister(appName) };
  }

  unregister(app: AppName | string): void {
    const key = appNameKey(nameArg(app, 'application'));
    const reg = this.regs.get(key);
    if (!reg) throw new DifError('not_registered', `${key} is not registered in ${this.difName}`);
    this.regs.delete(key);
    this.directory.unregister(reg.appName);
    for (const req of [...this.pendingRequests]) if (req.registrationKey === key) this.settleRequest(req, { accept: false, reason: 'application unregistered' }, 'application unregistered');
  }

  isRegistered(app: AppName | string): boolean {
    return this.regs.has(appNameKey(nameArg(app, 'application')));
  }

  private directoryRegister(app: AppName): void {
    try {
      this.directory.register(app);
    } catch (e) {
      throw new DifError('invalid_argument', `cannot register ${formatAppName(app)} in ${this.difName}: ${(e as Error).message}`, { cause: e });
    }
  }

  // ---- allocation, requester side -------------------------------------------------------------

  allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}): Promise<Flow> {
    try {
      this.checkOpen();
      const src = nameArg(localApp, 'local application');
      const dst = nameArg(remoteApp, 'remote application');
      const spec = this.resolveQos(qos);
      if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted before it started');
      if (this.addr === 0) throw new DifError('port_down', `${formatAppName(this.name)} is not enrolled in ${this.difName} yet`);
      const where = this.directory.lookup(dst);
      if (where === undefined) throw new DifError('rejected', `${formatAppName(dst)} is not registered in ${this.difName}: ${REASON_UNKNOWN_APPLICATION}`, { peerReason: REASON_UNKNOWN_APPLICATION });
      if (where !== this.addr && !this.rmt.forwardingTable().has(where)) throw new DifError('port_down', `member ${where} of ${this.difName}, where ${formatAppName(dst)} is registered, is unreachable`);
      if (where === this.addr) throw new DifError('invalid_argument', `${formatAppName(dst)} is registered at this same IPC process; flows within one member of ${this.difName} are not supported yet`);
      const timeoutMs = opts.timeoutMs ?? this.o.allocateTimeoutMs ?? 15_000;
      if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new DifError('invalid_argument', `timeoutMs must be a positive integer, not ${String(timeoutMs)}`);
      const cube = cubeForQos(spec, this.o.cube);
      const granted: QosSpec = Object.freeze({ reliable: cube.retransmission, inOrder: cube.inOrder, maxSdu: spec.maxSdu });
      const flow = new NormalFlow(this, this.nextPortId++, this.difName, src, dst, granted);
      this.byPort.set(flow.portId, flow);
      const faPromise = this.fa.allocate({ srcApp: src, dstApp: dst, srcPort: flow.portId, qosCube: cube.id, initSeq: randomInt(0, 0xffffffff), maxSdu: spec.maxSdu });
      return new Promise<Flow>((resolve, reject) => {
        let settled = false;
        const finish = (err: DifError | null): void => {
          if (settled) return;
          settled = true;
          this.clock.clearTimer(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          if (err) {
            this.dropFlow(flow, err.message, 'local');
            reject(err);
            return;
          }
          flow.markAllocated();
          this.stats.flowsAllocated++;
          this.emit('flowAllocated', flow);
          resolve(flow);
        };
        const timer = this.clock.setTimer(timeoutMs, () => finish(new DifError('timeout', `no answer for the flow to ${formatAppName(dst)} within ${timeoutMs} ms`)));
        const onAbort = (): void => finish(new DifError('aborted', 'allocation aborted'));
        opts.signal?.addEventListener('abort', onAbort, { once: true });
        faPromise.then(
          () => finish(null),
          (e: unknown) => finish(faError(e, dst)),
        );
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private resolveQos(q: QosRequest): QosSpec {
    if (typeof q !== 'object' || q === null) throw new DifError('invalid_qos', 'the QoS spec must be an object');
    const reliable = q.reliable ?? false;
    const inOrder = q.inOrder ?? false;
    const maxSdu = q.maxSdu ?? 0;
    if (typeof reliable !== 'boolean' || typeof inOrder !== 'boolean') throw new DifError('invalid_qos', 'QoS reliable and inOrder must be booleans');
    if (!Number.isInteger(maxSdu) || maxSdu < 0) throw new DifError('invalid_qos', `QoS maxSdu ${String(maxSdu)} must be a non-negative integer`);
    if (maxSdu > this.maxSdu) throw new DifError('invalid_qos', `QoS maxSdu ${maxSdu} exceeds ${this.difName}'s max SDU of ${this.maxSdu} bytes`);
    return { reliable, inOrder, maxSdu: maxSdu === 0 ? this.maxSdu : maxSdu };
  }

  // ---- allocation, responder side -------------------------------------------------------------

  private onFlowRequest(fr: FaRequest): FlowDecision | Promise<FlowDecision> {
    this.stats.incomingRequests++;
    const reg = this.regs.get(appNameKey(fr.dstApp));
    const cube = cubeById(fr.qosCube);
    const maxSdu = fr.maxSdu || this.maxSdu;
    let refusal: string | undefined;
    if (!reg) refusal = REASON_UNKNOWN_APPLICATION;
    else if (!cube) refusal = `unknown QoS cube ${fr.qosCube}`;
    else if (maxSdu > this.maxSdu) refusal = `max SDU ${maxSdu} exceeds ${this.difName}'s max SDU of ${this.maxSdu} bytes at this member`;
    if (refusal !== undefined || !reg || !cube) {
      this.stats.incomingRejected++;
      return { accept: false, reason: refusal ?? 'refused' };
    }
    const qos: QosSpec = Object.freeze({ reliable: cube.retransmission, inOrder: cube.inOrder, maxSdu });
    const req = new NormalFlowRequest(this, this.difName, reg.appName, fr.srcApp, qos, reg.key);
    let sync: FlowDecision | undefined;
    let later: ((d: FlowDecision) => void) | undefined;
    req.decide = (accept, x) => {
      const d: FlowDecision = accept ? { accept: true, port: (x as NormalFlow).portId, initSeq: randomInt(0, 0xffffffff) } : { accept: false, reason: x as string };
      if (later) later(d);
      else sync = d;
    };
    this.pendingRequests.add(req);
    try {
      reg.handler(req);
    } catch (e) {
      if (req.state === 'waiting') req.reject(`application error: ${(e as Error)?.message ?? String(e)}`);
    }
    if (sync) return sync;
    return new Promise<FlowDecision>((resolve) => (later = resolve));
  }

  /** @internal FlowRequest.accept() */
  acceptIncoming(req: NormalFlowRequest, _opts: AcceptOptions): Flow {
    if (this.closed) throw new DifError('closed', `${this.difName}'s IPC process is closed`);
    const flow = new NormalFlow(this, this.nextPortId++, this.difName, req.localApp, req.remoteApp, req.qos);
    flow.markAllocated();
    this.byPort.set(flow.portId, flow);
    this.settleRequest(req, { accept: true, port: flow.portId }, null, flow);
    this.stats.flowsAllocated++;
    this.emit('flowAllocated', flow);
    // The flow allocator may have given up on the request meanwhile (its accept timeout): then no
    // data path is ever set up, and the flow ends rather than hang.
    setImmediate(() => {
      if (flow.efcp === null && flow.state === 'allocated') this.dropFlow(flow, 'the requester gave up before the flow was set up', 'peer');
    });
    return flow;
  }

  /** @internal FlowRequest.reject() */
  rejectIncoming(req: NormalFlowRequest, reason: string): void {
    this.stats.incomingRejected++;
    this.settleRequest(req, { accept: false, reason: typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application' }, null);
  }

  private settleRequest(req: NormalFlowRequest, d: FlowDecision, cancel: string | null, flow?: NormalFlow): void {
    this.pendingRequests.delete(req);
    if (cancel !== null) req.cancel(cancel);
    else req.state = d.accept ? 'accepted' : 'rejected';
    req.decide?.(d.accept, d.accept ? flow! : d.reason);
  }

  /** The flow allocator made the flow (either end): set up its EFCP before any data PDU can arrive. */
  private establish(info: FlowInfo): void {
    const flow = this.byPort.get(info.localPort);
    const cube = cubeById(info.qosCube);
    if (!flow || flow.state === 'deallocated' || !cube) {
      this.fa.deallocate(info.name, 'the local end of the flow is gone');
      return;
    }
    const efcp: EfcpConnection = new EfcpConnection({
      cube,
      clock: this.clock,
      localAddr: info.localAddr,
      remoteAddr: info.remoteAddr,
      localCep: info.localCep,
      remoteCep: info.remoteCep,
      initialSeq: info.localInitSeq,
      peerInitialSeq: info.remoteInitSeq,
      maxSdu: flow.qos.maxSdu,
      sendPdu: (pdu) => this.sendData(efcp, pdu),
      deliver: (sdu) => flow.deliver(sdu),
      onDrain: () => flow.drained(),
      onFail: (err: EfcpError) => this.localDeallocate(flow, `the flow failed: ${err.message}`, 'port_down'),
    });
    flow.faName = info.name;
    flow.localCep = info.localCep;
    flow.remoteAddr = info.remoteAddr;
    this.byFaName.set(info.name, flow);
    this.rmt.bindCep(info.localCep, { receivePdu: (p, pdu) => efcp.receive(pdu, p) });
    flow.attach(efcp);
  }

  private sendData(efcp: EfcpConnection, pdu: Uint8Array): boolean {
    try {
      if (this.rmt.send(pdu)) return true;
      this.waitingLower.add(efcp);
      return false;
    } catch {
      // No route (the member is going away; its flows end when routing says so): dropped.
      this.stats.dataNoRoute++;
      return true;
    }
  }

  private lowerWritable(): void {
    const list = [...this.waitingLower];
    this.waitingLower.clear();
    for (const e of list) e.lowerReady();
  }

  // ---- deallocation ---------------------------------------------------------------------------

  /** @internal Flow.deallocate() (and a failed EFCP) */
  localDeallocate(flow: NormalFlow, reason: string, cause: DeallocationCause = 'local'): void {
    if (flow.faName) this.fa.deallocate(flow.faName, reason);
    this.dropFlow(flow, reason, cause);
  }

  private flowDeleted(info: FlowInfo, reason: string): void {
    const flow = this.byFaName.get(info.name);
    if (!flow) return;
    if (this.lossReason !== undefined) this.dropFlow(flow, reason, 'port_down');
    else this.dropFlow(flow, reason === 'deleted by the other end' ? 'deallocated by the peer' : reason, 'peer');
  }

  private dropFlow(flow: NormalFlow, reason: string, cause: DeallocationCause): void {
    if (this.byPort.get(flow.portId) === flow) this.byPort.delete(flow.portId);
    if (flow.faName && this.byFaName.get(flow.faName) === flow) {
      this.byFaName.delete(flow.faName);
      this.rmt.unbindCep(flow.localCep);
    }
    if (flow.efcp) this.waitingLower.delete(flow.efcp);
    const wasAllocated = flow.state === 'allocated';
    flow.terminate(reason, cause);
    if (wasAllocated) {
      this.stats.flowsDeallocated++;
      this.emit('flowDeallocated', flow, reason, cause);
    }
  }

  flows(): Flow[] {
    return [...this.byPort.values()].filter((f) => f.state === 'allocated');
  }

  // ---- N-1 flows ------------------------------------------------------------------------------

  private listen(lower: IpcProcess): void {
    try {
      this.lowerRegs.push(
        lower.register(this.name, (req) => {
          if (this.role !== 'enroller' || this.closed) return req.reject(`${formatAppName(this.name)} does not enroll members of ${this.difName}`);
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
      receive: (pid, pdu) => this.rmt.receive(pid, pdu),
      drained: (pid) => this.rmt.portDrained(pid),
      lost: (pid, reason) => this.portLost(pid, reason),
    });
    this.minLowerSdu = Math.min(this.minLowerSdu, flow.qos.maxSdu);
    this.ports.set(id, { port, neighbour: 0, enrollRx: undefined, early: [] });
    this.rmt.addPort(id, port);
    this.stats.n1Up++;
    return id;
  }

  private transport(id: number): CdapTransport {
    return {
      send: (m) => void this.sendMgmt(HOP_ADDRESS, m, id),
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
    if (id === this.enrollPort) {
      this.enrollPort = undefined;
      this.enrollee?.abort(`the N-1 flow to the enroller was lost: ${reason}`);
      this.scheduleEnroll(this.o.retryMs ?? 1000);
    }
  }

  private neighbourUp(id: number, addr: number): void {
    const p = this.ports.get(id);
    if (!p || !this.routing) return;
    p.neighbour = addr;
    this.routing.neighbourUp(addr, id);
    const early = p.early;
    p.early = [];
    for (const m of early) this.neighbourMessage(p, id, m);
    // Registrations made since the new member's snapshot was taken.
    this.sendDirectory(id, this.directory.entries());
  }

  private neighbourGone(id: number, addr: number, reason = 'N-1 flow lost'): void {
    const p = this.ports.get(id);
    if (p && p.neighbour === addr) p.neighbour = 0;
    this.lossReason = reason;
    try {
      this.routing?.neighbourDown(addr, 'flow-lost');
    } finally {
      this.lossReason = undefined;
    }
  }

  // ---- enrollment (member) --------------------------------------------------------------------

  private scheduleEnroll(ms: number): void {
    if (this.closed || this.role !== 'member') return;
    this.clock.clearTimer(this.enrollTimer);
    this.enrollTimer = this.clock.setTimer(ms, () => void this.enrollOnce());
  }

  private async enrollOnce(): Promise<void> {
    const e = this.o.enroll!;
    this.stats.enrollAttempts++;
    let id: number | undefined;
    try {
      const flow = await e.lower.allocateFlow(this.name, e.enrollerName, {});
      if (this.closed) return flow.deallocate('IPC process closed');
      id = this.addPort(flow);
      if (id === undefined) throw new Error(`the N-1 flow through ${e.lower.difName} is unusable`);
      this.enrollPort = id;
      const enrollee = new Enrollee({ clock: this.clock, transport: this.transport(id), name: this.name, difName: this.difName, enrollerName: toAppName(e.enrollerName), constants: defaultConstants(this.maxPduSize), proposedAddress: this.addr });
      this.enrollee = enrollee;
      const r = await enrollee.enroll();
      if (this.closed || this.enrollPort !== id) return;
      const enrollerAddr = r.neighbours.find((n) => appNameEquals(n.name, r.enroller))?.address ?? 0;
      if (enrollerAddr === 0) throw new Error('the enroller did not say its own address');
      this.becomeMember(r.address);
      this.directory.applyRemote(r.directory, enrollerAddr);
      this.neighbourUp(id, enrollerAddr);
      this.emit('enrolled', r.address);
    } catch (err) {
      this.stats.enrollFailures++;
      if (id !== undefined && this.enrollPort === id) {
        this.enrollPort = undefined;
        this.ports.get(id)?.port.close(`enrollment failed: ${(err as Error)?.message ?? String(err)}`);
      }
      if (this.listenerCount('enrollFailed') > 0) this.emit('enrollFailed', err as Error);
      if (!this.closed && this.enrollPort === undefined) this.scheduleEnroll(this.o.retryMs ?? 1000);
    }
  }

  /** This IPCP has `address` now: routing, the RMT and local registrations follow. */
  private becomeMember(address: number): void {
    if (this.routing && this.routing.address !== address) {
      this.routing.stop();
      this.routing = undefined;
    }
    this.addr = address;
    this.rmt.address = address;
    this.routing ??= new Routing({
      clock: this.clock,
      address,
      send: (id, msg) => this.sendRouting(id, msg),
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

  private unreachable(addrs: number[]): void {
    const why = this.lossReason;
    const outer = this.lossReason;
    try {
      for (const a of addrs) {
        this.lossReason = `member ${a} of ${this.difName} is unreachable${why ? ` (${why})` : ''}`;
        this.fa.memberLost(a, this.lossReason);
      }
    } finally {
      this.lossReason = outer;
    }
  }

  // ---- management PDUs ------------------------------------------------------------------------

  private sendMgmt(dst: number, msg: CdapMessage, portId?: number): boolean {
    let pdu: Uint8Array;
    try {
      pdu = encodeMgmtPdu(this.addr, dst, msg);
    } catch {
      this.stats.mgmtBad++;
      return false;
    }
    try {
      const ok = portId === undefined ? this.rmt.send(pdu) : this.rmt.sendOnPort(portId, pdu);
      if (!ok) {
        this.stats.mgmtDropped++;
        return false;
      }
    } catch {
      this.stats.mgmtNoRoute++;
      return false;
    }
    this.stats.mgmtTx++;
    return true;
  }

  private sendRouting(portId: number, msg: RoutingMessage): boolean {
    return this.sendMgmt(HOP_ADDRESS, { op: 'M_WRITE', invokeId: 0, objClass: ROUTING_CLASS, objName: ROUTING_NAME, value: encodeRoutingMessage(msg) }, portId);
  }

  private floodDirectory(entries: Parameters<typeof directoryUpdateValues>[0], from: number | undefined): void {
    for (const [id, p] of this.ports) if (p.neighbour !== 0 && p.neighbour !== from) this.sendDirectory(id, entries);
  }

  private sendDirectory(portId: number, entries: Parameters<typeof directoryUpdateValues>[0]): void {
    for (const value of directoryUpdateValues(entries)) this.sendMgmt(HOP_ADDRESS, { op: 'M_CREATE', invokeId: 0, objClass: DIRECTORY_CLASS, objName: DIRECTORY_NAME, value }, portId);
  }

  private receiveMgmt(p: Pci, pdu: Uint8Array, hlen: number, fromPort: number): void {
    let m: CdapMessage;
    try {
      m = decodeMgmtPdu(p, pdu, hlen);
    } catch (e) {
      if (!(e instanceof CdapError)) throw e;
      this.stats.mgmtBad++;
      return;
    }
    this.stats.mgmtRx++;
    const cls = 'objClass' in m ? m.objClass : '';
    const port = this.ports.get(fromPort);
    if (cls === FLOW_CLASS) {
      this.fa.receive(p.srcAddr, m);
    } else if (cls === ROUTING_CLASS || cls === DIRECTORY_CLASS) {
      if (!port) return;
      if (port.neighbour !== 0) this.neighbourMessage(port, fromPort, m);
      else if (port.early.length < EARLY_LIMIT) port.early.push(m);
      else this.stats.mgmtDropped++;
    } else if (port?.enrollRx) {
      port.enrollRx(m);
    } else {
      this.stats.mgmtBad++;
    }
  }

  /** A routing or directory message from the neighbour on port `id`. */
  private neighbourMessage(p: PortInfo, id: number, m: CdapMessage): void {
    if (!('value' in m) || !m.value) {
      this.stats.mgmtBad++;
      return;
    }
    if (m.objClass === ROUTING_CLASS) {
      this.routing?.receiveBytes(id, m.value);
      return;
    }
    try {
      this.directory.applyRemote(decodeDirectoryUpdate(m.value), p.neighbour);
    } catch {
      this.stats.mgmtBad++;
    }
  }

  // ---- shutdown -------------------------------------------------------------------------------

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
      flowAllocator: this.fa.snapshot(),
      enroller: this.enroller?.snapshot(),
      enrollee: this.enrollee?.snapshot(),
      stats: { ...this.stats },
    };
  }

  /** Deallocate every flow, give up the N-1 flows and lower registrations, stop all timers. Idempotent. */
  close(reason = 'IPC process closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimer(this.enrollTimer);
    for (const req of [...this.pendingRequests]) this.settleRequest(req, { accept: false, reason }, reason);
    for (const f of [...this.byPort.values()]) {
      if (f.faName) this.fa.deallocate(f.faName, reason);
      this.dropFlow(f, reason, 'closed');
    }
    this.enrollee?.abort(reason);
    for (const p of [...this.ports.values()]) p.port.close(reason);
    for (const r of this.lowerRegs) r.unregister();
    this.routing?.stop();
    this.regs.clear();
  }

  private checkOpen(): void {
    if (this.closed) throw new DifError('closed', `${this.difName}'s IPC process is closed`);
  }
}

function nameArg(app: AppName | string, what: string): AppName {
  try {
    return toAppName(app);
  } catch (e) {
    if (e instanceof NamingError) throw new DifError('invalid_name', `bad ${what} name: ${e.message}`, { cause: e });
    throw e;
  }
}

function faError(e: unknown, dst: AppName): DifError {
  if (e instanceof DifError) return e;
  if (!(e instanceof FlowAllocError)) return new DifError('rejected', `allocation of a flow to ${formatAppName(dst)} failed: ${(e as Error)?.message ?? String(e)}`);
  switch (e.code) {
    case 'ERR_FA_NO_SUCH_APP':
      return new DifError('rejected', e.message, { peerReason: REASON_UNKNOWN_APPLICATION });
    case 'ERR_FA_REJECTED':
      return new DifError('rejected', e.message, { peerReason: e.peerReason ?? e.message });
    case 'ERR_FA_TIMEOUT':
      return new DifError('timeout', e.message);
    case 'ERR_FA_UNREACHABLE':
    case 'ERR_FA_NO_ADDRESS':
      return new DifError('port_down', e.message);
    default:
      return new DifError('no_free_channel', e.message);
  }
}
