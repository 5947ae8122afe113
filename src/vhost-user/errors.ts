/**
 * errors.ts — the typed errors of the vhost-user layer.
 *
 * Owns: error classes whose messages say what was wrong and, where it helps, what to do, each
 * with a `code` (a fixed set, for logs, metrics and tests).
 * ProtocolError = the front-end sent something the spec (or our offer) does not allow;
 * MemoryAccessError = a guest address or length does not fall inside mapped guest memory;
 * QueueError = a virtqueue's contents are invalid (the queue is marked broken, nothing else).
 */

export type VhostUserErrorCode =
  /** A request the spec or our offer does not allow (bad size, field, order, feature). */
  | 'bad_request'
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
  | 'queue_broken';

export class VhostUserError extends Error {
  override name = 'VhostUserError';
  constructor(
    message: string,
    readonly code: VhostUserErrorCode = 'bad_request',
  ) {
    super(message);
  }
}

/** The front-end broke the protocol: bad size, bad field, request not allowed now or not offered. */
export class ProtocolError extends VhostUserError {
  override name = 'ProtocolError';
  constructor(
    readonly request: string,
    message: string,
    code: VhostUserErrorCode = 'bad_request',
  ) {
    super(`${request}: ${message}`, code);
  }
}

/** A guest-physical or front-end virtual address range is not backed by a mapped region. */
export class MemoryAccessError extends VhostUserError {
  override name = 'MemoryAccessError';
  constructor(message: string) {
    super(message, 'memory_access');
  }
}

/** The driver put something invalid in a virtqueue; the queue is unusable until reset. */
export class QueueError extends VhostUserError {
  override name = 'QueueError';
  constructor(
    readonly queueIndex: number,
    message: string,
  ) {
    super(`queue ${queueIndex}: ${message}`, 'queue_broken');
  }
}
