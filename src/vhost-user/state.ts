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
  if (typeof j !== 'object' || j === null) throw new StateError('connection state is not an object', 'state_invalid');
  if (j.version !== 1) throw new StateError(`connection state version ${String(j.version)} is not supported (expected 1): this vmpi cannot resume it`, 'state_version');
  const bad = (what: string): never => {
    throw new StateError(`connection state: ${what}`, 'state_invalid');
  };
  const hex = (v: unknown, what: string): bigint => (typeof v === 'string' && /^0x[0-9a-f]{1,16}$/.test(v) ? BigInt(v) : bad(`${what} is not a hex u64`));
  const int = (v: unknown, what: string, max: number): number => (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= max ? (v as number) : bad(`${what} is not an integer in 0..${max}`));
  const fdOrNull = (v: unknown, what: string): number | null => (v === null ? null : Number.isInteger(v) ? (v as number) : bad(`${what} is not an fd or null`));
  if (!Array.isArray(j.memory) || !Array.isArray(j.memoryFds) || j.memory.length !== j.memoryFds.length) bad('memory and memoryFds must be arrays of the same length');
  if (!Array.isArray(j.vrings)) bad('vrings is not an array');
  const u64 = (v: unknown, what: string): number => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : bad(`${what} is not a non-negative integer`));
  return {
    owner: j.owner === true,
    ackedFeatures: hex(j.ackedFeatures, 'ackedFeatures'),
    protocolFeatures: hex(j.protocolFeatures, 'protocolFeatures'),
    status: int(j.status, 'status', 0xff),
    memory: j.memory.map((m, i) => ({
      guestPhysAddr: u64(m?.guestPhysAddr, `memory[${i}].guestPhysAddr`),
      size: u64(m?.size, `memory[${i}].size`),
      userAddr: u64(m?.userAddr, `memory[${i}].userAddr`),
      mmapOffset: u64(m?.mmapOffset, `memory[${i}].mmapOffset`),
    })),
    memoryFds: j.memoryFds.map((fd, i) => fdOrNull(fd, `memoryFds[${i}]`) ?? -1),
    vrings: j.vrings.map((v, i) => ({
      index: int(v?.index, `vrings[${i}].index`, 0xffff),
      size: int(v?.size, `vrings[${i}].size`, 32768),
      addr:
        v?.addr === null
          ? null
          : {
              descUser: u64(v?.addr?.descUser, `vrings[${i}].addr.descUser`),
              availUser: u64(v?.addr?.availUser, `vrings[${i}].addr.availUser`),
              usedUser: u64(v?.addr?.usedUser, `vrings[${i}].addr.usedUser`),
              logGuestAddr: u64(v?.addr?.logGuestAddr, `vrings[${i}].addr.logGuestAddr`),
              flags: int(v?.addr?.flags, `vrings[${i}].addr.flags`, 0xffffffff),
            },
      lastAvailIdx: int(v?.lastAvailIdx, `vrings[${i}].lastAvailIdx`, 0xffff),
      kickFd: fdOrNull(v?.kickFd, `vrings[${i}].kickFd`),
      callFd: fdOrNull(v?.callFd, `vrings[${i}].callFd`),
      errFd: fdOrNull(v?.errFd, `vrings[${i}].errFd`),
      started: v?.started === true,
      enabled: v?.enabled === true,
    })),
  };
}

/**
 * The fds a state holds, by role: `mem<i>` (the fd of memory region i), `kick<q>`, `call<q>`,
 * `err<q>`. The restart code stores each under a name and puts them back with `setStateFd` in a
 * new process, where the numbers differ: persisted state refers to roles, never to fd numbers.
 */
export function stateFds(s: ConnectionState): Map<string, number> {
  const out = new Map<string, number>();
  s.memoryFds.forEach((fd, i) => out.set(`mem${i}`, fd));
  for (const v of s.vrings) {
    if (v.kickFd !== null) out.set(`kick${v.index}`, v.kickFd);
    if (v.callFd !== null) out.set(`call${v.index}`, v.callFd);
    if (v.errFd !== null) out.set(`err${v.index}`, v.errFd);
  }
  return out;
}

/**
 * `j` with every fd field -1 (a null one stays null): for another process, which puts its own
 * fds back by role with `setStateFd` (the numbers here mean nothing there).
 */
export function withoutFds(j: ConnectionStateJSON): ConnectionStateJSON {
  return {
    ...j,
    memoryFds: j.memoryFds.map(() => -1),
    vrings: j.vrings.map((v) => ({ ...v, kickFd: v.kickFd === null ? null : -1, callFd: v.callFd === null ? null : -1, errFd: v.errFd === null ? null : -1 })),
  };
}

/** Put fd `fd` in the place `role` names (see stateFds); throws StateError for an unknown role. */
export function setStateFd(s: ConnectionState, role: string, fd: number): void {
  const m = /^(mem|kick|call|err)(\d+)$/.exec(role);
  const i = m ? Number(m[2]) : -1;
  if (m?.[1] === 'mem' && i < s.memory.length) {
    s.memoryFds[i] = fd;
    return;
  }
  const v = m && m[1] !== 'mem' ? s.vrings[i] : undefined;
  if (!v) throw new StateError(`no fd role "${role}" in this connection state (${s.memory.length} regions, ${s.vrings.length} queues)`, 'state_invalid');
  v[m![1] === 'kick' ? 'kickFd' : m![1] === 'call' ? 'callFd' : 'errFd'] = fd;
}

/** A persisted state that cannot be used: unknown version, or fields that do not add up. */
export class StateError extends Error {
  override name = 'StateError';
  constructor(
    message: string,
    readonly code: 'state_version' | 'state_invalid',
  ) {
    super(message);
  }
}
