/**
 * host-cpu.ts — the host side of a run's CPU (FIG4B_CPU=1 / FIG4B_PROFILE=1): user+system time per
 * SDU of named host process trees (the bench's `vmpi serve`, each guest's QEMU) and the host's
 * idle time, from /proc, with nothing running in the processes themselves. It answers "which
 * process is saturated" without a profiler slowing anything: on a 2-core host two TCG vCPUs and the
 * relay share the cores, so every µs the relay spends per SDU is taken from a guest.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** clock ticks per second of /proc's utime/stime (USER_HZ: 100 on Linux). */
const HZ = 100;

export type HostCpuSnap = { total: number[]; trees: Map<string, number> };

function readStat(pid: number): { ppid: number; ticks: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses: fields start after the last ')'.
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/** utime+stime (+ waited-for children) of `root` and all its descendants, in ticks. */
function treeTicks(root: number, all: Map<number, { ppid: number; ticks: number }>): number {
  let sum = 0;
  const todo = [root];
  while (todo.length) {
    const p = todo.pop()!;
    const st = all.get(p);
    if (!st) continue;
    sum += st.ticks;
    for (const [pid, s] of all) if (s.ppid === p) todo.push(pid);
  }
  return sum;
}

/** CPU of the host and of each named process tree now. */
export function hostCpuSnapshot(roots: ReadonlyMap<string, number | undefined>): HostCpuSnap {
  const all = new Map<number, { ppid: number; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = readStat(Number(d));
    if (st) all.set(Number(d), st);
  }
  const trees = new Map<string, number>();
  for (const [name, pid] of roots) if (pid !== undefined) trees.set(name, treeTicks(pid, all));
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  return { total: line.trim().split(/\s+/).slice(1).map(Number), trees };
}

/** One line: µs of host CPU per SDU, for each tree and the host's user/sys/idle (all cores). */
export function hostCpuReport(before: HostCpuSnap, after: HostCpuSnap, sdus: number, size: number): string {
  const us = (ticks: number) => ((ticks * (1e6 / HZ)) / sdus).toFixed(1);
  const d = after.total.map((v, k) => v - (before.total[k] ?? 0));
  const cells = [`user ${us(d[0]! + d[1]!)}`, `sys ${us(d[2]!)}`, `irq+softirq ${us(d[5]! + d[6]!)}`, `idle ${us(d[3]! + d[4]!)}`];
  for (const [name, t] of after.trees) cells.push(`${name} ${us(t - (before.trees.get(name) ?? 0))}`);
  return `cpu host ${size} B, ${sdus} SDUs: µs/SDU (both cores) ${cells.join(', ')}`;
}
