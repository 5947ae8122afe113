/**
 * directory.ts — the normal DIF's directory: application name → address of the member hosting it,
 * fully replicated at every member (as in rlite), kept consistent by flooding.
 *
 * Owns: the replica, the ordering rule that makes replicas converge (higher seqnum wins; at equal
 * seqnum a registration beats a withdrawal, then the higher address wins), local registrations
 * and withdrawals, tombstones (withdrawals remembered for `tombstoneMs` so a late, reordered
 * registration cannot resurrect a name), withdrawal of every entry of a member that left, and the
 * bounds (entries incl. tombstones). Transport is an abstract `flood` callback: the caller sends
 * the entries to every neighbour but `from` (the neighbour they came from); only news is
 * re-flooded, so floods end.
 */
import { appNameKey, validateAppName, type AppName } from '../naming.js';
import type { Clock } from './clock.js';
import { MAX_LIST_ITEMS, encodeDirectoryUpdate, type DirectoryEntry } from './cdap-objects.js';

export const DEFAULT_MAX_DIRECTORY_ENTRIES = 10000;
export const DEFAULT_TOMBSTONE_MS = 60_000;

export class DirectoryError extends Error {
  override name = 'DirectoryError';
  constructor(
    readonly code: 'ERR_DIRECTORY_FULL' | 'ERR_DIRECTORY_NO_ADDRESS',
    message: string,
  ) {
    super(message);
  }
}

export interface DirectoryOptions {
  readonly clock: Clock;
  /** This member's address; 0 until enrolled (local registrations wait for it). */
  readonly localAddress?: number;
  /** Send `entries` to every neighbour except the one at address `from` (undefined: to all). */
  readonly flood: (entries: DirectoryEntry[], from: number | undefined) => void;
  readonly maxEntries?: number;
  readonly tombstoneMs?: number;
}

interface Slot {
  entry: DirectoryEntry;
  /** Tombstones only: when it may be forgotten. */
  expiresAt: number;
}

/** Object class and name of a flooded directory update (M_CREATE, value DirectoryUpdate). */
export const DIRECTORY_CLASS = 'directory';
export const DIRECTORY_NAME = '/mgmt/directory';

/**
 * Encode `entries` as DirectoryUpdate values of at most `budget` bytes each, so a flood of many
 * entries (a member with many applications leaving) fits CDAP messages.
 */
export function directoryUpdateValues(entries: readonly DirectoryEntry[], budget = 8192): Uint8Array[] {
  const out: Uint8Array[] = [];
  let cur: DirectoryEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = encodeDirectoryUpdate([e]).length;
    if (cur.length && (bytes + size > budget || cur.length >= MAX_LIST_ITEMS)) {
      out.push(encodeDirectoryUpdate(cur));
      cur = [];
      bytes = 0;
    }
    cur.push(e);
    bytes += size;
  }
  if (cur.length) out.push(encodeDirectoryUpdate(cur));
  return out;
}

/** True when `a` supersedes `b`. */
export function supersedes(a: DirectoryEntry, b: DirectoryEntry): boolean {
  if (a.seqnum !== b.seqnum) return a.seqnum > b.seqnum;
  if (a.removed !== b.removed) return !a.removed;
  return a.address > b.address;
}

export class Directory {
  readonly stats = { registrations: 0, unregistrations: 0, accepted: 0, stale: 0, droppedFull: 0, removedByLeave: 0, tombstonesExpired: 0, corrected: 0, overridden: 0 };
  private readonly slots = new Map<string, Slot>();
  /** Keys this member registered itself. */
  private readonly local = new Set<string>();
  private readonly tombstoneFifo: { key: string; at: number }[] = [];
  private localAddress: number;
  private readonly max: number;
  private readonly tombstoneMs: number;

  constructor(private readonly opts: DirectoryOptions) {
    this.localAddress = opts.localAddress ?? 0;
    this.max = opts.maxEntries ?? DEFAULT_MAX_DIRECTORY_ENTRIES;
    this.tombstoneMs = opts.tombstoneMs ?? DEFAULT_TOMBSTONE_MS;
  }

  get size(): number {
    return this.slots.size;
  }

  /** Set once enrolled (or re-enrolled with a new address): local names are re-announced. */
  setLocalAddress(address: number): void {
    this.localAddress = address;
    const out: DirectoryEntry[] = [];
    for (const key of this.local) {
      const s = this.slots.get(key);
      if (s && !s.entry.removed && s.entry.address !== address) out.push(this.put(key, { ...s.entry, address, seqnum: s.entry.seqnum + 1 }));
    }
    if (out.length) this.opts.flood(out, undefined);
  }

  /** Register a local application; floods the new entry. Throws DirectoryError. */
  register(app: AppName): DirectoryEntry {
    if (this.localAddress === 0) throw new DirectoryError('ERR_DIRECTORY_NO_ADDRESS', 'this IPC process has no address yet: enroll before registering applications');
    const name = validateAppName(app);
    const key = appNameKey(name);
    this.purge();
    const old = this.slots.get(key);
    if (!old && !this.room()) throw new DirectoryError('ERR_DIRECTORY_FULL', `the directory holds ${this.max} entries; unregister some applications first`);
    const e = this.put(key, { app: name, address: this.localAddress, seqnum: old ? old.entry.seqnum + 1 : 1, removed: false });
    this.local.add(key);
    this.stats.registrations++;
    this.opts.flood([e], undefined);
    return e;
  }

  /** Withdraw a local application's registration; false if it was not registered here. */
  unregister(app: AppName): boolean {
    const key = appNameKey(app);
    if (!this.local.delete(key)) return false;
    const s = this.slots.get(key);
    if (!s || s.entry.removed) return false;
    const e = this.put(key, { ...s.entry, seqnum: s.entry.seqnum + 1, removed: true });
    this.stats.unregistrations++;
    this.opts.flood([e], undefined);
    return true;
  }

  /** Apply entries flooded by the neighbour at `from`; re-floods what was news. Returns that count. */
  applyRemote(entries: readonly DirectoryEntry[], from: number | undefined): number {
    this.purge();
    const news: DirectoryEntry[] = [];
    const corrections: DirectoryEntry[] = [];
    for (const e of entries) {
      const key = appNameKey(e.app);
      const old = this.slots.get(key);
      if (old && !supersedes(e, old.entry)) {
        this.stats.stale++;
        continue;
      }
      if (!old && !this.room()) {
        this.stats.droppedFull++;
        continue;
      }
      if (!e.removed && e.address === this.localAddress && this.localAddress !== 0 && !this.local.has(key)) {
        // A stale claim that we host this name (e.g. from before a restart): withdraw it.
        corrections.push(this.put(key, { ...e, seqnum: e.seqnum + 1, removed: true }));
        this.stats.corrected++;
        continue;
      }
      if (this.local.has(key) && (e.removed || e.address !== this.localAddress)) {
        this.local.delete(key);
        this.stats.overridden++;
      }
      news.push(this.put(key, e));
      this.stats.accepted++;
    }
    if (news.length) this.opts.flood(news, from);
    if (corrections.length) this.opts.flood(corrections, undefined);
    return news.length;
  }

  /** The member at `address` left the DIF: withdraw all its entries here and flood that. */
  memberLeft(address: number): number {
    const out: DirectoryEntry[] = [];
    for (const [key, s] of this.slots) {
      if (!s.entry.removed && s.entry.address === address) out.push(this.put(key, { ...s.entry, seqnum: s.entry.seqnum + 1, removed: true }));
    }
    this.stats.removedByLeave += out.length;
    if (out.length) this.opts.flood(out, undefined);
    return out.length;
  }

  /** Address hosting `app`, or undefined. */
  lookup(app: AppName | string): number | undefined {
    const s = this.slots.get(appNameKey(app));
    return s && !s.entry.removed ? s.entry.address : undefined;
  }

  /** Every entry incl. live tombstones: what a new member receives at enrollment. */
  entries(): DirectoryEntry[] {
    this.purge();
    return [...this.slots.values()].map((s) => s.entry);
  }

  /** Live registrations only. */
  registrations(): DirectoryEntry[] {
    return this.entries().filter((e) => !e.removed);
  }

  /** Plain data for inspection and restart. */
  snapshot(): { localAddress: number; local: string[]; entries: DirectoryEntry[]; stats: Directory['stats'] } {
    return { localAddress: this.localAddress, local: [...this.local], entries: this.entries(), stats: { ...this.stats } };
  }

  private room(): boolean {
    if (this.slots.size < this.max) return true;
    // Full: give up the oldest tombstone before refusing a registration.
    while (this.tombstoneFifo.length) {
      const t = this.tombstoneFifo.shift()!;
      const s = this.slots.get(t.key);
      if (s && s.entry.removed && s.expiresAt === t.at) {
        this.slots.delete(t.key);
        this.stats.tombstonesExpired++;
        return true;
      }
    }
    return false;
  }

  private put(key: string, e: DirectoryEntry): DirectoryEntry {
    const at = e.removed ? this.opts.clock.now() + this.tombstoneMs : 0;
    this.slots.set(key, { entry: e, expiresAt: at });
    if (e.removed) {
      this.tombstoneFifo.push({ key, at });
      if (this.tombstoneFifo.length > 2 * this.max) this.compactFifo();
    }
    return e;
  }

  private compactFifo(): void {
    const keep = this.tombstoneFifo.filter((t) => {
      const s = this.slots.get(t.key);
      return s !== undefined && s.entry.removed && s.expiresAt === t.at;
    });
    this.tombstoneFifo.length = 0;
    this.tombstoneFifo.push(...keep);
  }

  private purge(): void {
    const now = this.opts.clock.now();
    while (this.tombstoneFifo.length && this.tombstoneFifo[0]!.at <= now) {
      const t = this.tombstoneFifo.shift()!;
      const s = this.slots.get(t.key);
      if (s && s.entry.removed && s.expiresAt === t.at) {
        this.slots.delete(t.key);
        this.stats.tombstonesExpired++;
      }
    }
  }
}
