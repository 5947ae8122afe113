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

/**
 * A channel opened as a file of its own (guest ports only): bound to the channel in the driver,
 * read and written by whoever holds the fd (one SDU per read/write), never by the port. The IPC
 * daemon passes such a file to the application of a flow, so the flow's SDUs cross no daemon.
 */
export interface ChannelFile {
  readonly channel: number;
  readonly fd: number;
  /**
   * End the binding for every holder of the file (the same open file description, so copies in
   * other processes too): the channel is free at once; SDUs already queued stay readable, then
   * reads and writes fail with ESHUTDOWN. Idempotent.
   */
  shutdown(): void;
  /** Close this fd (after shutdown(), or the channel stays bound while copies live). */
  close(): void;
  /** A new fd for the same open file (the caller owns it), e.g. to pass to another process. */
  dup(): number;
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
  /** Optional: open `channel` as a file of its own instead of bind() (see ChannelFile). */
  openChannelFile?(channel: number): ChannelFile;
}
