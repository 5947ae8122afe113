/**
 * systems.ts — what Fig. 4c (VM → VM goodput across two hosts) is made of, apart from running it:
 * the figure's spec built from the list of series classes run.ts gives (their keys are the
 * systems, the first is ours: the numerator of every ratio), what each series is constructed with
 * (Fig4cContext: the two-host network and its MTU), and the maker the sweep calls per key.
 * Nothing here boots a guest or touches the network, so test/bench-fig4c.test.ts imports it.
 */
import type { FigureSpec } from '../common/figure.js';
import type { TwoHostNet } from '../common/netns.js';
import { GUEST_MEM_MB, type Series } from '../common/series.js';

/** The MTU of every link of the NIC path (taps, bridges, veth, the guests' eth0): jumbo frames, as in the paper. */
export const JUMBO_MTU = 9000;

/** What every Fig. 4c series is constructed with. */
export interface Fig4cContext {
  say: (s: string) => void;
  /**
   * The two "hosts" run.ts creates before the sweep and removes after it (namespaces
   * vmpi-bench-<pid>-a and -b, each a bridge with one tap, the bridges joined by a veth pair, all
   * at `mtu`). A series may use them or make its own namespaces (and remove them in stop()).
   */
  net: TwoHostNet;
  mtu: number;
}

/** A series class of Fig. 4c: `key` (the CSV's system column) known before it is constructed. */
export interface Fig4cSeriesClass {
  readonly key: string;
  new (ctx: Fig4cContext): Series;
}

/** A series list that cannot make a figure (no entry, or a key twice), or a constructed series whose key is not its class's. */
export class Fig4cSystemsError extends Error {
  override name = 'Fig4cSystemsError';
  constructor(
    readonly code: 'no_series' | 'duplicate_key' | 'key_mismatch',
    message: string,
  ) {
    super(message);
  }
}

const COLORS: Readonly<Record<string, string>> = { 'normal-dif': '#2ca02c', 'virtio-net': '#1f77b4', e1000: '#d62728' };

/** The figure's spec: one system per class, in the list's order (the first is ours). */
export function fig4cSpec(classes: readonly Fig4cSeriesClass[]): FigureSpec {
  if (classes.length === 0) throw new Fig4cSystemsError('no_series', 'fig4c: the series list is empty: give run.ts at least one series class');
  const keys = classes.map((c) => c.key);
  const twice = keys.find((k, i) => keys.indexOf(k) !== i);
  if (twice !== undefined) throw new Fig4cSystemsError('duplicate_key', `fig4c: two series classes have the key '${twice}': each system needs its own key`);
  return {
    id: 'fig4c',
    title: 'Fig. 4c (reproduced): VM → VM goodput across two hosts, QEMU 10 TCG, 1 vCPU each',
    tableTitle: 'Fig. 4c: VM → VM goodput across two hosts',
    systems: keys,
    colors: COLORS,
    guest:
      `two guests: q35, accel=tcg, 1 vCPU, ${GUEST_MEM_MB}M each, scripts/guest/build.sh kernel; busybox initramfs (NICs), Node initramfs (normal-dif); ` +
      `each guest on its own "host" (network namespace); NIC path: tap → Linux bridge → veth → Linux bridge → tap, MTU ${JUMBO_MTU} on every link and in the guests`,
  };
}

/** The sweep's makeSeries: the class of `key`, constructed with `ctx`. */
export function seriesMaker(classes: readonly Fig4cSeriesClass[], ctx: Fig4cContext): (key: string) => Series {
  return (key) => {
    const cls = classes.find((c) => c.key === key);
    // readSettings already refused keys that are not in the spec, which lists exactly these classes.
    if (!cls) throw new Fig4cSystemsError('key_mismatch', `fig4c: no series class has the key '${key}' (known: ${classes.map((c) => c.key).join(', ')})`);
    const s = new cls(ctx);
    if (s.key !== key) throw new Fig4cSystemsError('key_mismatch', `fig4c: the series of class key '${key}' calls itself '${s.key}': make its instance key equal its static key`);
    return s;
  };
}
