/**
 * carrier.ts — which QEMU device carries a VMPI device, and the VMPI device config it shows.
 *
 * Owns: carrier profiles (QEMU device name, virtio id, queue count and size, config size) and the
 * 8-byte VMPI config layout documented in docs/DEVICE.md. The rest of src/vmpi uses a profile and
 * never names a carrier itself, so another carrier (vhost-user-vsock-pci, or a QEMU exposing the
 * generic vhost-user-device-pci with its own id) is one more profile here.
 */

export interface CarrierProfile {
  /** Profile name used in config files and on the command line. */
  readonly name: string;
  /** `-device` driver name QEMU needs. */
  readonly qemuDevice: string;
  /** virtio device id the guest sees. */
  readonly virtioDeviceId: number;
  readonly numQueues: number;
  /** Queue size the carrier uses (QEMU fixes it for stock devices). */
  readonly queueSize: number;
  /** Config space size QEMU reads from the back-end. */
  readonly configSize: number;
  /** Queue carrying host → guest frames (device-writable buffers). */
  readonly rxQueue: number;
  /** Queue carrying guest → host frames (device-readable buffers). */
  readonly txQueue: number;
}

/** vhost-user-gpio-pci: virtio id 41, two back-end-owned queues of 64, 8-byte config. Default. */
export const GPIO_CARRIER: CarrierProfile = {
  name: 'gpio',
  qemuDevice: 'vhost-user-gpio-pci',
  virtioDeviceId: 41,
  numQueues: 2,
  queueSize: 64,
  configSize: 8,
  rxQueue: 0,
  txQueue: 1,
};

export const CARRIERS: ReadonlyMap<string, CarrierProfile> = new Map([[GPIO_CARRIER.name, GPIO_CARRIER]]);

/** "VMPI" in little-endian byte order: the first 4 config bytes of every VMPI device. */
export const VMPI_MAGIC = 0x49504d56;
export const VMPI_CONFIG_VERSION = 1;
export const VMPI_CONFIG_SIZE = 8;
/** SDU limits a device may be configured with (log2 bytes). 16 → 64 KiB, the default. */
export const MIN_SDU_LOG2 = 10;
export const MAX_SDU_LOG2 = 20;
export const DEFAULT_SDU_LOG2 = 16;

export interface VmpiConfig {
  vmpiId: number;
  maxSduLog2: number;
}

/** Encode the VMPI device config: le32 magic, u8 version, u8 max_sdu_log2, le16 vmpi_id. */
export function encodeVmpiConfig(c: VmpiConfig): Uint8Array {
  const b = new Uint8Array(VMPI_CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, VMPI_MAGIC, true);
  dv.setUint8(4, VMPI_CONFIG_VERSION);
  dv.setUint8(5, c.maxSduLog2);
  dv.setUint16(6, c.vmpiId, true);
  return b;
}
