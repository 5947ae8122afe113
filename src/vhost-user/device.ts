/**
 * device.ts — what a virtio device implementation gives the vhost-user layer, and gets from it.
 *
 * Owns: the VhostUserDevice contract. The connection (connection.ts and its parts) owns the
 * protocol and the rings' plumbing (memory, eventfds); a device owns what travels in the rings. Calls go one way:
 * the connection tells the device about queues and kicks; the device moves buffers through the
 * `ReadyQueue` it was handed and signals the driver with `notify()`.
 */
import type { SplitVirtqueue } from './virtqueue.js';

/** A started and enabled queue, handed to the device. */
export interface ReadyQueue {
  readonly index: number;
  readonly vq: SplitVirtqueue;
  /** Signal the driver (call eventfd) if the used entries published since the last call need it; true if signalled. */
  notify(): boolean;
  /** Report that the driver broke this queue (already marked broken); signals the error eventfd. */
  fail(err: Error): void;
  /**
   * Run `fn` on a later turn of the event loop (setImmediate), as the connection runs a kick: a
   * queue-scoped error it throws (QueueError, MemoryAccessError; errors.ts) breaks its queue,
   * anything else closes the connection; never the process. Dropped if the queue has stopped by then. Devices use this
   * instead of their own timers for work they yield.
   */
  defer(fn: () => void): void;
}

/** What `VhostUserDevice.handleRequest` did: not handled (false), or handled, with a reply of its own or none. */
export type DeviceRequestResult = false | { reply?: Uint8Array };

export interface VhostUserDevice {
  /** Short name for logs and metrics, e.g. "vmpi-7". */
  readonly name: string;
  readonly numQueues: number;
  /** Largest queue size SET_VRING_NUM may ask for (power of two). */
  readonly maxQueueSize: number;
  /** Virtio feature bits offered to the driver (VHOST_USER_F_PROTOCOL_FEATURES is added by the connection). */
  readonly features: bigint;
  /** Protocol features offered; intersected with what the connection implements. */
  readonly protocolFeatures: bigint;
  /** GET_CONFIG: `size` bytes of device config from `offset` (caller checked the range is within 256). */
  getConfig(offset: number, size: number): Uint8Array;
  /** SET_CONFIG; throw ProtocolError when the config is read-only. */
  setConfig(offset: number, data: Uint8Array): void;
  /** Features the driver accepted (SET_FEATURES). */
  featuresAcked(features: bigint): void;
  /** A queue is started and enabled; the device may use it until `queueStopped`. */
  queueReady(q: ReadyQueue): void;
  /** The queue stopped (GET_VRING_BASE, disable, reset, memory change, disconnect). */
  queueStopped(index: number): void;
  /** The driver kicked a ready queue. */
  kicked(index: number): void;
  /** The device was reset (RESET_DEVICE, RESET_OWNER, SET_STATUS 0) or the front-end disconnected. */
  reset(reason: string): void;
  /**
   * Optional: a request the connection does not implement (a device-specific one). Return false
   * when the device does not know it either (refused as unsupported), or `{ reply }` when handled:
   * with `reply` the payload of its own reply, without it REPLY_ACK applies. Fds the device keeps
   * it removes from `fds`; the connection closes the rest. Throw a VhostUserError to refuse it
   * (ProtocolError: the request is refused; its scope decides, see errors.ts).
   */
  handleRequest?(request: number, payload: Uint8Array, fds: number[]): DeviceRequestResult;
}
