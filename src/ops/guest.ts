/**
 * guest.ts — start and stop what `vmpi guest` runs inside a VM: one GuestVmpiPort per
 * /dev/vmpiN, a guest-role shim IPC process for hypervisors on each (DIF `hv.vmpi-<VMPI-id>`,
 * the same code the host runs), and the IPC daemon that offers them to the VM's applications
 * on a Unix socket. The daemon hands each flow's application the driver file bound to the
 * flow's channel (src/dif/ipc/datapath.ts), so SDUs go from the application straight to the
 * driver.
 *
 * Owns: finding the devices, the start-up order (every port first, then the socket, so a failure
 * leaves no socket behind) and the shutdown.
 */
import { readdirSync } from 'node:fs';
import { logger as rootLogger, type Logger } from '../log.js';
import { ShimHvIpcp } from '../dif/shim-hv/ipcp.js';
import { IpcDaemon } from '../dif/ipc/daemon.js';
import { GuestVmpiPort } from '../vmpi/guest-port.js';

export interface GuestServing {
  readonly ports: readonly GuestVmpiPort[];
  readonly ipcps: readonly ShimHvIpcp[];
  readonly daemon: IpcDaemon;
  /** Close the daemon (removing its socket), the IPC processes and the ports. Idempotent. */
  close(): void;
}

export interface GuestStartOptions {
  /** Character devices to serve; default every /dev/vmpiN present. */
  devices?: string[];
  socketPath: string;
  logger?: Logger;
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

export function startGuest(opts: GuestStartOptions): GuestServing {
  const log = opts.logger ?? rootLogger;
  const devices = opts.devices && opts.devices.length > 0 ? opts.devices : findVmpiDevices();
  if (devices.length === 0) throw new Error('no /dev/vmpiN in this VM: load the VMPI guest driver (insmod vmpi.ko) and give the VM a VMPI device');
  const ports: GuestVmpiPort[] = [];
  const ipcps: ShimHvIpcp[] = [];
  let daemon: IpcDaemon | undefined;
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    daemon?.close();
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
    daemon = new IpcDaemon({ socketPath: opts.socketPath, logger: log });
    for (const ipcp of ipcps) daemon.addIpcp(ipcp);
    daemon.listen();
  } catch (e) {
    close();
    throw e;
  }
  return { ports, ipcps, daemon, close };
}
