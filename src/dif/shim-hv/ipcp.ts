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
 *
 * Restart (snapshot.ts). `snapshot()` is the state a new IPC process on the same VMPI device
 * needs to carry on after this one died (SIGKILL, upgrade) while the peer lived on;
 * `onStateChange` says when it changed, before the peer hears of the change (channels.ts).
 * `ShimHvIpcp.restore(opts, snapshot)` (or the `resume` option) builds that new IPC process:
 * - It checks the snapshot first (ShimHvStateError 'state_version' / 'state_invalid'; also
 *   'state_invalid' when its role, DIF name or VMPI-id is not this one's) and binds nothing
 *   on a refusal. On success it binds the control channel and every channel it resumes on the
 *   same port: the dead process's bindings died with it.
 * - Registrations live at each end (the protocol has none on the wire): the peer's stay
 *   untouched, so a flow to a peer application can be allocated at once. This end's
 *   applications must register again (their handlers died). For `reregisterGraceMs` after the
 *   restore a request for one of them waits (kept as an unanswered request) until it does;
 *   after that, or with a grace of 0, it is refused with "<app> was registered before the host
 *   back-end restarted and has not registered again yet: try again" instead of "unknown
 *   application". The names stay in the snapshot until the application registers or leaves
 *   (unregister).
 * - Flows listed by `keepFlows` (their host end lives on: an IPC session the IPC daemon
 *   resumes) run on, on their channel, with their port-id, names and QoS, SDUs from the peer
 *   waiting in them; `reclaimFlow(portId)` hands each out once, and `endUnclaimed()` (or
 *   DEFAULT_RECLAIM_MS) ends those nobody reclaimed as below. Counted in `flowsKept`.
 * - Otherwise nothing that held this end of a flow survives the process (an in-process user,
 *   a data file), so no other flow is resumed: every allocated flow, and every allocation this
 *   end had asked for, is ended toward the peer with Deallocate and the reason
 *   RESTART_FLOW_LOST ("the host back-end restarted; the host end of this flow was lost"), so
 *   the peer's flow ends with it (its pending allocation is refused with it); the channel then
 *   waits, closing, for the peer's confirmation as usual (stale SDUs are counted and dropped).
 *   A channel that was already closing gets its Deallocate again (it may not have gone out
 *   before the crash; the peer confirms a Deallocate for a channel it has freed). Requests the
 *   peer had made that no application had answered get a REJECT with RESTART_REQUEST_LOST.
 * - Port-ids and the channel cursor continue where they were (no reuse).
 * - Messages the peer sent meanwhile (still in the ring) are handled by the new IPC process,
 *   so construct it before the device processes its rings again. If the port is down when it
 *   is built, the Deallocates and REJECTs wait for the port's 'up'.
 * `detach()` lets go of the port without a word to the peer: what a crash does, for tests and
 * for an orderly hand-over to a new IPC process in another process.
 */
import { DifError, type AcceptOptions, type AllocateOptions, type IpcProcess, type QosRequest, type QosSpec, type Registration } from '../api.js';
import { appNameKey, formatAppName, parseAppName, type AppName } from '../naming.js';
import type { ChannelFile } from '../../vmpi/port.js';
import { intArg as positiveInt, nameArg, resolveQos } from '../core/args.js';
import type { IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations } from '../core/registrations.js';
import { CONTROL_CHANNEL, clampReason, encodeControl, type ControlMessage } from './control.js';
import { defaultDifName, type PendingSlot } from './channels.js';
import { ShimHvControl } from './control-handler.js';
import { FlowImpl, type FlowRequestImpl, type ShimRegistration } from './flow.js';
import { DEFAULT_RECLAIM_MS, DEFAULT_REREGISTER_GRACE_MS, REASON_UNKNOWN_APPLICATION, type ShimHvFlow, type ShimHvFlowRequestHandler, type ShimHvIpcpOptions, type ShimHvRole } from './types.js';
import { SHIM_HV_SNAPSHOT_VERSION, ShimHvStateError, ownsChannel, parseShimHvSnapshot, qosToSnapshot, type ShimHvSnapshot, type ShimHvSnapshotChannel } from './snapshot.js';

export * from './types.js';
export * from './snapshot.js';

/** Who restarted, in the reasons below. */
function restarted(role: ShimHvRole): string {
  return role === 'host' ? 'the host back-end restarted' : 'the guest IPC process restarted';
}

/** The reason a flow (or an allocation this end had asked for) ends with after a restore. */
export function RESTART_FLOW_LOST(role: ShimHvRole): string {
  return `${restarted(role)}; the ${role} end of this flow was lost`;
}

/** The reason a request the peer had made, unanswered at the restart, is refused with. */
export function RESTART_REQUEST_LOST(role: ShimHvRole): string {
  return `${restarted(role)} before the ${role} application answered; allocate again`;
}

/** What a restore did (ShimHvIpcp.restored). */
export interface ShimHvRestoreSummary {
  /** Allocated flows ended toward the peer. */
  flowsEnded: number;
  /** Allocated flows kept for their surviving holder (keepFlows; ended later if not reclaimed). */
  flowsKept: number;
  /** Allocations this end had asked for, given up toward the peer. */
  allocationsEnded: number;
  /** Requests of the peer no application had answered, refused. */
  requestsRefused: number;
  /** Channels that were already closing, whose Deallocate was sent again. */
  closing: number;
  /** Applications registered before the restart (they must register again). */
  registrations: number;
}

/** The snapshot in `opts.resume`, checked against the IPC process `opts` describe. */
function checkedResume(opts: ShimHvIpcpOptions): ShimHvSnapshot {
  const snap = parseShimHvSnapshot(opts.resume);
  const difName = opts.difName ?? defaultDifName(opts.port);
  const mismatch = (what: string, was: unknown, is: unknown): ShimHvStateError =>
    new ShimHvStateError('state_invalid', `shim-hv snapshot: it is of ${what} ${JSON.stringify(was)}, this IPC process is of ${JSON.stringify(is)}: restore it on the IPC process it was taken of`);
  if (snap.role !== opts.role) throw mismatch('role', snap.role, opts.role);
  if (snap.difName !== difName) throw mismatch('DIF', snap.difName, difName);
  if (snap.vmpiId !== opts.port.vmpiId) throw mismatch('VMPI-id', snap.vmpiId, opts.port.vmpiId);
  return snap;
}

export class ShimHvIpcp extends ShimHvControl implements IpcProcess, ObservableIpcp {
  readonly ipcpType = 'shim-hv' as const;
  private readonly registrations = new Registrations<ShimHvFlowRequestHandler, ShimRegistration>(this.difName);
  /** Applications registered before a restart and not since (key → string form). */
  private readonly awaitingRegistration = new Map<string, string>();
  /** Until when (Date.now()) requests for them wait (reregisterGraceMs after the resume), and the timer that ends it. */
  private graceUntil = 0;
  private graceTimer: NodeJS.Timeout | null = null;
  private readonly reregisterGraceMs: number;
  /** What the restore did, when this IPC process was resumed from a snapshot. */
  readonly restored: ShimHvRestoreSummary | null = null;
  /** Flows kept by the restore (keepFlows) and not reclaimed yet, by port-id. */
  private readonly unclaimed = new Map<number, FlowImpl>();
  private reclaimTimer: NodeJS.Timeout | null = null;

  /**
   * A new IPC process, or with `opts.resume` one resumed from a snapshot (see the file
   * comment). Throws ShimHvStateError ('state_version', 'state_invalid') for a snapshot it
   * cannot resume from, before it binds anything.
   */
  constructor(opts: ShimHvIpcpOptions) {
    const resume = opts.resume === undefined ? null : checkedResume(opts);
    super(opts);
    this.reregisterGraceMs = positiveInt('reregisterGraceMs', opts.reregisterGraceMs ?? DEFAULT_REREGISTER_GRACE_MS, 0, 2 ** 31 - 1);
    if (resume) this.restored = this.resumeFrom(resume, opts.keepFlows);
  }

  /**
   * A flow the restore kept (keepFlows), handed out once; undefined for any other port-id. It may
   * have ended meanwhile (the peer deallocated it): it is then 'deallocated', as any flow.
   */
  reclaimFlow(portId: number): ShimHvFlow | undefined {
    const flow = this.unclaimed.get(portId);
    if (flow === undefined) return undefined;
    this.unclaimed.delete(portId);
    if (this.unclaimed.size === 0) this.stopReclaimTimer();
    return flow;
  }

  /** End the flows the restore kept that nobody reclaimed, toward the peer (RESTART_FLOW_LOST). */
  endUnclaimed(reason = RESTART_FLOW_LOST(this.role)): void {
    this.stopReclaimTimer();
    const flows = [...this.unclaimed.values()];
    this.unclaimed.clear();
    if (flows.length === 0) return;
    this.op(() => {
      for (const f of flows) if (f.state === 'allocated') this.localDeallocate(f, reason);
    });
    this.log.info({ flows: flows.length }, 'shim-hv: kept flows nobody reclaimed were ended');
  }

  private stopReclaimTimer(): void {
    if (this.reclaimTimer) clearTimeout(this.reclaimTimer);
    this.reclaimTimer = null;
  }

  /**
   * Resume from `snapshot` (unknown: as read back from a file; checked). See the file comment.
   * The first onStateChange call comes from inside this call: use its argument, not the variable
   * the result is assigned to.
   */
  static restore(opts: Omit<ShimHvIpcpOptions, 'resume'>, snapshot: unknown): ShimHvIpcp {
    return new ShimHvIpcp({ ...opts, resume: snapshot as ShimHvSnapshot });
  }

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
        ...(flow ? { portId: flow.portId, dataFile: flow.file !== null, stats: { ...flow.stats } } : {}),
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
      ...(this.awaitingRegistration.size > 0 ? { awaitingRegistration: [...this.awaitingRegistration.values()] } : {}),
      channels,
      ...(this.restored ? { restored: { ...this.restored } } : {}),
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
    this.op(() => {
      this.awaitingRegistration.delete(reg.key);
      this.changed();
      this.log.debug({ app: reg.key }, 'shim-hv: application registered');
      // Requests that waited for it since the restore (see awaitedRegistration).
      for (const slot of [...this.slots.values()]) {
        if (slot.state !== 'incoming' || slot.request.state !== 'waiting' || slot.request.registration.key !== reg.key || slot.request.registration === reg) continue;
        slot.request.registration = reg;
        this.offerRequest(reg, slot.request);
      }
    });
    return reg;
  }

  unregister(app: AppName | string): void {
    const key = appNameKey(nameArg(app, 'application'));
    if (!this.registrations.has(app) && this.awaitingRegistration.delete(key)) {
      // Registered before the restart: it left for good; what waited for it is refused.
      this.op(() => {
        this.changed();
        for (const slot of [...this.slots.values()]) {
          if (slot.state === 'incoming' && slot.request.state === 'waiting' && slot.request.registration.key === key) this.rejectIncoming(slot.request, REASON_UNKNOWN_APPLICATION);
        }
      });
      return;
    }
    this.dropRegistration(this.registrations.find(app));
  }

  isRegistered(app: AppName | string): boolean {
    return this.registrations.has(app);
  }

  protected registrationFor(app: AppName): ShimRegistration | undefined {
    return this.registrations.get(app);
  }

  protected awaitedRegistration(app: AppName): ShimRegistration | undefined {
    const key = appNameKey(app);
    if (Date.now() >= this.graceUntil || !this.awaitingRegistration.has(key)) return undefined;
    return { appName: app, key, difName: this.difName, handler: () => {}, unregister: () => {} };
  }

  /** The grace after a resume is over: requests still waiting for their application are refused. */
  private endGrace(): void {
    this.graceTimer = null;
    this.graceUntil = 0;
    this.op(() => {
      for (const slot of [...this.slots.values()]) {
        if (slot.state !== 'incoming' || slot.request.state !== 'waiting' || this.registrations.get(slot.request.localApp) === slot.request.registration) continue;
        this.rejectIncoming(slot.request, this.unregisteredReason(slot.request.localApp));
      }
    });
  }

  protected unregisteredReason(app: AppName): string {
    const name = this.awaitingRegistration.get(appNameKey(app));
    if (name === undefined) return REASON_UNKNOWN_APPLICATION;
    return `${name} was registered before ${restarted(this.role)} and has not registered again yet: try again`;
  }

  private dropRegistration(reg: ShimRegistration): void {
    this.op(() => {
      if (!this.registrations.remove(reg)) return;
      this.changed();
      // Requests still waiting for this application's decision can no longer be accepted.
      for (const [channel, slot] of this.slots) {
        if (slot.state === 'incoming' && slot.request.registration === reg) {
          // Answer first, then free: a snapshot taken in between still holds the request.
          this.sendControl({ kind: 'allocate_response', channel, result: 'reject', reason: 'application unregistered' });
          this.slots.delete(channel);
          slot.request.cancel('application unregistered');
          this.stats.incomingRejected++;
        }
      }
      this.log.debug({ app: reg.key }, 'shim-hv: application unregistered');
    });
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
    const why = typeof reason === 'string' && reason !== '' ? reason : 'rejected by the application';
    // Answer first, then free: a snapshot taken in between still holds the request, and a
    // restore refuses it again (harmless) rather than leaving the requester to time out.
    this.sendControl({ kind: 'allocate_response', channel: req.channel, result: 'reject', reason: why });
    if (slot?.state === 'incoming' && slot.request === req) this.slots.delete(req.channel);
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
    this.op(() => {
      for (const [channel, slot] of this.slots) {
        if (slot.state === 'allocated' || slot.state === 'pending') this.sendControl({ kind: 'deallocate', channel, reason, confirm: false });
        else if (slot.state === 'incoming') this.sendControl({ kind: 'allocate_response', channel, result: 'reject', reason });
      }
      this.closed = true;
      this.failAll(reason, 'closed', 'closed');
      this.registrations.clear();
      this.awaitingRegistration.clear();
      this.changed();
      this.letGo();
    });
  }

  /**
   * Let go of the port without a word to the peer and without reporting a change (the last
   * snapshot stays what a successor restores from): what a crash does. Local flows and
   * allocations end with `reason` (cause 'closed'), registrations are dropped, every channel is
   * unbound. Call it before a successor binds the same port in this process. Idempotent.
   */
  detach(reason = 'IPC process detached from its port'): void {
    if (this.closed) return;
    this.detached = true;
    this.closed = true;
    this.failAll(reason, 'closed', 'closed');
    this.registrations.clear();
    this.awaitingRegistration.clear();
    this.letGo();
  }

  private letGo(): void {
    this.stopReclaimTimer();
    this.unclaimed.clear();
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.port.unbind(CONTROL_CHANNEL);
    this.port.off('up', this.onUp);
    this.port.off('down', this.onDown);
    this.port.off('drain', this.onDrain);
  }

  // -------------------------------------------------------------------------------------------
  // Snapshot and restore (snapshot.ts; the file comment says what a restore does)

  /** This IPC process's state as plain JSON data (see snapshot.ts). */
  snapshot(): ShimHvSnapshot {
    const channels: ShimHvSnapshotChannel[] = [];
    for (const [channel, slot] of [...this.slots].sort((a, b) => a[0] - b[0])) {
      switch (slot.state) {
        case 'pending': {
          const f = slot.flow;
          channels.push({ channel, state: 'pending', portId: f.portId, localApp: formatAppName(f.localApp), remoteApp: formatAppName(f.remoteApp), qos: qosToSnapshot(f.qos) });
          break;
        }
        case 'incoming': {
          const r = slot.request;
          channels.push({ channel, state: 'incoming', localApp: formatAppName(r.localApp), remoteApp: formatAppName(r.remoteApp), qos: qosToSnapshot(r.qos) });
          break;
        }
        case 'allocated': {
          const f = slot.flow;
          channels.push({
            channel,
            state: 'allocated',
            portId: f.portId,
            localApp: formatAppName(f.localApp),
            remoteApp: formatAppName(f.remoteApp),
            qos: qosToSnapshot(f.qos),
            requester: ownsChannel(this.role, channel) ? 'local' : 'peer',
            dataFile: f.file !== null,
          });
          break;
        }
        case 'closing':
          channels.push({ channel, state: 'closing', portId: slot.flow ? slot.flow.portId : null });
          break;
      }
    }
    const registrations = [...this.registrations.values()].map((r) => formatAppName(r.appName));
    for (const name of this.awaitingRegistration.values()) registrations.push(name);
    return {
      version: SHIM_HV_SNAPSHOT_VERSION,
      role: this.role,
      difName: this.difName,
      vmpiId: this.port.vmpiId,
      maxChannel: this.maxChannel,
      nextPortId: this.nextPortId,
      cursor: this.cursor,
      registrations: registrations.sort(),
      channels,
    };
  }

  /** Take over from the IPC process that wrote `snap` (checked already); see the file comment. */
  private resumeFrom(snap: ShimHvSnapshot, keep: ((portId: number, difName: string) => boolean) | undefined): ShimHvRestoreSummary {
    const summary: ShimHvRestoreSummary = { flowsEnded: 0, flowsKept: 0, allocationsEnded: 0, requestsRefused: 0, closing: 0, registrations: snap.registrations.length };
    const lost = RESTART_FLOW_LOST(this.role);
    const unanswered = RESTART_REQUEST_LOST(this.role);
    const messages: ControlMessage[] = [];
    this.op(() => {
      this.nextPortId = snap.nextPortId;
      this.cursor = snap.cursor % this.ownChannelCount();
      for (const name of snap.registrations) this.awaitingRegistration.set(appNameKey(name), name);
      if (this.awaitingRegistration.size > 0 && this.reregisterGraceMs > 0) {
        this.graceUntil = Date.now() + this.reregisterGraceMs;
        this.graceTimer = setTimeout(() => this.endGrace(), this.reregisterGraceMs);
        this.graceTimer.unref();
      }
      for (const c of snap.channels) {
        if (c.state === 'incoming') {
          // The channel stays free: the peer frees it on the REJECT.
          messages.push({ kind: 'allocate_response', channel: c.channel, result: 'reject', reason: unanswered });
          summary.requestsRefused++;
          continue;
        }
        if (c.state === 'allocated' && !c.dataFile && keep?.(c.portId, this.difName) === true && this.keepFlow(c)) {
          summary.flowsKept++;
          continue;
        }
        if (c.state === 'allocated') summary.flowsEnded++;
        else if (c.state === 'pending') summary.allocationsEnded++;
        else summary.closing++;
        try {
          // Listen, so what the peer sent before it hears of this is counted as stale.
          this.bindData(c.channel);
        } catch (e) {
          this.log.warn({ channel: c.channel, err: (e as Error).message }, 'shim-hv: cannot bind a resumed channel; SDUs on it are dropped by the port');
        }
        this.enterClosing(c.channel, null);
        messages.push({ kind: 'deallocate', channel: c.channel, reason: lost, confirm: false });
      }
      if (this.unclaimed.size > 0) {
        this.reclaimTimer = setTimeout(() => this.endUnclaimed(), DEFAULT_RECLAIM_MS);
        this.reclaimTimer.unref();
      }
      this.changed();
      // Persisted before the peer hears of it (sendControl would do it too; this covers "nothing to send").
      this.flushChange();
      if (this.port.isUp) for (const m of messages) this.sendControl(m);
      else this.heldUntilUp = messages;
    });
    this.log.info({ ...summary, held: !this.port.isUp }, 'shim-hv: resumed from a snapshot');
    return summary;
  }

  /** Resume one allocated flow as it was (keepFlows); false if its channel cannot be bound. */
  private keepFlow(c: Extract<ShimHvSnapshotChannel, { state: 'allocated' }>): boolean {
    try {
      this.bindData(c.channel);
    } catch (e) {
      this.log.warn({ channel: c.channel, err: (e as Error).message }, 'shim-hv: cannot bind a kept flow\'s channel; ending the flow');
      return false;
    }
    const flow = new FlowImpl(this, c.portId, c.channel, this.difName, parseAppName(c.localApp), parseAppName(c.remoteApp), Object.freeze({ ...c.qos }));
    flow.markAllocated();
    this.slots.set(c.channel, { state: 'allocated', flow });
    this.unclaimed.set(c.portId, flow);
    return true;
  }
}
