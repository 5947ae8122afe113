/**
 * run.ts — `npm run bench:fig4c`: the paper's Fig. 4c on this machine, in one run.
 *
 * VM → VM goodput across two hosts vs SDU (UDP payload) size, each system two TCG guests with the
 * same settings (qemu-configs/launch-guest.sh defaults: q35, accel=tcg, 1 vCPU; 768M; the kernel
 * of scripts/guest/build.sh), booted once per system. The two "hosts" are two network namespaces
 * this bench creates and removes (../common/netns.ts TwoHostNet): each a Linux bridge with its
 * VM's tap, the bridges joined by a veth pair, MTU 9000 on every link (systems.ts JUMBO_MTU):
 *   normal-dif  the normal DIF over shim-hv + shim-eth (flow control, no retransmission):
 *               normal-series.ts
 *   virtio-net  virtio-net-pci in each guest, MTU 9000 (nic-series.ts)
 *   e1000       e1000 likewise
 * Goodput is measured by the receiver in VM-B over a fixed window.
 *
 * Environment: FIG4C_SIZES (comma list or START:STEP:END, default 0:250:4000), FIG4C_REPEATS
 * (default 20), FIG4C_SECONDS (window per measurement, default 1), FIG4C_SYSTEMS (comma list,
 * default every series of SERIES), FIG4C_OUT (default bench-results/), FIG4C_REPLOT (a
 * fig4c.json: rewrite the outputs and print the table, measure nothing), FIG4C_WARMUP (most
 * warm-up rounds over the sizes before the repeats, default 12, until FIG4C_WARMUP_AGREE rounds in
 * a row, default 3, agree within FIG4C_WARMUP_TOLERANCE, default 0.1: ../common/warmup.ts),
 * FIG4C_PROFILE=1 (normal-series.ts).
 * Writes fig4c.{csv,svg,json} (../common/figure.ts, shared with Fig. 4a and 4b).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, guestUnavailable } from '../../test/helpers/guest.js';
import { readSettings } from '../common/figure.js';
import { runFigureBench } from '../common/main.js';
import { removeStale, TwoHostNet } from '../common/netns.js';
import { closeAllSync } from '../../test/helpers/two-hosts.js';
import { E1000Series, VirtioNetSeries } from './nic-series.js';
import { NormalInterHostSeries } from './normal-series.js';
import { fig4cSpec, JUMBO_MTU, seriesMaker, type Fig4cSeriesClass } from './systems.js';

const say = (s: string) => process.stdout.write(`[fig4c] ${s}\n`);

/**
 * The systems, in order. THE FIRST ENTRY IS OURS (the numerator of every ratio in the table and
 * the JSON): the normal DIF over shim-hv + shim-eth + shim-hv, then the NICs.
 */
const SERIES: readonly Fig4cSeriesClass[] = [NormalInterHostSeries, VirtioNetSeries, E1000Series];
// The normal DIF's serves run in process groups of their own (no signal reaches them) and in
// namespaces TwoHostNet does not know: the topology's own cleanup runs on exit (signals included).
process.on('exit', closeAllSync);

const SPEC = fig4cSpec(SERIES);
const settings = readSettings(SPEC, ROOT);
const net = new TwoHostNet();

runFigureBench({
  spec: SPEC,
  settings,
  say,
  net,
  needsRootFor: 'network namespaces, bridges, veth and tap devices',
  prepare() {
    for (const script of ['build.sh', 'build-node.sh']) {
      const b = spawnSync('bash', [join(ROOT, 'scripts/guest', script)], { stdio: 'inherit' });
      if (b.status !== 0) throw new Error(`scripts/guest/${script} failed`);
    }
    const why = guestUnavailable();
    if (why) throw new Error(why);
    const stale = removeStale();
    if (stale.length) say(`removed stale namespaces of dead runs: ${stale.join(', ')}`);
    net.create(JUMBO_MTU);
    say(`two hosts: namespaces ${net.ns}, each a bridge with one tap, joined by a veth pair; MTU ${JUMBO_MTU} on every link`);
  },
  makeSeries: seriesMaker(SERIES, { say, net, mtu: JUMBO_MTU }),
});
