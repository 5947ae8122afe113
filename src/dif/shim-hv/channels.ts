/**
 * channels.ts — the per-port state of the shim IPC process (ipcp.ts): its options, counters,
 * the channel table and channel space, the data channels bound (or opened as data files) on the
 * VMPI port, the control channel's send side with its backlog, and what the port going down
 * does to all of it.
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
 * control-handler.ts reads the control channel; ipcp.ts is the IPC API on top.
 *
 * State changes. Every change of the channel table (and the registrations, ipcp.ts) is reported
 * to the `onStateChange` option, once per batch (`op()`: one control message, one API call),
 * and always before the next control message goes out, so a snapshot persisted by the callback
 * never lags behind what the peer was told (write-ahead; snapshot.ts, ipcp.ts).
 */
import { EventEmitter } from 'node:events';
import { DifError, type DeallocationCause } from '../api.js';
import { SendResult } from '../../vmpi/port.js';
import type { ChannelFile, PortSduBatch, VmpiPort } from '../../vmpi/port.js';
import { logger, type Logger } from '../../sys/log.js';
import { intArg as positiveInt } from '../core/args.js';
import { CONTROL_CHANNEL, MAX_CHANNEL_ID, controlMessageType, encodeControl, type ControlMessage } from './control.js';
import type { RxBudgetBound } from '../core/budgeted-flow.js';
import type { FlowImpl, FlowOwner, FlowRequestImpl } from './flow.js';
import type { ShimHvSnapshot } from './snapshot.js';
import {
  DEFAULT_ALLOCATE_TIMEOUT_MS,
  DEFAULT_DEALLOCATE_TIMEOUT_MS,
  DEFAULT_MAX_CHANNEL,
  DEFAULT_RX_QUEUE_BYTES,
  DEFAULT_RX_QUEUE_LIMIT,
  DEFAULT_RX_QUEUE_TOTAL_BYTES,
  type ShimHvFlow,
  type ShimHvIpcpEvents,
  type ShimHvIpcpOptions,
  type ShimHvIpcpStats,
  type ShimHvRole,
  type ShimHvSnapshotSource,
} from './types.js';

/** Control messages waiting for room on a full port; beyond this they are dropped (counted). */
const CONTROL_BACKLOG_LIMIT = 4096;

export interface PendingSlot {
  state: 'pending';
  flow: FlowImpl;
  timer: NodeJS.Timeout;
  resolve: (flow: ShimHvFlow) => void;
  reject: (err: DifError) => void;
  abort: (() => void) | null;
}
export interface IncomingSlot {
  state: 'incoming';
  request: FlowRequestImpl;
}
export interface AllocatedSlot {
  state: 'allocated';
  flow: FlowImpl;
}
export interface ClosingSlot {
  state: 'closing';
  flow: FlowImpl | null;
  timer: NodeJS.Timeout;
}
export type Slot = PendingSlot | IncomingSlot | AllocatedSlot | ClosingSlot;

/** The channel table: a Map that reports each change (set, delete, clear). */
class SlotTable extends Map<number, Slot> {
  constructor(private readonly onChange: () => void) {
    super();
  }

  override set(channel: number, slot: Slot): this {
    super.set(channel, slot);
    this.onChange();
    return this;
  }

  override delete(channel: number): boolean {
    if (!super.delete(channel)) return false;
    this.onChange();
    return true;
  }

  override clear(): void {
    if (this.size === 0) return;
    super.clear();
    this.onChange();
  }
}

/** The DIF name an IPC process on `port` gets when none is given. */
export function defaultDifName(port: VmpiPort): string {
  return `hv.vmpi-${port.vmpiId}`;
}

export abstract class ShimHvChannels extends EventEmitter<ShimHvIpcpEvents> implements FlowOwner {
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

  protected readonly log: Logger;
  protected readonly slots: Map<number, Slot> = new SlotTable(() => this.changed());
  protected readonly bound = new Set<number>();
  /** Channels opened as data files instead of bound. */
  protected readonly files = new Map<number, ChannelFile>();
  protected readonly waitingDrain = new Set<FlowImpl>();
  protected controlBacklog: Uint8Array[] = [];
  protected nextPortId = 1;
  /** Index into this end's channels where the next search starts. */
  protected cursor = 0;
  protected closed = false;
  /** detach(): gone without a word: nothing is sent, no change is reported. */
  protected detached = false;
  /** Control messages a restore could not send yet (the port was down); sent on 'up'. */
  protected heldUntilUp: ControlMessage[] = [];
  private readonly onStateChange: ((ipcp: ShimHvSnapshotSource) => void) | undefined;
  /** A change not yet reported to onStateChange. */
  private dirty = false;
  /** Inside op(): changes are reported when the outermost op ends (or before a send). */
  private opDepth = 0;
  private notifying = false;
  protected readonly onUp = (): void => {
    this.log.info('shim-hv: port up');
    const held = this.heldUntilUp;
    this.heldUntilUp = [];
    for (const m of held) this.sendControl(m);
    this.emit('up');
  };
  protected readonly onDown = (reason: string): void => this.op(() => this.portDown(reason));
  protected readonly onDrain = (): void => this.portDrained();

  constructor(opts: ShimHvIpcpOptions) {
    super();
    if (opts.role !== 'host' && opts.role !== 'guest') throw new DifError('invalid_argument', `role must be 'host' or 'guest', not ${String(opts.role)}`);
    this.port = opts.port;
    this.role = opts.role;
    this.difName = opts.difName ?? defaultDifName(opts.port);
    if (typeof this.difName !== 'string' || this.difName === '' || this.difName.length > 255) throw new DifError('invalid_argument', 'the DIF name must be a non-empty string of at most 255 characters');
    this.maxChannel = positiveInt('maxChannel', opts.maxChannel ?? DEFAULT_MAX_CHANNEL, 2, MAX_CHANNEL_ID);
    this.allocateTimeoutMs = positiveInt('allocateTimeoutMs', opts.allocateTimeoutMs ?? DEFAULT_ALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1);
    this.deallocateTimeoutMs = positiveInt('deallocateTimeoutMs', opts.deallocateTimeoutMs ?? DEFAULT_DEALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1);
    this.rxQueueLimit = positiveInt('rxQueueLimit', opts.rxQueueLimit ?? DEFAULT_RX_QUEUE_LIMIT, 1, 2 ** 31 - 1);
    this.rxQueueBytes = positiveInt('rxQueueBytes', opts.rxQueueBytes ?? Math.max(DEFAULT_RX_QUEUE_BYTES, 2 * opts.port.maxSdu), 1, Number.MAX_SAFE_INTEGER);
    this.rxQueueTotalBytes = positiveInt('rxQueueTotalBytes', opts.rxQueueTotalBytes ?? Math.max(DEFAULT_RX_QUEUE_TOTAL_BYTES, 4 * opts.port.maxSdu), 1, Number.MAX_SAFE_INTEGER);
    this.log = (opts.logger ?? logger).child({ component: 'shim-hv', dif: this.difName, role: this.role });
    if (opts.onStateChange !== undefined && typeof opts.onStateChange !== 'function') throw new DifError('invalid_argument', 'onStateChange must be a function');
    this.onStateChange = opts.onStateChange;
    // Load the control schema now, not at the first allocation: reading the .proto file then
    // could fail (EMFILE when the process is out of fds) in the middle of serving.
    controlMessageType();
    this.port.bind(CONTROL_CHANNEL, (sdu) => this.op(() => this.onControl(sdu)));
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
  rxBudgetHit(flow: FlowImpl, which: RxBudgetBound, first: boolean): void {
    this.stats.rxBudgetDrops[which]++;
    if (!first) return;
    const limit = which === 'sdus' ? `${this.rxQueueLimit} SDUs (rxQueueLimit)` : which === 'flow_bytes' ? `${this.rxQueueBytes} bytes (rxQueueBytes)` : `${this.rxQueueTotalBytes} bytes over all flows (rxQueueTotalBytes)`;
    this.log.warn({ portId: flow.portId, channel: flow.channel, budget: which }, `shim-hv: a flow nobody reads reached its receive budget of ${limit}: SDUs are dropped (vmpi_dif_drops_total{reason="rx_queue_full"})`);
  }

  get isUp(): boolean {
    return this.port.isUp && !this.closed;
  }


  protected pickChannel(): number | null {
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

  protected ownChannelCount(): number {
    const first = this.role === 'host' ? 2 : 1;
    return this.maxChannel < first ? 0 : Math.floor((this.maxChannel - first) / 2) + 1;
  }

  /** True if the peer allocates `channel` (the other parity). */
  protected isPeerChannel(channel: number): boolean {
    return this.role === 'host' ? channel % 2 === 1 : channel % 2 === 0;
  }

  // -------------------------------------------------------------------------------------------
  // State changes (see the file comment)

  /** The state snapshot() would show changed. */
  protected changed(): void {
    this.dirty = true;
    if (this.opDepth === 0) this.flushChange();
  }

  /** Run `fn` as one batch of changes: reported once, when it ends (or before a send). */
  protected op<T>(fn: () => T): T {
    this.opDepth++;
    try {
      return fn();
    } finally {
      if (--this.opDepth === 0) this.flushChange();
    }
  }

  /** Report changes not reported yet to onStateChange (guarded: it never throws into us). */
  protected flushChange(): void {
    if (!this.dirty || this.notifying) return;
    if (this.detached || this.onStateChange === undefined) {
      this.dirty = false;
      return;
    }
    this.notifying = true;
    try {
      // Changes the callback itself makes are reported too, a bounded number of times.
      for (let i = 0; i < 4 && this.dirty; i++) {
        this.dirty = false;
        try {
          this.onStateChange(this);
        } catch (e) {
          this.log.warn({ err: (e as Error)?.message ?? String(e) }, 'shim-hv: the state change callback threw (ignored)');
        }
      }
    } finally {
      this.notifying = false;
    }
  }

  /** The persisted form of this IPC process's state (ipcp.ts). */
  abstract snapshot(): ShimHvSnapshot;

  // -------------------------------------------------------------------------------------------
  // Closing and freeing channels

  protected enterClosing(channel: number, flow: FlowImpl | null): void {
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

  protected finishFlow(flow: FlowImpl, reason: string, cause: DeallocationCause): void {
    if (flow.state === 'deallocated') return;
    this.waitingDrain.delete(flow);
    // The application's copy of a data file ends now (what is queued stays readable).
    if (flow.file) this.shutdownFile(flow.channel);
    flow.terminate(reason, cause);
    this.stats.flowsDeallocated++;
    this.log.debug({ channel: flow.channel, portId: flow.portId, reason, cause }, 'shim-hv: flow deallocated');
    this.emit('flowDeallocated', flow, reason, cause);
  }

  protected freeChannel(channel: number): void {
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

  protected shutdownFile(channel: number): void {
    try {
      this.files.get(channel)?.shutdown();
    } catch (e) {
      this.log.warn({ channel, err: (e as Error)?.message }, 'shim-hv: cannot shut down a data file');
    }
  }

  // -------------------------------------------------------------------------------------------
  // What the layers above implement

  /** The flow allocation protocol: the control channel's messages (control-handler.ts). */
  protected abstract onControl(sdu: Uint8Array): void;

  /** Flow.deallocate() (ipcp.ts). */
  abstract localDeallocate(flow: FlowImpl, reason: string): void;

  // -------------------------------------------------------------------------------------------
  // Control channel, send side


  protected sendControl(msg: ControlMessage): void {
    this.sendRaw(encodeControl(msg));
  }

  protected sendRaw(bytes: Uint8Array): void {
    // Write-ahead: the peer never hears of a change before the change callback did.
    if (this.dirty) this.flushChange();
    if (this.detached || !this.port.isUp) return;
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
  protected bindData(channel: number, asFile = false): ChannelFile | null {
    if (this.bound.has(channel)) return null;
    try {
      if (asFile && this.port.openChannelFile) {
        const file = this.port.openChannelFile(channel);
        this.files.set(channel, file);
        return file;
      }
      // A port that receives many SDUs at once (a packed chain's records, a batched read) hands
      // them over in one call; the flow passes them on as one 'sdus' batch (deliverBatch).
      if (this.port.bindBatch) this.port.bindBatch(channel, (batch) => this.onDataBatch(channel, batch));
      else this.port.bind(channel, (sdu) => this.onData(channel, sdu));
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

  private onDataBatch(channel: number, batch: PortSduBatch): void {
    const slot = this.slots.get(channel);
    if (slot?.state === 'allocated' || slot?.state === 'pending') {
      slot.flow.deliverBatch(batch);
    } else if (slot?.state === 'closing') {
      this.stats.staleSdus += batch.count;
      if (slot.flow) slot.flow.stats.rxAfterDeallocate += batch.count;
    } else {
      this.stats.unexpectedSdus += batch.count;
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
  // Port down

  private portDown(reason: string): void {
    this.log.info({ reason, flows: this.slots.size }, 'shim-hv: port down; flows deallocated');
    this.failAll(`port down: ${reason}`, 'port_down', 'port_down');
    this.emit('down', reason);
  }

  protected failAll(reason: string, cause: DeallocationCause, code: 'port_down' | 'closed'): void {
    const slots = [...this.slots];
    for (const [channel] of slots) this.freeChannel(channel);
    this.controlBacklog = [];
    this.heldUntilUp = [];
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

  flows(): ShimHvFlow[] {
    const out: ShimHvFlow[] = [];
    for (const slot of this.slots.values()) if (slot.state === 'allocated') out.push(slot.flow);
    return out;
  }

  protected checkOpen(): void {
    if (this.closed) throw new DifError('closed', `${this.difName}'s IPC process is closed`);
  }
}
