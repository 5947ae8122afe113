/**
 * guest-prof.ts — FIG4B_PROFILE=1: where the time goes in the normal-dif series' guests, with the
 * profiler shared with Fig. 4c (../common/guest-prof.ts; what it measures is said there).
 */
import type { Guest } from '../../test/helpers/guest.js';
import { GuestProfiler, type CpuSnap } from '../common/guest-prof.js';

export type { CpuSnap };
export const PROFILE = process.env.FIG4B_PROFILE === '1';
const profiler = new GuestProfiler(PROFILE);

export const nodeCmd = (): string => profiler.nodeCmd();
export const installProfiler = (g: Guest): Promise<void> => profiler.install(g);
export const collectProfiles = (g: Guest, label: string, say: (s: string) => void): Promise<void> => profiler.collect(g, label, say);
export const cpuSnapshot = (guests: Guest[]): Promise<CpuSnap> => profiler.snapshot(guests);
export const reportCpu = (guests: Guest[], before: CpuSnap, sdus: number, size: number, say: (s: string) => void): Promise<void> => profiler.report(guests, before, sdus, size, say);
