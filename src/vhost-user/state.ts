/**
 * state.ts — one connection's negotiated vhost-user state, in one explicit, serialisable place.
 *
 * Owns: the data a restarted server needs to resume a live front-end without renegotiation
 * (features, memory table, ring sizes/addresses/indices, eventfd numbers). The connection mutates
 * it; everything derived from it (mappings, SplitVirtqueue objects, watchers) is rebuilt from it.
 * `toJSON`/`fromJSON` turn it into plain JSON (bigints as hex strings); fd numbers are only valid
 * together with the fds themselves (kept by systemd's fd store or an fd-keeper).
 */
import type { MemRegionDesc } from './messages.js';

export interface VringConfig {
  index: number;
  /** Queue size from SET_VRING_NUM (0 = not set). */
  size: number;
  /** Ring addresses in front-end virtual space (SET_VRING_ADDR); null until set. */
  addr: { descUser: number; availUser: number; usedUser: number; logGuestAddr: number; flags: number } | null;
  /** Next avail index to consume: SET_VRING_BASE, then advanced while running. */
  lastAvailIdx: number;
  kickFd: number | null;
  callFd: number | null;
  errFd: number | null;
  /** Started = kick fd received and GET_VRING_BASE not yet called. */
  started: boolean;
  /** SET_VRING_ENABLE (implicitly true when protocol features were not negotiated). */
  enabled: boolean;
}

export interface ConnectionState {
  owner: boolean;
  /** Virtio features acked by SET_FEATURES. */
  ackedFeatures: bigint;
  /** Protocol features acked by SET_PROTOCOL_FEATURES. */
  protocolFeatures: bigint;
  /** Device status from SET_STATUS. */
  status: number;
  memory: MemRegionDesc[];
  memoryFds: number[];
  vrings: VringConfig[];
}

export function initialVring(index: number): VringConfig {
  return { index, size: 0, addr: null, lastAvailIdx: 0, kickFd: null, callFd: null, errFd: null, started: false, enabled: false };
}

export function initialState(numQueues: number): ConnectionState {
  return {
    owner: false,
    ackedFeatures: 0n,
    protocolFeatures: 0n,
    status: 0,
    memory: [],
    memoryFds: [],
    vrings: Array.from({ length: numQueues }, (_, i) => initialVring(i)),
  };
}

export interface ConnectionStateJSON {
  version: 1;
  owner: boolean;
  ackedFeatures: string;
  protocolFeatures: string;
  status: number;
  memory: MemRegionDesc[];
  memoryFds: number[];
  vrings: VringConfig[];
}

export function stateToJSON(s: ConnectionState): ConnectionStateJSON {
  return {
    version: 1,
    owner: s.owner,
    ackedFeatures: '0x' + s.ackedFeatures.toString(16),
    protocolFeatures: '0x' + s.protocolFeatures.toString(16),
    status: s.status,
    memory: s.memory.map((m) => ({ ...m })),
    memoryFds: [...s.memoryFds],
    vrings: s.vrings.map((v) => ({ ...v, addr: v.addr ? { ...v.addr } : null })),
  };
}

export function stateFromJSON(j: ConnectionStateJSON): ConnectionState {
  if (j.version !== 1) throw new Error(`connection state version ${String(j.version)} is not supported (expected 1)`);
  return {
    owner: j.owner,
    ackedFeatures: BigInt(j.ackedFeatures),
    protocolFeatures: BigInt(j.protocolFeatures),
    status: j.status,
    memory: j.memory.map((m) => ({ ...m })),
    memoryFds: [...j.memoryFds],
    vrings: j.vrings.map((v) => ({ ...v, addr: v.addr ? { ...v.addr } : null })),
  };
}
