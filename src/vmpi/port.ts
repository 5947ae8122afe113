/**
 * port.ts — the VMPI API as the layers above see it, the same on host and guest.
 *
 * Owns: the `VmpiPort` contract (the paper's VMPI API offered by VMPI-HL). On the host a
 * `VmpiDevice` (device.ts) is a port; in the guest a port is built over /dev/vmpiN (one open
 * file per bound channel). The shim DIF for hypervisors is written against this interface only,
 * so one code base serves both ends.
 */
import type { EventEmitter } from 'node:events';
import type { SduHandler, SendResult } from './device.js';

export interface VmpiPortEvents {
  up: [];
  down: [reason: string];
  drain: [];
}

export interface VmpiPort extends EventEmitter<VmpiPortEvents> {
  /** This link's VMPI-id (the address in the shim DIF): the host's id for the device. */
  readonly vmpiId: number;
  /** Largest SDU in bytes. */
  readonly maxSdu: number;
  /** True while the peer (guest driver, or host device) is reachable. */
  readonly isUp: boolean;
  /** Deliver SDUs arriving on `channel` to `handler` (bytes valid only during the call). */
  bind(channel: number, handler: SduHandler): void;
  unbind(channel: number): void;
  /** Send one SDU on `channel`: Sent, Queued (will be delivered in order) or Full (refused; wait for 'drain'). */
  send(channel: number, sdu: Uint8Array): SendResult;
}
