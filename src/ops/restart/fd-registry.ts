/**
 * fd-registry.ts — which open files this process has given to the fd store, under which names.
 *
 * Owns: one name per open file (not per fd number, not per role), so the store never holds a
 * file twice and nothing is lost when the same file comes back: QEMU re-sends the same memfd with
 * every SET_MEM_TABLE and the same eventfd after a driver reload, and systemd keeps only the
 * first copy of an open file (a second name for it is dropped, and removing the first would then
 * close it for good). Identity is kcmp(KCMP_FILE) (native.sameFile), pre-filtered by inode.
 *
 * The layers own their fds (and close them when they like); this registry mirrors them, and holds
 * one fd of its own per stored file (a dup): identity is always checked against an open fd, even
 * when QEMU re-sends a file after the layer closed its earlier copy (SET_VRING_CALL with the same
 * eventfd: the old number is closed before the registry sees the new one). Each `sync(scope, live, fresh)`
 * says which fd numbers one user (a connection, the listening sockets…) refers to now, and which
 * numbers arrived since its last sync (if one of those was registered, the number was closed and
 * reused: the old file is gone). A name is stored when its file first appears and removed when
 * no scope refers to its file any more. Put before remove, so a crash in between loses nothing.
 */
import { fstatSync } from 'node:fs';
import { native } from '../../sys/native.js';
import { errText, safeClose } from '../../sys/fd.js';
import type { Logger } from '../../sys/log.js';
import { NAME_PREFIX, type FdHolder } from './fd-store.js';

interface Entry {
  readonly name: string;
  readonly ino: number;
  /** The registry's own fd to the file (a dup): open as long as the entry is. */
  readonly ref: number;
  /** The layers' fd numbers that refer to the file. */
  readonly fds: Set<number>;
}

export class FdRegistry {
  private readonly byFd = new Map<number, Entry>();
  private readonly scopes = new Map<string, Set<number>>();
  private serial = 1;
  private batching = 0;

  constructor(
    private readonly holder: FdHolder,
    private readonly log: Logger,
  ) {}

  /** Files in the store now. */
  get size(): number {
    return new Set(this.byFd.values()).size;
  }

  /** Take an fd that came back from the store under `name` (resume). */
  adopt(name: string, fd: number): void {
    const m = new RegExp(`^${NAME_PREFIX}f(\\d+)$`).exec(name);
    if (m) this.serial = Math.max(this.serial, Number(m[1]) + 1);
    const existing = [...this.byFd.values()].find((e) => e.name === name);
    const entry = existing ?? { name, ino: inode(fd), ref: native.dup(fd), fds: new Set<number>() };
    entry.fds.add(fd);
    this.byFd.set(fd, entry);
  }

  /** The store name of the file `fd` refers to (after a sync that listed it). */
  nameOf(fd: number): string | undefined {
    return this.byFd.get(fd)?.name;
  }

  /**
   * `scope` refers to exactly the fds `live` now; `fresh` arrived since its last sync. Stores
   * new files, forgets files nobody refers to. Never throws: a store failure is logged (the
   * restart then cannot resume that fd's user, and says so).
   */
  sync(scope: string, live: Iterable<number>, fresh: readonly number[] = []): void {
    const gone: Entry[] = [];
    for (const fd of fresh) this.detach(fd, gone);
    const now = new Set(live);
    if (now.size === 0) this.scopes.delete(scope);
    else this.scopes.set(scope, now);
    for (const fd of now) if (!this.byFd.has(fd)) this.register(fd);
    for (const e of gone) this.forget(e); // after the new ones are stored
    this.collect();
  }

  /**
   * Run `fn` with forgetting postponed to its end: while a resume hands the inherited fds to
   * their users one scope at a time, the fds of scopes not yet synced must not be forgotten.
   */
  batch<T>(fn: () => T): T {
    this.batching++;
    try {
      return fn();
    } finally {
      if (--this.batching === 0) this.collect();
    }
  }

  /** Fd `fd` was closed by its user before any scope took it (its number may come back as another file). */
  release(fd: number): void {
    this.detach(fd);
  }

  /** Forget a scope (its user is gone). */
  drop(scope: string): void {
    this.sync(scope, []);
  }

  private register(fd: number): void {
    let ino: number;
    try {
      ino = inode(fd);
    } catch (e) {
      this.log.error({ fd, err: errText(e) }, 'cannot keep an fd across restarts: fstat failed');
      return;
    }
    for (const e of new Set(this.byFd.values())) {
      if (e.ino !== ino) continue;
      try {
        if (native.sameFile(e.ref, fd)) {
          e.fds.add(fd);
          this.byFd.set(fd, e);
          return;
        }
      } catch (err) {
        // Without kcmp (a seccomp filter) a file re-sent by QEMU would be stored twice, and
        // systemd would drop the second name: the next worker could not resume that connection.
        this.log.error({ err: errText(err) }, 'kcmp failed: cannot tell whether an fd is already in the fd store; a restart may not resume this connection');
        break;
      }
    }
    let ref: number;
    try {
      ref = native.dup(fd);
    } catch (e) {
      this.log.error({ fd, err: errText(e) }, 'cannot keep an fd across restarts: dup failed');
      return;
    }
    const entry: Entry = { name: `${NAME_PREFIX}f${this.serial++}`, ino, ref, fds: new Set([fd]) };
    try {
      this.holder.put(entry.name, [ref]);
    } catch (e) {
      this.log.error({ fd, name: entry.name, err: errText(e) }, 'cannot keep an fd across restarts');
    }
    this.byFd.set(fd, entry);
  }

  /** Number `fd` no longer means the file it meant (closed, maybe reused); `gone` defers the forget. */
  private detach(fd: number, gone?: Entry[]): void {
    const e = this.byFd.get(fd);
    if (!e) return;
    this.byFd.delete(fd);
    e.fds.delete(fd);
    for (const s of this.scopes.values()) s.delete(fd);
    if (e.fds.size > 0) return;
    if (gone) gone.push(e);
    else this.forget(e);
  }

  private collect(): void {
    if (this.batching > 0) return;
    const referenced = new Set<number>();
    for (const s of this.scopes.values()) for (const fd of s) referenced.add(fd);
    for (const fd of [...this.byFd.keys()]) if (!referenced.has(fd)) this.detach(fd);
  }

  private forget(e: Entry): void {
    try {
      this.holder.remove(e.name);
    } catch (err) {
      this.log.warn({ name: e.name, err: errText(err) }, 'cannot remove an fd from the store');
    }
    safeClose(e.ref);
  }
}

function inode(fd: number): number {
  const st = fstatSync(fd);
  return st.ino;
}
