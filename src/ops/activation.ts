/**
 * activation.ts — systemd socket activation: listening sockets inherited from the service manager.
 *
 * Owns: reading LISTEN_PID / LISTEN_FDS (sd_listen_fds(3): fds 3 .. 3+LISTEN_FDS-1 are ours when
 * LISTEN_PID is this process), clearing those variables so child processes do not take the fds
 * for theirs, and checking that an inherited fd is a non-blocking socket.
 *
 * The vhost-user server accepts in a loop until accept(2) says EAGAIN, so an inherited listening
 * socket must be non-blocking: the .service unit needs `NonBlocking=yes` in [Service] (systemd sets O_NONBLOCK
 * on the fds it passes). A blocking fd is refused with that hint rather than hanging the process.
 */
import { fstatSync, readFileSync } from 'node:fs';

/** First fd systemd passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
const O_NONBLOCK = 0o4000;

/** Names of fds the restart code keeps in the fd store start with this (src/ops/restart/fd-store.ts). */
export const RESTART_FD_PREFIX = 'vmpi-';

/**
 * The fds passed to this process with their names (sd_listen_fds_with_names(3)), or [] when
 * LISTEN_PID is absent or names another process. An fd without a name is "unknown", as systemd's.
 */
export function listenFdsWithNames(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): { fd: number; name: string }[] {
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return [];
  if (!/^\d+$/.test(env.LISTEN_PID) || Number(env.LISTEN_PID) !== pid) return [];
  if (!/^\d+$/.test(env.LISTEN_FDS)) return [];
  const names = env.LISTEN_FDNAMES === undefined || env.LISTEN_FDNAMES === '' ? [] : env.LISTEN_FDNAMES.split(':');
  return Array.from({ length: Number(env.LISTEN_FDS) }, (_, i) => ({ fd: LISTEN_FDS_START + i, name: names[i] ?? 'unknown' }));
}

/**
 * The fds passed by socket activation, or [] when LISTEN_PID is absent or names another process.
 * Fds named "vmpi-…" in LISTEN_FDNAMES are not: they come back from the fd store after a restart
 * (src/ops/restart/fd-store.ts).
 */
export function listenFdsFromEnv(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): number[] {
  return listenFdsWithNames(env, pid)
    .filter((f) => !f.name.startsWith(RESTART_FD_PREFIX))
    .map((f) => f.fd);
}

/** Forget the activation variables (sd_listen_fds(1) does the same with unset_environment). */
export function clearListenEnv(env: NodeJS.ProcessEnv = process.env): void {
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
}

/** Why `fd` cannot serve as an inherited listening socket, or undefined when it can. */
export function inheritedFdProblem(fd: number): string | undefined {
  try {
    if (!fstatSync(fd).isSocket()) return `fd ${fd} is not a socket`;
  } catch (e) {
    return `fd ${fd} is not open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  let flags: number | undefined;
  try {
    const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (m) flags = parseInt(m[1]!, 8);
  } catch {
    // no /proc: cannot tell, assume the service manager did its job
  }
  if (flags !== undefined && (flags & O_NONBLOCK) === 0) {
    return `fd ${fd} is a blocking socket; pass it non-blocking (systemd: NonBlocking=yes in the [Service] section of the .service unit; a .socket unit ignores it)`;
  }
  return undefined;
}
