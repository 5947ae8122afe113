/**
 * notify.ts — systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram of
 * newline-separated `KEY=value` assignments to the socket named by $NOTIFY_SOCKET, sent by the
 * addon (Node has no Unix datagram sockets).
 *
 * Owns: when a message is sent (only when $NOTIFY_SOCKET is set: under `Type=notify`, or a test's
 * own socket), its format, and what a failure means (logged by the caller, never fatal: a service
 * manager that stopped listening must not take the devices down). The restart work will send fds
 * with FDSTORE=1 through the same function.
 */
import { native } from '../sys/native.js';
import { CodedError } from '../sys/coded-error.js';

/** A message systemd would refuse or misread; `code` names the rule it broke. */
export class NotifyError extends CodedError<'notify_fdname'> {
  override name = 'NotifyError';
}

/**
 * systemd's rule for FDNAME (fdname_is_valid): 1..255 printable ASCII characters, no ':' (':'
 * separates the names in $LISTEN_FDNAMES). systemd ignores a bad name with a warning in its own
 * journal and stores the fds under the default name "stored", where a restarted process looking
 * them up by name would not find them: refuse it here instead.
 */
export function checkFdName(name: string): void {
  if (name.length < 1 || name.length > 255 || !/^[\x20-\x7e]+$/.test(name) || name.includes(':')) {
    throw new NotifyError('notify_fdname', `sd_notify: FDNAME "${name.slice(0, 300)}" is not a valid fd name: use 1..255 printable ASCII characters without ':'`);
  }
}

export interface NotifyOptions {
  env?: NodeJS.ProcessEnv;
  /** fds to pass with the message (SCM_RIGHTS), e.g. with FDSTORE=1. */
  fds?: number[];
}

/** The notify socket path ($NOTIFY_SOCKET: an absolute path or '@abstract'), or undefined. */
export function notifySocket(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const p = env.NOTIFY_SOCKET;
  if (p === undefined || p === '') return undefined;
  return p.startsWith('/') || p.startsWith('@') ? p : undefined;
}

/**
 * Send `fields` (e.g. { READY: '1', STATUS: 'serving 2 devices' }) to the service manager.
 * Returns false when there is no notify socket; throws the system error when sending fails.
 * Values may not contain a newline (that would start another assignment); FDNAME must be a valid
 * fd name (NotifyError, code notify_fdname, even without a notify socket).
 */
export function sdNotify(fields: Record<string, string>, opts: NotifyOptions = {}): boolean {
  if (fields.FDNAME !== undefined) checkFdName(fields.FDNAME);
  const path = notifySocket(opts.env);
  if (path === undefined) return false;
  const lines: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) throw new TypeError(`sd_notify: bad field name "${k}"`);
    if (v.includes('\n')) throw new TypeError(`sd_notify: the value of ${k} contains a newline`);
    lines.push(`${k}=${v}`);
  }
  const buf = Buffer.from(lines.join('\n') + '\n');
  native.sendDgramUnix(path, buf, 0, buf.length, opts.fds && opts.fds.length > 0 ? opts.fds : null);
  return true;
}

/**
 * Tell the service manager about a state change (READY=1 once every socket listens, STOPPING=1 at
 * shutdown), logging instead of throwing: a notify failure never stops serving.
 */
export function notifyState(log: { warn(obj: object, msg: string): void }, fields: Record<string, string>, opts: NotifyOptions = {}): void {
  try {
    sdNotify(fields, opts);
  } catch (e) {
    log.warn({ err: (e as Error).message, socket: notifySocket(opts.env) }, 'could not notify the service manager (NOTIFY_SOCKET)');
  }
}
