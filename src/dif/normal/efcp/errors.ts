/**
 * errors.ts — the typed error of the normal DIF's EFCP: every failure a caller or a callback sees
 * carries a stable `code` and a message that says what went wrong and what to do.
 */
export type EfcpErrorCode =
  /** A connection option is out of range or inconsistent (the message names it). */
  | 'ERR_EFCP_CONFIG'
  /** write() of an SDU larger than the connection's max SDU. */
  | 'ERR_EFCP_SDU_TOO_LARGE'
  /** write() after close(). */
  | 'ERR_EFCP_CLOSED'
  /** write() after the connection failed (the `cause` is the failure). */
  | 'ERR_EFCP_FAILED'
  /** A PDU was retransmitted the maximum number of times without being acknowledged. */
  | 'ERR_EFCP_RTX_EXHAUSTED';

export class EfcpError extends Error {
  override name = 'EfcpError';
  constructor(
    readonly code: EfcpErrorCode,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
  }
}
