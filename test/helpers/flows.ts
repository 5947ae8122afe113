/**
 * flows.ts — waiting on a Flow (api.ts) in tests: read a given number of SDUs within a time
 * limit, failing with how many arrived.
 */
import type { Flow } from '../../src/dif/api.js';

export async function readN(flow: Flow, n: number, ms: number): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  const end = Date.now() + ms;
  while (got.length < n) {
    const left = end - Date.now();
    if (left <= 0) throw new Error(`timed out after ${got.length}/${n} SDUs`);
    let timer: NodeJS.Timeout | undefined;
    const sdu = await Promise.race([flow.read(), new Promise<null>((r) => (timer = setTimeout(() => r(null), left)))]);
    clearTimeout(timer);
    if (sdu === null) throw new Error(`flow ended or timed out after ${got.length}/${n} SDUs`);
    got.push(sdu);
  }
  return got;
}
