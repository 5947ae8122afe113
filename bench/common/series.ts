/**
 * series.ts — what a figure bench measures, behind one interface, and the parts its systems share.
 *
 * A Series boots its guests once (`start`), then measures goodput for one SDU/payload size at a
 * time (`measure`), always at the receiver, and powers the guests off (`stop`). The sweep
 * (figure.ts) knows nothing else about it. Also here: the guest settings every series uses, the
 * host-side sender processes still running (for the benches' signal handlers) and the parsing of
 * the receivers' `RESULT k=v …` lines.
 */
import type { ChildProcess } from 'node:child_process';
import { parseResults } from '../../test/helpers/pattern.js';

export interface Measurement {
  /** Goodput at the receiver, 10^6 bits of payload per second. */
  mbps: number;
  /** SDUs (datagrams) per second at the receiver. */
  pps: number;
  /** Measurement window length and what arrived in it. */
  seconds: number;
  sdus: number;
  bytes: number;
  /** What the sender managed to hand over per second (before any loss), when known. */
  sentPps?: number;
}

/**
 * Which way a host ↔ VM figure's SDUs flow (Fig. 4a): host → VM, or VM → host. Figures between
 * two VMs (Fig. 4b) have none; their series are measured with `direction` undefined.
 */
export type Direction = 'to-guest' | 'to-host';
export const DIRECTIONS: readonly Direction[] = ['to-guest', 'to-host'];

export interface Series {
  /** Short id: the CSV's system column. */
  readonly key: string;
  /** Legend label; says honestly what was measured. */
  readonly name: string;
  start(): Promise<void>;
  /** One measurement; `direction` is given only by figures that have directions. */
  measure(size: number, seconds: number, direction?: Direction): Promise<Measurement>;
  /** Idempotent; also safe after a failed start. */
  stop(): Promise<void>;
}

/** Host-side sender processes still running, for the bench's signal handler. */
export const liveSenders = new Set<ChildProcess>();

/**
 * Every measurement uses its own UDP port / VMPI channel (cycling through 1000), so that
 * datagrams or SDUs of the previous measurement still in flight (tap queue, NIC ring, the VMPI
 * ring or the host's backlog) are dropped by the receiver as unbound instead of being counted.
 */
export const UDP_PORT_BASE = 5001;
export const ROTATE = 1000;
/** Receiver wait for the first datagram / SDU, and its idle timeout, in the guest. */
export const WAIT_MS = 30_000;
export const IDLE_MS = 2_000;
/** Guest RAM of every series: the Node image unpacks ~150 MB into its initramfs. */
export const GUEST_MEM_MB = 768;
/**
 * Every series' guest: an agent guest (no script) with no run-time limit (it lives as long as its
 * series), in its own process group so that stopping it ends launch-guest.sh and QEMU together
 * (the bench's signal handler kills `liveGuests`); booted within BOOT_MS.
 */
export const GUEST = { timeoutMs: 0, processGroup: true, memMb: GUEST_MEM_MB } as const;
export const BOOT_MS = 120_000;
/** The vmpi CLI inside the Node guest image. */
export const VMPI_CLI = '/opt/vmpi/dist/src/cli.js';

/** The receiver's (or sender's) `RESULT mode=<mode> …` record in `out`; its ERROR record throws. */
export function record(out: string, mode: string): Record<string, string> {
  const recs = parseResults(out);
  const err = recs.find((r) => r.kind === 'ERROR');
  if (err) throw new Error(`guest ${mode}: ERROR ${JSON.stringify(err)}`);
  const r = recs.find((x) => x.kind === 'RESULT' && x.mode === mode);
  if (!r) throw new Error(`no RESULT mode=${mode} in:\n${out.slice(-2000)}`);
  return r;
}

/** A receiver's record as a Measurement, checking it saw SDUs of exactly `size` bytes. */
export function fromRecord(r: Record<string, string>, size: number): Measurement {
  if (r.status === 'nodata') throw new Error('the receiver got nothing');
  const n = Number(r.datagrams ?? r.sdus);
  if (r.size_min !== undefined && n > 0 && (Number(r.size_min) !== size || Number(r.size_max) !== size)) {
    throw new Error(`the receiver got sizes ${r.size_min}..${r.size_max}, not ${size}`);
  }
  return {
    mbps: Number(r.mbps),
    pps: Number(r.pps ?? r.sdus_per_s),
    seconds: Number(r.seconds),
    sdus: Number(r.datagrams ?? r.sdus),
    bytes: Number(r.bytes),
  };
}
