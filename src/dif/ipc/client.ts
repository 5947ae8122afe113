/**
 * client.ts — the application side of the IPC API (api.ts) over the IPC daemon's socket
 * (daemon.ts): IpcClient connects, registers application names (incoming flow requests come as
 * events or an async iterator, each accepted or rejected) and allocates flows. A ClientFlow is
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
import { DifError, type DeallocationCause, type DifErrorCode, type Flow, type FlowEvents, type FlowRequestEvents, type FlowRequestState, type FlowState, type FlowStats, type QosRequest, type QosSpec } from '../api.js';
import { appNameKey, formatAppName, parseAppName, toAppName, type AppName } from '../naming.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import { RxQueue } from '../rx-queue.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import { FramedConn } from './conn.js';
import { errnoCode, safeClose } from '../../sys/fd.js';
import { FLOW_READ_EMPTY, FLOW_READ_ENDED, readSocketBatch, readVmpiFileBatch, writeRecord, writeVmpiFile, type SduSink, type WriteRecordResult } from './datapath.js';
import { setBatchMode } from '../../vmpi/guest-file.js';
import { defaultIpcSocketPath, IpcProtocolError, parseDaemonMessage, type DaemonMessage, type DifInfo, type FlowDatapath, type FlowInfo } from './protocol.js';

/** SDUs a ClientFlow reads ahead while nobody consumes them; then the fd is left to fill up. */
export const CLIENT_RX_QUEUE_LIMIT = 256;
/** Bytes a ClientFlow reads ahead while nobody consumes them (the first SDU always fits). */
export const CLIENT_RX_QUEUE_BYTES = 4 * 1024 * 1024;
/** Incoming requests a registration keeps while nobody takes them; more are rejected. */
const REQUEST_QUEUE_LIMIT = 256;
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
  static async connect(socketPath: string = defaultIpcSocketPath()): Promise<IpcClient> {
    // A daemon whose accept backlog is full refuses at once (EAGAIN): retry for a bounded while.
    for (let attempt = 0; ; attempt++) {
      try {
        return new IpcClient(native.connectUnix(socketPath));
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

  /** Use an already connected stream socket to the daemon (takes the fd). */
  constructor(fd: number) {
    super();
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

  /** Register `app` in DIF `dif`; incoming flow requests arrive on the registration. */
  async register(dif: string, app: AppName | string): Promise<ClientRegistration> {
    const appStr = nameString(app, 'application');
    const key = `${dif}\n${appStr}`;
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
    const key = `${reg.difName}\n${formatAppName(reg.appName)}`;
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
          flow = new ClientFlow(this, msg.flow, fd);
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
        // The daemon refused the connection (a limit): the close that follows fails with this.
        if (msg.id === null && msg.code === 'limit_exceeded') this.refusal = err;
        if (p) {
          this.pending.delete(msg.id!);
          p.reject(err);
        }
        return;
      }
      case 'flow_request': {
        let key: string;
        try {
          key = `${msg.dif}\n${appNameKey(msg.app)}`;
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

// ---------------------------------------------------------------------------------------------

export interface ClientRegistrationEvents {
  /** An incoming flow request: accept() or reject() it. */
  request: [request: ClientFlowRequest];
  /** The registration ended (unregistered, or the daemon connection closed). */
  end: [reason: string];
}

/** A registered application name; requests come as 'request' events or through `for await`. */
export class ClientRegistration extends EventEmitter<ClientRegistrationEvents> implements AsyncIterable<ClientFlowRequest> {
  private queue: ClientFlowRequest[] = [];
  private waiters: Array<(r: ClientFlowRequest | null) => void> = [];
  private ended: string | null = null;

  constructor(
    private readonly client: IpcClient,
    readonly difName: string,
    readonly appName: AppName,
  ) {
    super();
    (this as unknown as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'request') queueMicrotask(() => this.flush());
    });
  }

  get active(): boolean {
    return this.ended === null;
  }

  /** The next incoming request, or null once the registration ended. */
  next(): Promise<ClientFlowRequest | null> {
    const r = this.shift();
    if (r) return Promise.resolve(r);
    if (this.ended !== null) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  [Symbol.asyncIterator](): AsyncGenerator<ClientFlowRequest, void, undefined> {
    return untilNull(() => this.next());
  }

  /** Unregister (waiting requests are rejected by the IPC process). No-op once ended. */
  async unregister(): Promise<void> {
    if (this.ended !== null) return;
    this.end('unregistered');
    await this.client.request({ op: 'unregister', dif: this.difName, app: formatAppName(this.appName) });
  }

  /** @internal false when the queue is full. */
  deliver(req: ClientFlowRequest): boolean {
    if (this.ended !== null) return false;
    const w = this.waiters.shift();
    if (w) {
      w(req);
      return true;
    }
    if (this.listenerCount('request') > 0) {
      this.emit('request', req);
      return true;
    }
    if (this.queue.length >= REQUEST_QUEUE_LIMIT) return false;
    this.queue.push(req);
    return true;
  }

  /** @internal */
  end(reason: string): void {
    if (this.ended !== null) return;
    this.ended = reason;
    this.client.unregistered(this);
    for (const w of this.waiters) w(null);
    this.waiters = [];
    this.emit('end', reason);
  }

  private shift(): ClientFlowRequest | undefined {
    for (;;) {
      const r = this.queue.shift();
      if (!r || r.state === 'waiting') return r;
    }
  }

  private flush(): void {
    while (this.listenerCount('request') > 0) {
      const r = this.shift();
      if (!r) return;
      this.emit('request', r);
    }
  }
}

/** An incoming flow request as the application sees it (accept/reject are asynchronous). */
export class ClientFlowRequest extends EventEmitter<FlowRequestEvents> {
  private _state: FlowRequestState = 'waiting';

  constructor(
    private readonly client: IpcClient,
    readonly id: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
  }

  get state(): FlowRequestState {
    return this._state;
  }

  /** Accept: resolves with the flow. Rejects with 'request_settled' if already answered or cancelled. */
  async accept(): Promise<ClientFlow> {
    this.settle('accepted');
    const r = await this.client.request({ op: 'accept', request: this.id });
    return r.flow!;
  }

  /** Refuse, telling the requester why. */
  async reject(reason: string): Promise<void> {
    this.settle('rejected');
    await this.client.request({ op: 'reject', request: this.id, reason: String(reason) });
  }

  /** @internal */
  cancel(reason: string): void {
    if (this._state !== 'waiting') return;
    this._state = 'cancelled';
    this.client.requestSettled(this.id);
    this.emit('cancelled', reason);
  }

  private settle(to: FlowRequestState): void {
    if (this._state !== 'waiting') throw new DifError('request_settled', `the flow request from ${formatAppName(this.remoteApp)} is already ${this._state}`);
    this._state = to;
    this.client.requestSettled(this.id);
  }
}

// ---------------------------------------------------------------------------------------------

/** A flow whose SDUs cross the per-flow SOCK_SEQPACKET fd the daemon passed. */
/** How a flow's fd carries SDUs (protocol.ts FlowDatapath). */
interface FlowFileIo {
  /** One read: records to `sink`; their count, or FLOW_READ_EMPTY / FLOW_READ_ENDED. */
  read(fd: number, maxSdu: number, sink: SduSink): number;
  write(fd: number, sdu: Uint8Array): WriteRecordResult;
}
const SOCKET_IO: FlowFileIo = { read: readSocketBatch, write: writeRecord };
const VMPI_FILE_IO: FlowFileIo = { read: (fd, maxSdu, sink) => readVmpiFileBatch(fd, true, maxSdu, sink), write: writeVmpiFile };
const VMPI_FILE_IO_UNBATCHED: FlowFileIo = { read: (fd, maxSdu, sink) => readVmpiFileBatch(fd, false, maxSdu, sink), write: writeVmpiFile };

export class ClientFlow extends EventEmitter<FlowEvents> implements Flow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  readonly handle: number;
  readonly portId: number;
  readonly difName: string;
  readonly localApp: AppName;
  readonly remoteApp: AppName;
  readonly qos: QosSpec;
  /** 'vmpi_file': the fd is the guest driver's file of the flow's channel (no daemon in between). */
  readonly datapath: FlowDatapath;
  /** Records from the daemon that were malformed: dropped. */
  badRecords = 0;
  private _state: FlowState = 'allocated';
  private _reason: string | null = null;
  private readonly interest: FdInterest;
  private readonly io: FlowFileIo;
  private fdOpen = true;
  /** End of file seen (or we stopped reading): nothing more will come. */
  private eof = false;
  private blocked = false;
  private readonly rx = new RxQueue(this, () => this.resumeReading());

  constructor(
    private readonly client: IpcClient,
    info: FlowInfo,
    private readonly fd: number,
  ) {
    super();
    this.handle = info.flow;
    this.portId = info.portId;
    this.difName = info.dif;
    this.localApp = parseAppName(info.localApp);
    this.remoteApp = parseAppName(info.remoteApp);
    this.qos = Object.freeze({ ...info.qos });
    this.datapath = info.datapath ?? 'socket';
    this.io = this.datapath === 'vmpi_file' ? (setBatchMode(fd) ? VMPI_FILE_IO : VMPI_FILE_IO_UNBATCHED) : SOCKET_IO;
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => {
      try {
        this.onEvents(ev);
      } catch (e) {
        // A fault on this flow's fd ends this flow, not the application's other flows.
        this.daemonGone(`internal error on the flow's fd: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    checkSdu(this, sdu);
    if (this.blocked) {
      this.stats.txRefused++;
      return false;
    }
    const r = this.io.write(this.fd, sdu);
    if (r === 'sent') {
      this.stats.txSdus++;
      this.stats.txBytes += sdu.byteLength;
      return true;
    }
    if (r === 'closed') throw new DifError('flow_deallocated', `flow ${this.portId}: the IPC daemon closed it`);
    if (r === 'too_large') {
      throw new DifError('sdu_too_large', `flow ${this.portId}: an SDU of ${sdu.byteLength} bytes does not fit the flow socket's buffer (the host's net.core.wmem_max is below the flow's max SDU of ${this.qos.maxSdu}): send smaller SDUs or raise it`);
    }
    this.stats.txRefused++;
    this.blocked = true;
    this.interest.want(native.UV_WRITABLE, true);
    return false;
  }

  send(sdu: Uint8Array): Promise<void> {
    return sendSdu(this, sdu);
  }

  read(): Promise<Uint8Array | null> {
    return this.rx.read();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return untilNull(() => this.read());
  }

  /** End the flow at both ends (idempotent). SDUs already written are passed on first. */
  deallocate(reason = 'deallocated by the application'): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.eof = true;
    this.stopFd(false);
    // Close our end only once the daemon has taken what we wrote (it answers after that).
    this.client.request({ op: 'deallocate', flow: this.handle, reason }).then(
      () => this.closeFd(),
      () => this.closeFd(),
    );
    this.emit('deallocated', reason, 'local');
    this.checkEnd();
  }

  // --- called by the client --------------------------------------------------------------------

  /** @internal The daemon says the flow ended; what is still in the fd can be read. */
  daemonDeallocated(reason: string, cause: DeallocationCause): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    this.interest.want(native.UV_WRITABLE, false);
    if (this.eof) this.closeFd();
    this.emit('deallocated', reason, cause);
    this.checkEnd();
  }

  /** @internal The daemon connection is gone. */
  daemonGone(reason: string): void {
    this.eof = true;
    this.stopFd(true);
    if (this._state === 'allocated') {
      this._state = 'deallocated';
      this._reason = reason;
      this.emit('deallocated', reason, 'closed');
    }
    this.checkEnd();
  }

  // ---------------------------------------------------------------------------------------------

  private onEvents(ev: number): void {
    if (!this.fdOpen) return;
    if (ev < 0) {
      this.eof = true;
      this.stopFd(true);
      this.checkEnd();
      return;
    }
    if (ev & native.UV_WRITABLE) {
      this.interest.want(native.UV_WRITABLE, false);
      if (this.blocked) {
        this.blocked = false;
        if (this._state === 'allocated') this.emit('drain');
      }
    }
    if (ev & native.UV_READABLE) this.readSome();
  }

  private readSome(): void {
    for (let i = 0; i < 64 && this.fdOpen && !this.eof; i++) {
      if (!this.rx.hasConsumer() && (this.rx.length >= CLIENT_RX_QUEUE_LIMIT || this.rx.bytes >= CLIENT_RX_QUEUE_BYTES)) {
        // Leave the rest in the socket: the daemon sees it full and stops taking from the flow.
        this.interest.want(native.UV_READABLE, false);
        break;
      }
      const n = this.io.read(this.fd, this.qos.maxSdu, this.sink);
      if (n === FLOW_READ_EMPTY) break;
      if (n === FLOW_READ_ENDED) {
        this.eof = true;
        this.stopFd(this._state === 'deallocated');
        break;
      }
    }
    this.checkEnd();
  }

  /** Where reads put SDUs (made once: no closure per read). */
  private readonly sink: SduSink = {
    sdu: (sdu) => {
      this.stats.rxSdus++;
      this.stats.rxBytes += sdu.byteLength;
      this.rx.push(sdu.slice());
    },
    bad: () => {
      this.badRecords++;
    },
  };

  private resumeReading(): void {
    if (!this.eof && this.fdOpen && this.rx.length < CLIENT_RX_QUEUE_LIMIT && this.rx.bytes < CLIENT_RX_QUEUE_BYTES) this.interest.want(native.UV_READABLE, true);
  }

  /**
   * Reads end once nothing more can come and the reason is known (the daemon says why before it
   * closes its end, so this waits for that message at most).
   */
  private checkEnd(): void {
    if (this.eof && this._state === 'deallocated') this.rx.end();
  }

  /** Stop watching the fd; close it too when `close`. */
  private stopFd(close: boolean): void {
    if (this.fdOpen) {
      this.interest.set(0);
    }
    if (close) this.closeFd();
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    this.interest.close();
    safeClose(this.fd);
    this.client.flowClosed(this);
  }
}
