/**
 * errors.ts — the typed errors of the vhost-user layer.
 *
 * Owns: error classes whose messages say what was wrong and, where it helps, what to do, each
 * with a `code` (a fixed set, for logs, metrics and tests) and a `scope`: what the failure takes
 * down. Recovery follows the scope, not the class:
 * - 'request': the request is refused (failed REPLY_ACK when asked for, else the connection closes);
 * - 'queue': the queue is marked broken and reported on its error eventfd; others carry on (while
 *   a request is being handled, the request is what failed);
 * - 'connection': the connection closes at once (its stream or its peer cannot be trusted).
 * ProtocolError = the front-end sent something the spec (or our offer) does not allow;
 * MemoryAccessError = a guest address or length does not fall inside mapped guest memory;
 * QueueError = a virtqueue's contents are invalid (the queue is marked broken, nothing else);
 * ConnectionError = the connection as a whole is unusable (unreadable stream, peer not reading).
 */

export type VhostUserErrorCode =
  /** A request the spec or our offer does not allow (bad size, field, order, feature). */
  | 'bad_request'
  /** A request code this back-end (and its device) does not implement. */
  | 'unsupported_request'
  /** A message header that cannot be framed (version, flags, size): the stream is lost. */
  | 'bad_header'
  /** An fd of the wrong kind: a kick/call/err fd that is not an eventfd, or a semaphore eventfd. */
  | 'bad_fd'
  /** A memory region that does not fit inside its fd (mmapOffset + size beyond the file's end). */
  | 'region_beyond_fd'
  /** A memory region whose file could shrink under the mapping (no F_SEAL_SHRINK). */
  | 'memory_not_sealed'
  /** Mapping a region would exceed the connection's or the process's guest-memory budget. */
  | 'memory_budget'
  /** mmap of a memory region failed (or this Node cannot hold a mapping that large). */
  | 'map_failed'
  /** A guest address range that is not inside mapped guest memory. */
  | 'memory_access'
  /** A virtqueue the driver broke. */
  | 'queue_broken'
  /** A connection saved by another process (restart) that cannot be resumed here. */
  | 'resume_failed'
  /** The front-end left more reply bytes unread than the connection's output budget. */
  | 'replies_not_read';

/** What a failure takes down (see the file header). */
export type ErrorScope = 'request' | 'queue' | 'connection';

export class VhostUserError extends Error {
  override name = 'VhostUserError';
  /** For scope 'queue': the queue the error names, when it names one. */
  readonly queueIndex: number | undefined;
  constructor(
    message: string,
    readonly code: VhostUserErrorCode = 'bad_request',
    readonly scope: ErrorScope = 'request',
    queueIndex?: number,
  ) {
    super(message);
    this.queueIndex = queueIndex;
  }
}

/** The front-end broke the protocol: bad size, bad field, request not allowed now or not offered. */
export class ProtocolError extends VhostUserError {
  override name = 'ProtocolError';
  constructor(
    readonly request: string,
    message: string,
    code: VhostUserErrorCode = 'bad_request',
    scope: ErrorScope = 'request',
  ) {
    super(`${request}: ${message}`, code, scope);
  }
}

/** A guest-physical or front-end virtual address range is not backed by a mapped region. */
export class MemoryAccessError extends VhostUserError {
  override name = 'MemoryAccessError';
  constructor(message: string) {
    super(message, 'memory_access', 'queue');
  }
}

/** The driver put something invalid in a virtqueue; the queue is unusable until reset. */
export class QueueError extends VhostUserError {
  override name = 'QueueError';
  declare readonly queueIndex: number;
  constructor(queueIndex: number, message: string) {
    super(`queue ${queueIndex}: ${message}`, 'queue_broken', 'queue', queueIndex);
  }
}

/** The connection as a whole cannot go on (e.g. the front-end stopped reading its replies). */
export class ConnectionError extends VhostUserError {
  override name = 'ConnectionError';
  constructor(message: string, code: VhostUserErrorCode) {
    super(message, code, 'connection');
  }
}
