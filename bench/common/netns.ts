/**
 * netns.ts — the private network of the NIC series: a network namespace the bench creates
 * (`vmpi-bench-<pid>`) and, in it, either one tap for QEMU's NIC with the host side of a /30 on it
 * and a permanent neighbour entry for the guest's address (no ARP during a flood; Fig. 4a, host →
 * VM), or a Linux bridge joining two taps, one per guest (Fig. 4b, VM → VM); and for Fig. 4c
 * (VM → VM across hosts) two such namespaces `vmpi-bench-<pid>-a` and `-b` ("hosts", TwoHostNet),
 * each a bridge with one tap, joined by a veth pair whose ends sit in the two bridges, every link
 * at the same MTU (jumbo frames). Addresses live only inside the namespaces and the guests; no
 * traffic reaches any other interface. Removed by
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

/** Delete vmpi-bench-<pid>[-<host>] namespaces whose bench process is gone. Returns their names. */
export function removeStale(): string[] {
  const removed: string[] = [];
  for (const line of ip(['netns', 'list'], false).split('\n')) {
    const m = new RegExp(`^(${PREFIX_NAME}(\\d+)(?:-[a-z0-9]+)?)(?:\\s|$)`).exec(line.trim());
    if (!m || alive(Number(m[2]))) continue;
    const name = m[1]!;
    ip(['netns', 'del', name], false);
    removed.push(name);
  }
  return removed;
}

export class PrivateNet {
  readonly ns: string;
  /** The host-tap network's tap, or the bridge's first tap. */
  readonly tap = `vbt${process.pid}a`.slice(0, 15);
  /** The bridge's second tap. */
  readonly tap2 = `vbt${process.pid}b`.slice(0, 15);
  private readonly bridge = `vbb${process.pid}`.slice(0, 15);
  /** This namespace's end of a veth pair to another PrivateNet's bridge (joinBridge). */
  private readonly veth = `vbv${process.pid}`.slice(0, 15);
  private created = false;

  /** `host` (a–z, 0–9) names one of several namespaces of this process: vmpi-bench-<pid>-<host>. */
  constructor(host?: string) {
    this.ns = `${PREFIX_NAME}${process.pid}${host ? `-${host}` : ''}`;
  }

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

  /**
   * A bridge joining `tap` and `tap2` (`taps: 1`: `tap` only), no host address on it (Fig. 4b:
   * guests talk to each other), the bridge and its taps at `mtu` when given.
   */
  createBridge(o: { taps?: 1 | 2; mtu?: number } = {}): void {
    this.addNs();
    const mtu = o.mtu === undefined ? [] : ['mtu', String(o.mtu)];
    ip(['-n', this.ns, 'link', 'add', this.bridge, ...mtu, 'type', 'bridge']);
    for (const t of o.taps === 1 ? [this.tap] : [this.tap, this.tap2]) {
      ip(['-n', this.ns, 'tuntap', 'add', 'dev', t, 'mode', 'tap']);
      if (mtu.length) ip(['-n', this.ns, 'link', 'set', t, ...mtu]);
      ip(['-n', this.ns, 'link', 'set', t, 'master', this.bridge]);
      ip(['-n', this.ns, 'link', 'set', t, 'up']);
    }
    ip(['-n', this.ns, 'link', 'set', this.bridge, 'up']);
  }

  /**
   * A veth pair at `mtu` from this bridge to `peer`'s (both made by createBridge): one end in
   * each namespace, each a port of its bridge, so the two bridges are one Ethernet segment.
   */
  joinBridge(peer: PrivateNet, mtu: number): void {
    const m = ['mtu', String(mtu)];
    ip(['-n', this.ns, 'link', 'add', this.veth, ...m, 'type', 'veth', 'peer', 'name', peer.veth, 'netns', peer.ns, ...m]);
    for (const [n, end] of [[this, this.veth], [peer, peer.veth]] as const) {
      ip(['-n', n.ns, 'link', 'set', end, 'master', n.bridge]);
      ip(['-n', n.ns, 'link', 'set', end, 'up']);
    }
  }

  /** Synchronous (usable from exit handlers); QEMU must be gone first for the tap to go. */
  remove(): void {
    if (!this.created) return;
    for (const l of [this.tap, this.tap2, this.veth, this.bridge]) ip(['-n', this.ns, 'link', 'del', l], false);
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

/**
 * Fig. 4c's two "hosts": namespaces vmpi-bench-<pid>-a and -b, each a bridge with one tap (`tap`
 * of each; VM-A's and VM-B's NICs) at `mtu`, the bridges joined by a veth pair at `mtu`.
 */
export class TwoHostNet {
  readonly hosts: readonly [PrivateNet, PrivateNet] = [new PrivateNet('a'), new PrivateNet('b')];

  get ns(): string {
    return this.hosts.map((h) => h.ns).join(' and ');
  }

  create(mtu: number): void {
    for (const h of this.hosts) h.createBridge({ taps: 1, mtu });
    this.hosts[0].joinBridge(this.hosts[1], mtu);
  }

  remove(): void {
    for (const h of this.hosts) h.remove();
  }
}
