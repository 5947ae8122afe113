/**
 * mgmt-harness.ts — test helpers for the normal DIF's management parts: a seeded PRNG and a pair
 * of CDAP transports joined through the real codec, with per-message loss and latency on the
 * ManualClock, and a bounded pump that advances the clock until a promise settles.
 */
import { decodeCdap, encodeCdap, type CdapMessage } from '../../../src/dif/normal/cdap.js';
import type { ManualClock } from '../../../src/dif/normal/clock.js';
import type { CdapTransport } from '../../../src/dif/normal/enrollment.js';

import { mulberry32 as prng } from '../../helpers/rng.js';
export { prng };

export interface Link {
  readonly a: CdapTransport;
  readonly b: CdapTransport;
  /** The flow is gone: nothing more is delivered either way. */
  cut(): void;
  readonly counts: { sent: number; dropped: number; delivered: number };
  /** Every message sent, in order, with its direction. */
  readonly log: { dir: 'a→b' | 'b→a'; msg: CdapMessage }[];
}

export function link(clock: ManualClock, opts: { loss?: number; seed?: number; latencyMs?: number } = {}): Link {
  const rnd = prng(opts.seed ?? 1);
  const loss = opts.loss ?? 0;
  const latency = opts.latencyMs ?? 1;
  let cut = false;
  const counts = { sent: 0, dropped: 0, delivered: 0 };
  const log: Link['log'] = [];
  const handlers: { a?: (m: CdapMessage) => void; b?: (m: CdapMessage) => void } = {};
  const side = (me: 'a' | 'b'): CdapTransport => ({
    send(msg) {
      counts.sent++;
      log.push({ dir: me === 'a' ? 'a→b' : 'b→a', msg });
      const bytes = encodeCdap(msg);
      if (cut || rnd() < loss) {
        counts.dropped++;
        return;
      }
      clock.setTimer(latency, () => {
        const h = handlers[me === 'a' ? 'b' : 'a'];
        if (cut || !h) return;
        counts.delivered++;
        h(decodeCdap(bytes));
      });
    },
    onReceive(h) {
      handlers[me] = h;
    },
  });
  return { a: side('a'), b: side('b'), cut: () => void (cut = true), counts, log };
}

/** Advance `clock` in `stepMs` steps until `p` settles or `limitMs` of clock time has passed. */
export async function pump<T>(clock: ManualClock, p: Promise<T>, limitMs = 120_000, stepMs = 5): Promise<{ ok: true; value: T; at: number } | { ok: false; error: unknown; at: number } | { ok: 'pending'; at: number }> {
  let out: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
  p.then(
    (value) => (out = { ok: true, value }),
    (error: unknown) => (out = { ok: false, error }),
  );
  const start = clock.now();
  for (;;) {
    await new Promise<void>((r) => setImmediate(r));
    if (out) return { ...out, at: clock.now() - start };
    if (clock.now() - start >= limitMs) return { ok: 'pending', at: clock.now() - start };
    clock.advance(stepMs);
  }
}
