/**
 * ipcp.ts — the shim IPC process for hypervisors: one per VMPI port, the same code on host and
 * guest (paper, Section IV). Its address in the shim DIF is the port's VMPI-id.
 *
 * Owns: application registration, flow allocation over the control channel (channel 0, messages
 * in control.proto), the channel space, the flows' data path onto VMPI channels, and what
 * happens to all of it when the port goes down.
 *
 * Channels. A flow is one VMPI data channel 1..maxChannel. The requester picks it, from its own
 * half of the space: the host even channels, the guest odd ones (`role`), so the two ends never
 * pick the same channel at the same time and no tie-break is needed. It picks next-fit (a
 * cursor that moves on), so a channel just freed is the last one reused.
 *
 * Per-channel states (a channel not in the table is free):
 *   pending    we sent AllocateRequest, waiting for AllocateResponse (timer)
 *   incoming   the peer asked; the registered application has not decided yet
 *   allocated  a flow runs on it
 *   closing    we sent Deallocate (or gave up a pending request), waiting for the peer's
 *              Deallocate (confirm), bounded by deallocateTimeoutMs; data arriving meanwhile was
 *              in flight and is counted and dropped
 * The peer answers a Deallocate with a Deallocate{confirm}; a Deallocate received while closing
 * (the confirm, or the peer deallocating at the same time) frees the channel. This relies on
 * one property of VMPI: one ring per direction, so everything one end sends, on any channel,
 * arrives in the order it was sent. Hence data the peer sent before its confirm arrives before
 * it, and a channel is never reused while old data for it can still arrive. (A guest port reads
 * each channel from its own file, so across channels it may deliver out of ring order: data can
 * overtake an AllocateResponse, and then waits in the pending flow; data that would trail a
 * confirm is already in the old channel file's queue, which closing the file discards.)
 *
 * Data files. With `dataFile: true` (allocateFlow, accept) on a port that can open a channel as
 * a file of its own (the guest port), the flow's channel is not bound to this IPC process: the
 * file is opened and bound before the request or answer goes out (so no SDU can miss it), the
 * IPC daemon takes a copy for the application (Flow.takeDataFd), and SDUs never pass here. When
 * the flow ends the file is shut down, so the application's copy ends too and the channel is
 * free for reuse whatever the application does with it.
 *
 * QoS. The shim DIF rides on shared memory that neither loses, corrupts nor reorders SDUs, so
 * it grants `reliable` and `inOrder` as asked without any mechanism of its own. The only ways an
 * SDU does not arrive: the writer ignores write() → false (nothing was sent; the writer still
 * holds the SDU), the reader neither reads nor listens and its queue reaches its budget
 * (rxQueueLimit SDUs, rxQueueBytes bytes per flow, rxQueueTotalBytes for all flows of this IPC
 * process; counted in rxQueueDrops, with a warning once per flow), or the flow/port goes away.
 * Dropping rather than pushing back is deliberate: one VMPI ring carries every channel of the
 * device, so holding guest buffers for one unread flow would stall all the others (and the
 * control channel) — the budget is what keeps a guest from pinning host memory. A `maxSdu` above the port's max SDU is
 * refused (locally with 'invalid_qos', remotely with a REJECT).
 */
import { EventEmitter } from 'node:events';
import { DifError, type AcceptOptions, type AllocateOptions, type DeallocationCause, type Flow, type FlowEvents, type FlowRequest, type FlowRequestEvents, type FlowRequestState, type FlowState, type FlowStats, type IpcProcess, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { appNameKey, formatAppName, NamingError, toAppName, type AppName } from '../naming.js';
import { SendResult } from '../../vmpi/device.js';
import type { ChannelFile, VmpiPort } from '../../vmpi/port.js';
import { RxQueue } from '../rx-queue.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import { logger, type Logger } from '../../sys/log.js';
import { CONTROL_CHANNEL, ControlMessageError, MAX_CHANNEL_ID, clampReason, controlMessageType, decodeControl, encodeControl, type AllocateRequestMsg, type AllocateResponseMsg, type ControlMessage, type DeallocateMsg, type MalformedReason } from './control.js';

export type ShimHvRole = 'host' | 'guest';

export interface ShimHvIpcpOptions {
  port: VmpiPort;
  /** Host side allocates even channels, guest side odd ones. */
  role: ShimHvRole;
  /** The shim DIF's name; default `hv.vmpi-<VMPI-id>`. */
  difName?: string;
  /** Highest data channel (the space is 1..maxChannel; this end gets half of it). Default 1023. */
  maxChannel?: number;
  /** How long allocateFlow() waits for the peer's answer. Default 5000 ms. */
  allocateTimeoutMs?: number;
  /** How long a deallocated channel waits for the peer's confirmation before reuse. Default 2000 ms. */
  deallocateTimeoutMs?: number;
  /** SDUs queued per flow while nobody reads it; more are dropped (counted). Default 4096. */
  rxQueueLimit?: number;
  /** Bytes queued per flow while nobody reads it; more are dropped (counted). Default 8 MiB, at least 2 max SDUs. */
  rxQueueBytes?: number;
  /** Bytes queued over all flows of this IPC process (its device). Default 64 MiB, at least 4 max SDUs. */
  rxQueueTotalBytes?: number;
  logger?: Logger;
}

export const DEFAULT_MAX_CHANNEL = 1023;
export const DEFAULT_ALLOCATE_TIMEOUT_MS = 5000;
export const DEFAULT_DEALLOCATE_TIMEOUT_MS = 2000;
export const DEFAULT_RX_QUEUE_LIMIT = 4096;
export const DEFAULT_RX_QUEUE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_RX_QUEUE_TOTAL_BYTES = 64 * 1024 * 1024;
/** Control messages waiting for room on a full port; beyond this they are dropped (counted). */
const CONTROL_BACKLOG_LIMIT = 4096;

export const REASON_UNKNOWN_APPLICATION = 'unknown application';

/** Why the IPC process noticed a misbehaving peer; see the 'protocolError' event. */
export type ProtocolErrorReason = MalformedReason | 'unknown_flow' | 'unexpected_message';

export class ShimHvProtocolError extends Error {
  override name = 'ShimHvProtocolError';
  constructor(
    readonly reason: ProtocolErrorReason,
    message: string,
    readonly channel?: number,
  ) {
    super(message);
  }
}

export interface ShimHvIpcpEvents {
  up: [];
  down: [reason: string];
  /** A control message was malformed or made no sense in the channel's state (it was dropped or answered). */
  protocolError: [error: ShimHvProtocolError];
  flowAllocated: [flow: Flow];
  flowDeallocated: [flow: Flow, reason: string, cause: DeallocationCause];
}

export interface ShimHvIpcpStats {
  controlRx: number;
  controlTx: number;
  /** Control messages waiting for room on the port. */
  controlBacklog: number;
  controlDropped: number;
  malformed: Record<MalformedReason, number>;
  /** Well-formed control messages naming a channel in the wrong state (stale or bogus). */
  unknownFlow: number;
  /** Data SDUs on a channel being deallocated (in flight): dropped. */
  staleSdus: number;
  /** Data SDUs on a channel with no flow yet (or any more): dropped. */
  unexpectedSdus: number;
  allocRequested: number;
  allocSucceeded: number;
  allocRejectedByPeer: number;
  allocTimedOut: number;
  incomingRequests: number;
  incomingAccepted: number;
  incomingRejected: number;
  flowsDeallocated: number;
  /** SDUs dropped because an unread flow's queue was at its budget, by which budget. */
  rxBudgetDrops: Record<'sdus' | 'flow_bytes' | 'total_bytes', number>;
}

/** A flow of the shim DIF: a Flow on one VMPI data channel. */
export interface ShimHvFlow extends Flow {
  readonly channel: number;
}

/** An incoming request of the shim DIF; accept() gives a ShimHvFlow. */
export interface ShimHvFlowRequest extends FlowRequest {
  readonly channel: number;
  accept(opts?: AcceptOptions): ShimHvFlow;
}

export type ShimHvFlowRequestHandler = (request: ShimHvFlowRequest) => void;

// ---------------------------------------------------------------------------------------------
// Flows

/** What a flow needs from its IPC process. */
interface FlowOwner {
  readonly port: VmpiPort;
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  /** Bytes queued over all flows now. */
  readonly rxQueuedBytes: number;
  /** A flow's queue grew (+) or shrank (-). */
  accountRx(delta: number): void;
  /** A flow dropped an SDU for its budget (first time per flow: `first`). */
  rxBudgetHit(flow: FlowImpl, which: 'sdus' | 'flow_bytes' | 'total_bytes', first: boolean): void;
  localDeallocate(flow: FlowImpl, reason: string): void;
  waitDrain(flow: FlowImpl): void;
}

class FlowImpl extends EventEmitter<FlowEvents> implements ShimHvFlow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  private _state: FlowState = 'pending';
  private _reason: string | null = null;
  /** Queue bytes count against the IPC process's budget until the flow ends. */
  private accounted = true;
  private warnedBudget = false;
  private readonly rx = new RxQueue(this, null, (delta) => {
    if (this.accounted) this.owner.accountRx(delta);
  });
  /** A write was refused; refuse the next ones too until 'drain' (keeps SDUs in order). */
  blocked = false;
  /** The flow's data file, when its data path is one (see the file comment). */
  file: ChannelFile | null = null;

  constructor(
    private readonly owner: FlowOwner,
    readonly portId: number,
    readonly channel: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
  ) {
    super();
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    if (this.file) throw this.dataFileError('write');
    checkSdu(this, sdu);
    if (this.blocked) {
      this.stats.txRefused++;
      return false;
    }
    let r: SendResult;
    try {
      r = this.owner.port.send(this.channel, sdu);
    } catch (e) {
      // E.g. a guest port closed under us; the port's 'down' (if any) ends the flow.
      throw new DifError('port_down', `flow ${this.portId}: the VMPI port refused the SDU: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    if (r === SendResult.Full) {
      this.stats.txRefused++;
      this.blocked = true;
      this.owner.waitDrain(this);
      return false;
    }
    this.stats.txSdus++;
    this.stats.txBytes += sdu.byteLength;
    return true;
  }

  send(sdu: Uint8Array): Promise<void> {
    return sendSdu(this, sdu);
  }

  read(): Promise<Uint8Array | null> {
    if (this.file) return Promise.reject(this.dataFileError('read'));
    return this.rx.read();
  }

  takeDataFd(): number | null {
    if (!this.file) return null;
    if (this._state !== 'allocated') throw new DifError('flow_deallocated', `flow ${this.portId} is ${this._state}: its data file is shut`);
    return this.file.dup();
  }

  private dataFileError(what: string): DifError {
    return new DifError('data_file', `flow ${this.portId} carries its SDUs in its data file (takeDataFd): cannot ${what} through the flow object`);
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return untilNull(() => this.read());
  }

  deallocate(reason = 'deallocated by the application'): void {
    if (this._state !== 'allocated') return;
    this.owner.localDeallocate(this, reason);
  }

  // --- called by the IPC process -------------------------------------------------------------

  markAllocated(): void {
    this._state = 'allocated';
  }

  /** One SDU from the port (bytes valid only now). */
  deliver(sdu: Uint8Array): void {
    this.stats.rxSdus++;
    this.stats.rxBytes += sdu.byteLength;
    if (!this.rx.hasConsumer()) {
      const n = sdu.byteLength;
      const o = this.owner;
      const over =
        this.rx.length >= o.rxQueueLimit ? 'sdus' : this.rx.bytes + n > o.rxQueueBytes ? 'flow_bytes' : o.rxQueuedBytes + n > o.rxQueueTotalBytes ? 'total_bytes' : null;
      if (over !== null) {
        this.stats.rxQueueDrops++;
        o.rxBudgetHit(this, over, !this.warnedBudget);
        this.warnedBudget = true;
        return;
      }
    }
    this.rx.push(Uint8Array.prototype.slice.call(sdu));
  }

  terminate(reason: string, cause: DeallocationCause): void {
    if (this._state === 'deallocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    // What is still queued goes with the flow object; it no longer counts against the device.
    if (this.accounted) {
      this.accounted = false;
      this.owner.accountRx(-this.rx.bytes);
    }
    this.emit('deallocated', reason, cause);
    this.rx.end();
  }

  drained(): void {
    if (!this.blocked) return;
    this.blocked = false;
    if (this._state === 'allocated') this.emit('drain');
  }
}

// ---------------------------------------------------------------------------------------------
// Incoming requests

class FlowRequestImpl extends EventEmitter<FlowRequestEvents> implements ShimHvFlowRequest {
  state: FlowRequestState = 'waiting';
  cancelReason: string | null = null;

  constructor(
    private readonly ipcp: ShimHvIpcp,
    readonly channel: number,
    readonly difName: string,
    readonly localApp: AppName,
    readonly remoteApp: AppName,
    readonly qos: QosSpec,
    readonly registration: RegistrationImpl,
  ) {
    super();
  }

  accept(opts: AcceptOptions = {}): ShimHvFlow {
    return this.ipcp.acceptIncoming(this, opts);
  }

  reject(reason: string): void {
    this.ipcp.rejectIncoming(this, reason);
  }

  /** Settle without answering the peer (it gave up, or the port is gone). */
  cancel(reason: string): void {
    if (this.state !== 'waiting') return;
    this.state = 'cancelled';
    this.cancelReason = reason;
    this.emit('cancelled', reason);
  }

  checkWaiting(action: string): void {
    if (this.state !== 'waiting') {
      throw new DifError('request_settled', `cannot ${action}: the flow request from ${formatAppName(this.remoteApp)} is already ${this.state}${this.cancelReason ? ` (${this.cancelReason})` : ''}`);
    }
  }
}

class RegistrationImpl implements Registration {
  constructor(
    private readonly ipcp: ShimHvIpcp,
    readonly appName: AppName,
    readonly key: string,
    readonly difName: string,
    readonly handler: ShimHvFlowRequestHandler,
  ) {}

  unregister(): void {
    this.ipcp.dropRegistration(this);
  }
}

// ---------------------------------------------------------------------------------------------
// Channel table

interface PendingSlot {
  state: 'pending';
  flow: FlowImpl;
  timer: NodeJS.Timeout;
  resolve: (flow: ShimHvFlow) => void;
  reject: (err: DifError) => void;
  abort: (() => void) | null;
}
interface IncomingSlot {
  state: 'incoming';
  request: FlowRequestImpl;
}
interface AllocatedSlot {
  state: 'allocated';
  flow: FlowImpl;
}
interface ClosingSlot {
  state: 'closing';
  flow: FlowImpl | null;
  timer: NodeJS.Timeout;
}
type Slot = PendingSlot | IncomingSlot | AllocatedSlot | ClosingSlot;

// ---------------------------------------------------------------------------------------------

export class ShimHvIpcp extends EventEmitter<ShimHvIpcpEvents> implements IpcProcess, FlowOwner {
  readonly port: VmpiPort;
  readonly role: ShimHvRole;
  readonly difName: string;
  readonly maxChannel: number;
  readonly allocateTimeoutMs: number;
  readonly deallocateTimeoutMs: number;
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  private _rxQueuedBytes = 0;
  readonly stats: ShimHvIpcpStats = {
    controlRx: 0,
    controlTx: 0,
    controlBacklog: 0,
    controlDropped: 0,
    malformed: { too_large: 0, undecodable: 0, unsupported_version: 0, no_body: 0, missing_field: 0, bad_channel: 0, bad_name: 0, bad_value: 0 },
    unknownFlow: 0,
    staleSdus: 0,
    unexpectedSdus: 0,
    allocRequested: 0,
    allocSucceeded: 0,
    allocRejectedByPeer: 0,
    allocTimedOut: 0,
    incomingRequests: 0,
    incomingAccepted: 0,
    incomingRejected: 0,
    flowsDeallocated: 0,
    rxBudgetDrops: { sdus: 0, flow_bytes: 0, total_bytes: 0 },
  };

  private readonly log: Logger;
  private readonly registrations = new Map<string, RegistrationImpl>();
  private readonly slots = new Map<number, Slot>();
  private readonly bound = new Set<number>();
  /** Channels opened as data files instead of bound. */
  private readonly files = new Map<number, ChannelFile>();
  private readonly waitingDrain = new Set<FlowImpl>();
  private controlBacklog: Uint8Array[] = [];
  private nextPortId = 1;
  /** Index into this end's channels where the next search starts. */
  private cursor = 0;
  private closed = false;
  private readonly onUp = (): void => {
    this.log.info('shim-hv: port up');
    this.emit('up');
  };
  private readonly onDown = (reason: string): void => this.portDown(reason);
  private readonly onDrain = (): void => this.portDrained();

  constructor(opts: ShimHvIpcpOptions) {
    super();
    if (opts.role !== 'host' && opts.role !== 'guest') throw new DifError('invalid_argument', `role must be 'host' or 'guest', not ${String(opts.role)}`);
    this.port = opts.port;
    this.role = opts.role;
    this.difName = opts.difName ?? `hv.vmpi-${opts.port.vmpiId}`;
    if (typeof this.difName !== 'string' || this.difName === '' || this.difName.length > 255) throw new DifError('invalid_argument', 'the DIF name must be a non-empty string of at most 255 characters');
    this.maxChannel = positiveInt('maxChannel', opts.maxChannel ?? DEFAULT_MAX_CHANNEL, 2, MAX_CHANNEL_ID);
    this.allocateTimeoutMs = positiveInt('allocateTimeoutMs', opts.allocateTimeoutMs ?? DEFAULT_ALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1);
    this.deallocateTimeoutMs = positiveInt('deallocateTimeoutMs', opts.deallocateTimeoutMs ?? DEFAULT_DEALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1);
    this.rxQueueLimit = positiveInt('rxQueueLimit', opts.rxQueueLimit ?? DEFAULT_RX_QUEUE_LIMIT, 1, 2 ** 31 - 1);
    this.rxQueueBytes = positiveInt('rxQueueBytes', opts.rxQueueBytes ?? Math.max(DEFAULT_RX_QUEUE_BYTES, 2 * opts.port.maxSdu), 1, Number.MAX_SAFE_INTEGER);
    this.rxQueueTotalBytes = positiveInt('rxQueueTotalBytes', opts.rxQueueTotalBytes ?? Math.max(DEFAULT_RX_QUEUE_TOTAL_BYTES, 4 * opts.port.maxSdu), 1, Number.MAX_SAFE_INTEGER);
    this.log = (opts.logger ?? logger).child({ component: 'shim-hv', dif: this.difName, role: this.role });
    // Load the control schema now, not at the first allocation: reading the .proto file then
    // could fail (EMFILE when the process is out of fds) in the middle of serving.
    controlMessageType();
    this.port.bind(CONTROL_CHANNEL, (sdu) => this.onControl(sdu));
    this.port.on('up', this.onUp);
    this.port.on('down', this.onDown);
    this.port.on('drain', this.onDrain);
  }

  /** The address of this IPC process in the shim DIF: the port's VMPI-id. */
  get address(): number {
    return this.port.vmpiId;
  }

  /** Bytes waiting in the receive queues of this IPC process's live flows. */
  get rxQueuedBytes(): number {
    return this._rxQueuedBytes;
  }

  /** @internal (FlowOwner) */
  accountRx(delta: number): void {
    this._rxQueuedBytes += delta;
  }

  /** @internal (FlowOwner) */
  rxBudgetHit(flow: FlowImpl, which: 'sdus' | 'flow_bytes' | 'total_bytes', first: boolean): void {
    this.stats.rxBudgetDrops[which]++;
    if (!first) return;
    const limit = which === 'sdus' ? `${this.rxQueueLimit} SDUs (rxQueueLimit)` : which === 'flow_bytes' ? `${this.rxQueueBytes} bytes (rxQueueBytes)` : `${this.rxQueueTotalBytes} bytes over all flows (rxQueueTotalBytes)`;
    this.log.warn({ portId: flow.portId, channel: flow.channel, budget: which }, `shim-hv: a flow nobody reads reached its receive budget of ${limit}: SDUs are dropped (vmpi_dif_drops_total{reason="rx_queue_full"})`);
  }

  get isUp(): boolean {
    return this.port.isUp && !this.closed;
  }

  // -------------------------------------------------------------------------------------------
  // Registration

  register(app: AppName | string, onFlowRequest: ShimHvFlowRequestHandler): Registration {
    this.checkOpen();
    const name = nameArg(app, 'application');
    if (typeof onFlowRequest !== 'function') throw new DifError('invalid_argument', 'register() needs a flow request handler');
    const key = appNameKey(name);
    if (this.registrations.has(key)) throw new DifError('already_registered', `${key} is already registered in ${this.difName}`);
    const reg = new RegistrationImpl(this, name, key, this.difName, onFlowRequest);
    this.registrations.set(key, reg);
    this.log.debug({ app: key }, 'shim-hv: application registered');
    return reg;
  }

  unregister(app: AppName | string): void {
    const key = appNameKey(nameArg(app, 'application'));
    const reg = this.registrations.get(key);
    if (!reg) throw new DifError('not_registered', `${key} is not registered in ${this.difName}`);
    this.dropRegistration(reg);
  }

  isRegistered(app: AppName | string): boolean {
    return this.registrations.has(appNameKey(nameArg(app, 'application')));
  }

  /** @internal */
  dropRegistration(reg: RegistrationImpl): void {
    if (this.registrations.get(reg.key) !== reg) return;
    this.registrations.delete(reg.key);
    // Requests still waiting for this application's decision can no longer be accepted.
    for (const [channel, slot] of this.slots) {
      if (slot.state === 'incoming' && slot.request.registration === reg) {
        this.slots.delete(channel);
        this.sendControl({ kind: 'allocate_response', channel, result: 'reject', reason: 'application unregistered' });
        slot.request.cancel('application unregistered');
        this.stats.incomingRejected++;
      }
    }
    this.log.debug({ app: reg.key }, 'shim-hv: application unregistered');
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, requester side

  async allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}): Promise<ShimHvFlow> {
    this.checkOpen();
    const src = nameArg(localApp, 'local application');
    const dst = nameArg(remoteApp, 'remote application');
    const spec = this.resolveQos(qos);
    const timeoutMs = opts.timeoutMs === undefined ? this.allocateTimeoutMs : positiveInt('timeoutMs', opts.timeoutMs, 1, 2 ** 31 - 1);
    if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted before it started');
    if (!this.port.isUp) throw new DifError('port_down', `the VMPI port of ${this.difName} is down`);
    const channel = this.pickChannel();
    if (channel === null) {
      throw new DifError('no_free_channel', `no free channel: all ${this.ownChannelCount()} ${this.role} channels of 1..${this.maxChannel} are in use`);
    }
    let request: Uint8Array;
    try {
      request = encodeControl({ kind: 'allocate_request', channel, src, dst, qos: spec, difName: this.difName });
    } catch (e) {
      throw new DifError('invalid_name', `cannot encode the allocation request: ${(e as Error).message}`, { cause: e });
    }
    if (request.byteLength > this.port.maxSdu) {
      throw new DifError('invalid_name', `the allocation request (${request.byteLength} bytes) does not fit the port's max SDU of ${this.port.maxSdu}: shorten the names`);
    }

    const file = this.bindData(channel, opts.dataFile === true);
    const flow = new FlowImpl(this, this.nextPortId++, channel, this.difName, src, dst, spec);
    flow.file = file;
    this.stats.allocRequested++;
    return new Promise<ShimHvFlow>((resolve, reject) => {
      const slot: PendingSlot = {
        state: 'pending',
        flow,
        timer: setTimeout(() => this.giveUp(channel, slot, 'timeout', `no answer from the peer within ${timeoutMs} ms`), timeoutMs),
        resolve,
        reject,
        abort: null,
      };
      if (opts.signal) {
        const signal = opts.signal;
        const onAbort = (): void => this.giveUp(channel, slot, 'aborted', 'allocation aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        slot.abort = () => signal.removeEventListener('abort', onAbort);
      }
      this.slots.set(channel, slot);
      this.sendRaw(request);
      this.log.debug({ channel, src: formatAppName(src), dst: formatAppName(dst) }, 'shim-hv: allocation requested');
    });
  }

  private resolveQos(q: QosRequest): QosSpec {
    if (typeof q !== 'object' || q === null) throw new DifError('invalid_qos', 'the QoS spec must be an object');
    const reliable = q.reliable ?? false;
    const inOrder = q.inOrder ?? false;
    const maxSdu = q.maxSdu ?? 0;
    if (typeof reliable !== 'boolean' || typeof inOrder !== 'boolean') throw new DifError('invalid_qos', 'QoS reliable and inOrder must be booleans');
    if (!Number.isInteger(maxSdu) || maxSdu < 0) throw new DifError('invalid_qos', `QoS maxSdu ${String(maxSdu)} must be a non-negative integer`);
    if (maxSdu > this.port.maxSdu) throw new DifError('invalid_qos', `QoS maxSdu ${maxSdu} exceeds ${this.difName}'s max SDU of ${this.port.maxSdu} bytes`);
    // reliable/inOrder: granted as asked; shared memory provides both (see the file comment).
    return Object.freeze({ reliable, inOrder, maxSdu: maxSdu === 0 ? this.port.maxSdu : maxSdu });
  }

  /** A pending allocation ends without an answer: tell the peer, keep the channel until it confirms. */
  private giveUp(channel: number, slot: PendingSlot, code: 'timeout' | 'aborted', message: string): void {
    if (this.slots.get(channel) !== slot) return;
    clearTimeout(slot.timer);
    slot.abort?.();
    if (code === 'timeout') this.stats.allocTimedOut++;
    this.sendControl({ kind: 'deallocate', channel, reason: code === 'timeout' ? 'allocation timed out' : 'allocation aborted', confirm: false });
    this.enterClosing(channel, null);
    slot.flow.terminate(message, 'local');
    slot.reject(new DifError(code, `allocation of a flow to ${formatAppName(slot.flow.remoteApp)} on channel ${channel}: ${message}`));
  }

  private pickChannel(): number | null {
    const count = this.ownChannelCount();
    const first = this.role === 'host' ? 2 : 1;
    for (let i = 0; i < count; i++) {
      const idx = (this.cursor + i) % count;
      const channel = first + 2 * idx;
      if (!this.slots.has(channel)) {
        this.cursor = (idx + 1) % count;
        return channel;
      }
    }
    return null;
  }

  private ownChannelCount(): number {
    const first = this.role === 'host' ? 2 : 1;
    return this.maxChannel < first ? 0 : Math.floor((this.maxChannel - first) / 2) + 1;
  }

  /** True if the peer allocates `channel` (the other parity). */
  private isPeerChannel(channel: number): boolean {
    return this.role === 'host' ? channel % 2 === 1 : channel % 2 === 0;
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, responder side

  /** @internal FlowRequest.accept() */
  acceptIncoming(req: FlowRequestImpl, opts: AcceptOptions): ShimHvFlow {
    req.checkWaiting('accept');
    const slot = this.slots.get(req.channel);
    if (!slot || slot.state !== 'incoming' || slot.request !== req) {
      // Not reachable while the request is 'waiting'; kept as a guard.
      throw new DifError('request_settled', 'the flow request is no longer pending');
    }
    if (!this.port.isUp) throw new DifError('port_down', `the VMPI port of ${this.difName} is down`);
    let file: ChannelFile | null;
    try {
      file = this.bindData(req.channel, opts.dataFile === true);
    } catch (e) {
      this.rejectIncoming(req, 'the responder cannot open the channel');
      throw e;
    }
    req.state = 'accepted';
    const flow = new FlowImpl(this, this.nextPortId++, req.channel, this.difName, req.localApp, req.remoteApp, req.qos);
    flow.file = file;
    flow.markAllocated();
    this.slots.set(req.channel, { state: 'allocated', flow });
    this.sendControl({ kind: 'allocate_response', channel: req.channel, result: 'accept', reason: '' });
    this.stats.incomingAccepted++;
    this.log.debug({ channel: req.channel, portId: flow.portId }, 'shim-hv: incoming flow accepted');
    this.emit('flowAllocated', flow);
    return flow;
  }

  /** @internal FlowRequest.reject() */
  rejectIncoming(req: FlowRequestImpl, reason: string): void {
    req.checkWaiting('reject');
    req.state = 'rejected';
    const slot = this.slots.get(req.channel);
    if (slot?.state === 'incoming' && slot.request === req) this.slots.delete(req.channel);
    const why = typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application';
    this.sendControl({ kind: 'allocate_response', channel: req.channel, result: 'reject', reason: why });
    this.stats.incomingRejected++;
  }

  // -------------------------------------------------------------------------------------------
  // Deallocation

  /** @internal Flow.deallocate() */
  localDeallocate(flow: FlowImpl, reason: string): void {
    const slot = this.slots.get(flow.channel);
    if (slot?.state === 'allocated' && slot.flow === flow) {
      this.sendControl({ kind: 'deallocate', channel: flow.channel, reason: clampReason(String(reason)), confirm: false });
      this.enterClosing(flow.channel, flow);
    }
    this.finishFlow(flow, String(reason), 'local');
  }

  private enterClosing(channel: number, flow: FlowImpl | null): void {
    const slot: ClosingSlot = {
      state: 'closing',
      flow,
      timer: setTimeout(() => {
        if (this.slots.get(channel) !== slot) return;
        this.log.debug({ channel }, 'shim-hv: no deallocation confirm from the peer; channel freed');
        this.freeChannel(channel);
      }, this.deallocateTimeoutMs),
    };
    this.slots.set(channel, slot);
  }

  private finishFlow(flow: FlowImpl, reason: string, cause: DeallocationCause): void {
    if (flow.state === 'deallocated') return;
    this.waitingDrain.delete(flow);
    // The application's copy of a data file ends now (what is queued stays readable).
    if (flow.file) this.shutdownFile(flow.channel);
    flow.terminate(reason, cause);
    this.stats.flowsDeallocated++;
    this.log.debug({ channel: flow.channel, portId: flow.portId, reason, cause }, 'shim-hv: flow deallocated');
    this.emit('flowDeallocated', flow, reason, cause);
  }

  private freeChannel(channel: number): void {
    const slot = this.slots.get(channel);
    if (slot && (slot.state === 'pending' || slot.state === 'closing')) clearTimeout(slot.timer);
    this.slots.delete(channel);
    if (this.bound.delete(channel)) this.port.unbind(channel);
    const file = this.files.get(channel);
    if (file) {
      this.shutdownFile(channel);
      this.files.delete(channel);
      file.close();
    }
  }

  private shutdownFile(channel: number): void {
    try {
      this.files.get(channel)?.shutdown();
    } catch (e) {
      this.log.warn({ channel, err: (e as Error)?.message }, 'shim-hv: cannot shut down a data file');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Control channel

  private onControl(sdu: Uint8Array): void {
    this.stats.controlRx++;
    let msg: ControlMessage;
    try {
      msg = decodeControl(sdu);
    } catch (e) {
      if (!(e instanceof ControlMessageError)) throw e;
      this.stats.malformed[e.reason]++;
      this.protocolError(e.reason, e.message, e.channel);
      // A request we could read enough of gets an answer instead of a timeout at the requester.
      if (e.kind === 'allocate_request' && e.channel !== undefined && this.isPeerChannel(e.channel) && e.channel <= this.maxChannel && !this.slots.has(e.channel)) {
        this.sendControl({ kind: 'allocate_response', channel: e.channel, result: 'reject', reason: `malformed allocate request: ${e.message}` });
      }
      return;
    }
    switch (msg.kind) {
      case 'allocate_request':
        this.onAllocateRequest(msg);
        break;
      case 'allocate_response':
        this.onAllocateResponse(msg);
        break;
      case 'deallocate':
        this.onDeallocate(msg);
        break;
    }
  }

  private onAllocateRequest(m: AllocateRequestMsg): void {
    this.stats.incomingRequests++;
    const refuse = (reason: string): void => {
      this.stats.incomingRejected++;
      this.sendControl({ kind: 'allocate_response', channel: m.channel, result: 'reject', reason });
    };
    if (m.channel > this.maxChannel) {
      this.stats.malformed.bad_channel++;
      this.protocolError('bad_channel', `allocate request on channel ${m.channel}, outside 1..${this.maxChannel}`, m.channel);
      return refuse(`channel ${m.channel} is out of range 1..${this.maxChannel}`);
    }
    if (!this.isPeerChannel(m.channel)) {
      // Only this end allocates this channel: answering would confuse our own pending request.
      this.stats.malformed.bad_channel++;
      this.protocolError('bad_channel', `allocate request on channel ${m.channel}, which the ${this.role} allocates`, m.channel);
      return;
    }
    if (this.slots.has(m.channel)) {
      this.protocolError('unexpected_message', `allocate request on channel ${m.channel}, which is ${this.slots.get(m.channel)!.state}`, m.channel);
      return refuse(`channel ${m.channel} is in use`);
    }
    if (m.difName !== '' && m.difName !== this.difName) return refuse(`wrong DIF: this is ${this.difName}, not ${m.difName}`);
    if (m.qos.maxSdu > this.port.maxSdu) return refuse(`max SDU ${m.qos.maxSdu} exceeds ${this.difName}'s max SDU of ${this.port.maxSdu} bytes`);
    const reg = this.registrations.get(appNameKey(m.dst));
    if (!reg) return refuse(REASON_UNKNOWN_APPLICATION);

    const qos: QosSpec = Object.freeze({ reliable: m.qos.reliable, inOrder: m.qos.inOrder, maxSdu: m.qos.maxSdu === 0 ? this.port.maxSdu : m.qos.maxSdu });
    const req = new FlowRequestImpl(this, m.channel, this.difName, reg.appName, m.src, qos, reg);
    this.slots.set(m.channel, { state: 'incoming', request: req });
    try {
      reg.handler(req);
    } catch (e) {
      this.log.warn({ err: e, app: reg.key }, 'shim-hv: flow request handler threw');
      if (req.state === 'waiting') req.reject(`application error: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  private onAllocateResponse(m: AllocateResponseMsg): void {
    const slot = this.slots.get(m.channel);
    if (!slot || slot.state !== 'pending') {
      // E.g. the answer to a request we already gave up (we are 'closing'): the peer will get our Deallocate.
      this.stats.unknownFlow++;
      this.protocolError('unknown_flow', `allocate response for channel ${m.channel}, which is ${slot ? slot.state : 'free'}`, m.channel);
      return;
    }
    clearTimeout(slot.timer);
    slot.abort?.();
    const flow = slot.flow;
    if (m.result === 'accept') {
      this.slots.set(m.channel, { state: 'allocated', flow });
      flow.markAllocated();
      this.stats.allocSucceeded++;
      this.log.debug({ channel: m.channel, portId: flow.portId }, 'shim-hv: flow allocated');
      this.emit('flowAllocated', flow);
      slot.resolve(flow);
    } else {
      this.freeChannel(m.channel);
      this.stats.allocRejectedByPeer++;
      flow.terminate(`rejected by the peer: ${m.reason}`, 'peer');
      slot.reject(
        new DifError('rejected', `${formatAppName(flow.remoteApp)} refused the flow from ${formatAppName(flow.localApp)} in ${this.difName}: ${m.reason}`, {
          peerReason: m.reason,
        }),
      );
    }
  }

  private onDeallocate(m: DeallocateMsg): void {
    const slot = this.slots.get(m.channel);
    const confirmBack = (): void => this.sendControl({ kind: 'deallocate', channel: m.channel, reason: 'confirmed', confirm: true });
    if (!slot) {
      this.stats.unknownFlow++;
      if (!m.confirm) {
        // Maybe we already freed it (our closing timed out): confirming lets the peer free it too.
        this.protocolError('unknown_flow', `deallocate for free channel ${m.channel}`, m.channel);
        confirmBack();
      }
      return;
    }
    switch (slot.state) {
      case 'closing':
        // The peer's confirmation, or it deallocated at the same time as we did: either way the
        // peer will send nothing more on this channel.
        this.freeChannel(m.channel);
        return;
      case 'allocated':
        if (m.confirm) return this.staleConfirm(m.channel, slot.state);
        this.freeChannel(m.channel);
        confirmBack();
        this.finishFlow(slot.flow, m.reason === '' ? 'deallocated by the peer' : m.reason, 'peer');
        return;
      case 'incoming':
        if (m.confirm) return this.staleConfirm(m.channel, slot.state);
        // The requester gave up before the application decided.
        this.slots.delete(m.channel);
        confirmBack();
        slot.request.cancel(m.reason === '' ? 'cancelled by the requester' : m.reason);
        return;
      case 'pending':
        if (m.confirm) return this.staleConfirm(m.channel, slot.state);
        // The peer cannot deallocate a flow it has not accepted; treat it as a refusal.
        this.protocolError('unexpected_message', `deallocate for channel ${m.channel} before any answer to our request`, m.channel);
        this.freeChannel(m.channel);
        confirmBack();
        this.stats.allocRejectedByPeer++;
        slot.flow.terminate(m.reason, 'peer');
        slot.reject(new DifError('rejected', `the peer ended the allocation on channel ${m.channel}: ${m.reason}`, { peerReason: m.reason }));
        return;
    }
  }

  private staleConfirm(channel: number, state: Slot['state']): void {
    this.stats.unknownFlow++;
    this.log.debug({ channel, state }, 'shim-hv: stale deallocation confirm ignored');
  }

  private protocolError(reason: ProtocolErrorReason, message: string, channel?: number): void {
    this.log.debug({ reason, channel }, `shim-hv: ${message}`);
    if (this.listenerCount('protocolError') > 0) this.emit('protocolError', new ShimHvProtocolError(reason, message, channel));
  }

  private sendControl(msg: ControlMessage): void {
    this.sendRaw(encodeControl(msg));
  }

  private sendRaw(bytes: Uint8Array): void {
    if (!this.port.isUp) return;
    if (this.controlBacklog.length === 0) {
      let r: SendResult;
      try {
        r = this.port.send(CONTROL_CHANNEL, bytes);
      } catch (e) {
        // The port is closing or gone; its 'down' ends everything. Never throw into the caller
        // (which may be the port's own receive path).
        this.stats.controlDropped++;
        this.log.debug({ err: e }, 'shim-hv: control message refused by the port');
        return;
      }
      if (r !== SendResult.Full) {
        this.stats.controlTx++;
        return;
      }
    }
    if (this.controlBacklog.length >= CONTROL_BACKLOG_LIMIT) {
      this.stats.controlDropped++;
      return;
    }
    this.controlBacklog.push(bytes);
    this.stats.controlBacklog = this.controlBacklog.length;
  }

  // -------------------------------------------------------------------------------------------
  // Data channels

  /**
   * Listen on a data channel, or with `asFile` open it as a data file when the port can (the
   * file is returned; null otherwise). A port that cannot (e.g. a guest port failing to open it)
   * → 'port_down'.
   */
  private bindData(channel: number, asFile = false): ChannelFile | null {
    if (this.bound.has(channel)) return null;
    try {
      if (asFile && this.port.openChannelFile) {
        const file = this.port.openChannelFile(channel);
        this.files.set(channel, file);
        return file;
      }
      this.port.bind(channel, (sdu) => this.onData(channel, sdu));
    } catch (e) {
      throw new DifError('port_down', `cannot bind channel ${channel} on ${this.difName}'s VMPI port: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    this.bound.add(channel);
    return null;
  }

  private onData(channel: number, sdu: Uint8Array): void {
    const slot = this.slots.get(channel);
    if (slot?.state === 'allocated' || slot?.state === 'pending') {
      // 'pending': the responder writes as soon as it accepts, and on a guest port its SDUs may
      // be read before its answer on channel 0 (one file per channel); they wait in the flow.
      slot.flow.deliver(sdu);
    } else if (slot?.state === 'closing') {
      this.stats.staleSdus++;
      if (slot.flow) slot.flow.stats.rxAfterDeallocate++;
    } else {
      this.stats.unexpectedSdus++;
    }
  }

  /** @internal a flow's write was refused */
  waitDrain(flow: FlowImpl): void {
    this.waitingDrain.add(flow);
  }

  private portDrained(): void {
    while (this.controlBacklog.length > 0) {
      if (!this.port.isUp) break;
      let r: SendResult | 'error';
      try {
        r = this.port.send(CONTROL_CHANNEL, this.controlBacklog[0]!);
      } catch {
        r = 'error'; // dropped, as in sendRaw()
      }
      if (r === SendResult.Full) break;
      this.controlBacklog.shift();
      if (r === 'error') this.stats.controlDropped++;
      else this.stats.controlTx++;
    }
    this.stats.controlBacklog = this.controlBacklog.length;
    if (this.controlBacklog.length > 0) return;
    const flows = [...this.waitingDrain];
    this.waitingDrain.clear();
    for (const f of flows) f.drained();
  }

  // -------------------------------------------------------------------------------------------
  // Port down / close

  private portDown(reason: string): void {
    this.log.info({ reason, flows: this.slots.size }, 'shim-hv: port down; flows deallocated');
    this.failAll(`port down: ${reason}`, 'port_down', 'port_down');
    this.emit('down', reason);
  }

  private failAll(reason: string, cause: DeallocationCause, code: 'port_down' | 'closed'): void {
    const slots = [...this.slots];
    for (const [channel] of slots) this.freeChannel(channel);
    this.controlBacklog = [];
    this.stats.controlBacklog = 0;
    for (const [channel, slot] of slots) {
      switch (slot.state) {
        case 'pending':
          slot.abort?.();
          slot.flow.terminate(reason, cause);
          slot.reject(new DifError(code, `allocation on channel ${channel}: ${reason}`));
          break;
        case 'incoming':
          slot.request.cancel(reason);
          break;
        case 'allocated':
          this.finishFlow(slot.flow, reason, cause);
          break;
        case 'closing':
          break;
      }
    }
  }

  /**
   * Stop: deallocate every flow (telling the peer), refuse pending allocations with 'closed',
   * drop all registrations and let go of the port. Idempotent.
   */
  close(reason = 'IPC process closed'): void {
    if (this.closed) return;
    for (const [channel, slot] of this.slots) {
      if (slot.state === 'allocated' || slot.state === 'pending') this.sendControl({ kind: 'deallocate', channel, reason, confirm: false });
      else if (slot.state === 'incoming') this.sendControl({ kind: 'allocate_response', channel, result: 'reject', reason });
    }
    this.closed = true;
    this.failAll(reason, 'closed', 'closed');
    this.registrations.clear();
    this.port.unbind(CONTROL_CHANNEL);
    this.port.off('up', this.onUp);
    this.port.off('down', this.onDown);
    this.port.off('drain', this.onDrain);
  }

  flows(): ShimHvFlow[] {
    const out: ShimHvFlow[] = [];
    for (const slot of this.slots.values()) if (slot.state === 'allocated') out.push(slot.flow);
    return out;
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

function positiveInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new DifError('invalid_argument', `${name} must be an integer ${min}..${max}, not ${String(v)}`);
  return v;
}
