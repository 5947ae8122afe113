/**
 * netns.ts — network namespaces for tests of the shim DIF over Ethernet: unique names per run,
 * a veth pair (both ends in one namespace, or one end in each), `ip` run synchronously with a
 * bound, and removal in teardown. Frames only ever travel inside these namespaces.
 */
import { spawnSync } from 'node:child_process';
import type { Test } from 'tap';

let seq = 0;
/** A name unique to this process and call ("<prefix><pid>x<n>", short: interface names are at most 15 bytes). */
export function uniqueName(prefix: string): string {
  return `${prefix}${process.pid % 100000}x${seq++}`;
}

/** Run `ip ARGS…`; throws with its stderr when it fails. */
export function ip(...args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
  return r.stdout;
}

/** Whether this process may create network namespaces (root, `ip` present). */
export function canNetns(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const r = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (r.status !== 0) return 'needs iproute2 (`ip`)';
  return false;
}

/** A new namespace, removed in `t`'s teardown (with whatever is in it). */
export function netns(t: Test, prefix = 'vmpit'): string {
  const ns = uniqueName(prefix);
  ip('netns', 'add', ns);
  t.teardown(() => {
    try {
      ip('netns', 'del', ns);
    } catch {
      // already gone
    }
  });
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  return ns;
}

/** A veth pair `a` in namespace `nsA`, `b` in `nsB` (may be the same), both up, with `mtu` when given. */
export function veth(nsA: string, a: string, nsB: string, b: string, mtu?: number): void {
  ip('link', 'add', a, 'netns', nsA, ...(mtu ? ['mtu', String(mtu)] : []), 'type', 'veth', 'peer', 'name', b, 'netns', nsB, ...(mtu ? ['mtu', String(mtu)] : []));
  ip('-n', nsA, 'link', 'set', a, 'up');
  ip('-n', nsB, 'link', 'set', b, 'up');
  waitCarrier(nsA, a);
  waitCarrier(nsB, b);
}

/**
 * Wait (at most `ms`) until `dev` in `ns` has its carrier: a veth's comes up only after both ends
 * are up, and the kernel's link watch may report it up to a second later. Without this, a serve
 * started at once can find its shim-eth interface "down (no carrier)" (seen in CI: a flow
 * allocation refused with port_down).
 */
export function waitCarrier(ns: string, dev: string, ms = 10_000): void {
  const end = Date.now() + ms;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const r = spawnSync('ip', ['-n', ns, '-o', 'link', 'show', 'dev', dev], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0 && /[<,]LOWER_UP[,>]/.test(r.stdout)) return;
    if (Date.now() > end) throw new Error(`${dev} in ${ns} has no carrier after ${ms} ms: ${r.stdout.trim() || r.stderr.trim()}`);
    Atomics.wait(nap, 0, 0, 20);
  }
}
