/**
 * sdu-batch.ts — SDUs (or PDUs) as one batch over one buffer, as an N-1 read or a port's batched
 * read hands them over (src/dif/sdu-batch.ts SduBatchBuffer).
 */
import { SduBatchBuffer } from '../../src/dif/sdu-batch.js';

/** `sdus` copied, in order, into one buffer, and a batch over it. */
export function batchOf(sdus: Uint8Array[]): SduBatchBuffer {
  const total = sdus.reduce((n, s) => n + s.byteLength, 0);
  const buf = new Uint8Array(total);
  const batch = new SduBatchBuffer(Math.max(1, sdus.length));
  batch.reset(buf);
  let at = 0;
  for (const s of sdus) {
    buf.set(s, at);
    batch.add(at, s.byteLength);
    at += s.byteLength;
  }
  return batch;
}
