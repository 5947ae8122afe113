/**
 * guest-sysfs.ts — how a guest finds its VMPI devices: the carrier's virtio devices in sysfs
 * (virtio id 0x0029, shared with virtio-gpio, and the driver bound to each) and the /dev/vmpiN
 * nodes the guest driver made.
 *
 * Owns: the carrier's virtio id and the driver's name as the kernel shows them, and reading
 * them; what to tell the user when nothing is found is the caller's (ops/guest.ts).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';

/** The virtio device id of VMPI's carrier (vhost-user-gpio-pci: VIRTIO_ID_GPIO). */
export const VMPI_CARRIER_VIRTIO_ID = 0x29;
/** The guest driver's name on the virtio bus (KBUILD_MODNAME of vmpi.ko). */
export const VMPI_DRIVER_NAME = 'vmpi';

export interface VirtioCarrier {
  /** e.g. virtio3 */
  device: string;
  /** The driver bound to it, or null when none is. */
  driver: string | null;
}

/** The virtio devices with VMPI's carrier id in `<sysRoot>/bus/virtio/devices`, and their drivers. */
export function findVirtioCarriers(sysRoot = '/sys'): VirtioCarrier[] {
  const dir = join(sysRoot, 'bus', 'virtio', 'devices');
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  const out: VirtioCarrier[] = [];
  for (const name of names) {
    let id: number;
    try {
      id = Number.parseInt(readFileSync(join(dir, name, 'device'), 'utf8').trim(), 16);
    } catch {
      continue;
    }
    if (id !== VMPI_CARRIER_VIRTIO_ID) continue;
    let driver: string | null = null;
    try {
      driver = basename(readlinkSync(join(dir, name, 'driver')));
    } catch {
      // not bound
    }
    out.push({ device: name, driver });
  }
  return out;
}

/** The /dev/vmpiN present now, in index order. */
export function findVmpiDevices(dir = '/dev'): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^vmpi(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => `${dir}/${m[0]}`);
}
