/**
 * protocol.ts — numbers of the vhost-user protocol (QEMU docs/interop/vhost-user.rst) and of
 * virtio 1.2 that the rest of the code names instead of writing literals.
 *
 * Owns: request codes and their names, header flags, protocol-feature bits, the virtio feature
 * bits a backend may offer, and the shape of a per-request rule (payload shape, fds allowed,
 * reply expected, protocol feature that gates it); the rules themselves live with their handlers
 * in the request registry (requests.ts). Nothing here does I/O.
 */

/** Front-end → back-end requests. */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type ReqCode = (typeof Req)[keyof typeof Req];

const REQ_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(Req).map(([k, v]) => [v, k]));
/** "SET_MEM_TABLE" for 5, "UNKNOWN(99)" for anything else. */
export function requestName(code: number): string {
  return REQ_NAMES.get(code) ?? `UNKNOWN(${code})`;
}

/** Header: u32 request, u32 flags, u32 size; then `size` payload bytes. */
export const HEADER_SIZE = 12;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** Largest payload we accept; the biggest legitimate one is SET_MEM_TABLE (8 + 8*32) or GET_CONFIG (12 + 256). */
export const MAX_PAYLOAD_SIZE = 4096;
/** SET_MEM_TABLE carries at most this many regions (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MEM_TABLE_MAX_REGIONS = 8;
/** Memory slots we advertise with GET_MAX_MEM_SLOTS when CONFIGURE_MEM_SLOTS is negotiated. */
export const MAX_MEM_SLOTS = 32;
/** VIRTIO config space limit carried in GET_CONFIG/SET_CONFIG. */
export const CONFIG_SPACE_MAX = 256;
/** Largest fd count on any request (SET_MEM_TABLE). */
export const MAX_FDS_PER_MESSAGE = MEM_TABLE_MAX_REGIONS;

/** In SET_VRING_KICK/CALL/ERR: low byte = queue index; this bit = "no fd, poll instead". */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtoFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Virtio feature bits that matter to a vhost-user backend. */
export const VirtioFeature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES: lives in the virtio feature word. */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
} as const;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

/** Payload layouts, named after the spec's "Message types" section. */
export type PayloadShape =
  | 'none'
  | 'u64'
  | 'vring-state'
  | 'vring-addr'
  | 'mem-table'
  | 'mem-region'
  | 'config';

export interface RequestRule {
  readonly payload: PayloadShape;
  /** Fds the request must carry (min) and may carry (max). */
  readonly minFds: number;
  readonly maxFds: number;
  /** True when the request always has a reply of its own (GET_*); REPLY_ACK does not apply then. */
  readonly hasReply: boolean;
  /** Protocol feature that must be negotiated before this request is valid. */
  readonly needs?: number;
}

/** Protocol features this backend implements; a device profile may offer a subset. */
export const SUPPORTED_PROTOCOL_FEATURES: bigint =
  bit(ProtoFeature.MQ) |
  bit(ProtoFeature.REPLY_ACK) |
  bit(ProtoFeature.CONFIG) |
  bit(ProtoFeature.RESET_DEVICE) |
  bit(ProtoFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtoFeature.STATUS);

/** Largest queue a split virtqueue may have (virtio 1.2 §2.7). */
export const MAX_QUEUE_SIZE = 32768;
/** VRING_DESC flags. */
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
/** avail.flags / used.flags. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;
/** SET_VRING_ADDR flags: bit 0 = VHOST_VRING_F_LOG. */
export const VHOST_VRING_F_LOG = 1;

/** virtio device status bits (SET_STATUS). */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;
