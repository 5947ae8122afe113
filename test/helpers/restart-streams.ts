/**
 * restart-streams.ts — the per-SDU measurement of a back-end restart under live guests, shared by
 * test/restart-qemu.test.ts (keeper) and test/systemd-qemu.test.ts (systemd's fd store): each
 * guest runs `vmpi-perf stream` through the server's echo channel (guest → host → guest), and a
 * round checks what came back against the bounds src/ops/restart/worker.ts documents and keeps a
 * row for the table the tests print (restart window as the host and the guest saw it, SDUs lost
 * and duplicated per VM).
 */
import type { Test } from 'tap';
import type { Guest } from './guest.js';
import { parseResults } from './pattern.js';

export const ECHO_CHANNEL = 1025;
/** Per kill and per VM: a duplicate needs a chain delivered but not completed (at most one per
 * queue: the device completes each chain right after delivering it); a loss needs an echo
 * waiting in the dead worker's memory (the device backlog, or the responder's held copy: a few
 * SDUs, never more than the guest's window). */
export const MAX_DUP = 2;
export const MAX_LOST = 32;
/** What QEMU would print if the back-end's going away had reached it. */
export const VHOST_ERRORS = /vhost[^\n]*(fail|error)|Failed to set msg fds|ring restore failed|Failed to read msg header/i;

export class RestartStreams {
  private seq = 0;
  readonly rows: string[] = [];
  count = 4000;

  /**
   * `hostDiagnosis`: what the host side can say when a stream fails (the server's log), printed
   * with the guests' device counters. Nothing otherwise.
   */
  constructor(
    private readonly t: Test,
    readonly guests: Guest[],
    private readonly hostDiagnosis?: () => Promise<string>,
  ) {}

  /** One stream per guest of `count` SDUs; resolves with each guest's RESULT fields. */
  start(count = this.count): Promise<Record<string, string>[]> {
    const s0 = this.seq;
    this.seq += count;
    return Promise.all(
      this.guests.map((g) =>
        g.start(`vmpi-perf -w 32 -g 300 -t 8000 -s ${s0} stream /dev/vmpi0 ${ECHO_CHANNEL} 1000 ${count}`, 180_000).done.then((r) => {
          const res = parseResults(r.out).find((x) => x.kind === 'RESULT' && x.mode === 'stream');
          if (!res) throw new Error(`no stream RESULT: ${r.out.slice(-500)}`);
          return res;
        }),
      ),
    );
  }

  /** A stream without a restart: nothing lost; sizes the rounds to about `seconds` of streaming. */
  async warmUp(seconds = 5): Promise<void> {
    const warm = await this.start(4000);
    for (const [i, r] of warm.entries()) this.t.same([r.lost, r.dup, r.errors], ['0', '0', '0'], `VM${i + 1} warm-up: nothing lost or duplicated`);
    const rate = Math.min(...warm.map((r) => Number(r.sdus_per_s)));
    this.count = Math.max(4000, Math.round(rate * seconds));
    this.t.comment(`warm-up: ${warm.map((r) => r.sdus_per_s).join(' / ')} SDU/s per VM; rounds of ${this.count} SDUs`);
  }

  /**
   * Streams on every guest; `act` (a restart) 1.5 s in; then the bounds, per VM. `maxLost`: 0 for
   * a hand-over (upgrade, stop under systemd), which takes the device backlogs with it.
   */
  async round(what: string, act: () => Promise<{ hostWindowMs: number | null }>, maxLost = MAX_LOST): Promise<Record<string, string>[]> {
    const running = this.start();
    await new Promise((r) => setTimeout(r, 1500));
    const { hostWindowMs } = await act();
    const res = await running;
    // A stream that ended short (a tx ring the device stopped taking: status=tx-stalled, or more
    // lost than the bound): what both ends say, before the assertions fail on it.
    if (res.some((r) => r.status === 'tx-stalled' || Number(r.lost) > maxLost)) await this.diagnose(what, res);
    for (const [i, r] of res.entries()) {
      const vm = `${what}, VM${i + 1}`;
      this.t.equal(r.errors, '0', `${vm}: every SDU matches its pattern`);
      this.t.ok(Number(r.lost) <= maxLost, `${vm}: ${r.lost} lost (≤ ${maxLost})`);
      this.t.ok(Number(r.dup) <= MAX_DUP, `${vm}: ${r.dup} duplicated (≤ ${MAX_DUP})`);
      this.t.ok(Number(r.unique) >= this.count - maxLost, `${vm}: the stream went on by itself (${r.unique} of ${this.count})`);
      this.rows.push(`${what.padEnd(18)} VM${i + 1}  host window ${hostWindowMs === null ? '   -' : String(hostWindowMs).padStart(5)} ms  guest gap ${String(r.max_gap_ms).padStart(8)} ms  lost ${r.lost!.padStart(3)}  dup ${r.dup!.padStart(2)}`);
    }
    return res;
  }

  private async diagnose(what: string, res: Record<string, string>[]): Promise<void> {
    const lines = [`${what}: a stream ended short; what the guests and the host say:`];
    for (const [i, g] of this.guests.entries()) {
      lines.push(`VM${i + 1} RESULT: ${Object.entries(res[i]!).map(([k, v]) => `${k}=${v}`).join(' ')}`);
      const cmd = 'vmpi-perf info /dev/vmpi0; for d in /sys/bus/virtio/devices/virtio*; do [ -f "$d/channel_stats" ] || continue; ' +
        'for f in "$d"/*; do [ -f "$f" ] && [ -r "$f" ] && echo "$(basename "$f"): $(head -c 300 "$f" 2>/dev/null)"; done; done';
      const info = await g.exec(cmd, 30_000).catch((e: Error) => ({ out: `(no answer: ${e.message})` }));
      lines.push(`VM${i + 1} device:`, info.out.trim());
    }
    if (this.hostDiagnosis) lines.push('host:', (await this.hostDiagnosis().catch((e: Error) => `(no answer: ${e.message})`)).slice(-12_000));
    this.t.comment(lines.join('\n'));
  }

  /** The table of every round. */
  table(): string {
    return ['restart windows and SDUs lost/duplicated per VM:', ...this.rows].join('\n');
  }
}
