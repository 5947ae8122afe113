/**
 * seq.ts — serial-number arithmetic (RFC 1982 style) for the normal DIF's 32-bit sequence
 * numbers: data PDUs, control PDUs and window edges all wrap at 2^32.
 *
 * Owns: the one definition of "before" used by every sequence comparison in EFCP: a is before b
 * when (int32)(a − b) < 0. It is well defined while the two numbers are less than 2^31 apart, which
 * every window here is (credit and queue bounds are far below that). rlite compares with plain
 * < and > and IRATI has a FIXME for rollover; a flow that runs long enough to wrap breaks there.
 */

/** Largest distance two compared sequence numbers may be apart (exclusive). */
export const SEQ_HALF = 0x80000000;

/** a + n, mod 2^32 (n may be negative). */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** The signed distance a − b in the serial space: > 0 when a is after b. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** The later of two sequence numbers. */
export function seqMax(a: number, b: number): number {
  return ((a - b) | 0) >= 0 ? a : b;
}

/** The earlier of two sequence numbers. */
export function seqMin(a: number, b: number): number {
  return ((a - b) | 0) <= 0 ? a : b;
}
