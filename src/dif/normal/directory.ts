/**
 * directory.ts — the normal DIF's directory: application name → address of the member hosting it,
 * fully replicated at every member (as in rlite), kept consistent by flooding.
 *
 * Owns: the replica, the ordering rule that makes replicas converge (higher seqnum wins; at equal
 * seqnum a registration beats a withdrawal, then the higher address wins), local registrations
 * and withdrawals, tombstones (withdrawals remembered for `tombstoneMs` so a late, reordered
 * registration cannot resurrect a name), withdrawal of every entry of a member that left, and the
 * bounds (entries incl. tombstones, live entries per member). Transport is an abstract `flood`
 * callback: the caller sends the entries to every neighbour but `from` (the neighbour they came
 * from); only news is re-flooded, so floods end.
 *
 * Soft state. A flood is sent once and may be lost (a management PDU dropped for no room), so the
 * owner re-announces its registrations every `refreshMs` with the next seqnum (news everywhere:
 * a member that missed the first flood gets it then), and a remote registration nobody refreshed
 * for `maxAgeMs` is forgotten (its owner is gone without anyone noticing). A member that routing
 * finds unreachable has its registrations forgotten at once (`memberUnreachable`, local: every
 * member derives it from its own routing view, so no member withdraws another's names in the
 * DIF; the owner's next refresh or the sync at its re-enrollment brings them back). The owner is
 * the authority on names it holds: a tombstone for one (another member's memberLeft, or a copy
 * from before a restart) is answered with a re-registration above it.
 */
import { appNameKey, validateAppName, type AppName } from '../naming.js';
import { cdapValueBudget } from './cdap.js';
import type { Clock, TimerHandle } from './clock.js';
import { MAX_LIST_ITEMS, encodeDirectoryUpdate, type DirectoryEntry } from './cdap-objects.js';
import { PCI_LEN } from './pci.js';
import { CodedError } from '../../sys/coded-error.js';

export const DEFAULT_MAX_DIRECTORY_ENTRIES = 10000;
export const DEFAULT_MAX_ENTRIES_PER_MEMBER = 1024;
export const DEFAULT_TOMBSTONE_MS = 60_000;
export const DEFAULT_DIRECTORY_REFRESH_MS = 30_000;
export const DEFAULT_DIRECTORY_MAX_AGE_MS = 150_000;

export class DirectoryError extends CodedError<'ERR_DIRECTORY_FULL' | 'ERR_DIRECTORY_NO_ADDRESS' | 'ERR_DIRECTORY_CONFIG'> {
  override name = 'DirectoryError';
}

export interface DirectoryOptions {
  readonly clock: Clock;
  /** This member's address; 0 until enrolled (local registrations wait for it). */
  readonly localAddress?: number;
  /** Send `entries` to every neighbour except the one at address `from` (undefined: to all). */
  readonly flood: (entries: DirectoryEntry[], from: number | undefined) => void;
  /** Entries held, tombstones included. */
  readonly maxEntries?: number;
  /** Live registrations held for one member (a peer cannot fill the directory by itself). */
  readonly maxEntriesPerMember?: number;
  readonly tombstoneMs?: number;
  /** The owner re-announces its registrations this often (default 30 000 ms). */
  readonly refreshMs?: number;
  /** A remote registration not refreshed for this long is forgotten (default 150 000 ms; > 2 × refreshMs). */
  readonly maxAgeMs?: number;
  /** Routing's view: false when `address` is not reachable (its stale claims on our names are taken over at refresh). */
  readonly reachable?: (address: number) => boolean;
}

interface Slot {
  entry: DirectoryEntry;
  /** Tombstones: when it may be forgotten. Live entries: when last installed or refreshed. */
  expiresAt: number;
}

/** Object class and name of a flooded directory update (M_CREATE, value DirectoryUpdate). */
export const DIRECTORY_CLASS = 'directory';
export const DIRECTORY_NAME = '/mgmt/directory';

/** Largest DirectoryUpdate value sent in one piece (what directoryUpdateValues cuts to by default). */
export const DEFAULT_DIRECTORY_UPDATE_BYTES = 8192;

/**
 * The budget of one DirectoryUpdate value over an N-1 flow whose PDUs carry up to `maxPdu` bytes:
 * what is left of one MGMT PDU (PCI, the M_CREATE envelope) within it, at most the default.
 * Unknown `maxPdu`: the default.
 */
export function directoryUpdateBudget(maxPdu: number | undefined): number {
  if (maxPdu === undefined) return DEFAULT_DIRECTORY_UPDATE_BYTES;
  return Math.min(DEFAULT_DIRECTORY_UPDATE_BYTES, cdapValueBudget({ op: 'M_CREATE', invokeId: 0, objClass: DIRECTORY_CLASS, objName: DIRECTORY_NAME }, maxPdu - PCI_LEN));
}

/**
 * Encode `entries` as DirectoryUpdate values of at most `budget` bytes each, so a flood of many
 * entries (a member with many applications leaving) fits CDAP messages.
 */
export function directoryUpdateValues(entries: readonly DirectoryEntry[], budget = DEFAULT_DIRECTORY_UPDATE_BYTES): Uint8Array[] {
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
  readonly stats = {
    registrations: 0, unregistrations: 0, accepted: 0, stale: 0, droppedFull: 0, removedByLeave: 0, tombstonesExpired: 0, corrected: 0, overridden: 0,
    /** Live remote entries refused because their member already holds maxEntriesPerMember. */
    droppedMemberFull: 0,
    /** Registrations of members routing found unreachable, forgotten. */
    removedUnreachable: 0,
    /** Remote registrations forgotten because their owner stopped refreshing them. */
    expired: 0,
    /** Our own registrations re-announced by the periodic refresh. */
    refreshed: 0,
    /** Names we hold re-registered above a tombstone or a stale claim. */
    reasserted: 0,
  };
  private readonly slots = new Map<string, Slot>();
  /** Keys registered by applications at this member (held even while another member's claim wins) → name, highest seqnum used. */
  private readonly local = new Map<string, { app: AppName; seqnum: number }>();
  private readonly tombstoneFifo: { key: string; at: number }[] = [];
  /** Live entries per address. */
  private readonly perMember = new Map<number, number>();
  private localAddress: number;
  private readonly max: number;
  private readonly maxPerMember: number;
  private readonly tombstoneMs: number;
  private readonly refreshMs: number;
  private readonly maxAgeMs: number;
  /** Names forgotten because their member became unreachable (lostAt). */
  private readonly lost = new Map<string, { address: number; at: number }>();
  private timer: TimerHandle | undefined;
  private stopped = false;

  constructor(private readonly opts: DirectoryOptions) {
    this.localAddress = opts.localAddress ?? 0;
    this.max = opts.maxEntries ?? DEFAULT_MAX_DIRECTORY_ENTRIES;
    this.maxPerMember = opts.maxEntriesPerMember ?? DEFAULT_MAX_ENTRIES_PER_MEMBER;
    this.tombstoneMs = opts.tombstoneMs ?? DEFAULT_TOMBSTONE_MS;
    this.refreshMs = opts.refreshMs ?? DEFAULT_DIRECTORY_REFRESH_MS;
    this.maxAgeMs = opts.maxAgeMs ?? DEFAULT_DIRECTORY_MAX_AGE_MS;
    if (!(this.refreshMs > 0) || !(this.maxAgeMs > 2 * this.refreshMs)) {
      throw new DirectoryError('ERR_DIRECTORY_CONFIG', `directory refresh ${this.refreshMs} ms / max age ${this.maxAgeMs} ms: need refresh > 0 and max age > 2 × refresh, or live entries expire between refreshes`);
    }
    if (!(this.maxPerMember >= 1) || !(this.max >= 1)) throw new DirectoryError('ERR_DIRECTORY_CONFIG', 'directory bounds must be at least 1');
    this.timer = this.opts.clock.setTimer(this.refreshMs, () => this.tick());
  }

  get size(): number {
    return this.slots.size;
  }

  /** Live registrations held for the member at `address`. */
  entriesOf(address: number): number {
    return this.perMember.get(address) ?? 0;
  }

  /** Set once enrolled (or re-enrolled with a new address): local names are re-announced. */
  setLocalAddress(address: number): void {
    const old = this.localAddress;
    this.localAddress = address;
    const out: DirectoryEntry[] = [];
    for (const key of this.local.keys()) {
      const s = this.slots.get(key);
      if (s && !s.entry.removed && s.entry.address !== address && s.entry.address === old) out.push(this.put(key, { ...s.entry, address, seqnum: s.entry.seqnum + 1 }));
    }
    // Claims that the new address hosts names we never registered (a former holder of the address).
    if (address !== 0) {
      for (const [key, s] of this.slots) {
        if (!s.entry.removed && s.entry.address === address && !this.local.has(key)) {
          out.push(this.put(key, { ...s.entry, seqnum: s.entry.seqnum + 1, removed: true }));
          this.stats.corrected++;
        }
      }
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
    this.local.set(key, { app: name, seqnum: e.seqnum });
    this.stats.registrations++;
    this.opts.flood([e], undefined);
    return e;
  }

  /** Withdraw a local application's registration; false if it was not registered here. */
  unregister(app: AppName): boolean {
    const key = appNameKey(app);
    if (!this.local.delete(key)) return false;
    const s = this.slots.get(key);
    if (!s || s.entry.removed || s.entry.address !== this.localAddress) return false;
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
      const mine = this.localAddress !== 0 && this.local.has(key);
      if (!e.removed && e.address === this.localAddress && this.localAddress !== 0 && !mine) {
        // A stale claim that we host this name (e.g. from before a restart): withdraw it.
        corrections.push(this.put(key, { ...e, seqnum: e.seqnum + 1, removed: true }));
        this.stats.corrected++;
        continue;
      }
      if (mine && e.removed) {
        // Somebody withdrew a name an application here still holds: it is ours, say so above it.
        corrections.push(this.put(key, { ...e, address: this.localAddress, seqnum: e.seqnum + 1, removed: false }));
        this.stats.reasserted++;
        continue;
      }
      if (!e.removed && (!old || old.entry.removed || old.entry.address !== e.address) && this.entriesOf(e.address) >= this.maxPerMember) {
        this.stats.droppedMemberFull++;
        continue;
      }
      if (mine && e.address !== this.localAddress) this.stats.overridden++;
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

  /**
   * Routing no longer reaches the member at `address`: forget its registrations here (no flood,
   * no tombstone: every member finds this from its own routing, and the owner's registrations are
   * accepted again when it comes back). Returns how many.
   */
  memberUnreachable(address: number): number {
    if (address === this.localAddress) return 0;
    let n = 0;
    const now = this.opts.clock.now();
    for (const [key, s] of this.slots) {
      if (!s.entry.removed && s.entry.address === address) {
        this.drop(key, s);
        this.rememberLost(key, address, now);
        n++;
      }
    }
    this.stats.removedUnreachable += n;
    return n;
  }

  /** Address hosting `app`, or undefined. */
  lookup(app: AppName | string): number | undefined {
    const s = this.slots.get(appNameKey(app));
    return s && !s.entry.removed ? s.entry.address : undefined;
  }

  /**
   * For a name lookup() does not find: the member it was registered at when routing found that
   * member unreachable (within max age, and not registered anywhere since), so a flow request can
   * say "member N, where it is registered, is unreachable" instead of "unknown application".
   */
  lostAt(app: AppName | string): number | undefined {
    const key = appNameKey(app);
    const l = this.lost.get(key);
    if (!l) return undefined;
    if (this.opts.clock.now() - l.at > this.maxAgeMs || this.lookup(app) !== undefined) {
      this.lost.delete(key);
      return undefined;
    }
    return l.address;
  }

  /** Bounded like the directory itself (oldest forgotten first). */
  private rememberLost(key: string, address: number, at: number): void {
    this.lost.delete(key);
    this.lost.set(key, { address, at });
    while (this.lost.size > this.max) this.lost.delete(this.lost.keys().next().value!);
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
    return { localAddress: this.localAddress, local: [...this.local.keys()], entries: this.entries(), stats: { ...this.stats } };
  }

  /** Stop the refresh timer (the IPC process closed). */
  stop(): void {
    this.stopped = true;
    this.opts.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** Periodic: re-announce our registrations (and take back names whose claim went away), forget unrefreshed ones. */
  refresh(): void {
    this.purge();
    const now = this.opts.clock.now();
    for (const [key, s] of this.slots) {
      if (!s.entry.removed && s.entry.address !== this.localAddress && now - s.expiresAt >= this.maxAgeMs) {
        this.drop(key, s);
        this.stats.expired++;
      }
    }
    if (this.localAddress === 0) return;
    const out: DirectoryEntry[] = [];
    for (const [key, l] of this.local) {
      const s = this.slots.get(key);
      if (s && !s.entry.removed && s.entry.address === this.localAddress) {
        out.push(this.put(key, { ...s.entry, seqnum: s.entry.seqnum + 1 }));
        this.stats.refreshed++;
      } else if (s && (s.entry.removed || this.opts.reachable?.(s.entry.address) === false)) {
        out.push(this.put(key, { ...s.entry, address: this.localAddress, seqnum: s.entry.seqnum + 1, removed: false }));
        this.stats.reasserted++;
      } else if (!s && this.room()) {
        // Forgotten here (expired, or its claimant became unreachable): ours again.
        out.push(this.put(key, { app: l.app, address: this.localAddress, seqnum: l.seqnum + 1, removed: false }));
        this.stats.reasserted++;
      }
    }
    if (out.length) this.opts.flood(out, undefined);
  }

  private tick(): void {
    if (this.stopped) return;
    this.timer = this.opts.clock.setTimer(this.refreshMs, () => this.tick());
    this.refresh();
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
    const old = this.slots.get(key);
    if (old && !old.entry.removed) this.count(old.entry.address, -1);
    const now = this.opts.clock.now();
    const at = e.removed ? now + this.tombstoneMs : now;
    this.slots.set(key, { entry: e, expiresAt: at });
    if (e.removed) {
      this.tombstoneFifo.push({ key, at });
      if (this.tombstoneFifo.length > 2 * this.max) this.compactFifo();
    } else {
      this.count(e.address, 1);
    }
    const l = this.local.get(key);
    if (l && e.seqnum > l.seqnum) l.seqnum = e.seqnum;
    return e;
  }

  /** Forget a live entry (no tombstone). */
  private drop(key: string, s: Slot): void {
    this.slots.delete(key);
    if (!s.entry.removed) this.count(s.entry.address, -1);
  }

  private count(address: number, d: number): void {
    const n = (this.perMember.get(address) ?? 0) + d;
    if (n > 0) this.perMember.set(address, n);
    else this.perMember.delete(address);
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
