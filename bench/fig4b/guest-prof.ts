/**
 * guest-prof.ts — FIG4B_PROFILE=1: where the time goes in the normal-dif series' guests, with the
 * profiler shared with Fig. 4c (../common/guest-prof.ts; what it measures is said there).
 */
import type { Guest } from '../../test/helpers/guest.js';
import { GuestProfiler, type CpuSnap } from '../common/guest-prof.js';

export type { CpuSnap };
export const PROFILE = process.env.FIG4B_PROFILE === '1';
/** FIG4B_CPU=1: each run's CPU per SDU in the guests and on the host, without the profiler. */
export const CPU = PROFILE || process.env.FIG4B_CPU === '1';
/** FIG4B_PROFILE_US: the profiler's sampling interval (default 1000 µs; 10000 disturbs the guests far less). */
const profiler = new GuestProfiler(PROFILE, CPU, Number(process.env.FIG4B_PROFILE_US ?? 1000) || 1000);

export const nodeCmd = (): string => profiler.nodeCmd();
export const installProfiler = (g: Guest): Promise<void> => profiler.install(g);
export const collectProfiles = (g: Guest, label: string, say: (s: string) => void): Promise<void> => profiler.collect(g, label, say);
export const cpuSnapshot = (guests: Guest[]): Promise<CpuSnap> => profiler.snapshot(guests);
export const reportCpu = (guests: Guest[], before: CpuSnap, sdus: number, size: number, say: (s: string) => void): Promise<void> => profiler.report(guests, before, sdus, size, say);
