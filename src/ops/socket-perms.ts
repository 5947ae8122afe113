/**
 * socket-perms.ts — owner, group and mode of a device's vhost-user socket file.
 *
 * Owns: resolving user and group names to numeric ids (numbers are used as they are; names go
 * through `getent passwd NAME` / `getent group NAME`, so NSS sources such as LDAP work too), and
 * applying them to a socket right after it is created (chown, then chmod).
 *
 * QEMU must be able to connect: connect(2) on a Unix socket needs write permission on the socket
 * file, so a QEMU running as another user (libvirt's `libvirt-qemu`, group `kvm`) needs e.g.
 * `group: kvm, mode: "0660"`. Changing the owner to another user needs root (CAP_CHOWN).
 *
 * No window: a new socket gets them under its temporary name, before its file appears at the
 * configured path (native.listenUnix's `prepare`, through VhostUserServer's prepareSocket), so
 * QEMU, or a script waiting for the file, never finds it with the umask's permissions. A socket
 * kept across a restart gets them again in place (the config may have changed). Only where the
 * socket must be bound at its path directly (no room for the temporary name in sun_path, a file
 * system that cannot link) is the file there a moment before them, with the umask's (022: 0755,
 * which only the owner can connect to).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync } from 'node:fs';

export interface SocketPermissions {
  owner?: string | number;
  group?: string | number;
  mode?: number;
}

export class PermissionConfigError extends Error {
  override name = 'PermissionConfigError';
}

/** Numeric uid for a user name or id. Throws PermissionConfigError for an unknown name. */
export function resolveUser(user: string | number): number {
  return resolveId('passwd', 'user', user);
}

/** Numeric gid for a group name or id. Throws PermissionConfigError for an unknown name. */
export function resolveGroup(group: string | number): number {
  return resolveId('group', 'group', group);
}

function resolveId(db: 'passwd' | 'group', what: string, v: string | number): number {
  if (typeof v === 'number') return v;
  if (/^[0-9]+$/.test(v)) return Number(v);
  let out: string;
  try {
    out = execFileSync('getent', [db, v], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch (e) {
    const status = (e as { status?: number | null }).status;
    if (status === 2) throw new PermissionConfigError(`${what} ${JSON.stringify(v)} does not exist on this host`);
    throw new PermissionConfigError(`cannot look up ${what} ${JSON.stringify(v)} with getent: ${(e as Error).message}`);
  }
  // passwd: name:x:uid:gid:…   group: name:x:gid:members
  const id = Number(out.split('\n')[0]!.split(':')[2]);
  if (!Number.isInteger(id)) throw new PermissionConfigError(`getent ${db} ${v} gave an unreadable line`);
  return id;
}

/** Problems resolving the owners and groups of these devices (for `vmpi check-config`). */
export function permissionProblems(devices: (SocketPermissions & { where: string })[]): string[] {
  const problems: string[] = [];
  for (const d of devices) {
    for (const [field, v, fn] of [
      ['owner', d.owner, resolveUser],
      ['group', d.group, resolveGroup],
    ] as const) {
      if (v === undefined) continue;
      try {
        fn(v);
      } catch (e) {
        problems.push(`${d.where}.${field}: ${(e as Error).message}`);
      }
    }
  }
  return problems;
}

/** chown (when owner or group is set) then chmod (when mode is set) the socket file at `path`. */
export function applySocketPermissions(path: string, p: SocketPermissions): void {
  if (p.owner !== undefined || p.group !== undefined) {
    const uid = p.owner === undefined ? -1 : resolveUser(p.owner);
    const gid = p.group === undefined ? -1 : resolveGroup(p.group);
    try {
      chownSync(path, uid, gid);
    } catch (e) {
      throw new PermissionConfigError(`cannot chown ${path} to ${uid}:${gid}: ${(e as Error).message}${process.getuid?.() !== 0 ? ' (changing the owner needs root)' : ''}`);
    }
  }
  if (p.mode !== undefined) {
    try {
      chmodSync(path, p.mode);
    } catch (e) {
      throw new PermissionConfigError(`cannot chmod ${path} to ${p.mode.toString(8).padStart(4, '0')}: ${(e as Error).message}`);
    }
  }
}
