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
import { native, type FdWatcher } from '../../native.js';
import { logger as rootLogger, type Logger } from '../../log.js';
import { FramedConn, safeClose } from './conn.js';
import { DirectFlowLink, FlowBridge, type BridgeHooks, type FlowLink } from './datapath.js';
import { IpcProtocolError, MAX_REASON_CHARS, parseClientRequest, type ClientRequest, type FlowDatapath, type FlowInfo } from './protocol.js';

export interface IpcDaemonOptions {
  /** The Unix socket to listen on (its directory is created when missing). */
  socketPath: string;
  /** chmod the socket after creating it (e.g. 0o660); default: leave it to the umask. */
  mode?: number;
  logger?: Logger;
}

export interface IpcDaemonEvents {
  session: [session: Session];
  sessionClosed: [session: Session, reason: string];
}

export interface IpcDaemonStats {
  sessions: number;
  sessionsTotal: number;
  malformed: number;
}

/** Flow requests a session may leave unanswered at once; more are rejected. */
const MAX_WAITING_REQUESTS = 1024;

export class IpcDaemon extends EventEmitter<IpcDaemonEvents> {
  readonly socketPath: string;
  readonly stats: IpcDaemonStats = { sessions: 0, sessionsTotal: 0, malformed: 0 };
  private readonly ipcps = new Map<string, IpcProcess>();
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private socketIno: number | null = null;
  private closed = false;

  constructor(private readonly opts: IpcDaemonOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.log = (opts.logger ?? rootLogger).child({ component: 'ipc-daemon' });
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
   * is replaced; a live one is an EADDRINUSE error.
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
      this.watcher = native.watchReadable(this.listenFd, () => this.acceptSome());
      this.watcher.start();
    } catch (e) {
      this.closeListener();
      throw e;
    }
    this.log.info({ socket: this.socketPath }, 'ipc: daemon listening');
  }

  /** Close every session (their flows are deallocated) and the socket (its file is removed). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeListener();
    for (const s of [...this.sessions]) s.close('IPC daemon shutting down');
  }

  private removeStale(): void {
    let st;
    try {
      st = lstatSync(this.socketPath);
    } catch {
      return;
    }
    if (!st.isSocket()) throw Object.assign(new Error(`${this.socketPath} exists and is not a socket`), { code: 'EEXIST' });
    let fd = -1;
    try {
      fd = native.connectUnix(this.socketPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw e;
      this.log.info({ socket: this.socketPath }, 'ipc: removing a stale socket');
      unlinkSync(this.socketPath);
      return;
    }
    safeClose(fd);
    throw Object.assign(new Error(`another IPC daemon is listening on ${this.socketPath}`), { code: 'EADDRINUSE' });
  }

  private closeListener(): void {
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

  private acceptSome(): void {
    for (let i = 0; i < 16 && this.listenFd >= 0; i++) {
      let fd: number;
      try {
        fd = native.accept(this.listenFd);
      } catch (e) {
        this.log.warn({ err: e }, 'ipc: accept failed');
        return;
      }
      if (fd < 0) return;
      this.attach(fd);
    }
  }

  /** Serve an application on an already connected stream socket (takes the fd). */
  attach(fd: number): Session {
    const s = new Session(this, fd, ++this.stats.sessionsTotal, this.log);
    this.sessions.add(s);
    this.stats.sessions = this.sessions.size;
    this.emit('session', s);
    return s;
  }

  /** @internal */
  sessionClosed(s: Session, reason: string): void {
    this.sessions.delete(s);
    this.stats.sessions = this.sessions.size;
    this.emit('sessionClosed', s, reason);
  }

  /** @internal */
  countMalformed(): void {
    this.stats.malformed++;
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
export class Session {
  private readonly conn: FramedConn;
  private readonly regs = new Map<string, SessionRegistration>();
  private readonly requests = new Map<number, FlowRequest>();
  private readonly flows = new Map<number, SessionFlow>();
  private readonly allocations = new Set<AbortController>();
  private nextRequest = 1;
  private nextFlow = 1;
  private closed = false;
  private readonly log: Logger;

  constructor(
    private readonly daemon: IpcDaemon,
    fd: number,
    readonly id: number,
    log: Logger,
  ) {
    this.log = log.child({ session: id });
    this.conn = new FramedConn(fd, 0);
    this.conn.on('message', (m) => this.onMessage(m));
    this.conn.on('malformed', (e) => this.malformed(e));
    this.conn.on('close', (reason) => this.close(reason));
  }

  get flowCount(): number {
    return this.flows.size;
  }

  get registrationCount(): number {
    return this.regs.size;
  }

  /** Drop everything this application holds and close its connection. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.allocations) a.abort();
    this.allocations.clear();
    for (const req of this.requests.values()) {
      if (req.state === 'waiting') {
        try {
          req.reject('application disconnected');
        } catch {
          // settled meanwhile
        }
      }
    }
    this.requests.clear();
    for (const r of this.regs.values()) r.reg.unregister();
    this.regs.clear();
    for (const f of [...this.flows.values()]) f.link.destroy('application disconnected');
    this.flows.clear();
    this.conn.close(reason);
    this.log.debug({ reason }, 'ipc: session closed');
    this.daemon.sessionClosed(this, reason);
  }

  /** @internal */
  dropDif(dif: string): void {
    for (const [k, r] of this.regs) {
      if (r.dif !== dif) continue;
      r.reg.unregister();
      this.regs.delete(k);
    }
  }

  private malformed(e: IpcProtocolError): void {
    this.daemon.countMalformed();
    this.log.debug({ err: e.message }, 'ipc: malformed message');
    this.conn.send({ op: 'error', id: e.id, code: 'malformed', message: e.message });
  }

  private onMessage(raw: Record<string, unknown>): void {
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
      const msg: Record<string, unknown> = { op: 'error', id, code: e.code, message: e.message };
      if (e.peerReason !== undefined) msg.peerReason = e.peerReason;
      this.conn.send(msg);
    } else {
      this.log.warn({ err: e }, 'ipc: request failed');
      this.conn.send({ op: 'error', id, code: 'invalid_argument', message: (e as Error)?.message ?? String(e) });
    }
  }

  private ipcp(dif: string): IpcProcess {
    const ipcp = this.daemon.ipcp(dif);
    if (!ipcp) throw new DifError('unknown_dif', `no DIF named ${JSON.stringify(dif)} here (${this.daemon.difs().map((i) => i.difName).join(', ') || 'none'})`);
    return ipcp;
  }

  private handle(req: ClientRequest): void {
    switch (req.op) {
      case 'list_difs':
        this.conn.send({ op: 'result', id: req.id, difs: this.daemon.difs().map((i) => ({ name: i.difName, address: i.address })) });
        return;
      case 'register': {
        const ipcp = this.ipcp(req.dif);
        const reg = ipcp.register(req.app, (fr) => this.onFlowRequest(req.dif, fr));
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
    const ac = new AbortController();
    this.allocations.add(ac);
    const opts = req.timeoutMs === undefined ? { signal: ac.signal, dataFile: true } : { signal: ac.signal, dataFile: true, timeoutMs: req.timeoutMs };
    ipcp.allocateFlow(req.src, req.dst, req.qos, opts).then(
      (flow) => {
        this.allocations.delete(ac);
        if (this.closed) return flow.deallocate('application disconnected');
        this.giveFlow(req.id, flow);
      },
      (e: unknown) => {
        this.allocations.delete(ac);
        if (!this.closed) this.fail(req.id, e);
      },
    );
  }

  private onFlowRequest(dif: string, fr: FlowRequest): void {
    if (this.closed) return fr.reject('application disconnected');
    if (this.requests.size >= MAX_WAITING_REQUESTS) return fr.reject('too many flow requests waiting for the application');
    const id = this.nextRequest++;
    this.requests.set(id, fr);
    fr.once('cancelled', (reason) => {
      if (this.requests.get(id) !== fr) return;
      this.requests.delete(id);
      this.conn.send({ op: 'request_cancelled', request: id, reason: reason.slice(0, MAX_REASON_CHARS) });
    });
    this.conn.send({ op: 'flow_request', dif, app: formatAppName(fr.localApp), request: id, remoteApp: formatAppName(fr.remoteApp), qos: fr.qos });
  }

  /**
   * Give the application the flow's fd with the result: the flow's own data file when the IPC
   * process has one (the guest's shim DIF: SDUs then never cross the daemon), else our new
   * socketpair's other end, with a bridge on ours.
   */
  private giveFlow(id: number, flow: Flow): void {
    const handle = this.nextFlow++;
    const hooks: BridgeHooks = {
      onFlowEnd: (reason: string, cause: DeallocationCause) => {
        // While the session closes, the connection's end tells the application.
        if (!this.closed) this.conn.send({ op: 'flow_deallocated', flow: handle, reason: reason.slice(0, MAX_REASON_CHARS), cause });
      },
      onClosed: () => {
        this.flows.delete(handle);
      },
    };
    let theirs: number;
    let datapath: FlowDatapath;
    let link: FlowLink;
    try {
      const dataFd = flow.takeDataFd?.() ?? null;
      if (dataFd !== null) {
        theirs = dataFd;
        datapath = 'vmpi_file';
        link = new DirectFlowLink(flow, hooks);
      } else {
        const [mine, other] = native.socketpairSeqpacket();
        theirs = other;
        datapath = 'socket';
        link = new FlowBridge(flow, mine, hooks, this.log);
      }
    } catch (e) {
      flow.deallocate('IPC daemon: no file descriptor for the flow');
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
