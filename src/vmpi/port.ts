/**
 * port.ts — the VMPI API as the layers above see it, the same on host and guest.
 *
 * Owns: the `VmpiPort` contract (the paper's VMPI API offered by VMPI-HL). On the host a
 * `VmpiDevice` (device.ts) is a port; in the guest a port is built over /dev/vmpiN (one open
 * file per bound channel). The shim DIF for hypervisors is written against this interface only,
 * so one code base serves both ends.
 *
 * Also owns what both ends share with their users: the SendResult outcomes, the handler type, the
 * channel id range and the control channel. This file imports nothing concrete, so the layers
 * above can depend on the contract without loading either implementation.
 */
import type { SduSpans } from '../sys/sdu-list.js';
import type { EventEmitter } from 'node:events';

/** The VMPI channel that carries the shim DIF's control messages. */
export const CONTROL_CHANNEL = 0;
/** Highest VMPI channel id (channel ids are u32 on the wire and in the driver). */
export const MAX_CHANNEL = 0xffffffff;

/** True for a valid VMPI channel id (an integer 0..MAX_CHANNEL). */
export function isChannelId(channel: number): boolean {
  return Number.isInteger(channel) && channel >= 0 && channel <= MAX_CHANNEL;
}

/** The message both ports give for a channel id that is not a u32. */
export function badChannelMessage(channel: number): string {
  return `channel ${channel} is not a u32 channel id`;
}

export const enum SendResult {
  /** Written into the peer's ring (a guest rx buffer on the host, the tx ring in the guest). */
  Sent = 0,
  /** Copied into the backlog; it will reach the peer in order. */
  Queued = 1,
  /** Refused: the backlog is full. Nothing was kept; wait for 'drain' and send again. */
  Full = 2,
}

/** Receives one SDU. The bytes are valid only during the call: copy them to keep them. */
export type SduHandler = (sdu: Uint8Array, channel: number) => void;

/**
 * Many SDUs of one channel received together (a packed tx chain's run of records of that channel
 * on the host; a batched read in the guest): SDU i is buffer[offset(i), offset(i) + length(i)), in
 * arrival order. The same type as the DIF's SduBatch (dif/api.ts; both sys/sdu-list.ts SduSpans), so a shim IPC process hands
 * it to its flow's deliverBatch() as it is. Valid only during the call; the object is reused.
 */
export type PortSduBatch = SduSpans;

/** Receives the SDUs of one channel received together (valid only during the call). */
export type SduBatchHandler = (batch: PortSduBatch, channel: number) => void;

/** SDUs and bytes moved in one direction. */
export interface DirectionStats {
  sdus: number;
  bytes: number;
}

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
  /**
   * Optional: like bind(), but SDUs of `channel` that arrive together (consecutive records of one
   * packed chain, one batched read) come in one call. Replaces a bind() of the channel and the
   * other way round; unbind() ends either. A port without it: use bind().
   */
  bindBatch?(channel: number, handler: SduBatchHandler): void;
  unbind(channel: number): void;
  /** Send one SDU on `channel`: Sent, Queued (will be delivered in order) or Full (refused; wait for 'drain'). */
  send(channel: number, sdu: Uint8Array): SendResult;
  /** Optional: open `channel` as a file of its own instead of bind() (see ChannelFile). */
  openChannelFile?(channel: number): ChannelFile;
}
