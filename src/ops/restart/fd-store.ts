/**
 * fd-store.ts — where the fds that must outlive this process are kept: systemd's file descriptor
 * store, or the keeper (keeper.ts), through one protocol.
 *
 * Owns: giving fds to the holder (sd_notify `FDSTORE=1` + `FDNAME=`, SCM_RIGHTS, to
 * $NOTIFY_SOCKET; `FDSTOREREMOVE=1` to drop a name), taking them back at start
 * ($LISTEN_FDS / $LISTEN_FDNAMES, valid only when $LISTEN_PID is this process), and the rules
 * for names. systemd and the keeper speak the same datagrams, so the worker does not know which
 * one holds its fds. Names this code gives start with "vmpi-": an inherited fd with another name
 * is a socket-activation fd (a .socket unit's), left to src/ops/activation.ts.
 *
 * What systemd does that shapes this (../RESTART.md): one copy of an open file is kept (a
 * duplicate under a second name is dropped silently, fd-registry.ts avoids that), pollable fds
 * leave the store on POLLHUP (a socket QEMU closed), and `sd_notify` reports success even when
 * the store is off (FileDescriptorStoreMax=0): a worker then simply finds nothing at start.
 */
import { checkFdName, sdNotify } from '../notify.js';
import { RESTART_FD_PREFIX, listenFdsWithNames } from '../activation.js';

/** Prefix of every name this code stores. */
export const NAME_PREFIX = RESTART_FD_PREFIX;
/** The state document's memfd (state-file.ts). */
export const STATE_NAME = 'vmpi-state';

export class FdStoreError extends Error {
  override name = 'FdStoreError';
  constructor(
    message: string,
    readonly code: 'store_failed',
  ) {
    super(message);
  }
}

/** The holder of this process's fds. */
export interface FdHolder {
  /** Keep `fds` under `name` (the holder gets copies; ours stay open). Throws FdStoreError, or NotifyError for a name systemd would refuse. */
  put(name: string, fds: readonly number[]): void;
  /** Close and forget every fd kept under `name`. */
  remove(name: string): void;
  /** Who holds them, for logs: "systemd", "keeper" or "none". */
  readonly kind: string;
}

/** The fd store reached over $NOTIFY_SOCKET (systemd or the keeper). */
export class NotifyFdHolder implements FdHolder {
  constructor(
    readonly kind: 'systemd' | 'keeper',
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  put(name: string, fds: readonly number[]): void {
    checkFdName(name);
    if (fds.length === 0) return;
    try {
      // FDPOLL=0 is not sent: a socket whose peer closed should leave the store by itself.
      sdNotify({ FDSTORE: '1', FDNAME: name }, { env: this.env, fds: [...fds] });
    } catch (e) {
      throw new FdStoreError(`cannot give fd${fds.length === 1 ? '' : 's'} "${name}" to the ${this.kind} fd store: ${(e as Error).message}`, 'store_failed');
    }
  }

  remove(name: string): void {
    checkFdName(name);
    try {
      sdNotify({ FDSTOREREMOVE: '1', FDNAME: name }, { env: this.env });
    } catch (e) {
      throw new FdStoreError(`cannot remove "${name}" from the ${this.kind} fd store: ${(e as Error).message}`, 'store_failed');
    }
  }
}

/** No holder (--restart off): nothing survives the process. */
export const NO_HOLDER: FdHolder = { kind: 'none', put() {}, remove() {} };

/**
 * The fds this process inherited by name (sd_listen_fds_with_names): name → fds in order.
 * Empty when $LISTEN_PID is not this process. Unnamed fds are "unknown" (systemd's default).
 */
export function inheritedFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const { fd, name } of listenFdsWithNames(env, pid)) {
    const list = out.get(name) ?? [];
    list.push(fd);
    out.set(name, list);
  }
  return out;
}
