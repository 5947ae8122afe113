/**
 * coded-error.ts — the base of this project's typed errors: an Error with a `code` a caller can
 * branch on (and tests assert), a message that says what was wrong and what to do, and an
 * optional cause. Each module declares its own subclass with its own `name` and code union, so
 * `instanceof` still tells who failed; this class only owns the common constructor.
 */
export class CodedError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
  }
}
