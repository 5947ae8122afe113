/**
 * nic.ts — a guest with an emulated NIC (virtio-net-pci or e1000) on a tap of the bench's private
 * namespace, bringing its eth0 up (at a given MTU when asked), and one UDP stream measured between
 * two such guests: the NIC series of Fig. 4a, 4b and 4c share them.
 */
import { Guest } from '../../test/helpers/guest.js';
import { fromRecord, GUEST, IDLE_MS, record, WAIT_MS, type Measurement } from './series.js';

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
 * Load the NIC drivers, bring eth0 up at `addr/prefix` (at MTU `mtu` when given: the driver
 * refusing it is an error that says so), run the `extra` shell commands, and check that eth0 is
 * driven by the driver of `model` and has that MTU.
 */
export async function setupNic(g: Guest, model: NicModel, addr: string, prefix: number, extra: string[] = [], mtu?: number): Promise<void> {
  const setMtu = `{ ip link set eth0 mtu ${mtu} || { echo "NIC-MTU-REFUSED $(basename $(readlink /sys/class/net/eth0/device/driver))"; false; }; }`;
  const setup = [
    'for m in $(cat /etc/vmpi-net-modules); do insmod /lib/modules/$m.ko || exit 1; done',
    'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
    ...(mtu === undefined ? [] : [setMtu]),
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
  const refused = /NIC-MTU-REFUSED (\w+)/.exec(r.out);
  if (refused) throw new Error(`the guest's ${refused[1]} driver refused MTU ${mtu} on eth0 (above its max_mtu?):\n${r.out}`);
  if (r.rc !== 0) throw new Error(`guest network setup failed (rc ${r.rc}):\n${r.out}`);
  const m = /NIC driver=(\S+) mtu=(\d+)/.exec(r.out);
  const want = model === 'e1000' ? 'e1000' : 'virtio_net';
  if (!m || m[1] !== want) throw new Error(`guest eth0 is not driven by ${want}: ${r.out}`);
  if (mtu !== undefined && Number(m[2]) !== mtu) throw new Error(`guest eth0 has MTU ${m[2]}, not ${mtu}: ${r.out}`);
}

/**
 * One unpaced UDP stream (netperf UDP_STREAM-like): `rx` runs `udp-goodput recv` on `port`, `tx`
 * sends `size`-byte datagrams to `rxAddr`; goodput as the receiver measured it over `seconds`,
 * with the sender's rate.
 */
export async function udpStream(tx: Guest, rx: Guest, rxAddr: string, port: number, size: number, seconds: number): Promise<Measurement> {
  const ms = Math.round(seconds * 1000);
  const job = rx.start(`udp-goodput -w ${WAIT_MS} -t ${IDLE_MS} recv ${port} ${ms}`, WAIT_MS + ms + 60_000);
  await rx.waitFor(new RegExp(`READY mode=recv port=${port}\\b`), 30_000, job.from);
  // The receiver's window opens at its first datagram: the sender outlasts it by 1.5 s.
  const send = tx.start(`udp-goodput send ${rxAddr} ${port} ${size} ${ms + 1500}`, ms + 60_000);
  const m = await rx.waitFor(/RESULT mode=recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000, job.from);
  const res = fromRecord(record(m[0], 'recv'), size);
  const sent = await send.done;
  const s = record(sent.out, 'send');
  if (s.pps !== undefined) res.sentPps = Number(s.pps);
  const done = await job.done;
  if (done.rc !== 0) throw new Error(`udp-goodput recv exited ${done.rc}:\n${done.out}`);
  return res;
}
