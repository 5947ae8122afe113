/**
 * flow-io.ts — the parts of the IPC API's Flow (api.ts) that every implementation derives the
 * same way from its own write() and read(): send(), a write() that waits for 'drain', and async
 * iteration until read() says the end; and the checks every write() makes first. Used by the
 * shim DIF's flows and the IPC client's flows.
 */
import { DifError, type Flow } from './api.js';

/** write() on a flow that is not allocated: 'flow_deallocated' (with the reason, if any). */
export function checkAllocated(flow: Flow): void {
  if (flow.state !== 'allocated') {
    const why = flow.deallocationReason;
    throw new DifError('flow_deallocated', `flow ${flow.portId} is ${flow.state}${why ? ` (${why})` : ''}: cannot write`);
  }
}

/** write() of something that is not an SDU of this flow: 'invalid_argument' or 'sdu_too_large'. */
export function checkSdu(flow: Flow, sdu: Uint8Array): void {
  if (!(sdu instanceof Uint8Array)) throw new DifError('invalid_argument', 'an SDU must be a Uint8Array');
  if (sdu.byteLength > flow.qos.maxSdu) throw new DifError('sdu_too_large', `SDU of ${sdu.byteLength} bytes exceeds the flow's max SDU of ${flow.qos.maxSdu} bytes`);
}

/** write() until it accepts `sdu`, waiting for 'drain' (or the flow's end) after each refusal. */
export async function sendSdu(flow: Flow, sdu: Uint8Array): Promise<void> {
  while (!flow.write(sdu)) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        flow.off('drain', done);
        flow.off('deallocated', done);
        resolve();
      };
      flow.on('drain', done);
      flow.on('deallocated', done);
    });
  }
}

/** What `next()` resolves with, until it resolves with null. */
export async function* untilNull<T>(next: () => Promise<T | null>): AsyncGenerator<T, void, undefined> {
  for (;;) {
    const v = await next();
    if (v === null) return;
    yield v;
  }
}
