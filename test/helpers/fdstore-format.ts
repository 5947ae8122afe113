/**
 * fdstore-format.ts — what test/helpers/fdstore-child.ts reports per start (one JSON line each)
 * and the memfd bytes it stores, shared with systemd-fdstore.test.ts (importing the child itself
 * would run it).
 */
export const MEMFD_TEXT = 'vmpi fd store: the bytes survive a SIGKILL\n';

export interface FdReport {
  name: string;
  fd: number;
  /** readlink of /proc/self/fd/N: anon_inode:[eventfd], /memfd:... (deleted) */
  kind: string;
  /** eventfd counter as read (then written back + 1). */
  counter?: number;
  /** The memfd's first MEMFD_TEXT.length bytes. */
  text?: string;
}

export interface StartReport {
  pid: number;
  listenPid: string | null;
  listenFds: string | null;
  listenFdNames: string | null;
  fds: FdReport[];
  removed: string[];
  /** What our sdNotify said to FDNAME "bad:name" (only on the first start). */
  refused?: { name: string; code: string; message: string };
  error?: string;
}

