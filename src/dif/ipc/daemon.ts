/**
 * daemon.ts — the IPC daemon: offers the IPC API (api.ts) of the IPC processes it hosts to
 * applications over one local Unix socket (paper, Section II; shaped like rlite's control
 * handle: register/unregister, allocate, accept/reject incoming flows, then plain reads and writes
 * on a per-flow file descriptor).
 *
 * Owns: the listening socket (stale-socket recovery, removal on close), one Session per
 * connected application, and what each session holds: its registrations, the flow requests
 * waiting for its answer, its flows (each a FlowBridge, datapath.ts) and its pending allocations.
 * When an application disconnects, all of it goes: flows deallocated, requests rejected,
 * registrations dropped, allocations in progress aborted.
 *
 * Who may do what (see also docs/IPC.md): anyone who can connect to the socket (its mode and
 * directory decide that) may list DIFs, register names, allocate and accept flows, within limits
 * per user (SO_PEERCRED uid): sessions, flows (allocated or being allocated) and registrations.
 * A name is registered first come, first served; only the session that registered it can
 * unregister it, and it goes when that session ends. Allocation timeouts are clamped.
 *
 * Containment: every entry point (the listening socket's and each session's fd callbacks, the
 * idle sweep timer, allocation promises, the flow bridges' callbacks) runs guarded: an exception
 * closes the session (or flow) it belongs to, with a log line and a typed cause, and nothing
 * else. Out of file descriptors, accept backs off instead of spinning, and a flow whose
 * socketpair cannot be created is a 'no_resources' answer to that application.
 *
 * The control protocol is protocol.ts (length-prefixed JSON, versioned; a malformed message
 * gets an `error` with code 'malformed' and the reason). The data path never crosses the control
 * socket: see datapath.ts for why the per-flow SOCK_SEQPACKET pair is the cheapest host path,
 * and how in a guest the application gets the VMPI driver's file of the flow's channel instead.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { DifError, type DeallocationCause, type Flow, type FlowRequest, type IpcProcess, type Registration } from '../api.js';
import { appNameKey, formatAppName } from '../naming.js';
import { native, type FdWatcher, type PeerCred } from '../../sys/native.js';
import { logger as rootLogger, ThrottledLog, type Logger } from '../../sys/log.js';
import { AcceptBackoff } from '../../sys/accept-backoff.js';
import { removeStaleSocket } from '../../sys/unix-socket.js';
import { FramedConn, type ConnCloseCause } from './conn.js';
import { errText, safeClose } from '../../sys/fd.js';
import { DirectFlowLink, FlowBridge, sizeFlowSocket, type BridgeAbort, type BridgeHooks, type FlowLink } from './datapath.js';
import { encodeFrame, IpcProtocolError, MAX_REASON_CHARS, parseClientRequest, type ClientRequest, type FlowDatapath, type FlowInfo } from './protocol.js';

/** What one user (SO_PEERCRED uid) and the daemon as a whole may hold. */
export interface IpcLimits {
  /** Sessions (connected applications) in all. */
  maxSessions: number;
  /** Sessions of one uid. */
  maxSessionsPerUid: number;
  /** Flows of one uid, allocated or being allocated (each holds a channel of a device). */
  maxFlowsPerUid: number;
  /** Registered names of one uid. */
  maxRegistrationsPerUid: number;
  /** An `allocate` asking for a longer timeout gets this one. */
  maxAllocateTimeoutMs: number;
  /** A session holding nothing (no registration, flow, request, allocation) and silent this long is closed. */
  idleTimeoutMs: number;
  /** Answers queued for one session, in bytes, past which its requests are no longer read (×4: closed). */
  outputHighWater: number;
  /** Uids the per-uid limits do not apply to (default none; the daemon-wide limit still does). */
  unlimitedUids: readonly number[];
}

export const DEFAULT_IPC_LIMITS: Readonly<IpcLimits> = Object.freeze({
  maxSessions: 256,
  maxSessionsPerUid: 64,
  maxFlowsPerUid: 256,
  maxRegistrationsPerUid: 64,
  maxAllocateTimeoutMs: 60_000,
  idleTimeoutMs: 300_000,
  outputHighWater: 256 * 1024,
  unlimitedUids: [],
});

export interface IpcDaemonOptions {
  /** The Unix socket to listen on (its directory is created when missing). */
  socketPath: string;
  /** chmod the socket after creating it (e.g. 0o660); default: leave it to the umask. */
  mode?: number;
  logger?: Logger;
  /** Limits; what is not given keeps DEFAULT_IPC_LIMITS. */
  limits?: Partial<IpcLimits>;
  /**
   * Tests only: called at the start of each guarded entry point with its name ('accept',
   * 'session:request', 'session:idle timer', 'session:allocation', 'bridge:flow socket', …) and
   * the session id; it may throw to show that the throw is contained.
   */
  faultInjection?: (where: string, session: number | null) => void;
}

export interface IpcDaemonEvents {
  session: [session: Session];
  sessionClosed: [session: Session, reason: string];
}

/** Why a session ended (metrics label). */
export type SessionCloseCause = ConnCloseCause | 'idle';
export const SESSION_CLOSE_CAUSES: readonly SessionCloseCause[] = ['peer_closed', 'protocol_error', 'output_limit', 'internal_error', 'io_error', 'local', 'idle'];
/** Why a connection was refused at accept (metrics label). */
export type RefuseReason = 'max_sessions' | 'max_sessions_per_uid';
/** A per-uid limit hit by a request (metrics label). */
export type LimitKind = 'flows' | 'registrations';

export interface IpcDaemonStats {
  sessions: number;
  sessionsTotal: number;
  malformed: number;
  /** Sessions closed, by cause. */
  sessionsClosed: Record<SessionCloseCause, number>;
  /** Connections refused at accept, by reason. */
  refused: Record<RefuseReason, number>;
  /** Requests refused by a per-uid limit. */
  limitHits: Record<LimitKind, number>;
  /** accept(2) failures (EMFILE, ENFILE, …). */
  acceptErrors: number;
  /** Flows that could not be given to their application: no fd (socketpair failed). */
  flowFdFailures: number;
  /** Allocation timeouts shortened to limits.maxAllocateTimeoutMs. */
  timeoutsClamped: number;
  /** SDUs for applications dropped: larger than their flow socket's buffer. */
  sdusTooLarge: number;
  /** Flows a bridge ended itself, by why. */
  bridgeAborts: Record<BridgeAbort, number>;
  /** Exceptions contained (each closed one session or flow). */
  faults: number;
}

/** Flow requests a session may leave unanswered at once; more are rejected. */
const MAX_WAITING_REQUESTS = 1024;
export class IpcDaemon extends EventEmitter<IpcDaemonEvents> {
  readonly socketPath: string;
  readonly limits: Readonly<IpcLimits>;
  readonly stats: IpcDaemonStats = {
    sessions: 0,
    sessionsTotal: 0,
    malformed: 0,
    sessionsClosed: { peer_closed: 0, protocol_error: 0, output_limit: 0, internal_error: 0, io_error: 0, local: 0, idle: 0 },
    refused: { max_sessions: 0, max_sessions_per_uid: 0 },
    limitHits: { flows: 0, registrations: 0 },
    acceptErrors: 0,
    flowFdFailures: 0,
    timeoutsClamped: 0,
    sdusTooLarge: 0,
    bridgeAborts: { fds_on_flow_socket: 0, internal_error: 0 },
    faults: 0,
  };
  private readonly ipcps = new Map<string, IpcProcess>();
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private socketIno: number | null = null;
  private closed = false;
  private readonly acceptBackoff: AcceptBackoff;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly refuseLog: ThrottledLog;

  constructor(private readonly opts: IpcDaemonOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.log = (opts.logger ?? rootLogger).child({ component: 'ipc-daemon' });
    this.limits = Object.freeze(checkLimits({ ...DEFAULT_IPC_LIMITS, ...opts.limits }));
    this.acceptBackoff = new AcceptBackoff({
      log: new ThrottledLog(this.log, 'ipc: accept failed; backing off'),
      pause: () => this.watcher?.stop(),
      retry: () =>
        this.guarded('accept retry', null, () => {
          if (this.listenFd < 0 || !this.watcher) return;
          this.watcher.start();
          this.acceptSome();
        }),
    });
    this.refuseLog = new ThrottledLog(this.log, 'ipc: connection refused');
  }

  /** Host an IPC process: applications reach it by its DIF name. */
  addIpcp(ipcp: IpcProcess): void {
    if (this.ipcps.has(ipcp.difName)) throw new DifError('invalid_argument', `an IPC process of DIF ${ipcp.difName} is already hosted`);
    this.ipcps.set(ipcp.difName, ipcp);
  }

  /** Stop offering a DIF; registrations in it are dropped (flows keep running until they end). */
  removeIpcp(difName: string): void {
    if (!this.ipcps.delete(difName)) return;
    for (const s of this.sessions) s.dropDif(difName);
  }

  ipcp(difName: string): IpcProcess | undefined {
    return this.ipcps.get(difName);
  }

  difs(): IpcProcess[] {
    return [...this.ipcps.values()];
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Create the socket and start accepting applications. A stale socket file (nobody listening)
   * is replaced; a live one is a SocketPathError (code socket_in_use).
   */
  listen(): void {
    if (this.closed) throw new Error('the IPC daemon is closed');
    if (this.listenFd >= 0) return;
    mkdirSync(dirname(this.socketPath), { recursive: true, mode: 0o755 });
    this.removeStale();
    this.listenFd = native.listenUnix(this.socketPath, 128);
    try {
      if (this.opts.mode !== undefined) chmodSync(this.socketPath, this.opts.mode);
      this.socketIno = lstatSync(this.socketPath).ino;
      this.watcher = native.watchReadable(this.listenFd, () => this.guarded('accept', null, () => this.acceptSome()));
      this.watcher.start();
    } catch (e) {
      this.closeListener();
      throw e;
    }
    this.startIdleSweep();
    this.log.info({ socket: this.socketPath }, 'ipc: daemon listening');
  }

  /** Close every session (their flows are deallocated) and the socket (its file is removed). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeListener();
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = null;
    for (const s of [...this.sessions]) s.close('IPC daemon shutting down');
  }

  private removeStale(): void {
    if (removeStaleSocket(this.socketPath, 'another IPC daemon')) this.log.info({ socket: this.socketPath }, 'ipc: removed a stale socket');
  }


  private closeListener(): void {
    this.acceptBackoff.close();
    this.watcher?.close();
    this.watcher = null;
    if (this.listenFd >= 0) {
      safeClose(this.listenFd);
      this.listenFd = -1;
      try {
        // Only our own socket file (a successor may have replaced it).
        if (this.socketIno !== null && lstatSync(this.socketPath).ino === this.socketIno) unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
  }

  /**
   * Run one entry point of the daemon (not of a session): an exception is logged and counted,
   * and the daemon goes on.
   */
  private guarded(where: string, session: number | null, fn: () => void): void {
    try {
      this.opts.faultInjection?.(where, session);
      fn();
    } catch (e) {
      this.stats.faults++;
      this.log.error({ where, err: errText(e), stack: (e as Error)?.stack }, 'ipc: internal error contained');
    }
  }

  /** @internal For sessions and bridges: the fault injector, if any. */
  inject(where: string, session: number | null): void {
    this.opts.faultInjection?.(where, session);
  }

  private acceptSome(): void {
    for (let i = 0; i < 16 && this.listenFd >= 0; i++) {
      let fd: number;
      try {
        fd = native.accept(this.listenFd);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ECONNABORTED' || code === 'EPROTO') continue; // that one connection is gone
        this.acceptFailed(e);
        return;
      }
      if (fd < 0) return;
      this.acceptBackoff.succeeded();
      this.admit(fd);
    }
  }

  /** accept(2) failed (out of fds, most likely): back off (src/sys/accept-backoff.ts). */
  private acceptFailed(e: unknown): void {
    this.stats.acceptErrors++;
    if (!this.watcher) return;
    this.acceptBackoff.failed(e);
  }

  /** A new connection: check the limits, then serve it as a Session (or refuse it). */
  private admit(fd: number): void {
    let cred: PeerCred | null = null;
    try {
      cred = native.peerCred(fd);
    } catch {
      // not a Unix socket peer we can identify: limits apply to "unknown" (uid -1)
    }
    const uid = cred?.uid ?? -1;
    if (this.sessions.size >= this.limits.maxSessions) {
      return this.refuse(fd, uid, 'max_sessions', `the IPC daemon serves ${this.limits.maxSessions} applications already (limit maxSessions); try again later`);
    }
    if (!this.isUnlimited(uid) && this.usage(uid).sessions >= this.limits.maxSessionsPerUid) {
      return this.refuse(fd, uid, 'max_sessions_per_uid', `user ${uid} has ${this.limits.maxSessionsPerUid} connections to the IPC daemon already (limit maxSessionsPerUid)`);
    }
    this.attach(fd, cred);
  }

  private refuse(fd: number, uid: number, reason: RefuseReason, message: string): void {
    this.stats.refused[reason]++;
    this.refuseLog.warn({ uid, reason });
    try {
      const frame = encodeFrame({ op: 'error', id: null, code: 'limit_exceeded', message });
      native.sendMsg(fd, frame, 0, frame.byteLength, null); // best effort: a new socket has room
    } catch {
      // the peer is gone already
    }
    safeClose(fd);
  }

  /** Serve an application on an already connected stream socket (takes the fd). */
  attach(fd: number, cred: PeerCred | null = null): Session {
    if (cred === null) {
      try {
        cred = native.peerCred(fd);
      } catch {
        cred = null;
      }
    }
    const s = new Session(this, fd, ++this.stats.sessionsTotal, this.log, cred);
    this.sessions.add(s);
    this.stats.sessions = this.sessions.size;
    this.emit('session', s);
    return s;
  }

  /** Bytes queued for applications over all sessions (each bounded by limits.outputHighWater × 4). */
  outputQueuedBytes(): number {
    let n = 0;
    for (const s of this.sessions) n += s.queuedBytes;
    return n;
  }

  /** What one uid holds now, over all its sessions. */
  usage(uid: number): { sessions: number; flows: number; registrations: number } {
    const u = { sessions: 0, flows: 0, registrations: 0 };
    for (const s of this.sessions) {
      if (s.uid !== uid) continue;
      u.sessions++;
      u.flows += s.flowCount + s.allocationCount;
      u.registrations += s.registrationCount;
    }
    return u;
  }

  /** @internal */
  isUnlimited(uid: number): boolean {
    return this.limits.unlimitedUids.includes(uid);
  }

  /** @internal */
  sessionClosed(s: Session, reason: string, cause: SessionCloseCause): void {
    if (!this.sessions.delete(s)) return;
    this.stats.sessions = this.sessions.size;
    this.stats.sessionsClosed[cause]++;
    this.emit('sessionClosed', s, reason);
  }

  /** @internal */
  countMalformed(): void {
    this.stats.malformed++;
  }

  private startIdleSweep(): void {
    if (this.idleTimer) return;
    const every = Math.max(10, Math.min(Math.floor(this.limits.idleTimeoutMs / 2), 5000));
    this.idleTimer = setInterval(() => {
      const now = Date.now();
      for (const s of [...this.sessions]) s.sweep(now);
    }, every);
    this.idleTimer.unref();
  }
}

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

function checkLimits(l: IpcLimits): IpcLimits {
  for (const k of ['maxSessions', 'maxSessionsPerUid', 'maxFlowsPerUid', 'maxRegistrationsPerUid', 'maxAllocateTimeoutMs', 'idleTimeoutMs', 'outputHighWater'] as const) {
    const v = l[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) throw new DifError('invalid_argument', `IPC daemon limit ${k} must be an integer 1..${2 ** 31 - 1}, not ${String(v)}`);
  }
  if (!Array.isArray(l.unlimitedUids) || !l.unlimitedUids.every((u) => Number.isInteger(u) && u >= 0)) throw new DifError('invalid_argument', 'IPC daemon limit unlimitedUids must be a list of uids');
  return l;
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
export class Session {
  /** The peer's uid (SO_PEERCRED), -1 when unknown. */
  readonly uid: number;
  readonly pid: number;
  private readonly conn: FramedConn;
  private readonly regs = new Map<string, SessionRegistration>();
  private readonly requests = new Map<number, FlowRequest>();
  private readonly flows = new Map<number, SessionFlow>();
  private readonly allocations = new Set<AbortController>();
  private nextRequest = 1;
  private nextFlow = 1;
  private closed = false;
  private lastActive = Date.now();
  private readonly log: Logger;

  constructor(
    private readonly daemon: IpcDaemon,
    fd: number,
    readonly id: number,
    log: Logger,
    cred: PeerCred | null,
  ) {
    this.uid = cred?.uid ?? -1;
    this.pid = cred?.pid ?? -1;
    this.log = log.child({ session: id, uid: this.uid, pid: this.pid });
    this.conn = new FramedConn(fd, 0, { outputHighWater: daemon.limits.outputHighWater });
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
    for (const a of this.allocations) step('abort allocation', () => a.abort());
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
    }
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
      case 'register': {
        const ipcp = this.ipcp(req.dif);
        this.checkLimit('registrations');
        const reg = ipcp.register(req.app, (fr) => {
          this.guard('flow request', () => this.onFlowRequest(req.dif, fr));
          // Not taken (a fault, or the session is gone): answer the peer now rather than let it time out.
          if (fr.state === 'waiting' && ![...this.requests.values()].includes(fr)) safeReject(fr, 'application disconnected');
        });
        const key = `${req.dif}\n${appNameKey(reg.appName)}`;
        this.regs.set(key, { dif: req.dif, key, reg });
        this.conn.send({ op: 'result', id: req.id });
        return;
      }
      case 'unregister': {
        this.ipcp(req.dif);
        let key: string;
        try {
          key = `${req.dif}\n${appNameKey(req.app)}`;
        } catch (e) {
          throw new DifError('invalid_name', (e as Error).message, { cause: e });
        }
        const r = this.regs.get(key);
        if (!r) throw new DifError('not_registered', `${req.app} is not registered in ${req.dif} by this application`);
        this.regs.delete(key);
        r.reg.unregister();
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
        this.giveFlow(req.id, flow);
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
    return fr;
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
    this.allocations.add(ac);
    pending.then(
      (flow) => {
        let handedOver = false;
        this.guard('allocation', () => {
          this.allocations.delete(ac);
          if (this.closed) return;
          handedOver = true; // giveFlow deallocates the flow itself if it fails
          try {
            this.giveFlow(req.id, flow);
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
          if (!this.closed) this.fail(req.id, e);
        }),
    );
  }

  private onFlowRequest(dif: string, fr: FlowRequest): void {
    if (this.closed) return fr.reject('application disconnected');
    if (this.requests.size >= MAX_WAITING_REQUESTS) return fr.reject('too many flow requests waiting for the application');
    const id = this.nextRequest++;
    this.requests.set(id, fr);
    fr.once('cancelled', (reason) =>
      this.guard('request cancelled', () => {
        if (this.requests.get(id) !== fr) return;
        this.requests.delete(id);
        this.conn.send({ op: 'request_cancelled', request: id, reason: reason.slice(0, MAX_REASON_CHARS) });
      }),
    );
    this.conn.send({ op: 'flow_request', dif, app: formatAppName(fr.localApp), request: id, remoteApp: formatAppName(fr.remoteApp), qos: fr.qos });
  }

  /**
   * Give the application the flow's fd with the result: the flow's own data file when the IPC
   * process has one (the guest's shim DIF: SDUs then never cross the daemon), else our new
   * socketpair's other end, with a bridge on ours. No fd to be had (EMFILE): the flow is
   * deallocated and the answer is 'no_resources'.
   */
  private giveFlow(id: number, flow: Flow): void {
    const handle = this.nextFlow++;
    const stats = this.daemon.stats;
    const hooks: BridgeHooks = {
      onFlowEnd: (reason: string, cause: DeallocationCause) => {
        // While the session closes, the connection's end tells the application.
        if (!this.closed) this.conn.send({ op: 'flow_deallocated', flow: handle, reason: reason.slice(0, MAX_REASON_CHARS), cause });
      },
      onClosed: () => {
        this.flows.delete(handle);
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
    let theirs = -1;
    let datapath: FlowDatapath;
    let link: FlowLink;
    try {
      const dataFd = flow.takeDataFd?.() ?? null;
      if (dataFd !== null) {
        theirs = dataFd;
        datapath = 'vmpi_file';
        link = new DirectFlowLink(flow, hooks);
      } else {
        let pair: [number, number];
        try {
          pair = native.socketpairSeqpacket();
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          stats.flowFdFailures++;
          throw new DifError('no_resources', `the IPC daemon could not create the flow's socket (${code ?? errText(e)}): it is out of file descriptors; try again later`, { cause: e });
        }
        const [mine, other] = pair;
        theirs = other;
        datapath = 'socket';
        try {
          // Both ends: the application's sends and ours must fit a max-SDU record.
          if (!(sizeFlowSocket(mine, flow.qos.maxSdu) && sizeFlowSocket(other, flow.qos.maxSdu))) {
            this.log.warn({ maxSdu: flow.qos.maxSdu }, "ipc: the flow socket's buffer is below the flow's max SDU (net.core.wmem_max): larger SDUs will be refused");
          }
        } catch (e) {
          this.log.warn({ err: errText(e) }, "ipc: could not size the flow socket's buffers");
        }
        try {
          link = new FlowBridge(flow, mine, hooks, this.log);
        } catch (e) {
          safeClose(mine);
          throw e;
        }
      }
    } catch (e) {
      if (theirs >= 0) safeClose(theirs);
      try {
        flow.deallocate(e instanceof DifError && e.code === 'no_resources' ? 'IPC daemon: no file descriptor for the flow' : `IPC daemon: ${errText(e)}`);
      } catch {
        // the flow is gone either way
      }
      throw e;
    }
    this.flows.set(handle, { handle, link });
    const info: FlowInfo = {
      flow: handle,
      portId: flow.portId,
      dif: flow.difName,
      localApp: formatAppName(flow.localApp),
      remoteApp: formatAppName(flow.remoteApp),
      qos: { reliable: flow.qos.reliable, inOrder: flow.qos.inOrder, maxSdu: flow.qos.maxSdu },
      datapath,
    };
    this.conn.send({ op: 'result', id, flow: info }, [theirs], true);
  }
}
