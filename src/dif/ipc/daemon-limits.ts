/**
 * daemon-limits.ts — what the IPC daemon lets one user and all of them hold (IpcLimits, their
 * defaults and validation), and the daemon's counters with their metrics labels.
 */
import { DifError } from '../api.js';
import type { BridgeAbort } from './bridge.js';
import type { ConnCloseCause } from './conn.js';

/** What one user (SO_PEERCRED uid) and the daemon as a whole may hold. */
export interface IpcLimits {
  /** Sessions (connected applications) in all. */
  maxSessions: number;
  /** Sessions of one uid. */
  maxSessionsPerUid: number;
  /** Flows of one uid, allocated or being allocated (each holds a channel of a device). */
  maxFlowsPerUid: number;
  /** Registered names of one uid. */
  maxRegistrationsPerUid: number;
  /** An `allocate` asking for a longer timeout gets this one. */
  maxAllocateTimeoutMs: number;
  /** A session holding nothing (no registration, flow, request, allocation) and silent this long is closed. */
  idleTimeoutMs: number;
  /** Answers queued for one session, in bytes, past which its requests are no longer read (×4: closed). */
  outputHighWater: number;
  /** Uids the per-uid limits do not apply to (default none; the daemon-wide limit still does). */
  unlimitedUids: readonly number[];
}

export const DEFAULT_IPC_LIMITS: Readonly<IpcLimits> = Object.freeze({
  maxSessions: 256,
  maxSessionsPerUid: 64,
  maxFlowsPerUid: 256,
  maxRegistrationsPerUid: 64,
  maxAllocateTimeoutMs: 60_000,
  idleTimeoutMs: 300_000,
  outputHighWater: 256 * 1024,
  unlimitedUids: [],
});

/**
 * The memory of all flow rings of the daemon at most (memfd bytes: header and both directions,
 * ring.ts): past it new flows keep the socket data path. 256 MiB: 31 flows of the default 8 MiB + 4 KiB
 * (two 4 MiB directions; 127 when rings were 1 MiB).
 */
export const DEFAULT_MAX_RING_BYTES = 256 * 1024 * 1024;

/** Why a session ended (metrics label). */
export type SessionCloseCause = ConnCloseCause | 'idle';
export const SESSION_CLOSE_CAUSES: readonly SessionCloseCause[] = ['peer_closed', 'protocol_error', 'output_limit', 'internal_error', 'io_error', 'local', 'idle'];
/** Why a connection was refused at accept (metrics label). */
export type RefuseReason = 'max_sessions' | 'max_sessions_per_uid';
/** A per-uid limit hit by a request (metrics label). */
export type LimitKind = 'flows' | 'registrations';

export interface IpcDaemonStats {
  sessions: number;
  sessionsTotal: number;
  malformed: number;
  /** Sessions closed, by cause. */
  sessionsClosed: Record<SessionCloseCause, number>;
  /** Connections refused at accept, by reason. */
  refused: Record<RefuseReason, number>;
  /** Requests refused by a per-uid limit. */
  limitHits: Record<LimitKind, number>;
  /** accept(2) failures (EMFILE, ENFILE, …). */
  acceptErrors: number;
  /** Flows that could not be given to their application: no fd (socketpair failed). */
  flowFdFailures: number;
  /** Allocation timeouts shortened to limits.maxAllocateTimeoutMs. */
  timeoutsClamped: number;
  /** SDUs for applications dropped: larger than their flow socket's buffer. */
  sdusTooLarge: number;
  /** Flows a bridge ended itself, by why. */
  bridgeAborts: Record<BridgeAbort, number>;
  /** Exceptions contained (each closed one session or flow). */
  faults: number;
  /** Flow rings held now and their memfd bytes (bounded by DEFAULT_MAX_RING_BYTES). */
  ringFlows: number;
  ringBytes: number;
  /** Flows that asked for a ring and got the socket (the cap, or no memfd). */
  ringsRefused: number;
}

/** Check limits (all positive 31-bit integers, uids non-negative): a DifError 'invalid_argument' names the bad one. */
export function checkLimits(l: IpcLimits): IpcLimits {
  for (const k of ['maxSessions', 'maxSessionsPerUid', 'maxFlowsPerUid', 'maxRegistrationsPerUid', 'maxAllocateTimeoutMs', 'idleTimeoutMs', 'outputHighWater'] as const) {
    const v = l[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) throw new DifError('invalid_argument', `IPC daemon limit ${k} must be an integer 1..${2 ** 31 - 1}, not ${String(v)}`);
  }
  if (!Array.isArray(l.unlimitedUids) || !l.unlimitedUids.every((u) => Number.isInteger(u) && u >= 0)) throw new DifError('invalid_argument', 'IPC daemon limit unlimitedUids must be a list of uids');
  return l;
}
