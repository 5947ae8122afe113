/**
 * daemon.ts — the IPC daemon: offers the IPC API (api.ts) of the IPC processes it hosts to
 * applications over one local Unix socket (paper, Section II; shaped like rlite's control
 * handle: register/unregister, allocate, accept/reject incoming flows, then plain reads and writes
 * on a per-flow file descriptor).
 *
 * Owns: the listening socket (stale-socket recovery, removal on close), admission (limits),
 * the set of sessions (one Session per connected application, session.ts) and the idle sweep.
 * Each session holds its registrations, the flow requests waiting for its answer, its flows
 * (flow-handover.ts, datapath.ts) and its pending allocations.
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
 * Restart (snapshot.ts): `snapshot()` is the daemon's sessions as JSON plus their fds by
 * role, `onStateChange` says when it changed (before the application hears of the change: a
 * new session before its first request is read, a registration or a flow before its answer),
 * `resume(snapshot, fd, reclaim)` takes the sessions over in a new process before it listens,
 * and `abandon()` lets go of everything without closing any fd (what a crash does).
 *
 * The control protocol is protocol.ts (length-prefixed JSON, versioned; a malformed message
 * gets an `error` with code 'malformed' and the reason). The data path never crosses the control
 * socket: see datapath.ts for why the per-flow SOCK_SEQPACKET pair is the cheapest host path,
 * and how in a guest the application gets the VMPI driver's file of the flow's channel instead.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { DifError, type IpcProcess } from '../api.js';
import { native, type FdWatcher, type PeerCred } from '../../sys/native.js';
import { logger as rootLogger, ThrottledLog, type Logger } from '../../sys/log.js';
import { AcceptBackoff } from '../../sys/accept-backoff.js';
import { removeStaleSocket } from '../../sys/unix-socket.js';
import { errText, safeClose } from '../../sys/fd.js';
import { checkLimits, DEFAULT_IPC_LIMITS, DEFAULT_MAX_RING_BYTES, type IpcDaemonStats, type IpcLimits, type RefuseReason, type SessionCloseCause } from './daemon-limits.js';
import { Session } from './session.js';
import { encodeFrame } from './protocol.js';
import { IPC_DAEMON_SNAPSHOT_VERSION, parseIpcDaemonSnapshot, type IpcDaemonSnapshot } from './snapshot.js';
import type { ReclaimFlow, ResumeFd } from './session.js';

export { Session } from './session.js';
export { DEFAULT_IPC_LIMITS, SESSION_CLOSE_CAUSES, type IpcDaemonStats, type IpcLimits, type LimitKind, type RefuseReason, type SessionCloseCause } from './daemon-limits.js';

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
  /** Called when snapshot() would show something new (guarded: a throw is logged and ignored). */
  onStateChange?: () => void;
  /**
   * The memory of all flow rings at most (memfd bytes, dif/ipc/ring.ts); past it new flows keep
   * the socket data path. Default DEFAULT_MAX_RING_BYTES; 0: never offer rings.
   */
  maxRingBytes?: number;
}

/** What resume() did. */
export interface IpcResumeSummary {
  sessions: number;
  /** Sessions whose socket came back but whose stream was out of step: closed. */
  outOfStep: number;
  /** Sessions whose socket did not come back (the application had gone). */
  missing: number;
  flows: number;
  flowsLost: number;
  registrations: number;
}

export interface IpcDaemonEvents {
  session: [session: Session];
  sessionClosed: [session: Session, reason: string];
}

export class IpcDaemon extends EventEmitter<IpcDaemonEvents> {
  readonly socketPath: string;
  readonly limits: Readonly<IpcLimits>;
  /** The memory of all flow rings at most (IpcDaemonOptions.maxRingBytes). */
  readonly maxRingBytes: number;
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
    bridgeAborts: { fds_on_flow_socket: 0, internal_error: 0, ring_broken: 0 },
    ringFlows: 0,
    ringBytes: 0,
    ringsRefused: 0,
    faults: 0,
  };
  private readonly ipcps = new Map<string, IpcProcess>();
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private socketIno: number | null = null;
  private closed = false;
  private abandoned = false;
  private readonly acceptBackoff: AcceptBackoff;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly refuseLog: ThrottledLog;

  constructor(private readonly opts: IpcDaemonOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.log = (opts.logger ?? rootLogger).child({ component: 'ipc-daemon' });
    this.limits = Object.freeze(checkLimits({ ...DEFAULT_IPC_LIMITS, ...opts.limits }));
    this.maxRingBytes = opts.maxRingBytes ?? DEFAULT_MAX_RING_BYTES;
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
  listen(inheritedFd?: number): void {
    if (this.closed) throw new Error('the IPC daemon is closed');
    if (this.listenFd >= 0) return;
    if (inheritedFd !== undefined) {
      // The same socket a previous process of this server listened on (restart): applications
      // that connected while no process ran wait in its backlog.
      this.listenFd = inheritedFd;
    } else {
      mkdirSync(dirname(this.socketPath), { recursive: true, mode: 0o755 });
      this.removeStale();
      // The file appears with its mode (set under its temporary name, native.listenUnix).
      const mode = this.opts.mode;
      this.listenFd = native.listenUnix(this.socketPath, 128, mode === undefined ? undefined : (name) => chmodSync(name, mode));
    }
    try {
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

  /** The listening socket's fd (-1 when not listening): the restart code keeps a copy. */
  get listeningFd(): number {
    return this.listenFd;
  }

  /** The sessions as snapshot.ts persists them, and the fds they hold by role (not in the JSON). */
  snapshot(): { state: IpcDaemonSnapshot; fds: Map<string, number> } {
    const fds = new Map<string, number>();
    const sessions = [...this.sessions].map((s) => {
      const snap = s.snapshot();
      for (const [role, fd] of snap.fds) fds.set(role, fd);
      return snap.state;
    });
    return { state: { version: IPC_DAEMON_SNAPSHOT_VERSION, lastSession: this.stats.sessionsTotal, sessions }, fds };
  }

  /**
   * Take over the sessions a dead process of this daemon served (`snapshot` as read back; checked:
   * IpcStateError 'state_version' / 'state_invalid', nothing taken). Call after addIpcp and
   * before listen. `fd(role)` gives each saved fd back (taken: the daemon closes it when done),
   * `reclaim(dif, portId)` each flow from its restored IPC process. A session whose socket did
   * not come back is skipped (its flows' fds are closed); see Session.resumeFrom for the rest.
   */
  resume(snapshot: unknown, fd: ResumeFd, reclaim: ReclaimFlow): IpcResumeSummary {
    const snap = parseIpcDaemonSnapshot(snapshot);
    const sum: IpcResumeSummary = { sessions: 0, outOfStep: 0, missing: 0, flows: 0, flowsLost: 0, registrations: 0 };
    this.stats.sessionsTotal = Math.max(this.stats.sessionsTotal, snap.lastSession);
    for (const ss of snap.sessions) {
      const sock = fd(ss.socket);
      if (sock === undefined) {
        sum.missing++;
        for (const f of ss.flows) {
          const x = fd(f.socket);
          if (x !== undefined) safeClose(x);
        }
        continue;
      }
      const s = new Session(this, sock, ss.id, this.log, ss.cred.uid === -1 ? null : ss.cred);
      this.sessions.add(s);
      this.stats.sessions = this.sessions.size;
      s.resumeFrom(ss, fd, reclaim);
      if (ss.stream !== 'in_step') {
        sum.outOfStep++;
        continue;
      }
      sum.sessions++;
      sum.flows += s.flowCount;
      sum.flowsLost += ss.flows.length - s.flowCount;
      sum.registrations += s.registrationCount;
      this.emit('session', s);
    }
    this.log.info({ ...sum }, 'ipc: sessions resumed from the last process');
    return sum;
  }

  /**
   * Let go of everything without a word and close nothing (no session, flow or socket; the
   * socket file stays): what a crash does, so a successor can resume (tests, hand-over).
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.abandoned = true;
    this.acceptBackoff.close();
    this.watcher?.close();
    this.watcher = null;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = null;
    for (const s of this.sessions) s.abandon();
    this.sessions.clear();
  }

  /** @internal What a session holds changed (snapshot.ts). */
  changed(): void {
    if (this.abandoned || this.opts.onStateChange === undefined) return;
    try {
      this.opts.onStateChange();
    } catch (e) {
      this.log.warn({ err: errText(e) }, 'ipc: the state change callback threw (ignored)');
    }
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
    this.changed(); // persisted before its first request is read
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
    this.changed();
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
