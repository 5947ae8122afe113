/**
 * cep-alloc.ts — connection-endpoint ids of one normal IPC process, never handed out again while
 * PDUs of the flow that last used them can still arrive.
 *
 * Owns: the id range, the ids in use, and the quarantine: a released id waits `quarantineMs`
 * (choose ≥ 2 × maximum PDU lifetime + the peer's retransmission span) before it is free again.
 * IRATI's normal DIF over shim-hv broke on rapid flow create/teardown because a new flow got the
 * CEP-id of the one just torn down and received its late PDUs (IRATI #491). Ids are also handed
 * out round-robin, so even a free id is the least recently used one. Bounded: in use plus
 * quarantined never exceeds the range; beyond that `allocate` throws ERR_FA_NO_CEP.
 */
import type { Clock } from './clock.js';

export const DEFAULT_CEP_QUARANTINE_MS = 10_000;

export class CepError extends Error {
  override name = 'CepError';
  readonly code = 'ERR_FA_NO_CEP';
}

export interface CepAllocatorOptions {
  readonly clock: Clock;
  readonly quarantineMs?: number;
  /** Id range, inclusive (default 1..65535; 0 means "no CEP"). */
  readonly first?: number;
  readonly last?: number;
}

export class CepAllocator {
  readonly stats = { allocated: 0, released: 0, exhausted: 0, quarantineSkips: 0 };
  private readonly inUse = new Set<number>();
  /** Released ids, oldest first, with the time they become free (constant quarantine: FIFO order). */
  private readonly quarantine: { id: number; until: number }[] = [];
  private readonly quarantined = new Set<number>();
  private cursor: number;
  private readonly first: number;
  private readonly last: number;
  readonly quarantineMs: number;

  constructor(private readonly opts: CepAllocatorOptions) {
    this.first = opts.first ?? 1;
    this.last = opts.last ?? 0xffff;
    if (!(Number.isInteger(this.first) && Number.isInteger(this.last) && this.first >= 1 && this.last >= this.first && this.last <= 0xffffffff)) {
      throw new RangeError(`CEP-id range ${this.first}..${this.last} is not a range of u32 ids above 0`);
    }
    this.quarantineMs = opts.quarantineMs ?? DEFAULT_CEP_QUARANTINE_MS;
    this.cursor = this.first;
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  get used(): number {
    return this.inUse.size;
  }

  /** A fresh id: not in use and not quarantined. Throws CepError when none is. */
  allocate(): number {
    this.expire();
    if (this.inUse.size + this.quarantined.size >= this.size) {
      this.stats.exhausted++;
      throw new CepError(`no CEP-id free: ${this.inUse.size} in use and ${this.quarantined.size} in quarantine (${this.quarantineMs} ms) of ${this.size}; release flows or wait`);
    }
    for (;;) {
      const id = this.cursor;
      this.cursor = id >= this.last ? this.first : id + 1;
      if (this.inUse.has(id)) continue;
      if (this.quarantined.has(id)) {
        this.stats.quarantineSkips++;
        continue;
      }
      this.inUse.add(id);
      this.stats.allocated++;
      return id;
    }
  }

  /** The flow using `id` ended: the id rests in quarantine. Unknown ids are ignored. */
  release(id: number): void {
    if (!this.inUse.delete(id)) return;
    this.stats.released++;
    this.quarantined.add(id);
    this.quarantine.push({ id, until: this.opts.clock.now() + this.quarantineMs });
  }

  isInUse(id: number): boolean {
    return this.inUse.has(id);
  }

  isQuarantined(id: number): boolean {
    this.expire();
    return this.quarantined.has(id);
  }

  snapshot(): { inUse: number[]; quarantine: { id: number; until: number }[]; cursor: number } {
    this.expire();
    return { inUse: [...this.inUse], quarantine: this.quarantine.map((q) => ({ ...q })), cursor: this.cursor };
  }

  private expire(): void {
    const now = this.opts.clock.now();
    while (this.quarantine.length && this.quarantine[0]!.until <= now) this.quarantined.delete(this.quarantine.shift()!.id);
  }
}
