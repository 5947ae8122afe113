/**
 * netns.ts — the private network of the NIC series: a network namespace this bench creates
 * (`vmpi-fig4a-<pid>`), one tap device in it for QEMU's NIC, the host side of a /30 on that tap
 * and a permanent neighbour entry for the guest's address (no ARP during a flood). Addresses live
 * only inside the namespace; no traffic reaches any other interface. Removed by `remove()`, by
 * the bench's exit/signal handlers, and (for namespaces of bench processes that died) at the
 * next start.
 */
import { spawnSync } from 'node:child_process';

export const HOST_ADDR = '10.199.0.1';
export const GUEST_ADDR = '10.199.0.2';
export const PREFIX = 30;
export const GUEST_MAC = '52:54:00:f4:a0:02';
const PREFIX_NAME = 'vmpi-fig4a-';

function ip(args: string[], check = true): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (check && r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Delete vmpi-fig4a-<pid> namespaces whose bench process is gone. Returns their names. */
export function removeStale(): string[] {
  const removed: string[] = [];
  for (const line of ip(['netns', 'list'], false).split('\n')) {
    const m = new RegExp(`^${PREFIX_NAME}(\\d+)\\b`).exec(line.trim());
    if (!m || alive(Number(m[1]))) continue;
    const name = `${PREFIX_NAME}${m[1]}`;
    ip(['netns', 'del', name], false);
    removed.push(name);
  }
  return removed;
}

export class PrivateNet {
  readonly ns = `${PREFIX_NAME}${process.pid}`;
  readonly tap = `vf4a${process.pid}`.slice(0, 15);
  private created = false;

  create(): void {
    ip(['netns', 'add', this.ns]);
    this.created = true;
    ip(['-n', this.ns, 'link', 'set', 'lo', 'up']);
    ip(['-n', this.ns, 'tuntap', 'add', 'dev', this.tap, 'mode', 'tap']);
    ip(['-n', this.ns, 'addr', 'add', `${HOST_ADDR}/${PREFIX}`, 'dev', this.tap]);
    ip(['-n', this.ns, 'link', 'set', this.tap, 'up']);
    ip(['-n', this.ns, 'neigh', 'replace', GUEST_ADDR, 'lladdr', GUEST_MAC, 'dev', this.tap, 'nud', 'permanent']);
  }

  /** Synchronous (usable from exit handlers); QEMU must be gone first for the tap to go. */
  remove(): void {
    if (!this.created) return;
    ip(['-n', this.ns, 'link', 'del', this.tap], false);
    ip(['netns', 'del', this.ns], false);
    this.created = false;
  }

  /** argv prefix that runs a command inside the namespace. */
  exec(cmd: string[]): string[] {
    return ['ip', 'netns', 'exec', this.ns, ...cmd];
  }
}
