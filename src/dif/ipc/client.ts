/**
 * client.ts — the application side of the IPC API (api.ts) over the IPC daemon's socket
 * (daemon.ts): IpcClient connects, registers application names (incoming flow requests come as
 * events or an async iterator, each accepted or rejected) and allocates flows. This file owns
 * the connection and its requests; client-registration.ts, client-request.ts and client-flow.ts
 * the objects it hands out (all exported from here too). A ClientFlow is
 * a `Flow` (api.ts) whose SDUs go straight through the per-flow fd the daemon passed
 * (datapath.ts): the daemon's SOCK_SEQPACKET end (host), or in a guest the VMPI driver's file of
 * the flow's channel (`datapath` 'vmpi_file': no daemon on the data path at all). write() is one
 * system call, false when the fd is full ('drain' follows), and reading takes SDUs off the fd as
 * they come.
 *
 * Differences from an in-process IPC process: requests are asynchronous (register, allocate,
 * accept and reject return promises), and errors are DifErrors rebuilt from the daemon's answer
 * (same `code` and `peerReason`), plus 'disconnected' when the daemon connection is gone and
 * 'malformed' when the daemon refused a message.
 */
import { EventEmitter } from 'node:events';
import { DifError, type DifErrorCode, type QosRequest } from '../api.js';
import { formatAppName, parseAppName, toAppName, type AppName } from '../naming.js';
import { native } from '../../sys/native.js';
import { FramedConn } from './conn.js';
import { errnoCode, errText, safeClose } from '../../sys/fd.js';
import { mapRing, RingEnd, RingError } from './ring.js';

/** How an IpcClient talks to its daemon. */
export interface IpcClientOptions {
  /**
   * Ask for the 'ring' data path (shared-memory rings per flow, ring.ts) on allocate and accept;
   * a daemon that cannot (an older one, or its ring memory is used up) answers 'socket'.
   * Default: on, unless $VMPI_IPC_RING is '0' (then one SOCK_SEQPACKET record stream per flow,
   * the path every daemon has).
   */
  rings?: boolean;
}

function ringsByDefault(): boolean {
  return process.env.VMPI_IPC_RING !== '0';
}
import { ClientFlow } from './client-flow.js';
import { ClientFlowRequest } from './client-request.js';
import { ClientRegistration } from './client-registration.js';
import { defaultIpcSocketPath, IpcProtocolError, parseDaemonMessage, registrationKey, type DaemonMessage, type DifInfo, type DifInspection, type IpcpInfo, type TruncationInfo } from './protocol.js';

export { ClientFlow, CLIENT_RX_QUEUE_BYTES, CLIENT_RX_QUEUE_LIMIT } from './client-flow.js';
export { ClientFlowRequest } from './client-request.js';
export { ClientRegistration, type ClientRegistrationEvents } from './client-registration.js';

/** connect() to a daemon with a full backlog: retried this often, this far apart (2 s in all). */
const CONNECT_BUSY_RETRIES = 40;
const CONNECT_BUSY_DELAY_MS = 50;

export interface ClientAllocateOptions {
  /** The requesting application's name; default `ipc-client/<pid>`. */
  src?: AppName | string;
  qos?: QosRequest;
  /** How long the IPC process waits for the peer (its default otherwise). */
  timeoutMs?: number;
}

export interface IpcClientEvents {
  /** The daemon connection ended; every flow and registration of this client is gone. */
  close: [reason: string];
}

type ResultMsg = Extract<DaemonMessage, { op: 'result' }>;

interface Pending {
  resolve: (msg: ResultMsg, flow: ClientFlow | null) => void;
  reject: (e: DifError) => void;
}

function nameString(name: AppName | string, what: string): string {
  try {
    return formatAppName(toAppName(name));
  } catch (e) {
    throw new DifError('invalid_name', `bad ${what} name: ${(e as Error).message}`, { cause: e });
  }
}

export class IpcClient extends EventEmitter<IpcClientEvents> {
  private readonly conn: FramedConn;
  private readonly pending = new Map<number, Pending>();
  private readonly regs = new Map<string, ClientRegistration>();
  private readonly requests = new Map<number, ClientFlowRequest>();
  private readonly flows = new Map<number, ClientFlow>();
  private nextId = 1;
  private closeReason: string | null = null;
  /** Why the daemon refused this connection (an error without id before it closed), if it did. */
  private refusal: DifError | null = null;

  /** Connect to the daemon at `socketPath` (default: $VMPI_IPC_SOCKET or /run/vmpi/ipc.sock). */
  static async connect(socketPath: string = defaultIpcSocketPath(), opts: IpcClientOptions = {}): Promise<IpcClient> {
    // A daemon whose accept backlog is full refuses at once (EAGAIN): retry for a bounded while.
    for (let attempt = 0; ; attempt++) {
      try {
        return new IpcClient(native.connectUnix(socketPath), opts);
      } catch (e) {
        if (errnoCode(e) === 'EAGAIN' && attempt < CONNECT_BUSY_RETRIES) {
          await new Promise((r) => setTimeout(r, CONNECT_BUSY_DELAY_MS));
          continue;
        }
        const busy = errnoCode(e) === 'EAGAIN' ? ` (it accepted nothing for ${(CONNECT_BUSY_RETRIES * CONNECT_BUSY_DELAY_MS) / 1000} s; is it stuck?)` : '';
        throw new DifError('disconnected', `cannot reach the IPC daemon at ${socketPath}: ${(e as Error).message}${busy}`, { cause: e });
      }
    }
  }

  /** Whether this client asks for the 'ring' data path (IpcClientOptions.rings). */
  readonly rings: boolean;

  /** Use an already connected stream socket to the daemon (takes the fd). */
  constructor(fd: number, opts: IpcClientOptions = {}) {
    super();
    this.rings = opts.rings ?? ringsByDefault();
    // No output budget on this side: the application owns its requests, and pausing our reads
    // while the daemon pauses its own (it does when we do not read) would deadlock both.
    this.conn = new FramedConn(fd, 8, { outputHighWater: Number.POSITIVE_INFINITY });
    this.conn.on('message', (m) => this.onMessage(m));
    this.conn.on('malformed', () => this.conn.close('the daemon sent a malformed message'));
    this.conn.on('close', (reason) => this.onClose(reason));
  }

  get closed(): boolean {
    return this.closeReason !== null;
  }

  /** The DIFs the daemon offers. */
  async listDifs(): Promise<DifInfo[]> {
    const r = await this.request({ op: 'list_difs' });
    return r.msg.difs ?? [];
  }

  /** The IPC processes the daemon hosts (DIF, type, name, address); `truncated` when the list was cut to fit. */
  async listIpcps(): Promise<{ ipcps: IpcpInfo[]; truncated?: TruncationInfo[] }> {
    const r = await this.request({ op: 'list_ipcps' });
    const out: { ipcps: IpcpInfo[]; truncated?: TruncationInfo[] } = { ipcps: r.msg.ipcps ?? [] };
    if (r.msg.truncated !== undefined) out.truncated = r.msg.truncated;
    return out;
  }

  /** A plain-data dump of DIF `dif`'s IPC process. Rejects with 'unknown_dif' (naming the DIFs there) if none. */
  async inspectDif(dif: string): Promise<DifInspection> {
    const r = await this.request({ op: 'inspect_dif', dif });
    if (!r.msg.inspect) throw new DifError('malformed', 'the daemon answered inspect_dif without an inspection (an older daemon?)');
    return r.msg.inspect;
  }

  /** Register `app` in DIF `dif`; incoming flow requests arrive on the registration. */
  async register(dif: string, app: AppName | string): Promise<ClientRegistration> {
    const appStr = nameString(app, 'application');
    const key = registrationKey(dif, appStr);
    if (this.regs.has(key)) throw new DifError('already_registered', `${appStr} is already registered in ${dif} by this client`);
    // In the table before the answer: a flow request may follow it in the same read.
    const reg = new ClientRegistration(this, dif, parseAppName(appStr));
    this.regs.set(key, reg);
    try {
      await this.request({ op: 'register', dif, app: appStr });
    } catch (e) {
      if (this.regs.get(key) === reg) this.regs.delete(key);
      throw e;
    }
    return reg;
  }

  /** Allocate a flow to `dst` in DIF `dif`. Rejects with a DifError ('rejected' with peerReason, …). */
  async allocate(dif: string, dst: AppName | string, opts: ClientAllocateOptions = {}): Promise<ClientFlow> {
    const msg: Record<string, unknown> = {
      op: 'allocate',
      dif,
      src: nameString(opts.src ?? `ipc-client/${process.pid}`, 'source application'),
      dst: nameString(dst, 'destination application'),
      qos: opts.qos ?? {},
    };
    if (opts.timeoutMs !== undefined) msg.timeoutMs = opts.timeoutMs;
    if (this.rings) msg.rings = true;
    const r = await this.request(msg);
    return r.flow!;
  }

  /** Close the connection: the daemon deallocates this client's flows and drops its registrations. */
  close(): void {
    this.conn.close('closed by the application');
  }

  // --- internal --------------------------------------------------------------------------------

  /** @internal Send a request; resolves with the result (and the flow it carries, if any). */
  request(msg: Record<string, unknown>): Promise<{ msg: ResultMsg; flow: ClientFlow | null }> {
    if (this.closeReason !== null) return Promise.reject(this.refusal ?? new DifError('disconnected', `the IPC daemon connection is closed (${this.closeReason})`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: (m, flow) => resolve({ msg: m, flow }), reject });
      this.conn.send({ ...msg, id });
    });
  }

  /** @internal */
  unregistered(reg: ClientRegistration): void {
    const key = registrationKey(reg.difName, reg.appName);
    if (this.regs.get(key) === reg) this.regs.delete(key);
  }

  /** @internal */
  flowClosed(flow: ClientFlow): void {
    if (this.flows.get(flow.handle) === flow) this.flows.delete(flow.handle);
  }

  /** @internal */
  requestSettled(id: number): void {
    this.requests.delete(id);
  }

  private onMessage(raw: Record<string, unknown>): void {
    let msg: DaemonMessage;
    try {
      msg = parseDaemonMessage(raw);
    } catch (e) {
      if (e instanceof IpcProtocolError) return this.conn.close(`the daemon sent a bad message: ${e.message}`);
      throw e;
    }
    switch (msg.op) {
      case 'result': {
        let flow: ClientFlow | null = null;
        if (msg.flow) {
          const fd = this.conn.takeFd();
          if (fd === null) return this.conn.close('the daemon sent a flow without its file descriptor');
          let ring: RingEnd | undefined;
          if (msg.flow.datapath === 'ring') {
            const memfd = this.conn.takeFd();
            try {
              if (memfd === null) throw new RingError("the daemon sent a 'ring' flow without its ring's memfd");
              if (!this.rings) throw new RingError("the daemon sent a 'ring' flow to a client that did not ask for one");
              ring = new RingEnd(mapRing(memfd, msg.flow.ring?.bytes ?? 0, msg.flow.qos.maxSdu), fd, 'app');
            } catch (e) {
              // The flow is the daemon's: end it there, and fail the request with why.
              safeClose(fd);
              this.conn.send({ op: 'deallocate', id: this.nextId++, flow: msg.flow.flow, reason: `the application could not use the flow's ring: ${errText(e)}` });
              const p = this.pending.get(msg.id);
              this.pending.delete(msg.id);
              p?.reject(new DifError('no_resources', `the flow's shared-memory ring could not be used: ${errText(e)}`, { cause: e }));
              return;
            } finally {
              if (memfd !== null) safeClose(memfd); // the mapping stays
            }
          }
          flow = new ClientFlow(this, msg.flow, fd, ring);
          this.flows.set(flow.handle, flow);
        }
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (p) p.resolve(msg, flow);
        else flow?.deallocate('nobody asked for this flow');
        return;
      }
      case 'error': {
        const err = new DifError(msg.code as DifErrorCode, msg.message, msg.peerReason === undefined ? {} : { peerReason: msg.peerReason });
        const p = msg.id === null ? undefined : this.pending.get(msg.id);
        // The daemon refused the connection (a limit) or ends it (a restart cut a request of
        // ours): the close that follows fails with this.
        if (msg.id === null && (msg.code === 'limit_exceeded' || msg.code === 'disconnected')) this.refusal = err;
        if (p) {
          this.pending.delete(msg.id!);
          p.reject(err);
        }
        return;
      }
      case 'flow_request': {
        let key: string;
        try {
          key = registrationKey(msg.dif, msg.app);
        } catch {
          key = '';
        }
        const reg = this.regs.get(key);
        const req = new ClientFlowRequest(this, msg.request, msg.dif, parseAppName(msg.app), parseAppName(msg.remoteApp), msg.qos);
        this.requests.set(msg.request, req);
        if (!reg || !reg.deliver(req)) void req.reject(reg ? 'too many flow requests waiting' : 'not registered').catch(() => undefined);
        return;
      }
      case 'request_cancelled':
        this.requests.get(msg.request)?.cancel(msg.reason);
        this.requests.delete(msg.request);
        return;
      case 'flow_deallocated':
        this.flows.get(msg.flow)?.daemonDeallocated(msg.reason, msg.cause);
        return;
    }
  }

  private onClose(reason: string): void {
    this.closeReason = reason;
    const err = this.refusal ?? new DifError('disconnected', `the IPC daemon connection closed: ${reason}`);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const r of this.requests.values()) r.cancel('disconnected from the IPC daemon');
    this.requests.clear();
    for (const f of [...this.flows.values()]) f.daemonGone(`disconnected from the IPC daemon: ${reason}`);
    this.flows.clear();
    for (const r of [...this.regs.values()]) r.end('disconnected from the IPC daemon');
    this.regs.clear();
    this.emit('close', reason);
  }
}
