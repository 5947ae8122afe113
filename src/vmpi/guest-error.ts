/**
 * guest-error.ts — the errors of the VMPI port in the guest (guest-port.ts) and how a system
 * error from /dev/vmpiN becomes one.
 *
 * Owns: `GuestPortError` and its codes, and the errno → code mapping with the message that says
 * what to do (load the driver, check permissions, free the channel).
 */
import { errnoCode } from '../sys/fd.js';
import { CodedError } from '../sys/coded-error.js';

export type GuestPortErrorCode =
  | 'device_missing' // no /dev/vmpiN: driver not loaded, or no such device
  | 'device_gone' // the device was removed (ENODEV)
  | 'access' // permission denied on /dev/vmpiN
  | 'channel_busy' // another open file (another process?) holds the channel
  | 'bad_channel'
  | 'oversize'
  | 'closed' // this port was closed
  | 'io'; // any other system error (cause says which)

export class GuestPortError extends CodedError<GuestPortErrorCode> {
  override name = 'GuestPortError';
}

/** `e` (thrown while trying to `what` the device at `path`) as a GuestPortError; one passes through. */
export function guestPortError(e: unknown, path: string, what: string, channel?: number): GuestPortError {
  if (e instanceof GuestPortError) return e;
  const code = errnoCode(e);
  const msg = e instanceof Error ? e.message : String(e);
  switch (code) {
    case 'ENOENT':
      return new GuestPortError(
        'device_missing',
        `cannot ${what} ${path}: no such device. Is the VMPI guest driver loaded (insmod vmpi.ko) and does the VM have a VMPI device?`,
        { cause: e },
      );
    case 'ENODEV':
    case 'ENXIO':
      return new GuestPortError('device_gone', `cannot ${what} ${path}: the VMPI device is gone (${code})`, { cause: e });
    case 'EACCES':
    case 'EPERM':
      return new GuestPortError('access', `cannot ${what} ${path}: permission denied`, { cause: e });
    case 'EBUSY':
      return new GuestPortError('channel_busy', `channel ${channel} of ${path} is already bound by another open file (another process?)`, { cause: e });
    default:
      return new GuestPortError('io', `cannot ${what} ${path}: ${msg}`, { cause: e });
  }
}
