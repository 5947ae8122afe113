/**
 * control-handler.ts — the shim IPC process's side of the flow allocation protocol: what it does
 * with each control message the peer sends on channel 0 (control.proto, decoded by control.ts):
 * AllocateRequest (checked, then handed to the registered application as a flow request),
 * AllocateResponse (settles our pending allocation), Deallocate (ends a flow, cancels a request,
 * confirms, or frees a closing channel). Malformed or out-of-state messages are counted, dropped
 * or answered, and reported as 'protocolError'.
 *
 * The peer answers a Deallocate with a Deallocate{confirm}; a Deallocate received while closing
 * (the confirm, or the peer deallocating at the same time) frees the channel. This relies on
 * one property of VMPI: one ring per direction, so everything one end sends, on any channel,
 * arrives in the order it was sent. Hence data the peer sent before its confirm arrives before
 * it, and a channel is never reused while old data for it can still arrive. (A guest port reads
 * each channel from its own file, so across channels it may deliver out of ring order: data can
 * overtake an AllocateResponse, and then waits in the pending flow; data that would trail a
 * confirm is already in the old channel file's queue, which closing the file discards.)
 */
import { DifError, type AcceptOptions, type QosSpec } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';
import { ControlMessageError, decodeControl, type AllocateRequestMsg, type AllocateResponseMsg, type ControlMessage, type DeallocateMsg } from './control.js';
import { ShimHvChannels, type Slot } from './channels.js';
import { FlowRequestImpl, type ShimRegistration, type ShimRequestOwner } from './flow.js';
import { ShimHvProtocolError, type ProtocolErrorReason, type ShimHvFlow } from './types.js';

export abstract class ShimHvControl extends ShimHvChannels implements ShimRequestOwner {
  /** The application registered as `app`, if any. */
  protected abstract registrationFor(app: AppName): ShimRegistration | undefined;
  /** Why a request for `app`, which is not registered, is refused (ipcp.ts). */
  protected abstract unregisteredReason(app: AppName): string;
  /**
   * A stand-in registration when a request for `app` may wait for it to register again after a
   * restore (ipcp.ts); the request is kept, unseen by any application, until then.
   */
  protected abstract awaitedRegistration(app: AppName): ShimRegistration | undefined;
  /** FlowRequest.accept() (ipcp.ts). */
  abstract acceptIncoming(req: FlowRequestImpl, opts: AcceptOptions): ShimHvFlow;
  /** FlowRequest.reject() (ipcp.ts). */
  abstract rejectIncoming(req: FlowRequestImpl, reason: string): void;

  protected onControl(sdu: Uint8Array): void {
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

  protected onAllocateRequest(m: AllocateRequestMsg): void {
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
    const reg = this.registrationFor(m.dst);
    const awaited = reg ? undefined : this.awaitedRegistration(m.dst);
    const to = reg ?? awaited;
    if (!to) return refuse(this.unregisteredReason(m.dst));

    const qos: QosSpec = Object.freeze({ reliable: m.qos.reliable, inOrder: m.qos.inOrder, maxSdu: m.qos.maxSdu === 0 ? this.port.maxSdu : m.qos.maxSdu });
    const req = new FlowRequestImpl(this, m.channel, this.difName, to.appName, m.src, qos, to);
    this.slots.set(m.channel, { state: 'incoming', request: req });
    if (reg) this.offerRequest(reg, req);
    else this.log.debug({ channel: m.channel, app: to.key }, 'shim-hv: request kept until its application registers again');
  }

  /** Hand `req` to the application registered as `reg` (an exception from it refuses the request). */
  protected offerRequest(reg: ShimRegistration, req: FlowRequestImpl): void {
    try {
      reg.handler(req);
    } catch (e) {
      this.log.warn({ err: e, app: reg.key }, 'shim-hv: flow request handler threw');
      if (req.state === 'waiting') req.reject(`application error: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  protected onAllocateResponse(m: AllocateResponseMsg): void {
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

  protected onDeallocate(m: DeallocateMsg): void {
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

  protected staleConfirm(channel: number, state: Slot['state']): void {
    this.stats.unknownFlow++;
    this.log.debug({ channel, state }, 'shim-hv: stale deallocation confirm ignored');
  }

  protected protocolError(reason: ProtocolErrorReason, message: string, channel?: number): void {
    this.log.debug({ reason, channel }, `shim-hv: ${message}`);
    if (this.listenerCount('protocolError') > 0) this.emit('protocolError', new ShimHvProtocolError(reason, message, channel));
  }
}
