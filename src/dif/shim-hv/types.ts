/**
 * types.ts — the public shapes of the shim IPC process for hypervisors (ipcp.ts): its options
 * and their defaults, events, counters, the flow and flow request it hands out, and the error it
 * reports a misbehaving peer with.
 */
import type { AcceptOptions, DeallocationCause, Flow, FlowRequest } from '../api.js';
import type { VmpiPort } from '../../vmpi/port.js';
import type { Logger } from '../../sys/log.js';
import type { MalformedReason } from './control.js';
import type { ShimHvSnapshot } from './snapshot.js';

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
  /**
   * Resume from the snapshot a previous IPC process on the same VMPI device wrote (snapshot.ts;
   * ipcp.ts says what a restore does). Checked first: ShimHvStateError 'state_version' or
   * 'state_invalid', and then nothing is bound on the port.
   */
  resume?: ShimHvSnapshot;
  /**
   * After a resume, how long a request for an application registered before the restart (and
   * not yet again) waits for it to register, rather than being refused at once. Default
   * DEFAULT_REREGISTER_GRACE_MS; 0 refuses at once. Keep it below the peer's allocation timeout.
   */
  reregisterGraceMs?: number;
  /**
   * With `resume`: the allocated flows to keep rather than end (by port-id): their host end
   * lives on in another holder that survived the restart (an IPC session of a host application
   * the IPC daemon resumes). A kept flow runs at once (SDUs from the peer wait in it) and is
   * handed out once by reclaimFlow(portId); one not reclaimed by endUnclaimed(), or within
   * DEFAULT_RECLAIM_MS, is ended toward the peer as a restore ends the others. Flows whose data
   * path was a data file are never kept.
   */
  keepFlows?: (portId: number, difName: string) => boolean;
  /**
   * Called synchronously after every change snapshot() reflects (registration, allocation,
   * deallocation, a channel's state), before any control message that follows from the change
   * is sent, so the caller can persist the snapshot first. Once per batch of changes made by one
   * call or one control message. An exception from it is logged and ignored.
   */
  onStateChange?: (ipcp: ShimHvSnapshotSource) => void;
}

/** What the state change callback gets: the IPC process, to take its snapshot. */
export interface ShimHvSnapshotSource {
  snapshot(): ShimHvSnapshot;
}

export const DEFAULT_MAX_CHANNEL = 1023;
/** How long a kept flow (keepFlows) waits to be reclaimed before it is ended. */
export const DEFAULT_RECLAIM_MS = 5000;
export const DEFAULT_ALLOCATE_TIMEOUT_MS = 5000;
export const DEFAULT_DEALLOCATE_TIMEOUT_MS = 2000;
export const DEFAULT_REREGISTER_GRACE_MS = 3000;
export const DEFAULT_RX_QUEUE_LIMIT = 4096;
export const DEFAULT_RX_QUEUE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_RX_QUEUE_TOTAL_BYTES = 64 * 1024 * 1024;
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
