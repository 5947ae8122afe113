/**
 * errors.ts — the typed errors of the vhost-user layer.
 *
 * Owns: error classes whose messages say what was wrong and, where it helps, what to do.
 * ProtocolError = the front-end sent something the spec (or our offer) does not allow;
 * MemoryAccessError = a guest address or length does not fall inside mapped guest memory;
 * QueueError = a virtqueue's contents are invalid (the queue is marked broken, nothing else).
 */

export class VhostUserError extends Error {
  override name = 'VhostUserError';
}

/** The front-end broke the protocol: bad size, bad field, request not allowed now or not offered. */
export class ProtocolError extends VhostUserError {
  override name = 'ProtocolError';
  constructor(
    readonly request: string,
    message: string,
  ) {
    super(`${request}: ${message}`);
  }
}

/** A guest-physical or front-end virtual address range is not backed by a mapped region. */
export class MemoryAccessError extends VhostUserError {
  override name = 'MemoryAccessError';
}

/** The driver put something invalid in a virtqueue; the queue is unusable until reset. */
export class QueueError extends VhostUserError {
  override name = 'QueueError';
  constructor(
    readonly queueIndex: number,
    message: string,
  ) {
    super(`queue ${queueIndex}: ${message}`);
  }
}
