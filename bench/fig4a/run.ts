/**
 * run.ts — `npm run bench:fig4a`: the paper's Fig. 4a on this machine, in one run.
 *
 * Host ↔ VM goodput vs SDU (UDP payload) size for three systems, each a TCG guest with the same
 * settings (qemu-configs/launch-guest.sh defaults: q35, accel=tcg, 1 vCPU; 768M; the kernel and
 * initramfs of scripts/guest/build.sh), booted once per system:
 *   shim-dif    the shim DIF for hypervisors with vmpi-tgen over the IPC API at both ends
 *               (series.ts: TgenShimSeries; the guest runs the same TypeScript on Node)
 *   virtio-net  virtio-net-pci on a tap (no vhost-net: /dev/vhost-net does not exist here)
 *   e1000       e1000 on a tap
 * The NICs' taps live in a network namespace this bench creates and removes (../common/netns.ts).
 * Goodput is always measured by the receiver over a fixed window: in the guest for host → VM
 * (to-guest, the default), on the host for VM → host (to-host; the paper's rina-tgen setup, its
 * client in the guest). Optional: vmpi-channel (below) and virtio-serial (virtio-serial-pci, one
 * port on a unix socket chardev, `udp-goodput stream-send/-recv` at both ends; sizes > 0).
 *
 * Environment:
 *   FIG4A_SIZES     comma list or START:STEP:END (default 0:250:4000). Size 0 is measured for every
 *                   system: a zero-length UDP datagram is valid, goodput 0, SDUs/s still reported.
 *   FIG4A_REPEATS   measurements per point (default 20)
 *   FIG4A_SECONDS   window per measurement, seconds (default 1)
 *   FIG4A_SYSTEMS   comma list of shim-dif,virtio-net,e1000 (default all three, in this order),
 *                   vmpi-channel: the raw VMPI channel without a DIF, host VmpiDevice ↔ a C
 *                   program in the guest (what the device alone carries; not in the paper), and
 *                   virtio-serial; vmpi-channel-unpacked and shim-dif-unpacked are the same
 *                   with the host not offering VMPI_F_RX_PACKED (one frame per rx buffer, as
 *                   before packing), for before/after ratios in one run; vmpi-channel-txunpacked
 *                   and shim-dif-txunpacked the same without VMPI_F_TX_PACKED (one frame per tx
 *                   buffer; what to-host measures)
 *   FIG4A_VMPI_SEND_BATCH  SDUs per write() of vmpi-channel's to-host sender (default 64, batch-write
 *                   mode; 0: one write() per SDU)
 *   FIG4A_VMPI_RECV_BATCH  bytes per read() of vmpi-channel's to-guest receiver (udp-goodput -B;
 *                   default 262144, batch-read mode: every queued SDU that fits, each counted;
 *                   0: one read() per SDU); system vmpi-channel-readone is vmpi-channel with one
 *                   read() per SDU whatever this says, for before/after ratios in one run
 *   FIG4A_DIRECTION to-guest (default), to-host or both: both are measured with the same boot of
 *                   each system, interleaved (rep → direction → size)
 *   FIG4A_SHIM_RECEIVER  vmpi-channel's receiver: udp-goodput (default: count-only, the same loop
 *                   as the UDP receiver) or vmpi-perf (verifies every SDU)
 *   FIG4A_SENDER_NICE  nice(1) increment for the unpaced UDP sender (default 0, as netperf)
 *   FIG4A_OUT       output directory (default bench-results/)
 *   FIG4A_REPLOT    path of a fig4a.json: measure nothing, rewrite the CSV/SVG/JSON in FIG4A_OUT from
 *                   its samples and print the table (e.g. after a change to the plot)
 * Writes fig4a.{csv,svg,json} (../common/figure.ts: the sweep, outputs and table it shares with
 * Fig. 4b): the CSV and JSON carry the direction; fig4a.svg is host → VM, fig4a-to-host.svg VM →
 * host; both print the SDU-rate ratios shim-dif/virtio-net, vmpi-channel/virtio-serial and
 * shim-dif/virtio-serial.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, guestUnavailable } from '../../test/helpers/guest.js';
import { readSettings, type FigureSpec } from '../common/figure.js';
import { runFigureBench } from '../common/main.js';
import { GUEST_MEM_MB, type Series } from '../common/series.js';
import { PrivateNet, removeStale } from '../common/netns.js';
import { SerialSeries, ShimVmpiSeries, TgenShimSeries, UdpNicSeries, type ShimReceiver } from './series.js';

const say = (s: string) => process.stdout.write(`[fig4a] ${s}\n`);

const SPEC: FigureSpec = {
  id: 'fig4a',
  title: 'Fig. 4a (reproduced): host → VM goodput, QEMU 10 TCG, 1 vCPU',
  tableTitle: 'Fig. 4a: host → VM goodput',
  systems: ['shim-dif', 'virtio-net', 'e1000', 'vmpi-channel', 'virtio-serial', 'vmpi-channel-unpacked', 'shim-dif-unpacked', 'vmpi-channel-txunpacked', 'shim-dif-txunpacked', 'vmpi-channel-readone'],
  defaultSystems: ['shim-dif', 'virtio-net', 'e1000'],
  colors: { 'shim-dif': '#2ca02c', 'vmpi-channel': '#9467bd', 'virtio-net': '#1f77b4', e1000: '#d62728', 'virtio-serial': '#ff7f0e', 'vmpi-channel-unpacked': '#c5b0d5', 'shim-dif-unpacked': '#98df8a', 'vmpi-channel-txunpacked': '#8c564b', 'shim-dif-txunpacked': '#bcbd22', 'vmpi-channel-readone': '#17becf' },
  directions: {
    'to-guest': { title: 'Fig. 4a (reproduced): host → VM goodput, QEMU 10 TCG, 1 vCPU', tableTitle: 'Fig. 4a: host → VM goodput' },
    'to-host': { title: 'Fig. 4a, other direction: VM → host goodput, QEMU 10 TCG, 1 vCPU', tableTitle: 'Fig. 4a: VM → host goodput' },
  },
  ratioPairs: [
    ['shim-dif', 'virtio-net'],
    ['vmpi-channel', 'virtio-serial'],
    ['shim-dif', 'virtio-serial'],
    ['vmpi-channel-unpacked', 'virtio-serial'],
    ['shim-dif-unpacked', 'virtio-serial'],
    ['vmpi-channel', 'vmpi-channel-unpacked'],
    ['shim-dif', 'shim-dif-unpacked'],
    ['vmpi-channel', 'vmpi-channel-txunpacked'],
    ['shim-dif', 'shim-dif-txunpacked'],
    ['vmpi-channel-readone', 'virtio-serial'],
    ['vmpi-channel', 'vmpi-channel-readone'],
  ],
  guest: `q35, accel=tcg, 1 vCPU, ${GUEST_MEM_MB}M, scripts/guest/build.sh kernel; busybox initramfs (NICs, vmpi-channel), Node initramfs (shim-dif)`,
};
const settings = readSettings(SPEC, ROOT);
const shimReceiver = (process.env.FIG4A_SHIM_RECEIVER ?? 'udp-goodput') as ShimReceiver;
const senderNice = Number(process.env.FIG4A_SENDER_NICE ?? 0);
if (!['udp-goodput', 'vmpi-perf'].includes(shimReceiver)) throw new Error(`FIG4A_SHIM_RECEIVER: ${shimReceiver}?`);

const net = new PrivateNet();
const goodputBin = join(ROOT, '.cache/guest/udp-goodput');

runFigureBench({
  spec: SPEC,
  settings,
  say,
  net,
  needsRootFor: 'network namespace and tap device',
  prepare() {
    const build = spawnSync('bash', [join(ROOT, 'scripts/guest/build.sh')], { stdio: 'inherit' });
    if (build.status !== 0) throw new Error('scripts/guest/build.sh failed');
    const why = guestUnavailable();
    if (why) throw new Error(why);
    const stale = removeStale();
    if (stale.length) say(`removed stale namespaces of dead runs: ${stale.join(', ')}`);
    if (settings.systems.some((s) => s === 'virtio-net' || s === 'e1000')) {
      net.create();
      say(`private network: namespace ${net.ns}, tap ${net.tap}`);
    }
  },
  makeSeries(key: string): Series {
    switch (key) {
      case 'shim-dif':
        return new TgenShimSeries();
      case 'vmpi-channel':
        return new ShimVmpiSeries(shimReceiver);
      case 'vmpi-channel-unpacked':
        return new ShimVmpiSeries(shimReceiver, { rxPacked: false });
      case 'shim-dif-unpacked':
        return new TgenShimSeries({ rxPacked: false });
      case 'vmpi-channel-txunpacked':
        return new ShimVmpiSeries(shimReceiver, { txPacked: false });
      case 'shim-dif-txunpacked':
        return new TgenShimSeries({ txPacked: false });
      case 'vmpi-channel-readone':
        return new ShimVmpiSeries(shimReceiver, {}, true);
      case 'virtio-serial':
        return new SerialSeries(goodputBin);
      case 'virtio-net':
        return new UdpNicSeries('virtio-net-pci', net, goodputBin, senderNice);
      default:
        return new UdpNicSeries('e1000', net, goodputBin, senderNice);
    }
  },
});
