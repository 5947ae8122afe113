/**
 * api.ts — the IPC API that every IPC process offers northbound (paper, Section II): register an
 * application in a DIF, allocate a flow to a named application with a QoS spec, accept or reject
 * incoming flows, read and write SDUs, deallocate.
 *
 * Owns: the public types of that API and its typed error, independent of any one DIF. The shim
 * DIF for hypervisors (shim-hv/ipcp.ts) and the normal DIF (normal/ipcp.ts) implement
 * `IpcProcess`, with the parts they share in core/ (and core/observe.ts, what every IPC process
 * shows the metrics); the IPC daemon exposes the same operations over a Unix socket and its
 * client library rebuilds these objects on the other side (every value here is plain data or an
 * EventEmitter, and `DifError.code` is a string meant to cross a process boundary).
 */
import type { SduSpans } from '../sys/sdu-list.js';
import type { EventEmitter } from 'node:events';
import type { AppName } from './naming.js';

export type { AppName } from './naming.js';

/** What an application asks of a flow. */
export interface QosSpec {
  /** No SDU may be lost. */
  readonly reliable: boolean;
  /** SDUs arrive in the order they were written. */
  readonly inOrder: boolean;
  /** Largest SDU the flow carries, in bytes; 0 in a request means "the DIF's maximum". */
  readonly maxSdu: number;
}

/** A QoS request: every field optional (defaults: unreliable, unordered, the DIF's max SDU). */
export type QosRequest = Partial<QosSpec>;

/** NULL (no object yet) → pending → allocated → deallocated. Applications only see the last two. */
export type FlowState = 'pending' | 'allocated' | 'deallocated';

/** Who ended a flow. */
export type DeallocationCause = 'local' | 'peer' | 'port_down' | 'closed';

export interface FlowStats {
  txSdus: number;
  txBytes: number;
  /** write() calls refused because the link was full (nothing was sent; wait for 'drain'). */
  txRefused: number;
  rxSdus: number;
  rxBytes: number;
  /** SDUs dropped because nobody read them and the receive queue was at its limit. */
  rxQueueDrops: number;
  /** SDUs that arrived after the flow was deallocated (in flight at the time): dropped. */
  rxAfterDeallocate: number;
}

/**
 * Many SDUs of one flow handed over in one call (the 'sdus' event): SDU i is
 * buffer[offset(i), offset(i) + length(i)), in arrival order. Nothing is copied per SDU: the
 * buffer is the flow's read buffer, valid only during the call (copy what you keep), and the
 * batch object itself is reused by the next call.
 */
export type SduBatch = SduSpans;

export interface FlowEvents {
  /** One SDU (a private copy). While a 'data' listener is attached, read() sees nothing. */
  data: [sdu: Uint8Array];
  /**
   * SDUs in batches, as the data path receives them (one read of a VMPI file, one recvmmsg of
   * records): no Buffer, promise or event per SDU. While an 'sdus' listener is attached, SDUs go
   * to it, not to 'data' listeners; a waiting read() is served first, and SDUs that were queued
   * before the listener came arrive as batches too. The batch is valid only during the call.
   */
  sdus: [batch: SduBatch];
  /** A write() returned false earlier; writing may resume. */
  drain: [];
  /** The flow ended; reads return the SDUs already queued, then null. */
  deallocated: [reason: string, cause: DeallocationCause];
}

/** One allocated flow, as its application sees it. */
export interface Flow extends EventEmitter<FlowEvents>, AsyncIterable<Uint8Array> {
  /** Local handle, unique within the IPC process (RINA's port-id). */
  readonly portId: number;
  readonly difName: string;
  /** This end's application. */
  readonly localApp: AppName;
  /** The application at the other end. */
  readonly remoteApp: AppName;
  /** The QoS the flow was allocated with (max SDU resolved to a number). */
  readonly qos: QosSpec;
  readonly state: FlowState;
  /** Why the flow ended, once it has. */
  readonly deallocationReason: string | null;
  readonly stats: Readonly<FlowStats>;
  /**
   * Send one SDU. true: accepted (it will be delivered). false: the link is full and the SDU was
   * NOT sent — keep it and write it again after 'drain' (further writes return false until then).
   * Throws a DifError: 'flow_deallocated', 'sdu_too_large'.
   * Every Flow is done with `sdu` when write() returns (what it keeps, it copies), so a caller may
   * reuse the buffer at once: the normal DIF's EFCP sender builds each PDU in one reused buffer
   * (EfcpOptions.sendPduCopies) on that promise. A new Flow implementation must keep it.
   */
  write(sdu: Uint8Array): boolean;
  /** write() that waits for 'drain' when needed. Rejects with 'flow_deallocated'. */
  send(sdu: Uint8Array): Promise<void>;
  /** The next SDU, or null once the flow is deallocated and nothing is queued. */
  read(): Promise<Uint8Array | null>;
  /** End the flow at both ends (idempotent). */
  deallocate(reason?: string): void;
  /**
   * For a flow allocated or accepted with `dataFile: true` by an IPC process that could: a new
   * file descriptor (the caller owns it) for the flow's data path, one SDU per read()/write().
   * Such a flow carries its SDUs only there: write(), read() and 'data' do not. When the flow
   * ends, the file is shut down: queued SDUs stay readable, then reads fail (ESHUTDOWN). null
   * for any other flow. Optional: IPC processes without such files leave it out.
   */
  takeDataFd?(): number | null;
}

/** Options of FlowRequest.accept(). */
export interface AcceptOptions {
  /** Ask for the flow's data path as a file of its own (see Flow.takeDataFd); a hint. */
  dataFile?: boolean;
}

export type FlowRequestState = 'waiting' | 'accepted' | 'rejected' | 'cancelled';

export interface FlowRequestEvents {
  /** The requester gave up (timeout), the port went down, or the application was unregistered. */
  cancelled: [reason: string];
}

/** An incoming allocation for a registered application. Settle it with accept() or reject(). */
export interface FlowRequest extends EventEmitter<FlowRequestEvents> {
  readonly difName: string;
  /** The registered application that is asked (the destination). */
  readonly localApp: AppName;
  /** The requesting application. */
  readonly remoteApp: AppName;
  readonly qos: QosSpec;
  readonly state: FlowRequestState;
  /** Accept: the flow is allocated at once. Throws a DifError 'request_settled' or 'port_down'. */
  accept(opts?: AcceptOptions): Flow;
  /** Refuse, telling the requester why. Throws a DifError 'request_settled'. */
  reject(reason: string): void;
}

export type FlowRequestHandler = (request: FlowRequest) => void;

export interface Registration {
  readonly appName: AppName;
  readonly difName: string;
  /** Same as IpcProcess.unregister(appName), but a no-op once done. */
  unregister(): void;
}

export interface AllocateOptions {
  /** Give up after this long (default: the IPC process's allocation timeout). */
  timeoutMs?: number;
  /** Give up when aborted (rejects with 'aborted'). */
  signal?: AbortSignal;
  /** Ask for the flow's data path as a file of its own (see Flow.takeDataFd); a hint. */
  dataFile?: boolean;
}

/** The IPC API of one IPC process (one DIF member). */
export interface IpcProcess {
  readonly difName: string;
  /** This IPC process's address in its DIF. */
  readonly address: number;
  /** Make `app` reachable through this DIF; `onFlowRequest` decides on incoming flows. */
  register(app: AppName | string, onFlowRequest: FlowRequestHandler): Registration;
  unregister(app: AppName | string): void;
  isRegistered(app: AppName | string): boolean;
  /** Allocate a flow from `localApp` to `remoteApp`. Rejects with a DifError. */
  allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos?: QosRequest, opts?: AllocateOptions): Promise<Flow>;
  /** The flows currently allocated. */
  flows(): Flow[];
}

export type DifErrorCode =
  /** An application name is malformed (the cause is a NamingError). */
  | 'invalid_name'
  /** A QoS spec is malformed or cannot be met by this DIF (e.g. max SDU too large). */
  | 'invalid_qos'
  | 'invalid_argument'
  | 'already_registered'
  | 'not_registered'
  /** The lower link (VMPI port) is down. */
  | 'port_down'
  /** Every channel this end may allocate is in use. */
  | 'no_free_channel'
  /** The peer refused; `peerReason` says why (e.g. "unknown application"). */
  | 'rejected'
  | 'timeout'
  | 'aborted'
  /** The flow is deallocated (write after deallocate). */
  | 'flow_deallocated'
  /** read()/write() on a flow whose data path is a file of its own (Flow.takeDataFd). */
  | 'data_file'
  | 'sdu_too_large'
  /** accept()/reject() on a request that was already settled or cancelled. */
  | 'request_settled'
  /** The IPC process was closed. */
  | 'closed'
  /** IPC daemon (src/dif/ipc/): no IPC process of that DIF name is hosted there. */
  | 'unknown_dif'
  /** IPC daemon: a control message was malformed (not readable, wrong version, bad field). */
  | 'malformed'
  /** IPC daemon: the connection to the daemon is gone. */
  | 'disconnected'
  /** IPC daemon: a per-user or per-daemon limit (sessions, flows, registrations) is reached. */
  | 'limit_exceeded'
  /** IPC daemon: out of a system resource (file descriptors): try again later. */
  | 'no_resources';

export class DifError extends Error {
  override name = 'DifError';
  /** For 'rejected': the reason the peer gave. */
  readonly peerReason: string | undefined;
  constructor(
    readonly code: DifErrorCode,
    message: string,
    opts: { cause?: unknown; peerReason?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.peerReason = opts.peerReason;
  }
}
