/**
 * netns.ts — the private network of the NIC series: a network namespace the bench creates
 * (`vmpi-bench-<pid>`) and, in it, either one tap for QEMU's NIC with the host side of a /30 on it
 * and a permanent neighbour entry for the guest's address (no ARP during a flood; Fig. 4a, host →
 * VM), or a Linux bridge joining two taps, one per guest (Fig. 4b, VM → VM). Addresses live only
 * inside the namespace and the guests; no traffic reaches any other interface. Removed by
 * `remove()`, by the bench's exit/signal handlers, and (for namespaces of bench processes that
 * died) at the next start.
 */
import { spawnSync } from 'node:child_process';

export const HOST_ADDR = '10.199.0.1';
export const GUEST_ADDR = '10.199.0.2';
export const PREFIX = 30;
export const GUEST_MAC = '52:54:00:f4:a0:02';
/** The second guest's address and MAC on the bridge (Fig. 4b); the first uses GUEST_ADDR/MAC. */
export const GUEST2_ADDR = '10.199.0.3';
export const GUEST2_MAC = '52:54:00:f4:a0:03';
export const BRIDGE_PREFIX = 24;
const PREFIX_NAME = 'vmpi-bench-';

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
  /** The host-tap network's tap, or the bridge's first tap. */
  readonly tap = `vbt${process.pid}a`.slice(0, 15);
  /** The bridge's second tap. */
  readonly tap2 = `vbt${process.pid}b`.slice(0, 15);
  private readonly bridge = `vbb${process.pid}`.slice(0, 15);
  private created = false;

  private addNs(): void {
    ip(['netns', 'add', this.ns]);
    this.created = true;
    ip(['-n', this.ns, 'link', 'set', 'lo', 'up']);
  }

  /** One tap, the host at HOST_ADDR on it, the guest at GUEST_ADDR (Fig. 4a). */
  create(): void {
    this.addNs();
    ip(['-n', this.ns, 'tuntap', 'add', 'dev', this.tap, 'mode', 'tap']);
    ip(['-n', this.ns, 'addr', 'add', `${HOST_ADDR}/${PREFIX}`, 'dev', this.tap]);
    ip(['-n', this.ns, 'link', 'set', this.tap, 'up']);
    ip(['-n', this.ns, 'neigh', 'replace', GUEST_ADDR, 'lladdr', GUEST_MAC, 'dev', this.tap, 'nud', 'permanent']);
  }

  /** A bridge joining `tap` and `tap2`, no host address on it (Fig. 4b: guests talk to each other). */
  createBridge(): void {
    this.addNs();
    ip(['-n', this.ns, 'link', 'add', this.bridge, 'type', 'bridge']);
    for (const t of [this.tap, this.tap2]) {
      ip(['-n', this.ns, 'tuntap', 'add', 'dev', t, 'mode', 'tap']);
      ip(['-n', this.ns, 'link', 'set', t, 'master', this.bridge]);
      ip(['-n', this.ns, 'link', 'set', t, 'up']);
    }
    ip(['-n', this.ns, 'link', 'set', this.bridge, 'up']);
  }

  /** Synchronous (usable from exit handlers); QEMU must be gone first for the tap to go. */
  remove(): void {
    if (!this.created) return;
    for (const l of [this.tap, this.tap2, this.bridge]) ip(['-n', this.ns, 'link', 'del', l], false);
    ip(['netns', 'del', this.ns], false);
    this.created = false;
  }

  /** The MAC address of `tap` (for the guest's permanent neighbour entry of HOST_ADDR). */
  tapMac(): string {
    const m = /link\/ether ([0-9a-f:]{17})/.exec(ip(['-n', this.ns, 'link', 'show', this.tap]));
    if (!m) throw new Error(`no MAC address on ${this.tap} in ${this.ns}`);
    return m[1]!;
  }

  /** argv prefix that runs a command inside the namespace. */
  exec(cmd: string[]): string[] {
    return ['ip', 'netns', 'exec', this.ns, ...cmd];
  }
}
