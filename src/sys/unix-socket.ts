/**
 * unix-socket.ts — clearing the way for a listening Unix socket.
 *
 * Owns: `removeStaleSocket`, the one careful rule for a socket file left at our path. It is
 * removed only when connecting to it is refused (ECONNREFUSED: nobody listens there). Any other
 * failure — EACCES, or EAGAIN from a live server whose backlog is full — leaves it alone and is
 * reported, so a running server's socket is never deleted under it.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { errnoCode, safeClose } from './fd.js';
import { native } from './native.js';

export type SocketPathErrorCode = 'not_a_socket' | 'socket_in_use' | 'socket_unprobeable';

/** Why a socket path cannot be listened on; `code` says which, the message what to do. */
export class SocketPathError extends Error {
  override name = 'SocketPathError';
  constructor(
    readonly code: SocketPathErrorCode,
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Remove `path` if it is a socket nobody listens on. `who` names the kind of server in messages
 * ("another vhost-user server"). Returns true when a stale socket was removed. Throws
 * SocketPathError when the path is not a socket, is in use, or cannot be probed.
 */
export function removeStaleSocket(path: string, who = 'another server'): boolean {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return false;
  }
  if (!st.isSocket()) {
    throw new SocketPathError('not_a_socket', path, `${path} exists and is not a socket; remove it or choose another path`);
  }
  let fd: number;
  try {
    fd = native.connectUnix(path);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ECONNREFUSED') {
      unlinkSync(path);
      return true;
    }
    if (code === 'EAGAIN') {
      throw new SocketPathError('socket_in_use', path, `${who} is listening on ${path} (its backlog is full); stop it or choose another path`);
    }
    throw new SocketPathError('socket_unprobeable', path, `cannot tell whether ${path} is in use (connect: ${code ?? String(e)}); it was left in place: remove it by hand if it is stale, or choose another path`);
  }
  safeClose(fd);
  throw new SocketPathError('socket_in_use', path, `${who} is already listening on ${path}; stop it or choose another path`);
}
