/**
 * ipcp.ts — the shim IPC process for hypervisors: one per VMPI port, the same code on host and
 * guest (paper, Section IV). Its address in the shim DIF is the port's VMPI-id.
 *
 * Owns: the IPC API (api.ts) of the shim DIF: application registration, flow allocation as
 * requester (pick a channel, send AllocateRequest, wait with a timeout or abort signal) and as
 * responder (accept / reject a flow request), deallocation by the application, and close().
 * Built in layers, one job each: channels.ts (per-port state: channel table and space, data
 * channels, the control channel's send side, port down), control-handler.ts (the control
 * messages the peer sends), flow.ts (the flow and flow request objects), types.ts (options,
 * events, stats).
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
import { DifError, type AcceptOptions, type AllocateOptions, type IpcProcess, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';
import type { ChannelFile } from '../../vmpi/port.js';
import { intArg as positiveInt, nameArg, resolveQos } from '../core/args.js';
import type { IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations } from '../core/registrations.js';
import { CONTROL_CHANNEL, clampReason, encodeControl } from './control.js';
import type { PendingSlot } from './channels.js';
import { ShimHvControl } from './control-handler.js';
import { FlowImpl, type FlowRequestImpl, type ShimRegistration } from './flow.js';
import type { ShimHvFlow, ShimHvFlowRequestHandler } from './types.js';

export * from './types.js';

export class ShimHvIpcp extends ShimHvControl implements IpcProcess, ObservableIpcp {
  readonly ipcpType = 'shim-hv' as const;
  private readonly registrations = new Registrations<ShimHvFlowRequestHandler, ShimRegistration>(this.difName);

  /** `<DIF name>.<role>`: one host and one guest IPC process per shim DIF. */
  get ipcpName(): string {
    return `${this.difName}.${this.role}`;
  }

  /** The counters in the shape every IPC process shows (core/observe.ts). */
  counters(): IpcpCounters {
    const s = this.stats;
    return {
      allocations: {
        outgoing: { allocated: s.allocSucceeded, rejected: s.allocRejectedByPeer, timeout: s.allocTimedOut, failed: Math.max(0, s.allocRequested - s.allocSucceeded - s.allocRejectedByPeer - s.allocTimedOut) },
        incoming: { allocated: s.incomingAccepted, rejected: s.incomingRejected },
      },
      flowsDeallocated: s.flowsDeallocated,
      drops: { stale: s.staleSdus + s.unexpectedSdus, malformed_control: Object.values(s.malformed).reduce((a, b) => a + b, 0) },
      rxQueuedBytes: this.rxQueuedBytes,
      rxBudgetDrops: { ...s.rxBudgetDrops },
    };
  }

  /** The operator's dump (core/observe.ts): the port, the channels in use and their flows. */
  inspect(): Record<string, unknown> {
    const channels = [...this.slots].sort((a, b) => a[0] - b[0]).map(([channel, slot]) => {
      const flow = slot.state === 'incoming' ? null : slot.flow;
      const apps = slot.state === 'incoming' ? slot.request : flow;
      return {
        channel,
        state: slot.state,
        ...(flow ? { portId: flow.portId, dataFile: flow.file !== null } : {}),
        ...(apps ? { localApp: formatAppName(apps.localApp), remoteApp: formatAppName(apps.remoteApp), maxSdu: apps.qos.maxSdu } : {}),
      };
    });
    return {
      difName: this.difName,
      name: this.ipcpName,
      role: this.role,
      vmpiId: this.port.vmpiId,
      port: this.isUp ? 'up' : 'down',
      maxChannel: this.maxChannel,
      registered: [...this.registrations.values()].map((r) => formatAppName(r.appName)),
      channels,
      rxQueuedBytes: this.rxQueuedBytes,
      stats: this.stats,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Registration

  register(app: AppName | string, onFlowRequest: ShimHvFlowRequestHandler): Registration {
    this.checkOpen();
    const reg: ShimRegistration = this.registrations.add(app, onFlowRequest, (appName, key) => ({
      appName,
      key,
      difName: this.difName,
      handler: onFlowRequest,
      unregister: () => this.dropRegistration(reg),
    }));
    this.log.debug({ app: reg.key }, 'shim-hv: application registered');
    return reg;
  }

  unregister(app: AppName | string): void {
    this.dropRegistration(this.registrations.find(app));
  }

  isRegistered(app: AppName | string): boolean {
    return this.registrations.has(app);
  }

  protected registrationFor(app: AppName): ShimRegistration | undefined {
    return this.registrations.get(app);
  }

  private dropRegistration(reg: ShimRegistration): void {
    if (!this.registrations.remove(reg)) return;
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
    // reliable/inOrder: granted as asked; shared memory provides both (see the file comment).
    return Object.freeze(resolveQos(q, this.port.maxSdu, this.difName));
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
  // Deallocation and close

  /** @internal Flow.deallocate() */
  localDeallocate(flow: FlowImpl, reason: string): void {
    const slot = this.slots.get(flow.channel);
    if (slot?.state === 'allocated' && slot.flow === flow) {
      this.sendControl({ kind: 'deallocate', channel: flow.channel, reason: clampReason(String(reason)), confirm: false });
      this.enterClosing(flow.channel, flow);
    }
    this.finishFlow(flow, String(reason), 'local');
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
}
