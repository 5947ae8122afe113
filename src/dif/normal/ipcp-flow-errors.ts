/**
 * ipcp-flow-errors.ts — how the application flows of a normal IPC process (ipcp-flows.ts) word
 * a failed allocation: the mapping of flow allocator failures (flow-alloc.ts) to the IPC API's
 * DifError codes, and the peer reason of a name nobody registered.
 */
import { DifError } from '../api.js';
import { formatAppName, type AppName } from '../naming.js';
import { FlowAllocError } from './flow-alloc.js';

export const REASON_UNKNOWN_APPLICATION = 'unknown application';

/** The DifError an allocation to `dst` fails with, for what the flow allocator threw. */
export function faError(e: unknown, dst: AppName): DifError {
  if (e instanceof DifError) return e;
  if (!(e instanceof FlowAllocError)) return new DifError('rejected', `allocation of a flow to ${formatAppName(dst)} failed: ${(e as Error)?.message ?? String(e)}`);
  switch (e.code) {
    case 'ERR_FA_NO_SUCH_APP':
      return new DifError('rejected', e.message, { peerReason: REASON_UNKNOWN_APPLICATION });
    case 'ERR_FA_REJECTED':
      return new DifError('rejected', e.message, { peerReason: e.peerReason ?? e.message });
    case 'ERR_FA_TIMEOUT':
      return new DifError('timeout', e.message);
    case 'ERR_FA_UNREACHABLE':
    case 'ERR_FA_NO_ADDRESS':
      return new DifError('port_down', e.message);
    default:
      return new DifError('no_free_channel', e.message);
  }
}
