/**
 * host.ts — the hypervisor side: many VMPI devices served by one process.
 *
 * Owns: the set of configured VMPI devices, the uniqueness of VMPI-ids on this host (the paper:
 * "VMPI-id to be unique per OS"), and one vhost-user socket per device. A device object outlives
 * its connections: when QEMU (re)connects, the same VMPI-id and channel bindings serve the new
 * connection. Devices are independent: an error on one never reaches another.
 */
import { EventEmitter } from 'node:events';
import { logger as rootLogger, type Logger } from '../sys/log.js';
import type { Connection } from '../vhost-user/connection.js';
import { VhostUserServer } from '../vhost-user/server.js';
import { CARRIERS, type CarrierProfile } from './carrier.js';
import { VmpiDevice, VmpiDeviceError } from './device.js';

export interface DeviceSpec {
  /** vhost-user socket QEMU connects to; or an inherited listening fd (socket activation). */
  socketPath?: string;
  listenFd?: number;
  /** VMPI-id; allocated (lowest free) when omitted. */
  vmpiId?: number;
  maxSduLog2?: number;
  /** Carrier profile name (default "gpio"). */
  carrier?: string;
  /** Offer VMPI_F_RX_PACKED (default true; false for a before/after benchmark). */
  rxPacked?: boolean;
  /** Offer VMPI_F_TX_PACKED (default true; false for a before/after benchmark). */
  txPacked?: boolean;
  /** Accept guest memory that is not a shrink-sealed memfd (see src/vhost-user/memory.ts). */
  allowUnsealedMemory?: boolean;
  /** The socket file's owner and mode, set before it appears (ServerOptions.prepareSocket). */
  prepareSocket?: (name: string) => void;
  /** After each request changed a connection's state, before its reply (restart: persist now). */
  commit?: (conn: Connection, received: readonly number[]) => void;
}

export interface HostEvents {
  device: [device: VmpiDevice];
}

interface Entry {
  device: VmpiDevice;
  server: VhostUserServer;
}

export class VmpiHost extends EventEmitter<HostEvents> {
  private readonly entries = new Map<number, Entry>();
  private readonly log: Logger;

  constructor(logger: Logger = rootLogger) {
    super();
    this.log = logger;
  }

  get devices(): VmpiDevice[] {
    return [...this.entries.values()].map((e) => e.device);
  }

  device(vmpiId: number): VmpiDevice | undefined {
    return this.entries.get(vmpiId)?.device;
  }

  server(vmpiId: number): VhostUserServer | undefined {
    return this.entries.get(vmpiId)?.server;
  }

  /** Lowest VMPI-id not in use. */
  allocateId(): number {
    for (let id = 1; id <= 0xffff; id++) if (!this.entries.has(id)) return id;
    throw new VmpiDeviceError('all 65535 VMPI-ids on this host are in use');
  }

  /** Create a device and start listening on its socket. */
  addDevice(spec: DeviceSpec): VmpiDevice {
    const vmpiId = spec.vmpiId ?? this.allocateId();
    if (this.entries.has(vmpiId)) throw new VmpiDeviceError(`VMPI-id ${vmpiId} is already used by another device on this host`);
    let carrier: CarrierProfile | undefined;
    if (spec.carrier !== undefined) {
      carrier = CARRIERS.get(spec.carrier);
      if (!carrier) throw new VmpiDeviceError(`unknown carrier "${spec.carrier}"; known: ${[...CARRIERS.keys()].join(', ')}`);
    }
    const device = new VmpiDevice({ vmpiId, maxSduLog2: spec.maxSduLog2, carrier, rxPacked: spec.rxPacked, txPacked: spec.txPacked });
    const log = this.log.child({ vmpiId });
    const server = new VhostUserServer({
      path: spec.socketPath,
      listenFd: spec.listenFd,
      createDevice: () => device,
      maxConnections: 1,
      allowUnsealedMemory: spec.allowUnsealedMemory,
      prepareSocket: spec.prepareSocket,
      commit: spec.commit,
      logger: log,
    });
    server.listen();
    device.on('up', () => log.info('guest driver up'));
    device.on('down', (reason) => log.info({ reason }, 'guest driver down'));
    this.entries.set(vmpiId, { device, server });
    this.emit('device', device);
    return device;
  }

  removeDevice(vmpiId: number): void {
    const e = this.entries.get(vmpiId);
    if (!e) return;
    this.entries.delete(vmpiId);
    e.server.close();
  }

  close(): void {
    for (const id of [...this.entries.keys()]) this.removeDevice(id);
  }

  /** Hand over to a new process: drop everything without closing a connection or a socket file. */
  abandon(): void {
    for (const e of this.entries.values()) e.server.abandon();
    this.entries.clear();
  }
}
