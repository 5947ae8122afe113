/**
 * guest.ts — start and stop what `vmpi guest` runs inside a VM: one GuestVmpiPort per
 * /dev/vmpiN, a guest-role shim IPC process for hypervisors on each (DIF `hv.vmpi-<VMPI-id>`,
 * the same code the host runs), and the IPC daemon that offers them to the VM's applications
 * on a Unix socket, and with a `normal` config a member of that normal DIF enrolling through the
 * first device's shim DIF (normal.ts). The daemon hands each flow's application the driver file bound to the
 * flow's channel (src/dif/ipc/datapath.ts), so SDUs go from the application straight to the
 * driver.
 *
 * Owns: finding the devices, the start-up order (every port first, then the socket, so a failure
 * leaves no socket behind) and the shutdown; when there is no device, saying why from sysfs (the
 * carrier is virtio device 0x0029, virtio-gpio's id, which gpio_virtio claims in kernels built
 * with it).
 */
import { logger as rootLogger, type Logger } from '../sys/log.js';
import { ShimHvIpcp } from '../dif/shim-hv/ipcp.js';
import { IpcDaemon } from '../dif/ipc/daemon.js';
import type { NormalIpcp } from '../dif/normal/ipcp.js';
import type { NormalConfig } from './config.js';
import { createNormalIpcp } from './normal.js';
import { GuestVmpiPort } from '../vmpi/guest-port.js';
import { findVirtioCarriers, findVmpiDevices, VMPI_DRIVER_NAME } from '../vmpi/guest-sysfs.js';
import { CodedError } from '../sys/coded-error.js';

export { findVirtioCarriers, findVmpiDevices, VMPI_CARRIER_VIRTIO_ID, VMPI_DRIVER_NAME, type VirtioCarrier } from '../vmpi/guest-sysfs.js';

export interface GuestServing {
  readonly ports: readonly GuestVmpiPort[];
  readonly ipcps: readonly ShimHvIpcp[];
  /** The normal DIF's member, when configured. */
  readonly normal: NormalIpcp | undefined;
  readonly daemon: IpcDaemon;
  /** Close the daemon (removing its socket), the IPC processes and the ports. Idempotent. */
  close(): void;
}

export interface GuestStartOptions {
  /** Character devices to serve; default every /dev/vmpiN present. */
  devices?: string[];
  socketPath: string;
  logger?: Logger;
  /** sysfs mount point, to explain a missing device (default /sys; tests pass a fake tree). */
  sysRoot?: string;
  /** Run a member of this normal DIF over the first device's shim DIF. */
  normal?: NormalConfig;
}

/** `vmpi guest` cannot start: `code` says why, the message what to do. */
export class GuestStartError extends CodedError<'no_device' | 'carrier_claimed' | 'driver_not_loaded'> {
  override name = 'GuestStartError';
}

/** The error for a VM without /dev/vmpiN, from what sysfs shows. */
export function noDeviceError(sysRoot = '/sys'): GuestStartError {
  const carriers = findVirtioCarriers(sysRoot);
  const claimed = carriers.filter((c) => c.driver !== null && c.driver !== VMPI_DRIVER_NAME);
  if (claimed.length > 0) {
    const list = claimed.map((c) => `${c.device} (driver ${c.driver})`).join(', ');
    return new GuestStartError(
      'carrier_claimed',
      `no /dev/vmpiN in this VM: the VMPI device (virtio id 0x0029, shared with virtio-gpio) is bound to another driver: ${list}. ` +
        'Install guest-driver/vmpi-modprobe.conf as /etc/modprobe.d/vmpi.conf (it blacklists gpio_virtio, ' +
        `the vmpi-dkms package does this), then reboot, or now: modprobe -r ${claimed[0]!.driver}; modprobe -r vmpi; modprobe vmpi`,
    );
  }
  if (carriers.some((c) => c.driver === VMPI_DRIVER_NAME)) {
    return new GuestStartError('no_device', 'no /dev/vmpiN in this VM although the vmpi driver is bound to the VMPI device: is devtmpfs mounted on /dev?');
  }
  if (carriers.some((c) => c.driver === null)) {
    const list = carriers.filter((c) => c.driver === null).map((c) => c.device).join(', ');
    return new GuestStartError('driver_not_loaded', `no /dev/vmpiN in this VM: the VMPI device is there (${list}, virtio id 0x0029) but no driver is bound: load the VMPI guest driver (modprobe vmpi, or insmod vmpi.ko)`);
  }
  return new GuestStartError('no_device', 'no /dev/vmpiN in this VM: load the VMPI guest driver (insmod vmpi.ko) and give the VM a VMPI device');
}


export function startGuest(opts: GuestStartOptions): GuestServing {
  const log = opts.logger ?? rootLogger;
  const devices = opts.devices && opts.devices.length > 0 ? opts.devices : findVmpiDevices();
  if (devices.length === 0) throw noDeviceError(opts.sysRoot);
  const ports: GuestVmpiPort[] = [];
  const ipcps: ShimHvIpcp[] = [];
  let daemon: IpcDaemon | undefined;
  let normal: NormalIpcp | undefined;
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    daemon?.close();
    normal?.close('guest IPC daemon shutting down');
    for (const ipcp of ipcps) ipcp.close('guest IPC daemon shutting down');
    for (const port of ports) port.close();
  };
  try {
    for (const dev of devices) {
      const port = new GuestVmpiPort(dev);
      ports.push(port);
      const ipcp = new ShimHvIpcp({ port, role: 'guest', logger: log });
      ipcps.push(ipcp);
      port.on('down', (reason) => log.warn({ device: dev, dif: ipcp.difName, reason }, 'VMPI device gone; its flows are deallocated'));
      log.info({ device: dev, vmpiId: port.vmpiId, dif: ipcp.difName, maxSdu: port.maxSdu }, 'guest: device opened');
    }
    if (opts.normal) normal = createNormalIpcp(opts.normal, 'guest', ipcps, { logger: log });
    daemon = new IpcDaemon({ socketPath: opts.socketPath, logger: log });
    for (const ipcp of ipcps) daemon.addIpcp(ipcp);
    if (normal) daemon.addIpcp(normal);
    daemon.listen();
  } catch (e) {
    close();
    throw e;
  }
  return { ports, ipcps, normal, daemon, close };
}
