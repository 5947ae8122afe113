/**
 * efcp-sim.ts — test helper (not a test): two EFCP connections joined by a simulated N-1 channel
 * driven by a ManualClock: seeded loss, duplication and reordering (random delay), an optional
 * filter (e.g. "lose every control PDU until t"), and a writer that numbers its SDUs so the
 * reader can check order, loss and duplication.
 */
import { ManualClock } from '../../../src/dif/normal/clock.js';
import { EfcpConnection, type EfcpOptions } from '../../../src/dif/normal/efcp/efcp.js';
import type { EfcpError } from '../../../src/dif/normal/efcp/errors.js';
import type { QosCube } from '../../../src/dif/normal/efcp/qos.js';
import { decodePci, isCtrlType, newPci, type Pci } from '../../../src/dif/normal/pci.js';

import { mulberry32 as rng } from '../../helpers/rng.js';
export { rng };

export interface ChannelSpec {
  loss?: number;
  dup?: number;
  /** Base one-way delay and extra random delay (ms): jitter > 0 reorders. */
  delayMs?: number;
  jitterMs?: number;
  /** Return true to lose this PDU (on top of random loss). */
  drop?: (pdu: Uint8Array, pci: Pci, now: number, dir: 'ab' | 'ba') => boolean;
}

export interface PairSpec {
  cube: QosCube;
  seed: number;
  channel?: ChannelSpec;
  /** Options for both ends (A sends, B receives; both run full EFCP). */
  opts?: Partial<EfcpOptions>;
  optsA?: Partial<EfcpOptions>;
  optsB?: Partial<EfcpOptions>;
  /** B's deliver: return false to pause (the sim records every SDU first). */
  deliverB?: (sdu: Uint8Array) => boolean | void;
}

export interface Pair {
  clock: ManualClock;
  a: EfcpConnection;
  b: EfcpConnection;
  /** Indices of the SDUs B delivered, in delivery order. */
  gotB: number[];
  failures: EfcpError[];
  drains: number;
  sent: { ab: number; ba: number; lost: number; dup: number };
}

export function sdu(i: number, size: number): Uint8Array {
  const b = new Uint8Array(Math.max(4, size));
  new DataView(b.buffer).setUint32(0, i);
  for (let k = 4; k < b.length; k++) b[k] = (i + k) & 0xff;
  return b;
}

export function sduIndex(b: Uint8Array): number {
  const i = new DataView(b.buffer, b.byteOffset, b.length).getUint32(0);
  for (let k = 4; k < b.length; k++) if (b[k] !== ((i + k) & 0xff)) throw new Error(`SDU ${i} corrupted at byte ${k}`);
  return i;
}

export function makePair(spec: PairSpec): Pair {
  const clock = new ManualClock();
  const r = rng(spec.seed);
  const ch = spec.channel ?? {};
  const pair = { clock, gotB: [] as number[], failures: [] as EfcpError[], drains: 0, sent: { ab: 0, ba: 0, lost: 0, dup: 0 } } as Pair;
  const pci = newPci();
  const link = (dir: 'ab' | 'ba') => (pdu: Uint8Array): boolean => {
    pair.sent[dir]++;
    decodePci(pdu, pci);
    if (ch.drop?.(pdu, pci, clock.now(), dir) || r() < (ch.loss ?? 0)) {
      pair.sent.lost++;
      return true;
    }
    const copies = r() < (ch.dup ?? 0) ? 2 : 1;
    if (copies === 2) pair.sent.dup++;
    for (let c = 0; c < copies; c++) {
      const copy = pdu.slice();
      const delay = (ch.delayMs ?? 1) + Math.floor(r() * ((ch.jitterMs ?? 0) + 1));
      clock.setTimer(delay, () => {
        const p = newPci();
        decodePci(copy, p);
        (dir === 'ab' ? pair.b : pair.a).receive(copy, p);
      });
    }
    return true;
  };
  const base = { cube: spec.cube, clock, qosId: spec.cube.id, ...spec.opts };
  pair.a = new EfcpConnection({
    ...base,
    localAddr: 1,
    remoteAddr: 2,
    localCep: 10,
    remoteCep: 20,
    sendPdu: link('ab'),
    deliver: () => {},
    onFail: (e) => pair.failures.push(e),
    onDrain: () => pair.drains++,
    ...spec.optsA,
  });
  pair.b = new EfcpConnection({
    ...base,
    localAddr: 2,
    remoteAddr: 1,
    localCep: 20,
    remoteCep: 10,
    sendPdu: link('ba'),
    deliver: (s) => {
      pair.gotB.push(sduIndex(s));
      return spec.deliverB?.(s);
    },
    onFail: (e) => pair.failures.push(e),
    ...spec.optsB,
  });
  return pair;
}

export function isCtrl(pci: Pci): boolean {
  return isCtrlType(pci.type);
}

export interface RunResult {
  written: number;
  refused: number;
  elapsedMs: number;
}

/**
 * Write `n` SDUs from A as fast as A takes them (retrying after onDrain), advancing the clock in
 * `stepMs` steps until `done()` or `maxMs` of simulated time. `each` runs after every step.
 */
export function run(pair: Pair, n: number, opts: { size?: (i: number) => number; maxMs?: number; stepMs?: number; perStep?: number; done?: () => boolean; each?: () => void } = {}): RunResult {
  let next = 0;
  let refused = 0;
  const size = opts.size ?? ((i: number) => 4 + (i % 97));
  const done = opts.done ?? (() => pair.gotB.length >= n);
  const start = pair.clock.now();
  const maxMs = opts.maxMs ?? 600_000;
  let waitDrain = -1; // drains count at the refusal; write again only after onDrain fired
  const fill = () => {
    if (waitDrain >= 0 && pair.drains === waitDrain) return;
    waitDrain = -1;
    let k = 0;
    while (next < n && pair.a.state === 'open' && k++ < (opts.perStep ?? Infinity)) {
      if (!pair.a.write(sdu(next, size(next)))) {
        refused++;
        waitDrain = pair.drains;
        return;
      }
      next++;
    }
  };
  while (pair.clock.now() - start < maxMs) {
    fill();
    if (done() || pair.a.state !== 'open') break;
    pair.clock.advance(opts.stepMs ?? 1);
    opts.each?.();
  }
  return { written: next, refused, elapsedMs: pair.clock.now() - start };
}
