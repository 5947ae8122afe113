/**
 * guest-channel-stats.ts — the guest driver's `channel_stats` as a QEMU test reads it: from the
 * agent's console output of `cat .../channel_stats`, where kernel messages may be interleaved.
 * The table's own lines (header, decimal rows, `# truncated N`) are kept and parsed by the same
 * parseChannelStats that `vmpi guest` exports metrics with, so a test and the exporter agree on
 * the format.
 */
import { parseChannelStats } from '../../src/ops/guest-driver-stats.js';

/** The counters of channel `ch` by column name, or undefined when `ch` is not bound. */
export function channelStatsRow(consoleOut: string, ch: number): Record<string, number> | undefined {
  const table = consoleOut
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.startsWith('channel ') || /^\d+(\s+\d+)*$/.test(l) || /^# truncated \d+$/.test(l));
  return parseChannelStats(table.join('\n')).channels.find((c) => c.channel === ch)?.values;
}
