/**
 * nic.ts — a guest with an emulated NIC (virtio-net-pci or e1000) on a tap of the bench's private
 * namespace, and bringing its eth0 up: the NIC series of Fig. 4a and Fig. 4b share both.
 */
import { Guest } from '../../test/helpers/guest.js';
import { GUEST } from './series.js';

export type NicModel = 'virtio-net-pci' | 'e1000';

/** An agent guest whose NIC `model` (MAC `mac`) sits on `tap` in namespace `netns`. */
export function nicGuest(o: { name: string; netns: string; tap: string; model: NicModel; mac: string }): Guest {
  return new Guest({
    ...GUEST,
    name: o.name,
    netns: o.netns,
    qemuArgs: [
      '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no`,
      // romfile=: no iPXE option ROM (faster boot, nothing else changes).
      '-device', `${o.model},netdev=n0,mac=${o.mac},romfile=`,
    ],
  });
}

/**
 * Load the NIC drivers, bring eth0 up at `addr/prefix`, run the `extra` shell commands, and check
 * that eth0 is driven by the driver of `model`.
 */
export async function setupNic(g: Guest, model: NicModel, addr: string, prefix: number, extra: string[] = []): Promise<void> {
  const setup = [
    'for m in $(cat /etc/vmpi-net-modules); do insmod /lib/modules/$m.ko || exit 1; done',
    'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
    'ip link set eth0 up',
    // Fragmented sizes (> 1472 B) under an unpaced stream: the default reassembly settings
    // (4 MB, 30 s) fill with datagrams that lost a fragment at the tap and then refuse every new
    // one for up to 30 s, so the guest would measure that timeout, not the NIC. Same for both NICs.
    'sysctl -q -w net.ipv4.ipfrag_time=1 net.ipv4.ipfrag_high_thresh=67108864 net.ipv4.ipfrag_low_thresh=50331648',
    `ip addr add ${addr}/${prefix} dev eth0`,
    ...extra,
    'echo "NIC driver=$(basename $(readlink /sys/class/net/eth0/device/driver)) mtu=$(cat /sys/class/net/eth0/mtu)"',
  ].join(' && ');
  const r = await g.exec(`( ${setup} )`, 60_000);
  if (r.rc !== 0) throw new Error(`guest network setup failed (rc ${r.rc}):\n${r.out}`);
  const m = /NIC driver=(\S+)/.exec(r.out);
  const want = model === 'e1000' ? 'e1000' : 'virtio_net';
  if (!m || m[1] !== want) throw new Error(`guest eth0 is not driven by ${want}: ${r.out}`);
}
