/**
 * run.ts — `npm run bench:fig4b`: the paper's Fig. 4b on this machine, in one run.
 *
 * VM → VM goodput on one host vs SDU (UDP payload) size for three systems, each two TCG guests
 * with the same settings (qemu-configs/launch-guest.sh defaults: q35, accel=tcg, 1 vCPU; 768M; the
 * kernel of scripts/guest/build.sh), booted once per system (series.ts):
 *   normal-dif  a normal DIF over the two VMs' shim DIFs for hypervisors, the host's `vmpi serve`
 *               relaying; vmpi-tgen in both guests, flow control, no retransmission
 *   virtio-net  virtio-net-pci in each guest, the two taps on a Linux bridge (no vhost-net)
 *   e1000       e1000 likewise
 * The bridge and taps live in a network namespace this bench creates and removes
 * (../common/netns.ts). Goodput is measured by the receiver in VM2 over a fixed window.
 *
 * Environment: FIG4B_SIZES (comma list or START:STEP:END, default 0:250:4000), FIG4B_REPEATS
 * (default 20), FIG4B_SECONDS (window per measurement, default 1), FIG4B_SYSTEMS (comma list,
 * default normal-dif,virtio-net,e1000), FIG4B_OUT (default bench-results/), FIG4B_REPLOT (a
 * fig4b.json: rewrite the outputs and print the table, measure nothing), FIG4B_PROFILE=1 (profile
 * the normal-dif guests' Node processes; slows them: read shares only), FIG4B_CPU=1 (each run's
 * CPU per SDU in both guests and on the host, for serve and each QEMU; no profiler).
 * Writes fig4b.{csv,svg,json} (../common/figure.ts, shared with Fig. 4a).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST_DIR, ROOT, guestUnavailable } from '../../test/helpers/guest.js';
import { readSettings, type FigureSpec } from '../common/figure.js';
import { runFigureBench } from '../common/main.js';
import { PrivateNet, removeStale } from '../common/netns.js';
import { GUEST_MEM_MB, type Series } from '../common/series.js';
import { NormalDifSeries, UdpBridgeSeries } from './series.js';

const say = (s: string) => process.stdout.write(`[fig4b] ${s}\n`);

const SPEC: FigureSpec = {
  id: 'fig4b',
  title: 'Fig. 4b (reproduced): VM → VM goodput on one host, QEMU 10 TCG, 1 vCPU each',
  tableTitle: 'Fig. 4b: VM → VM goodput',
  systems: ['normal-dif', 'virtio-net', 'e1000'],
  colors: { 'normal-dif': '#2ca02c', 'virtio-net': '#1f77b4', e1000: '#d62728' },
  guest: `two guests: q35, accel=tcg, 1 vCPU, ${GUEST_MEM_MB}M each, scripts/guest/build.sh kernel; busybox initramfs (NICs), Node initramfs (normal-dif)`,
};
const settings = readSettings(SPEC, ROOT);

const net = new PrivateNet();

runFigureBench({
  spec: SPEC,
  settings,
  say,
  net,
  needsRootFor: 'network namespace, bridge and tap devices',
  prepare() {
    for (const script of ['build.sh', 'build-node.sh']) {
      const b = spawnSync('bash', [join(ROOT, 'scripts/guest', script)], { stdio: 'inherit' });
      if (b.status !== 0) throw new Error(`scripts/guest/${script} failed`);
    }
    const why = guestUnavailable() ?? (existsSync(join(GUEST_DIR, 'initramfs-node.cpio.gz')) ? null : 'initramfs-node.cpio.gz missing');
    if (why) throw new Error(why);
    const stale = removeStale();
    if (stale.length) say(`removed stale namespaces of dead runs: ${stale.join(', ')}`);
    if (settings.systems.some((s) => s !== 'normal-dif')) {
      net.createBridge();
      say(`private network: namespace ${net.ns}, taps ${net.tap} and ${net.tap2} on a bridge`);
    }
  },
  makeSeries(key: string): Series {
    if (key === 'normal-dif') return new NormalDifSeries(say);
    return new UdpBridgeSeries(key === 'e1000' ? 'e1000' : 'virtio-net-pci', net);
  },
});
