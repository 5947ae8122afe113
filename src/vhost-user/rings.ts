/**
 * rings.ts — one connection's guest memory and running virtqueues.
 *
 * Owns: the memory regions (GuestMemory) and the rings' runtime built from the negotiated state:
 * SplitVirtqueues, kick watchers, call/err eventfds, handing ready queues to the device, running
 * device code for a kick (its errors charged by scope: a queue, or the connection), and the
 * checks on received kick/call/err fds. The state (state.ts) is the truth; everything here is
 * derived from it and rebuilt from it (restart).
 *
 * Received fds are checked before use: kick/call/err fds must be eventfds (not EFD_SEMAPHORE) and
 * are made O_NONBLOCK, so a full counter means "already signalled" (EAGAIN), never a blocked
 * loop; memory fds must hold their region and be sealed against shrinking (memory.ts).
 */
import { fstatSync, readFileSync, readlinkSync } from 'node:fs';
import { errnoName, errText, safeClose } from '../sys/fd.js';
import type { Logger } from '../sys/log.js';
import { native, type FdWatcher } from '../sys/native.js';
import type { ReadyQueue, VhostUserDevice } from './device.js';
import { ProtocolError, VhostUserError } from './errors.js';
import { GuestMemory, type Mapper } from './memory.js';
import { MAX_MEM_SLOTS, VirtioFeature, hasBit } from './protocol.js';
import { initialVring, type ConnectionState, type VringConfig } from './state.js';
import { SplitVirtqueue } from './virtqueue.js';
import type { DisconnectCause } from './endpoint.js';

export const nativeMapper: Mapper = {
  pageSize: native.pageSize(),
  inspect: (fd) => ({
    size: fstatSync(fd).size,
    seals: native.fdSeals(fd),
    // Only the refusal messages read it (while the fd is still open): a region that is accepted
    // costs no readlink of /proc, which adds up over a flood of short hostile connections.
    get what() {
      return fdTarget(fd);
    },
  }),
  map: (fd, offset, length) => native.mmap(fd, offset, length),
  unmap: (b) => native.munmap(b),
  closeFd: (fd) => native.close(fd),
};

/** What the rings need from the connection they belong to. */
export interface RingsHost {
  readonly state: ConnectionState;
  readonly device: VhostUserDevice;
  readonly log: Logger;
  readonly isClosed: boolean;
  /** Run an event-loop callback; what it throws closes the connection. */
  guarded(what: string, fn: () => void): void;
  close(reason: string, cause: DisconnectCause): void;
}

export interface RingsOptions {
  mapper: Mapper;
  allowUnsealedMemory: boolean;
  maxMappedBytes: number | undefined;
}

/** Runtime objects derived from a VringConfig while the ring runs. */
interface RingRuntime {
  vq: SplitVirtqueue;
  watcher: FdWatcher;
  ready: ReadyQueue;
  /** The device's kick handler for this queue, made once (a kick makes no closure). */
  kickDevice: () => void;
}

export class Rings {
  readonly mem: GuestMemory;
  private readonly running: (RingRuntime | null)[];

  constructor(
    private readonly host: RingsHost,
    opts: RingsOptions,
  ) {
    this.mem = new GuestMemory(opts.mapper, MAX_MEM_SLOTS, { allowUnsealed: opts.allowUnsealedMemory, maxMappedBytes: opts.maxMappedBytes });
    this.running = new Array<RingRuntime | null>(host.device.numQueues).fill(null);
  }

  get count(): number {
    return this.running.length;
  }

  /**
   * Apply a memory-table change: stop running rings, change, record, restart them from state.
   * On failure, `notHanded()` names the fds the change never gave to GuestMemory.add (which owns
   * and closes the ones it got, even when it fails): those are closed here, so each fd once.
   */
  changeMemory(change: () => void, notHanded: () => number[]): void {
    const state = this.host.state;
    const running = this.running.map((r, i) => (r ? i : -1)).filter((i) => i >= 0);
    for (const i of running) this.stop(i);
    try {
      change();
    } catch (e) {
      for (const fd of notHanded()) this.mem.closeFd(fd);
      throw e;
    } finally {
      state.memory = this.mem.descriptions();
      state.memoryFds = this.mem.fds();
      for (const i of running) this.restart(i);
    }
    this.host.log.info({ regions: state.memory.length }, 'memory table updated');
  }

  /** Unmap all guest memory (disconnect). */
  clearMemory(): void {
    this.mem.clear();
    this.host.state.memory = [];
    this.host.state.memoryFds = [];
  }

  /**
   * Resume from a state another process left (restart): map its memory regions (the state holds
   * this process's fds for them) and start each ring that was running, rewound to the used index
   * in guest memory, so chains the dead process took but never completed are taken again (see
   * SplitVirtqueue.pushUsed for why that is exact). Then one call per running queue: an
   * interrupt the dead process owed the driver is not lost (a spurious one costs the driver a
   * look at its used ring). Throws what mapping or a ring check throws; the caller closes.
   */
  resume(): void {
    const state = this.host.state;
    const memory = state.memory;
    const fds = state.memoryFds;
    let handed = 0;
    // As a SET_MEM_TABLE would: on failure the fds not yet handed to GuestMemory are closed too.
    this.changeMemory(
      () => {
        for (const [i, desc] of memory.entries()) {
          handed = i + 1;
          this.mem.add('resume', desc, fds[i]!);
        }
      },
      () => fds.slice(handed),
    );
    for (let i = 0; i < this.running.length; i++) {
      this.restart(i, true);
      const v = state.vrings[i]!;
      if (this.running[i] && v.callFd !== null) native.eventfdWrite(v.callFd, 1);
    }
  }

  /** Rings running now, with their rewind facts (for the resume log). */
  queueFacts(): { queue: number; lastAvailIdx: number; usedIdx: number; outOfOrder: number }[] {
    return this.running.flatMap((r, i) => (r ? [{ queue: i, lastAvailIdx: r.vq.lastAvailIdx, usedIdx: r.vq.usedIdx, outOfOrder: r.vq.completedOutOfOrder }] : []));
  }

  /**
   * Bring ring `index` to match its config: running if started, enabled and complete; else
   * stopped. `rewind` (resume after a restart): start from the used index in guest memory
   * instead of the state's next avail index.
   */
  restart(index: number, rewind = false): void {
    this.stop(index);
    const { state, device, log } = this.host;
    const v = state.vrings[index]!;
    if (!v.started || !v.enabled || v.kickFd === null) return;
    if (v.size === 0 || v.addr === null) {
      throw new ProtocolError('SET_VRING_KICK', `queue ${index} started before its size and addresses were set`);
    }
    if (this.mem.regionCount === 0) throw new ProtocolError('SET_VRING_KICK', `queue ${index} started before any guest memory was mapped`);
    const features = state.ackedFeatures;
    const size = v.size;
    const vq = new SplitVirtqueue(this.mem, {
      index,
      layout: {
        size,
        descGpa: this.mem.uvaToGpa(v.addr.descUser, 16 * size, `queue ${index} descriptor table`),
        availGpa: this.mem.uvaToGpa(v.addr.availUser, 6 + 2 * size, `queue ${index} available ring`),
        usedGpa: this.mem.uvaToGpa(v.addr.usedUser, 6 + 8 * size, `queue ${index} used ring`),
      },
      lastAvailIdx: v.lastAvailIdx,
      rewind,
      eventIdx: hasBit(features, VirtioFeature.RING_EVENT_IDX),
      indirect: hasBit(features, VirtioFeature.RING_INDIRECT_DESC),
    });
    const ready: ReadyQueue = {
      index,
      vq,
      notify: () => {
        if (!vq.needsNotify() || v.callFd === null) return false;
        native.eventfdWrite(v.callFd, 1); // O_NONBLOCK (adoptEventfd): EAGAIN = already signalled
        return true;
      },
      fail: (err) => this.queueFailed(index, err),
      defer: (fn) => {
        setImmediate(() => {
          if (this.host.isClosed || this.running[index]?.ready !== ready) return;
          this.host.guarded(`deferred work of queue ${index}`, () => this.runDevice(index, fn));
        });
      },
    };
    // Made once per ring, not per kick: the name, and the callbacks a kick runs.
    const kickWhat = `kick watcher of queue ${index}`;
    const onKick = (): void => this.kicked(index);
    const watcher = native.watchEventfd(v.kickFd, (count) => {
      if (count < 0) this.host.guarded(kickWhat, () => this.kickFdFailed(index, count));
      else this.host.guarded(kickWhat, onKick);
    });
    this.running[index] = { vq, watcher, ready, kickDevice: () => device.kicked(index) };
    watcher.start();
    log.info({ queue: index, size, base: vq.lastAvailIdx, usedIdx: vq.usedIdx, ...(rewind ? { savedBase: v.lastAvailIdx } : {}) }, rewind ? 'queue resumed (rewound to the used index)' : 'queue ready');
    device.queueReady(ready);
    // Buffers made available before the kick fd arrived would otherwise wait for the next kick.
    this.kicked(index);
  }

  stop(index: number): void {
    const r = this.running[index];
    if (!r) return;
    this.running[index] = null;
    r.watcher.close();
    this.host.state.vrings[index]!.lastAvailIdx = r.vq.lastAvailIdx;
    this.host.device.queueStopped(index);
  }

  /** Stop every kick watcher and nothing else (restart hand-over; see Connection.abandon). */
  abandon(): void {
    for (const r of this.running) r?.watcher.close();
    this.running.fill(null);
  }

  /** Copy the running rings' avail indices into the state (before a snapshot). */
  syncIndices(): void {
    this.running.forEach((r, i) => {
      if (r) this.host.state.vrings[i]!.lastAvailIdx = r.vq.lastAvailIdx;
    });
  }

  private kicked(index: number): void {
    const r = this.running[index];
    if (!r || r.vq.broken || this.host.isClosed) return;
    this.runDevice(index, r.kickDevice);
  }

  /** The kick fd could not be read (the watcher has stopped): the front-end broke its end. */
  private kickFdFailed(index: number, errno: number): void {
    const msg = `the kick fd of queue ${index} failed (${errnoName(errno)}); it must be an eventfd`;
    this.host.log.error({ queue: index, errno }, 'closing connection: unreadable kick fd');
    this.host.close(msg, 'io_error');
  }

  /**
   * Run device code for queue `index`. A queue-scoped error breaks the queue it names (the device
   * may have been working on another queue than the kicked one: a tx kick takes an rx buffer),
   * or else the kicked one; anything else closes the connection.
   */
  private runDevice(index: number, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (e instanceof VhostUserError && e.scope === 'queue') {
        const q = e.queueIndex;
        return this.queueFailed(q !== undefined && q >= 0 && q < this.running.length ? q : index, e);
      }
      this.host.log.error({ queue: index, err: errText(e), stack: (e as Error).stack }, 'device failed handling a kick; closing connection');
      this.host.close(`device error: ${errText(e)}`, 'internal_error');
    }
  }

  private queueFailed(index: number, err: Error): void {
    const v = this.host.state.vrings[index]!;
    this.host.log.error({ queue: index, err: err.message }, 'queue broken by the driver; it stays stopped until the device is reset');
    const r = this.running[index];
    if (r) {
      r.watcher.stop();
      this.host.device.queueStopped(index);
    }
    if (v.errFd !== null) native.eventfdWrite(v.errFd, 1);
  }

  /** Stop every ring and forget the rings' config and features (RESET_DEVICE, RESET_OWNER, SET_STATUS 0). */
  resetDevice(why: string): void {
    const state = this.host.state;
    for (let i = 0; i < this.running.length; i++) this.stop(i);
    state.vrings = state.vrings.map((v) => {
      closeVringFds(v);
      return initialVring(v.index);
    });
    state.ackedFeatures = 0n;
    state.status = 0;
    this.host.device.reset(why);
    this.host.log.info({ why }, 'device reset');
  }
}

export function closeVringFds(v: VringConfig): void {
  replaceFd(v, 'kickFd', null);
  replaceFd(v, 'callFd', null);
  replaceFd(v, 'errFd', null);
}

export function replaceFd(v: VringConfig, key: 'kickFd' | 'callFd' | 'errFd', fd: number | null): void {
  const old = v[key];
  if (old !== null && old !== fd) safeClose(old);
  v[key] = fd;
}

/** What /proc says `fd` is ("anon_inode:[eventfd]", "/memfd:mem (deleted)", "pipe:[123]", ...). */
function fdTarget(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    return `unknown (${errText(e)})`;
  }
}

/**
 * Check that a received kick/call/err fd is an eventfd we can use, and make it non-blocking:
 * a pipe or socket would turn a kick into a short read, a blocking eventfd at its maximum count
 * would block a call write (and so the event loop), and an EFD_SEMAPHORE one hands out its count
 * one read at a time.
 */
export function adoptEventfd(request: string, fd: number): void {
  let info = '';
  try {
    info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    // no fdinfo: the link below decides, nothing more to check
  }
  // Only an eventfd's fdinfo has its counter (fs/eventfd.c: "eventfd-count:"), so a good fd costs
  // one read of /proc; any other fd is named by its link, for the message.
  if (!/^eventfd-count:/m.test(info)) {
    const what = fdTarget(fd);
    if (what !== 'anon_inode:[eventfd]') {
      throw new ProtocolError(request, `fd ${fd} is ${what}, not an eventfd; send an eventfd (eventfd(2))`, 'bad_fd');
    }
  }
  if (/^eventfd-semaphore:\s*1\s*$/m.test(info)) {
    throw new ProtocolError(request, `fd ${fd} is an EFD_SEMAPHORE eventfd; send a plain eventfd`, 'bad_fd');
  }
  native.setNonblock(fd);
}
