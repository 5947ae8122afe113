/**
 * guest-driver-stats.ts — the guest driver's counters as `vmpi guest` exports them: read from
 * sysfs (the virtio device of each /dev/vmpiN: `devname`, `vmpi_id`, the per-device counter
 * files and `channel_stats`, docs/DEVICE.md "sysfs") at scrape time, and the metric families
 * they become (vmpi_guest_device_*, vmpi_guest_channel_*).
 *
 * Owns: finding the sysfs directory of each device, parsing `channel_stats` (columns named by
 * its header line, so columns the driver appends later are ignored, and a missing column reads
 * as absent, not 0), and the mapping to metric names and labels. Nothing polls: the families'
 * collect() reads sysfs once per scrape. A file that cannot be read or parsed skips that
 * device's samples and counts a read error (vmpi_guest_sysfs_read_errors_total); it never fails
 * the scrape. Fast-path flows (the driver file, no shim IPC process on the data path) are
 * counted here, and only here.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import { findVirtioCarriers, VMPI_DRIVER_NAME } from '../vmpi/guest-sysfs.js';

/** One line of `channel_stats`: the bound channel and its counters by column name. */
export interface ChannelStats {
  channel: number;
  values: Record<string, number>;
}

export interface ChannelStatsTable {
  channels: ChannelStats[];
  /** Channels the driver left out (the page was full). */
  truncated: number;
}

export class DriverStatsError extends Error {
  override name = 'DriverStatsError';
  readonly code = 'malformed_sysfs';
}

/** Parse the text of `channel_stats`. Throws DriverStatsError on a malformed file. */
export function parseChannelStats(text: string): ChannelStatsTable {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const header = lines.shift()?.trim().split(/\s+/) ?? [];
  if (header[0] !== 'channel') throw new DriverStatsError(`channel_stats: the first line must name the columns starting with "channel", got ${JSON.stringify(header.join(' ').slice(0, 80))}`);
  const out: ChannelStatsTable = { channels: [], truncated: 0 };
  for (const line of lines) {
    const t = /^# truncated (\d+)$/.exec(line.trim());
    if (t) {
      out.truncated = Number(t[1]);
      continue;
    }
    const cells = line.trim().split(/\s+/);
    if (cells.length !== header.length || !cells.every((c) => /^\d+$/.test(c))) {
      throw new DriverStatsError(`channel_stats: line ${JSON.stringify(line.slice(0, 80))} does not have ${header.length} decimal columns`);
    }
    const values: Record<string, number> = {};
    header.forEach((h, i) => {
      if (i > 0) values[h] = Number(cells[i]);
    });
    out.channels.push({ channel: Number(cells[0]), values });
  }
  return out;
}

/** Per-device counter files of the driver, read as they are. */
const DEVICE_FILES = ['rx_frames', 'rx_bytes', 'tx_frames', 'tx_bytes', 'rx_drops_unbound', 'rx_drops_full', 'rx_drops_stalled', 'rx_drops_nomem', 'rx_short', 'rx_oversize', 'ring_resets', 'config_rejected', 'max_sdu'] as const;
type DeviceFile = (typeof DEVICE_FILES)[number];

export interface DriverDeviceStats {
  /** vmpiN */
  devname: string;
  vmpiId: number;
  counters: Partial<Record<DeviceFile, number>>;
  /** null when the driver has no channel_stats (an older driver). */
  channels: ChannelStatsTable | null;
}

/** The sysfs directories of the virtio devices the vmpi driver is bound to. */
export function driverDeviceDirs(sysRoot = '/sys'): string[] {
  return findVirtioCarriers(sysRoot)
    .filter((c) => c.driver === VMPI_DRIVER_NAME)
    .map((c) => join(sysRoot, 'bus', 'virtio', 'devices', c.device));
}

function readInt(dir: string, file: string): number {
  const s = readFileSync(join(dir, file), 'utf8').trim();
  if (!/^\d+$/.test(s)) throw new DriverStatsError(`${file}: ${JSON.stringify(s.slice(0, 40))} is not a decimal count`);
  return Number(s);
}

/** Read one device's directory. Throws (fs errors, DriverStatsError) when its identity cannot be read. */
export function readDriverDevice(dir: string): DriverDeviceStats {
  const devname = readFileSync(join(dir, 'devname'), 'utf8').trim();
  const vmpiId = readInt(dir, 'vmpi_id');
  const present = new Set(readdirSync(dir));
  const counters: Partial<Record<DeviceFile, number>> = {};
  for (const f of DEVICE_FILES) if (present.has(f)) counters[f] = readInt(dir, f);
  const channels = present.has('channel_stats') ? parseChannelStats(readFileSync(join(dir, 'channel_stats'), 'utf8')) : null;
  return { devname, vmpiId, counters, channels };
}

type Sample<L extends string> = [Record<L, string>, number];

/**
 * Register the driver's families in `registry`, read from `<sysRoot>` at each scrape.
 * Returns the read-error count holder (for tests).
 */
export function registerDriverMetrics(registry: Registry, sysRoot = '/sys'): { readErrors: () => number } {
  let errors = 0;
  let snapshot: DriverDeviceStats[] | null = null;
  /**
   * One sysfs read per scrape: a registry collects every family in the same turn of the event
   * loop, so the first family reads and the others reuse it until the next turn.
   */
  const devices = (): DriverDeviceStats[] => {
    if (snapshot) return snapshot;
    const read: DriverDeviceStats[] = [];
    for (const dir of driverDeviceDirs(sysRoot)) {
      try {
        read.push(readDriverDevice(dir));
      } catch {
        errors++;
      }
    }
    snapshot = read;
    setImmediate(() => {
      snapshot = null;
    });
    return read;
  };
  const registers = [registry];
  const family = <L extends string>(kind: 'counter' | 'gauge', name: string, help: string, labelNames: readonly L[], samples: (ds: DriverDeviceStats[]) => Iterable<Sample<L>>): void => {
    if (kind === 'gauge') {
      const g: Gauge<L> = new Gauge({ name, help, labelNames, registers, collect: () => {
        g.reset();
        for (const [l, v] of samples(devices())) g.set(l, v);
      } });
    } else {
      const c: Counter<L> = new Counter({ name, help, labelNames, registers, collect: () => {
        c.reset();
        for (const [l, v] of samples(devices())) c.inc(l, v);
      } });
    }
  };
  const perDevice = function* <L extends string>(ds: DriverDeviceStats[], rows: (d: DriverDeviceStats) => [Record<L, string>, number | undefined][]): Iterable<Sample<L | 'vmpi_id'>> {
    for (const d of ds) for (const [l, v] of rows(d)) if (v !== undefined) yield [{ vmpi_id: String(d.vmpiId), ...l } as Record<L | 'vmpi_id', string>, v];
  };
  const perChannel = function* <L extends string>(ds: DriverDeviceStats[], rows: (v: Record<string, number>) => [Record<L, string>, number | undefined][]): Iterable<Sample<L | 'vmpi_id' | 'channel'>> {
    for (const d of ds) {
      for (const c of d.channels?.channels ?? []) {
        for (const [l, v] of rows(c.values)) if (v !== undefined) yield [{ vmpi_id: String(d.vmpiId), channel: String(c.channel), ...l } as Record<L | 'vmpi_id' | 'channel', string>, v];
      }
    }
  };

  family('gauge', 'vmpi_guest_device_info', 'One series per VMPI device the guest driver serves (value is always 1), with its character device', ['vmpi_id', 'devname'], (ds) => perDevice(ds, (d) => [[{ devname: d.devname }, 1]]));
  family('gauge', 'vmpi_guest_device_max_sdu_bytes', 'Largest SDU the device carries, in bytes (guest driver)', ['vmpi_id'], (ds) => perDevice(ds, (d) => [[{}, d.counters.max_sdu]]));
  family('counter', 'vmpi_guest_device_sdus_total', 'SDUs the guest driver carried, by direction (to_guest: received, from_guest: sent)', ['vmpi_id', 'direction'], (ds) =>
    perDevice(ds, (d) => [[{ direction: 'to_guest' }, d.counters.rx_frames], [{ direction: 'from_guest' }, d.counters.tx_frames]]),
  );
  family('counter', 'vmpi_guest_device_bytes_total', 'SDU payload bytes the guest driver carried, by direction', ['vmpi_id', 'direction'], (ds) =>
    perDevice(ds, (d) => [[{ direction: 'to_guest' }, d.counters.rx_bytes], [{ direction: 'from_guest' }, d.counters.tx_bytes]]),
  );
  family('counter', 'vmpi_guest_device_drops_total', 'Frames the guest driver dropped, by reason (unbound_channel, queue_full, stalled, nomem, short, oversize)', ['vmpi_id', 'reason'], (ds) =>
    perDevice(ds, (d) => [
      [{ reason: 'unbound_channel' }, d.counters.rx_drops_unbound],
      [{ reason: 'queue_full' }, d.counters.rx_drops_full],
      [{ reason: 'stalled' }, d.counters.rx_drops_stalled],
      [{ reason: 'nomem' }, d.counters.rx_drops_nomem],
      [{ reason: 'short' }, d.counters.rx_short],
      [{ reason: 'oversize' }, d.counters.rx_oversize],
    ]),
  );
  family('counter', 'vmpi_guest_device_ring_resets_total', 'Device resets the guest driver made because the host broke a virtqueue', ['vmpi_id'], (ds) => perDevice(ds, (d) => [[{}, d.counters.ring_resets]]));
  family('counter', 'vmpi_guest_device_config_rejected_total', 'Device config changes the guest driver ignored (only the VMPI-id may change)', ['vmpi_id'], (ds) => perDevice(ds, (d) => [[{}, d.counters.config_rejected]]));
  family('gauge', 'vmpi_guest_device_channels_truncated', 'Bound channels left out of channel_stats because its page was full (their per-channel series are missing)', ['vmpi_id'], (ds) =>
    perDevice(ds, (d) => [[{}, d.channels?.truncated]]),
  );
  family('counter', 'vmpi_guest_channel_sdus_total', 'SDUs on one bound channel of the guest driver (one flow), by direction, since the channel was bound', ['vmpi_id', 'channel', 'direction'], (ds) =>
    perChannel(ds, (v) => [[{ direction: 'to_guest' }, v.rx_sdus], [{ direction: 'from_guest' }, v.tx_sdus]]),
  );
  family('counter', 'vmpi_guest_channel_bytes_total', 'SDU payload bytes on one bound channel of the guest driver, by direction', ['vmpi_id', 'channel', 'direction'], (ds) =>
    perChannel(ds, (v) => [[{ direction: 'to_guest' }, v.rx_bytes], [{ direction: 'from_guest' }, v.tx_bytes]]),
  );
  family('counter', 'vmpi_guest_channel_drops_total', "SDUs for one channel the guest driver dropped, by reason (queue_full: drop-when-full mode; stalled: its reader stalled rx)", ['vmpi_id', 'channel', 'reason'], (ds) =>
    perChannel(ds, (v) => [[{ reason: 'queue_full' }, v.rx_drops_full], [{ reason: 'stalled' }, v.rx_drops_stalled]]),
  );
  family('counter', 'vmpi_guest_channel_queue_full_total', 'Times a channel found its queue full, by direction (to_guest: its rx queue filled and held rx back; from_guest: a write found the tx ring full)', ['vmpi_id', 'channel', 'direction'], (ds) =>
    perChannel(ds, (v) => [[{ direction: 'to_guest' }, v.rx_full], [{ direction: 'from_guest' }, v.tx_full]]),
  );
  family('gauge', 'vmpi_guest_channel_rx_queued_sdus', 'SDUs waiting to be read on one channel of the guest driver', ['vmpi_id', 'channel'], (ds) => perChannel(ds, (v) => [[{}, v.rx_queued]]));
  family('counter', 'vmpi_guest_sysfs_read_errors_total', "Guest driver devices whose sysfs files could not be read or parsed at a scrape (their samples were left out)", [], () => [[{}, errors]]);
  return { readErrors: () => errors };
}
