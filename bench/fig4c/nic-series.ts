/**
 * nic-series.ts — Fig. 4c's NIC systems: an emulated NIC (virtio-net-pci or e1000) in each of two
 * guests, VM-A on host A's bridge, VM-B on host B's, the bridges joined by the veth between the
 * two hosts (../common/netns.ts TwoHostNet), MTU 9000 on every link and in both guests (the
 * driver refusing it fails the series with the reason). VM-A runs `udp-goodput send` to VM-B's
 * `udp-goodput recv` (../common/nic.ts udpStream, as Fig. 4b); goodput is measured in VM-B.
 */
import type { Guest } from '../../test/helpers/guest.js';
import { BRIDGE_PREFIX, GUEST_ADDR, GUEST_MAC, GUEST2_ADDR, GUEST2_MAC } from '../common/netns.js';
import { nicGuest, setupNic, udpStream, type NicModel } from '../common/nic.js';
import { BOOT_MS, ROTATE, UDP_PORT_BASE, type Measurement, type Series } from '../common/series.js';
import type { Fig4cContext, Fig4cSeriesClass } from './systems.js';

/** VM-A (sender) and VM-B (receiver): which host, address and MAC. */
const VMS = [
  { host: 0, addr: GUEST_ADDR, mac: GUEST_MAC, peer: GUEST2_ADDR, peerMac: GUEST2_MAC },
  { host: 1, addr: GUEST2_ADDR, mac: GUEST2_MAC, peer: GUEST_ADDR, peerMac: GUEST_MAC },
] as const;

abstract class NicAcrossHostsSeries implements Series {
  abstract readonly key: string;
  abstract readonly name: string;
  private vms: Guest[] = [];
  private runs = 0;

  constructor(
    private readonly model: NicModel,
    private readonly ctx: Fig4cContext,
  ) {}

  async start(): Promise<void> {
    this.vms = VMS.map((v, i) => {
      const h = this.ctx.net.hosts[v.host];
      return nicGuest({ name: `vmpi-fig4c-${this.key}-${'ab'[i]}`, netns: h.ns, tap: h.tap, model: this.model, mac: v.mac });
    });
    await Promise.all(this.vms.map((g) => g.agentReady(1, BOOT_MS)));
    // The peer a permanent neighbour: no ARP during a flood (busybox `arp -s` makes one).
    await Promise.all(VMS.map((v, i) => setupNic(this.vms[i]!, this.model, v.addr, BRIDGE_PREFIX, [`arp -i eth0 -s ${v.peer} ${v.peerMac}`], this.ctx.mtu)));
    this.ctx.say(`${this.key}: eth0 at MTU ${this.ctx.mtu} in both guests`);
  }

  measure(size: number, seconds: number): Promise<Measurement> {
    return udpStream(this.vms[0]!, this.vms[1]!, VMS[1].addr, UDP_PORT_BASE + (this.runs++ % ROTATE), size, seconds);
  }

  async stop(): Promise<void> {
    await Promise.all(this.vms.map((g) => g.stop()));
    this.vms = [];
  }
}

/** A Fig. 4c series class for one NIC model (its key known before construction, as run.ts needs). */
function nicSeries(key: string, model: NicModel, name: string): Fig4cSeriesClass {
  return class extends NicAcrossHostsSeries {
    static readonly key = key;
    readonly key = key;
    readonly name = name;
    constructor(ctx: Fig4cContext) {
      super(model, ctx);
    }
  };
}

export const VirtioNetSeries = nicSeries('virtio-net', 'virtio-net-pci', 'virtio-net-pci + Linux bridges and veth, MTU 9000 (UDP, no vhost-net)');
export const E1000Series = nicSeries('e1000', 'e1000', 'e1000 + Linux bridges and veth, MTU 9000 (UDP)');
