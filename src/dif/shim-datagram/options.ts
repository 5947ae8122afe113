/**
 * options.ts — the configuration both datagram shims (shim-udp, shim-eth) take alike and check
 * alike: the integer-option checker (a range and a default, the error the shim's own), the
 * timers and flow limits of the flow protocol (keepalive, allocation, retry, flows, waiting
 * requests: given to DatagramShimIpcp, ./ipcp.ts) and the receive-queue budgets, whose bounds
 * follow the shim's max SDU.
 */

export const DEFAULT_KEEPALIVE_MS = 1000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5000;
export const DEFAULT_ALLOCATE_TIMEOUT_MS = 10_000;
export const DEFAULT_RETRY_MS = 1000;

/** The options of DatagramLimits and DatagramRxQueues, as a shim's config gives them (all optional). */
export interface DatagramLimitOptions {
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  allocateTimeoutMs?: number;
  retryMs?: number;
  maxFlows?: number;
  maxPendingRequests?: number;
  rxQueueLimit?: number;
  rxQueueBytes?: number;
  rxQueueTotalBytes?: number;
}

/** The flow protocol's timers and limits, checked. */
export interface DatagramLimits {
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  allocateTimeoutMs: number;
  retryMs: number;
  maxFlows: number;
  maxPendingRequests: number;
}

/** The receive-queue budgets of every flow (DatagramFlow), checked. */
export interface DatagramRxQueues {
  rxQueueLimit: number;
  rxQueueBytes: number;
  rxQueueTotalBytes: number;
}

/** `v` (or `dflt` when not given), which must be an integer min..max. */
export type IntOption = (name: string, v: number | undefined, dflt: number, min: number, max: number) => number;

/** An IntOption that throws `bad("NAME must be an integer MIN..MAX, not V")` (the shim's own error). */
export function intOption(bad: (message: string) => Error): IntOption {
  return (name, v, dflt, min, max) => {
    const x = v ?? dflt;
    if (!Number.isInteger(x) || x < min || x > max) throw bad(`${name} must be an integer ${min}..${max}, not ${String(x)}`);
    return x;
  };
}

/** The timers and limits of `o`, or their defaults (the keepalive timeout at least 3 keepalive periods). */
export function datagramLimits(o: DatagramLimitOptions, int: IntOption): DatagramLimits {
  const keepaliveMs = int('keepaliveMs', o.keepaliveMs, DEFAULT_KEEPALIVE_MS, 10, 600_000);
  return {
    keepaliveMs,
    keepaliveTimeoutMs: int('keepaliveTimeoutMs', o.keepaliveTimeoutMs, Math.max(DEFAULT_KEEPALIVE_TIMEOUT_MS, 3 * keepaliveMs), 2 * keepaliveMs, 3_600_000),
    allocateTimeoutMs: int('allocateTimeoutMs', o.allocateTimeoutMs, DEFAULT_ALLOCATE_TIMEOUT_MS, 1, 2 ** 31 - 1),
    retryMs: int('retryMs', o.retryMs, DEFAULT_RETRY_MS, 10, 2 ** 31 - 1),
    maxFlows: int('maxFlows', o.maxFlows, 1024, 1, 1 << 20),
    maxPendingRequests: int('maxPendingRequests', o.maxPendingRequests, 64, 1, 1 << 16),
  };
}

/** The receive-queue budgets of `o` for SDUs up to `maxSdu`: a flow's queue holds at least 2, all flows' at least 4. */
export function datagramRxQueues(o: DatagramLimitOptions, int: IntOption, maxSdu: number): DatagramRxQueues {
  return {
    rxQueueLimit: int('rxQueueLimit', o.rxQueueLimit, 1024, 1, 1 << 20),
    rxQueueBytes: int('rxQueueBytes', o.rxQueueBytes, Math.max(4 << 20, 2 * maxSdu), 2 * maxSdu, 2 ** 31 - 1),
    rxQueueTotalBytes: int('rxQueueTotalBytes', o.rxQueueTotalBytes, Math.max(64 << 20, 4 * maxSdu), 4 * maxSdu, 2 ** 31 - 1),
  };
}
