/**
 * session.ts — one application connected to the IPC daemon (daemon.ts): its control connection,
 * what it holds (registrations, flow requests waiting for its answer, flows, allocations in
 * progress), the handling of its requests within its user's limits, and the teardown of all of it
 * when it goes. Every entry point is guarded: an exception closes this session only.
 *
 * Restart (snapshot.ts): every change of what the session holds is reported to the daemon
 * (`changed`) before the application hears of it, `snapshot()` gives its state and fds by
 * role, `resumeFrom()` takes over a session a dead process served, `abandon()` lets go of one
 * without closing anything.
 */
import { DifError, type DeallocationCause, type Flow, type FlowRequest, type IpcProcess, type Registration } from '../api.js';
import { formatAppName } from '../naming.js';
import type { PeerCred } from '../../sys/native.js';
import type { Logger } from '../../sys/log.js';
import { FramedConn } from './conn.js';
import { errText } from '../../sys/fd.js';
import type { BridgeHooks, FlowLink } from './bridge.js';
import { flowInfo, openFlowLink, resumeFlowLink } from './flow-handover.js';
import { safeClose } from '../../sys/fd.js';
import { flowRingRole, flowRole, sessionRole, type IpcSessionSnapshot } from './snapshot.js';
import { inspectIpcp, listIpcps } from './inspect.js';
import type { IpcDaemonStats, IpcLimits, LimitKind, SessionCloseCause } from './daemon-limits.js';
import { IpcProtocolError, MAX_REASON_CHARS, parseClientRequest, registrationKey, type ClientRequest } from './protocol.js';

/** Flow requests a session may leave unanswered at once; more are rejected. */
const MAX_WAITING_REQUESTS = 1024;

function safeDeallocate(flow: Flow, reason: string): void {
  try {
    flow.deallocate(reason);
  } catch {
    // already gone
  }
}

function safeReject(fr: FlowRequest, reason: string): void {
  try {
    fr.reject(reason);
  } catch {
    // settled meanwhile
  }
}

interface SessionRegistration {
  dif: string;
  key: string;
  reg: Registration;
}

interface SessionFlow {
  handle: number;
  link: FlowLink;
}

/** One connected application. */
/** What a session needs of its daemon (IpcDaemon): a session depends on no module above it. */
export interface SessionHost {
  readonly limits: Readonly<IpcLimits>;
  /** The memory of all flow rings at most (daemon.ts IpcDaemonOptions.maxRingBytes). */
  readonly maxRingBytes: number;
  readonly stats: IpcDaemonStats;
  ipcp(difName: string): IpcProcess | undefined;
  difs(): IpcProcess[];
  inject(where: string, session: number | null): void;
  usage(uid: number): { sessions: number; flows: number; registrations: number };
  isUnlimited(uid: number): boolean;
  sessionClosed(s: Session, reason: string, cause: SessionCloseCause): void;
  countMalformed(): void;
  /** What a session holds changed (snapshot.ts): persist before the application hears of it. */
  changed(): void;
}

/** The reasons a resumed session gives for what did not survive the restart. */
export const RESUME_ALLOCATION_LOST = 'the IPC daemon restarted during this allocation; allocate again';
export const RESUME_REQUEST_LOST = 'the IPC daemon restarted before the application answered; the requester was refused';
export const RESUME_FLOW_LOST = "the IPC daemon restarted and this flow's IPC process could not keep it";
export const RESUME_OUT_OF_STEP = 'the IPC daemon restarted while this connection was mid-frame (a request half read, or answers not yet sent): they are lost; connect again';

/** A resumed session's fds come back by role; a Flow by DIF and port-id from its restored IPC process. */
export type ResumeFd = (role: string) => number | undefined;
export type ReclaimFlow = (dif: string, portId: number) => Flow | undefined;

export class Session {
  /** The peer's uid (SO_PEERCRED), -1 when unknown. */
  readonly uid: number;
  readonly pid: number;
  private readonly conn: FramedConn;
  private readonly regs = new Map<string, SessionRegistration>();
  private readonly requests = new Map<number, FlowRequest>();
  private readonly flows = new Map<number, SessionFlow>();
  /** Allocations in progress: their abort, and the request id they answer. */
  private readonly allocations = new Map<AbortController, number>();
  private nextRequest = 1;
  private nextFlow = 1;
  private closed = false;
  private abandoned = false;
  private readonly cred: PeerCred;
  private lastActive = Date.now();
  private readonly log: Logger;

  constructor(
    private readonly daemon: SessionHost,
    fd: number,
    readonly id: number,
    log: Logger,
    cred: PeerCred | null,
  ) {
    this.uid = cred?.uid ?? -1;
    this.pid = cred?.pid ?? -1;
    this.cred = { uid: this.uid, pid: this.pid, gid: cred?.gid ?? -1 };
    this.log = log.child({ session: id, uid: this.uid, pid: this.pid });
    this.conn = new FramedConn(fd, 0, { outputHighWater: daemon.limits.outputHighWater, onStepChange: () => this.daemon.changed() });
    this.conn.on('message', (m) => this.guard('request', () => this.onMessage(m)));
    this.conn.on('malformed', (e) => this.guard('malformed', () => this.malformed(e)));
    this.conn.on('close', (reason, cause) => this.close(reason, cause));
  }

  get flowCount(): number {
    return this.flows.size;
  }

  get registrationCount(): number {
    return this.regs.size;
  }

  get allocationCount(): number {
    return this.allocations.size;
  }

  /** Bytes of answers and events waiting for the application to read them. */
  get queuedBytes(): number {
    return this.conn.queuedBytes;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Drop everything this application holds and close its connection. Each step is on its own:
   * one that throws is logged and the others still run.
   */
  close(reason: string, cause: SessionCloseCause = 'local'): void {
    if (this.closed) return;
    this.closed = true;
    const step = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (e) {
        this.daemon.stats.faults++;
        this.log.error({ err: errText(e), step: what }, 'ipc: error while closing a session (ignored)');
      }
    };
    for (const a of this.allocations.keys()) step('abort allocation', () => a.abort());
    this.allocations.clear();
    for (const req of this.requests.values()) {
      if (req.state === 'waiting') step('reject request', () => req.reject('application disconnected'));
    }
    this.requests.clear();
    for (const r of this.regs.values()) step('unregister', () => r.reg.unregister());
    this.regs.clear();
    for (const f of [...this.flows.values()]) step('end flow', () => f.link.destroy('application disconnected'));
    this.flows.clear();
    step('close connection', () => this.conn.close(reason, cause === 'idle' ? 'local' : cause));
    if (cause === 'peer_closed' || cause === 'local') this.log.debug({ reason, cause }, 'ipc: session closed');
    else this.log.warn({ reason, cause }, 'ipc: session closed');
    this.daemon.sessionClosed(this, reason, cause);
  }

  /** @internal The idle sweep: close a session that holds nothing and has been silent too long. */
  sweep(now: number): void {
    this.guard('idle timer', () => {
      if (this.closed) return;
      const holds = this.regs.size + this.flows.size + this.requests.size + this.allocations.size;
      if (holds > 0 || now - this.lastActive < this.daemon.limits.idleTimeoutMs) return;
      this.close(`idle for ${this.daemon.limits.idleTimeoutMs} ms holding nothing (limit idleTimeoutMs)`, 'idle');
    });
  }

  /** @internal */
  dropDif(dif: string): void {
    for (const [k, r] of this.regs) {
      if (r.dif !== dif) continue;
      r.reg.unregister();
      this.regs.delete(k);
      this.daemon.changed();
    }
  }

  /** This session as snapshot.ts persists it, and its fds by role. */
  snapshot(): { state: IpcSessionSnapshot; fds: Map<string, number> } {
    const fds = new Map<string, number>([[sessionRole(this.id), this.conn.fd]]);
    const flows: IpcSessionSnapshot['flows'] = [];
    for (const f of this.flows.values()) {
      const fd = f.link.resumableFd;
      if (fd === null) continue; // ending, or not a socketpair of ours: not carried over
      const role = flowRole(this.id, f.handle);
      fds.set(role, fd);
      const ringFd = f.link.resumableRingFd ?? null;
      if (ringFd === null) {
        flows.push({ handle: f.handle, dif: f.link.flow.difName, portId: f.link.flow.portId, socket: role });
      } else {
        fds.set(flowRingRole(this.id, f.handle), ringFd);
        flows.push({ handle: f.handle, dif: f.link.flow.difName, portId: f.link.flow.portId, socket: role, ring: flowRingRole(this.id, f.handle) });
      }
    }
    const state: IpcSessionSnapshot = {
      id: this.id,
      socket: sessionRole(this.id),
      cred: { ...this.cred },
      stream: this.conn.step,
      registrations: [...this.regs.values()].map((r) => ({ dif: r.dif, app: formatAppName(r.reg.appName) })),
      flows,
      allocations: [...this.allocations.values()],
      requests: [...this.requests.keys()],
      nextRequest: this.nextRequest,
      nextFlow: this.nextFlow,
    };
    return { state, fds };
  }

  /**
   * Let go without a word and close nothing (a successor process resumes this session from its
   * snapshot): what a crash does, for tests and hand-overs.
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.abandoned = true;
    for (const f of this.flows.values()) f.link.abandon();
    this.conn.abandon();
  }

  /**
   * Take over the session `snap` describes, that a dead process of this daemon served (see
   * snapshot.ts): call right after construction on the same socket. Registrations are made again,
   * flows resumed on their saved fds (`fd`) with the Flow their restored IPC process gives back
   * (`reclaim`); what could not be kept is told to the application: allocations in progress get
   * an error, waiting flow requests a cancel, flows that could not be kept a flow_deallocated.
   * A session whose control stream was out of step is closed with RESUME_OUT_OF_STEP.
   */
  resumeFrom(snap: IpcSessionSnapshot, fd: ResumeFd, reclaim: ReclaimFlow): void {
    this.nextRequest = snap.nextRequest;
    this.nextFlow = snap.nextFlow;
    const flowFds = snap.flows.map((f) => ({ f, fd: fd(f.socket), ringFd: f.ring === undefined ? undefined : fd(f.ring) }));
    if (snap.stream !== 'in_step') {
      for (const x of flowFds) {
        if (x.fd !== undefined) safeClose(x.fd);
        if (x.ringFd !== undefined) safeClose(x.ringFd);
      }
      this.log.warn({ stream: snap.stream, flows: snap.flows.length, registrations: snap.registrations.length }, 'ipc: a resumed session was mid-frame when the last process died: closing it');
      // Our stream to the application is still in step when only its request was cut: say why.
      if (snap.stream === 'mid_request') this.conn.send({ op: 'error', id: null, code: 'disconnected', message: RESUME_OUT_OF_STEP });
      this.close(RESUME_OUT_OF_STEP, 'local');
      return;
    }
    for (const r of snap.registrations) {
      try {
        this.registerApp(r.dif, r.app);
      } catch (e) {
        this.log.error({ dif: r.dif, app: r.app, err: errText(e) }, 'ipc: a registration of a resumed session could not be made again (the application no longer receives flow requests for it)');
      }
    }
    for (const { f, fd: mine, ringFd } of flowFds) {
      let flow: Flow | undefined;
      try {
        flow = reclaim(f.dif, f.portId);
      } catch (e) {
        this.log.warn({ dif: f.dif, portId: f.portId, err: errText(e) }, 'ipc: reclaiming a flow failed');
      }
      const ringLost = f.ring !== undefined && ringFd === undefined;
      if (flow && mine !== undefined && !ringLost) {
        try {
          this.flows.set(f.handle, { handle: f.handle, link: resumeFlowLink(flow, mine, this.flowHooks(f.handle), this.log, ringFd, this.daemon.stats) });
          continue;
        } catch (e) {
          this.log.warn({ dif: f.dif, portId: f.portId, err: errText(e) }, 'ipc: resuming a flow failed');
        }
      } else {
        if (mine !== undefined) safeClose(mine);
        if (ringFd !== undefined) safeClose(ringFd);
        if (ringLost) this.log.warn({ dif: f.dif, portId: f.portId }, "ipc: a resumed ring flow's memfd did not come back from the fd store: flow ended");
      }
      if (flow) safeDeallocate(flow, RESUME_FLOW_LOST);
      this.conn.send({ op: 'flow_deallocated', flow: f.handle, reason: RESUME_FLOW_LOST, cause: 'local' });
    }
    for (const id of snap.allocations) this.conn.send({ op: 'error', id, code: 'aborted', message: RESUME_ALLOCATION_LOST });
    for (const request of snap.requests) this.conn.send({ op: 'request_cancelled', request, reason: RESUME_REQUEST_LOST });
    this.daemon.changed();
    this.log.info({ flows: this.flows.size, of: snap.flows.length, registrations: this.regs.size }, 'ipc: session resumed');
  }

  /** Run one entry point of this session: an exception closes this session only (logged). */
  private guard(where: string, fn: () => void): void {
    try {
      this.daemon.inject(`session:${where}`, this.id);
      fn();
    } catch (e) {
      this.daemon.stats.faults++;
      this.log.error({ where, err: errText(e), stack: (e as Error)?.stack }, 'ipc: internal error in a session: closing it');
      this.close(`IPC daemon: internal error (${where}): ${errText(e)}`, 'internal_error');
    }
  }

  private malformed(e: IpcProtocolError): void {
    this.daemon.countMalformed();
    this.log.debug({ err: e.message }, 'ipc: malformed message');
    this.conn.send({ op: 'error', id: e.id, code: 'malformed', message: e.message });
  }

  private onMessage(raw: Record<string, unknown>): void {
    this.lastActive = Date.now();
    let req: ClientRequest;
    try {
      req = parseClientRequest(raw);
    } catch (e) {
      if (e instanceof IpcProtocolError) return this.malformed(e);
      throw e;
    }
    try {
      this.handle(req);
    } catch (e) {
      this.fail(req.id, e);
    }
  }

  private fail(id: number, e: unknown): void {
    if (e instanceof DifError) {
      const msg: Record<string, unknown> = { op: 'error', id, code: e.code, message: e.message.slice(0, 4096) };
      if (e.peerReason !== undefined) msg.peerReason = e.peerReason.slice(0, MAX_REASON_CHARS);
      this.conn.send(msg);
    } else {
      this.log.warn({ err: e }, 'ipc: request failed');
      this.conn.send({ op: 'error', id, code: 'invalid_argument', message: errText(e).slice(0, 4096) });
    }
  }

  private ipcp(dif: string): IpcProcess {
    const ipcp = this.daemon.ipcp(dif);
    if (!ipcp) throw new DifError('unknown_dif', `no DIF named ${JSON.stringify(dif)} here (${this.daemon.difs().map((i) => i.difName).join(', ') || 'none'})`);
    return ipcp;
  }

  /** Throws 'limit_exceeded' when this session's user holds its most of `kind`. */
  private checkLimit(kind: LimitKind): void {
    if (this.daemon.isUnlimited(this.uid)) return;
    const u = this.daemon.usage(this.uid);
    const [have, max, name] = kind === 'flows' ? [u.flows, this.daemon.limits.maxFlowsPerUid, 'maxFlowsPerUid'] : [u.registrations, this.daemon.limits.maxRegistrationsPerUid, 'maxRegistrationsPerUid'];
    if (have < max) return;
    this.daemon.stats.limitHits[kind]++;
    throw new DifError('limit_exceeded', `user ${this.uid} holds ${have} ${kind} in this IPC daemon, its limit (${name}); end some first`);
  }

  private handle(req: ClientRequest): void {
    switch (req.op) {
      case 'list_difs':
        this.conn.send({ op: 'result', id: req.id, difs: this.daemon.difs().map((i) => ({ name: i.difName, address: i.address })) });
        return;
      case 'list_ipcps':
        this.conn.send({ op: 'result', id: req.id, ...listIpcps(this.daemon.difs()) });
        return;
      case 'inspect_dif':
        this.conn.send({ op: 'result', id: req.id, inspect: inspectIpcp(this.ipcp(req.dif)) });
        return;
      case 'register': {
        this.registerApp(req.dif, req.app);
        this.conn.send({ op: 'result', id: req.id });
        return;
      }
      case 'unregister': {
        this.ipcp(req.dif);
        let key: string;
        try {
          key = registrationKey(req.dif, req.app);
        } catch (e) {
          throw new DifError('invalid_name', (e as Error).message, { cause: e });
        }
        const r = this.regs.get(key);
        if (!r) throw new DifError('not_registered', `${req.app} is not registered in ${req.dif} by this application`);
        this.regs.delete(key);
        r.reg.unregister();
        this.daemon.changed();
        this.conn.send({ op: 'result', id: req.id });
        return;
      }
      case 'allocate':
        this.allocate(req);
        return;
      case 'accept': {
        const fr = this.takeRequest(req.request);
        try {
          this.checkLimit('flows');
        } catch (e) {
          fr.reject('the application is over its flow limit');
          throw e;
        }
        const flow = fr.accept({ dataFile: true });
        this.giveFlow(req.id, flow, req.rings === true);
        return;
      }
      case 'reject': {
        const fr = this.takeRequest(req.request);
        fr.reject(req.reason);
        this.conn.send({ op: 'result', id: req.id });
        return;
      }
      case 'deallocate': {
        const f = this.flows.get(req.flow);
        if (!f) throw new DifError('flow_deallocated', `no flow ${req.flow} on this connection (already deallocated?)`);
        f.link.appDeallocate(req.reason ?? 'deallocated by the application');
        this.conn.send({ op: 'result', id: req.id });
        return;
      }
    }
  }

  private takeRequest(id: number): FlowRequest {
    const fr = this.requests.get(id);
    if (!fr) throw new DifError('request_settled', `no waiting flow request ${id} (answered, cancelled or unknown)`);
    this.requests.delete(id);
    this.daemon.changed();
    return fr;
  }

  private registerApp(dif: string, app: string): void {
    const ipcp = this.ipcp(dif);
    this.checkLimit('registrations');
    const reg = ipcp.register(app, (fr) => {
      this.guard('flow request', () => this.onFlowRequest(dif, fr));
      // Not taken (a fault, or the session is gone): answer the peer now rather than let it time out.
      if (fr.state === 'waiting' && ![...this.requests.values()].includes(fr)) safeReject(fr, 'application disconnected');
    });
    const key = registrationKey(dif, reg.appName);
    this.regs.set(key, { dif, key, reg });
    this.daemon.changed();
  }

  private allocate(req: Extract<ClientRequest, { op: 'allocate' }>): void {
    const ipcp = this.ipcp(req.dif);
    this.checkLimit('flows');
    let timeoutMs = req.timeoutMs;
    if (timeoutMs !== undefined && timeoutMs > this.daemon.limits.maxAllocateTimeoutMs) {
      this.daemon.stats.timeoutsClamped++;
      timeoutMs = this.daemon.limits.maxAllocateTimeoutMs;
    }
    const ac = new AbortController();
    const opts = timeoutMs === undefined ? { signal: ac.signal, dataFile: true } : { signal: ac.signal, dataFile: true, timeoutMs };
    const pending = ipcp.allocateFlow(req.src, req.dst, req.qos, opts);
    this.allocations.set(ac, req.id);
    this.daemon.changed();
    pending.then(
      (flow) => {
        if (this.abandoned) return; // the flow is a successor's to reclaim, or its IPC process's to end
        let handedOver = false;
        this.guard('allocation', () => {
          this.allocations.delete(ac);
          if (this.closed) return;
          handedOver = true; // giveFlow deallocates the flow itself if it fails
          try {
            this.giveFlow(req.id, flow, req.rings === true);
          } catch (e) {
            this.fail(req.id, e);
          }
        });
        this.allocations.delete(ac);
        if (!handedOver) safeDeallocate(flow, 'application disconnected');
      },
      (e: unknown) =>
        this.guard('allocation', () => {
          this.allocations.delete(ac);
          if (this.closed) return;
          this.daemon.changed();
          this.fail(req.id, e);
        }),
    );
  }

  private onFlowRequest(dif: string, fr: FlowRequest): void {
    if (this.closed) return fr.reject('application disconnected');
    if (this.requests.size >= MAX_WAITING_REQUESTS) return fr.reject('too many flow requests waiting for the application');
    const id = this.nextRequest++;
    this.requests.set(id, fr);
    this.daemon.changed();
    fr.once('cancelled', (reason) =>
      this.guard('request cancelled', () => {
        if (this.requests.get(id) !== fr) return;
        this.requests.delete(id);
        this.daemon.changed();
        this.conn.send({ op: 'request_cancelled', request: id, reason: reason.slice(0, MAX_REASON_CHARS) });
      }),
    );
    this.conn.send({ op: 'flow_request', dif, app: formatAppName(fr.localApp), request: id, remoteApp: formatAppName(fr.remoteApp), qos: fr.qos });
  }

  /**
   * Give the application the flow's fd with the result (flow-handover.ts: the flow's own data
   * file, or a socketpair end with a bridge on ours). No fd to be had: the flow is deallocated
   * and the answer is 'no_resources' (thrown).
   */
  private giveFlow(id: number, flow: Flow, rings: boolean): void {
    const handle = this.nextFlow++;
    const { link, datapath, theirFds, ringBytes } = openFlowLink(flow, this.flowHooks(handle), this.daemon.stats, this.log, { rings, maxRingBytes: this.daemon.maxRingBytes });
    this.flows.set(handle, { handle, link });
    this.daemon.changed(); // persisted before the application holds the flow
    this.conn.send({ op: 'result', id, flow: flowInfo(handle, flow, datapath, ringBytes) }, theirFds, true);
  }

  /** What the bridge of flow `handle` tells this session. */
  private flowHooks(handle: number): BridgeHooks {
    const stats = this.daemon.stats;
    return {
      onFlowEnd: (reason: string, cause: DeallocationCause) => {
        // While the session closes, the connection's end tells the application.
        if (this.closed) return;
        this.daemon.changed(); // no longer carried over by a restart
        this.conn.send({ op: 'flow_deallocated', flow: handle, reason: reason.slice(0, MAX_REASON_CHARS), cause });
      },
      onClosed: () => {
        if (this.flows.delete(handle) && !this.closed) this.daemon.changed();
      },
      onTooLarge: () => {
        stats.sdusTooLarge++;
      },
      onAbort: (why) => {
        stats.bridgeAborts[why]++;
        if (why === 'internal_error') stats.faults++;
      },
      inject: (where) => this.daemon.inject(`bridge:${where}`, this.id),
    };
  }
}
