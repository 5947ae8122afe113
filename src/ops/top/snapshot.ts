/**
 * top/snapshot.ts — what `vmpi top` shows, computed from samples (exposition.ts): one Snapshot per
 * scrape of `vmpi serve`'s metrics (devices, DIFs, server facts), and the rates between two
 * snapshots.
 *
 * Owns: the mapping from metric names to the view's fields (only existing metric names are read:
 * vmpi_device_*, vmpi_vhost_user_connections, vmpi_dif_*, vmpi_restarts_total,
 * process_start_time_seconds, vmpi_build_info), and rate arithmetic: a counter's rate is its delta
 * over the monotonic time between the two scrapes. A counter that went down (the server restarted
 * without its state, or the device was removed and added again) is a reset: shown as such, never
 * as a negative rate. A counter missing from either scrape has no rate.
 *
 * Device directions are the host's: rx = from the guest (the host receives), tx = to the guest.
 */
import type { Sample } from './exposition.js';

export interface DeviceSnap {
  id: string;
  /** Socket path of the device (vmpi_device_info), or 'inherited-fd'. */
  socket?: string;
  /** 1 while the guest driver has both queues running. */
  up?: boolean;
  /** vhost-user front-ends (QEMU) connected now. */
  connections?: number;
  rxSdus?: number;
  rxBytes?: number;
  txSdus?: number;
  txBytes?: number;
  /** Sum of vmpi_device_drops_total over every reason. */
  drops?: number;
  rxQueueFull?: number;
  backlogSdus?: number;
  backlogMaxSdus?: number;
}

export interface DifSnap {
  dif: string;
  type?: string;
  name?: string;
  flowsActive?: number;
  txSdus?: number;
  txBytes?: number;
  rxSdus?: number;
  rxBytes?: number;
  drops?: number;
}

export interface Snapshot {
  /** Monotonic clock (ms) when the scrape answered. */
  atMs: number;
  devices: DeviceSnap[];
  difs: DifSnap[];
  /** process_start_time_seconds of the serving process (Unix seconds). */
  startTime?: number;
  restarts?: number;
  version?: string;
}

const num = (v: number): number | undefined => (Number.isFinite(v) ? v : undefined);
const add = (a: number | undefined, b: number): number => (a ?? 0) + b;

/** Build a snapshot from one scrape's samples, taken at monotonic time `atMs`. */
export function snapshotFrom(samples: readonly Sample[], atMs: number): Snapshot {
  const devices = new Map<string, DeviceSnap>();
  const difs = new Map<string, DifSnap>();
  const dev = (id: string): DeviceSnap => {
    let d = devices.get(id);
    if (!d) devices.set(id, (d = { id }));
    return d;
  };
  const dif = (name: string): DifSnap => {
    let d = difs.get(name);
    if (!d) difs.set(name, (d = { dif: name }));
    return d;
  };
  const snap: Snapshot = { atMs, devices: [], difs: [] };
  for (const s of samples) {
    const v = num(s.value);
    if (v === undefined) continue;
    const l = s.labels;
    const id = l.vmpi_id;
    if (id !== undefined && s.name.startsWith('vmpi_')) {
      const d = dev(id);
      switch (s.name) {
        case 'vmpi_device_info':
          d.socket = l.socket;
          break;
        case 'vmpi_device_up':
          d.up = v === 1;
          break;
        case 'vmpi_vhost_user_connections':
          d.connections = v;
          break;
        case 'vmpi_device_sdus_total':
          if (l.direction === 'from_guest') d.rxSdus = v;
          else if (l.direction === 'to_guest') d.txSdus = v;
          break;
        case 'vmpi_device_bytes_total':
          if (l.direction === 'from_guest') d.rxBytes = v;
          else if (l.direction === 'to_guest') d.txBytes = v;
          break;
        case 'vmpi_device_drops_total':
          d.drops = add(d.drops, v);
          break;
        case 'vmpi_device_rx_queue_full_total':
          d.rxQueueFull = v;
          break;
        case 'vmpi_device_backlog_sdus':
          d.backlogSdus = v;
          break;
        case 'vmpi_device_backlog_max_sdus':
          d.backlogMaxSdus = v;
          break;
        default:
          break;
      }
      continue;
    }
    const difName = l.dif;
    if (difName !== undefined && s.name.startsWith('vmpi_dif_')) {
      const d = dif(difName);
      switch (s.name) {
        case 'vmpi_dif_ipcp_info':
          d.type = l.type;
          d.name = l.name;
          break;
        case 'vmpi_dif_flows_active':
          d.flowsActive = v;
          break;
        case 'vmpi_dif_sdus_total':
          if (l.direction === 'tx') d.txSdus = v;
          else if (l.direction === 'rx') d.rxSdus = v;
          break;
        case 'vmpi_dif_bytes_total':
          if (l.direction === 'tx') d.txBytes = v;
          else if (l.direction === 'rx') d.rxBytes = v;
          break;
        case 'vmpi_dif_drops_total':
          d.drops = add(d.drops, v);
          break;
        default:
          break;
      }
      continue;
    }
    if (s.name === 'process_start_time_seconds') snap.startTime = v;
    else if (s.name === 'vmpi_restarts_total') snap.restarts = v;
    else if (s.name === 'vmpi_build_info') snap.version = l.version;
  }
  snap.devices = [...devices.values()].sort((a, b) => Number(a.id) - Number(b.id) || a.id.localeCompare(b.id));
  snap.difs = [...difs.values()].sort((a, b) => a.dif.localeCompare(b.dif));
  return snap;
}

/** A counter's rate between two scrapes. */
export type Rate = { kind: 'rate'; perSec: number } | { kind: 'reset' } | { kind: 'none' };

export const NO_RATE: Rate = { kind: 'none' };

/** (cur - prev) / elapsed; a reset when the counter went down; none when either is missing. */
export function counterRate(prev: number | undefined, cur: number | undefined, elapsedS: number): Rate {
  if (prev === undefined || cur === undefined || !(elapsedS > 0)) return NO_RATE;
  if (cur < prev) return { kind: 'reset' };
  return { kind: 'rate', perSec: (cur - prev) / elapsedS };
}

export interface DeviceRates {
  rxSdus: Rate;
  rxBytes: Rate;
  txSdus: Rate;
  txBytes: Rate;
  drops: Rate;
  rxQueueFull: Rate;
}

export interface DifRates {
  rxSdus: Rate;
  rxBytes: Rate;
  txSdus: Rate;
  txBytes: Rate;
  drops: Rate;
}

export interface DeviceRow {
  cur: DeviceSnap;
  rates: DeviceRates;
}

export interface DifRow {
  cur: DifSnap;
  rates: DifRates;
}

export interface Rates {
  /** Seconds between the two scrapes (0 on the first). */
  elapsedS: number;
  devices: DeviceRow[];
  difs: DifRow[];
  /** The server's process started again between the scrapes (process_start_time_seconds moved). */
  serverRestarted: boolean;
}

/** Rates of `cur` against `prev` (none for everything when there is no `prev`). */
export function ratesBetween(prev: Snapshot | undefined, cur: Snapshot): Rates {
  const elapsedS = prev ? (cur.atMs - prev.atMs) / 1000 : 0;
  const prevDev = new Map(prev?.devices.map((d) => [d.id, d]));
  const prevDif = new Map(prev?.difs.map((d) => [d.dif, d]));
  const r = (p: number | undefined, c: number | undefined): Rate => counterRate(p, c, elapsedS);
  return {
    elapsedS,
    serverRestarted: prev?.startTime !== undefined && cur.startTime !== undefined && prev.startTime !== cur.startTime,
    devices: cur.devices.map((d) => {
      const p = prevDev.get(d.id);
      return {
        cur: d,
        rates: {
          rxSdus: r(p?.rxSdus, d.rxSdus),
          rxBytes: r(p?.rxBytes, d.rxBytes),
          txSdus: r(p?.txSdus, d.txSdus),
          txBytes: r(p?.txBytes, d.txBytes),
          drops: r(p?.drops, d.drops),
          rxQueueFull: r(p?.rxQueueFull, d.rxQueueFull),
        },
      };
    }),
    difs: cur.difs.map((d) => {
      const p = prevDif.get(d.dif);
      return {
        cur: d,
        rates: { rxSdus: r(p?.rxSdus, d.rxSdus), rxBytes: r(p?.rxBytes, d.rxBytes), txSdus: r(p?.txSdus, d.txSdus), txBytes: r(p?.txBytes, d.txBytes), drops: r(p?.drops, d.drops) },
      };
    }),
  };
}
