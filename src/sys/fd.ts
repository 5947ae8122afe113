/**
 * fd.ts — small helpers for raw file descriptors and the errors system calls throw.
 *
 * Owns: closing an fd whose owner is done with it (`safeClose`: an already-closed fd is not an
 * error) and reading an errno out of a thrown value (`errnoCode` for the name Node and the addon
 * put in `code`, `errnoName` for a bare number). One copy, used by every layer above.
 */
import { getSystemErrorName } from 'node:util';
import { native } from './native.js';

/** Close `fd`, ignoring EBADF and the like: used where the fd is ours and nothing else can be done. */
export function safeClose(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // already closed: nothing to release
  }
}

/** The errno name ("EAGAIN", "ECONNREFUSED" …) of a thrown system error, if it has one. */
export function errnoCode(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The errno name of a positive or negative errno number ("errno 1234" when the system has none). */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(errno > 0 ? -errno : errno);
  } catch {
    return `errno ${errno}`;
  }
}

/** The message of a thrown value, whatever was thrown. */
export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
