/**
 * connection.ts — one vhost-user front-end connection: reading requests, dispatching, replying.
 *
 * Owns: the socket of one front-end (QEMU), message framing with the fds that come with each
 * request, the dispatcher (request known? protocol feature negotiated? fd count right? payload
 * size right? then the handler), REPLY_ACK, and the rings' plumbing: memory regions, kick watchers,
 * call/err eventfds, starting and stopping SplitVirtqueues and handing ready queues to the device.
 * The negotiated state lives in `this.state` (state.ts), never in closures.
 *
 * Failure containment: a bad request is answered with a failed REPLY_ACK when the front-end asked
 * for one, otherwise the connection is closed; either way one log line says what was wrong. A
 * queue the driver corrupts is marked broken and reported on its error eventfd; other queues and
 * other connections carry on. Every callback the event loop makes into a connection (its socket
 * watcher, kick watchers, the device's deferred work through `ReadyQueue.defer`) runs guarded:
 * whatever it throws closes this connection with a log line ('internal_error'), never the
 * process; `close()` itself releases everything even when the device or a listener throws.
 *
 * Received fds are checked before use: kick/call/err fds must be eventfds (not EFD_SEMAPHORE) and
 * are made O_NONBLOCK, so a full counter means "already signalled" (EAGAIN), never a blocked
 * loop; memory fds must hold their region and be sealed against shrinking (memory.ts).
 */
import { EventEmitter } from 'node:events';
import { fstatSync, readFileSync, readlinkSync } from 'node:fs';
import { errnoName, errText, safeClose } from '../sys/fd.js';
import type { Logger } from '../sys/log.js';
import { native, type FdWatcher } from '../sys/native.js';
import type { ReadyQueue, VhostUserDevice } from './device.js';
import { MemoryAccessError, ProtocolError, QueueError } from './errors.js';
import { GuestMemory, type Mapper } from './memory.js';
import {
  checkPayloadSize,
  decodeConfig,
  decodeMemRegion,
  decodeMemTable,
  decodeRequestHeader,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeReply,
  encodeU64,
  encodeVringState,
  type Header,
  type Message,
} from './messages.js';
import {
  FLAG_NEED_REPLY,
  HEADER_SIZE,
  MAX_FDS_PER_MESSAGE,
  MAX_MEM_SLOTS,
  MAX_QUEUE_SIZE,
  ProtoFeature,
  REQUEST_RULES,
  Req,
  SUPPORTED_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VirtioFeature,
  bit,
  hasBit,
  requestName,
} from './protocol.js';
import { initialState, initialVring, stateToJSON, type ConnectionState, type ConnectionStateJSON, type VringConfig } from './state.js';
import { SplitVirtqueue } from './virtqueue.js';

export const nativeMapper: Mapper = {
  pageSize: native.pageSize(),
  inspect: (fd) => ({ size: fstatSync(fd).size, seals: native.fdSeals(fd), what: fdTarget(fd) }),
  map: (fd, offset, length) => native.mmap(fd, offset, length),
  unmap: (b) => native.munmap(b),
  closeFd: (fd) => native.close(fd),
};

/** Runtime objects derived from a VringConfig while the ring runs. */
interface RingRuntime {
  vq: SplitVirtqueue;
  watcher: FdWatcher;
  ready: ReadyQueue;
}

/** Why a connection ended: a fixed set, so it can label metrics. */
export type DisconnectCause = 'peer_closed' | 'shutdown' | 'protocol_error' | 'internal_error' | 'io_error';

export interface ConnectionOptions {
  /** How region fds are inspected, mapped and closed (tests pass their own). */
  mapper?: Mapper;
  /**
   * Accept memory fds that could shrink under their mapping (no F_SEAL_SHRINK: memory-backend-file,
   * -shm, memfd with seal=off). Only for trusted front-ends: one that truncates its memory file
   * crashes the server (SIGBUS). Default false.
   */
  allowUnsealedMemory?: boolean;
  /** Bytes of guest memory this front-end may have mapped at once (default 4 TiB; memory.ts). */
  maxMappedBytes?: number;
}

export interface ConnectionEvents {
  close: [reason: string, cause: DisconnectCause];
  /** A request was refused with a failed REPLY_ACK; the connection stays up. */
  rejected: [request: string, message: string];
}

let nextConnectionId = 1;

export class Connection extends EventEmitter<ConnectionEvents> {
  readonly id = nextConnectionId++;
  readonly state: ConnectionState;
  private readonly mem: GuestMemory;
  private readonly rings: (RingRuntime | null)[];
  private readonly watcher: FdWatcher;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private payload = new Uint8Array(0);
  private pendingHeader: Header | null = null;
  private got = 0;
  private fds: number[] = [];
  private closed = false;
  private readonly log: Logger;

  constructor(
    private readonly fd: number,
    readonly device: VhostUserDevice,
    logger: Logger,
    opts: ConnectionOptions = {},
  ) {
    super();
    this.log = logger.child({ conn: this.id, device: device.name });
    this.state = initialState(device.numQueues);
    this.mem = new GuestMemory(opts.mapper ?? nativeMapper, MAX_MEM_SLOTS, { allowUnsealed: opts.allowUnsealedMemory ?? false, maxMappedBytes: opts.maxMappedBytes });
    this.rings = new Array<RingRuntime | null>(device.numQueues).fill(null);
    this.watcher = native.watchReadable(fd, (events) => this.guarded('socket watcher', () => this.onReadable(events)));
    this.watcher.start();
    this.log.info('front-end connected');
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** JSON snapshot of the negotiated state (for persistence across restarts, and for debugging). */
  snapshot(): ConnectionStateJSON {
    this.syncRingIndices();
    return stateToJSON(this.state);
  }

  /**
   * Close the connection, stop every ring and release memory and fds. Idempotent. Never throws:
   * a step that fails (a device callback, a 'close' listener) is logged and the rest still runs.
   */
  close(reason: string, cause: DisconnectCause = 'shutdown'): void {
    if (this.closed) return;
    this.closed = true;
    this.step('closing the socket watcher', () => this.watcher.close());
    for (let i = 0; i < this.rings.length; i++) this.step(`stopping queue ${i}`, () => this.stopRing(i));
    for (const v of this.state.vrings) this.closeVringFds(v);
    this.step('resetting the device', () => this.device.reset(`disconnected: ${reason}`));
    this.step('unmapping guest memory', () => this.mem.clear());
    this.state.memory = [];
    this.state.memoryFds = [];
    this.closeFds(this.fds);
    safeClose(this.fd);
    this.step('logging', () => this.log.info({ reason }, 'front-end disconnected'));
    this.step("a 'close' listener", () => this.emit('close', reason, cause));
  }

  /** One step of close(): runs `fn`, logs what it throws. */
  private step(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      try {
        this.log.error({ err: errText(e), stack: (e as Error)?.stack }, `error while closing the connection (${what}); carrying on`);
      } catch {
        // a logger that throws: nothing left to tell
      }
    }
  }

  /**
   * Run a callback the event loop makes into this connection. Anything it throws is this
   * connection's failure: logged, and the connection closed ('internal_error'); never the process's.
   */
  private guarded(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.step('logging', () => this.log.error({ in: what, err: errText(e), stack: (e as Error)?.stack }, 'uncaught error in a connection callback; closing the connection'));
      this.close(`internal error in the ${what}: ${errText(e)}`, 'internal_error');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Framing

  private onReadable(events: number): void {
    if (this.closed) return;
    if (events < 0) return this.close('socket error', 'io_error');
    try {
      for (;;) {
        if (!this.pendingHeader) {
          const r = native.recvMsg(this.fd, this.header, this.got, HEADER_SIZE - this.got, MAX_FDS_PER_MESSAGE);
          if (r === null) return;
          if (r.bytes === 0) return this.close('front-end closed the socket', 'peer_closed');
          this.fds.push(...r.fds);
          this.got += r.bytes;
          if (this.got < HEADER_SIZE) continue;
          this.pendingHeader = decodeRequestHeader(this.header);
          this.got = 0;
          if (this.payload.byteLength < this.pendingHeader.size) this.payload = new Uint8Array(this.pendingHeader.size);
        }
        const h = this.pendingHeader;
        if (this.got < h.size) {
          const r = native.recvMsg(this.fd, this.payload, this.got, h.size - this.got, MAX_FDS_PER_MESSAGE);
          if (r === null) return;
          if (r.bytes === 0) return this.close('front-end closed the socket in the middle of a message', 'peer_closed');
          this.fds.push(...r.fds);
          this.got += r.bytes;
          if (this.got < h.size) continue;
        }
        const msg: Message = { ...h, payload: this.payload.subarray(0, h.size), fds: this.fds };
        this.pendingHeader = null;
        this.got = 0;
        this.fds = [];
        this.dispatch(msg);
        if (this.closed) return;
      }
    } catch (e) {
      // Framing errors (bad header, recvmsg failure) leave the stream unusable.
      this.log.error({ err: errText(e) }, 'closing connection: unreadable request stream');
      this.close(errText(e), e instanceof ProtocolError ? 'protocol_error' : 'io_error');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Dispatch

  private dispatch(msg: Message): void {
    const name = requestName(msg.request);
    const wantsAck = (msg.flags & FLAG_NEED_REPLY) !== 0 && hasBit(this.state.protocolFeatures, ProtoFeature.REPLY_ACK);
    const rule = REQUEST_RULES.get(msg.request);
    let reply: Uint8Array | undefined;
    try {
      if (!rule) throw new ProtocolError(name, 'request not supported by this back-end');
      if (rule.needs !== undefined && !hasBit(this.state.protocolFeatures, rule.needs)) {
        throw new ProtocolError(name, `needs protocol feature ${protoFeatureName(rule.needs)}, which was not negotiated`);
      }
      if (msg.fds.length < rule.minFds || msg.fds.length > rule.maxFds) {
        throw new ProtocolError(name, `carries ${msg.fds.length} fds, expected ${rule.minFds === rule.maxFds ? rule.minFds : `${rule.minFds}..${rule.maxFds}`}`);
      }
      checkPayloadSize(msg.request, msg.size);
      reply = this.handle(msg);
      this.log.debug({ request: name }, 'request handled');
    } catch (e) {
      this.closeFds(msg.fds);
      if (!(e instanceof ProtocolError || e instanceof QueueError || e instanceof MemoryAccessError)) {
        this.log.error({ request: name, err: errText(e), stack: (e as Error).stack }, 'internal error handling request; closing connection');
        return this.close(`internal error on ${name}: ${errText(e)}`, 'internal_error');
      }
      if (wantsAck && !rule?.hasReply) {
        this.log.warn({ request: name, err: e.message }, 'request rejected');
        this.send(msg.request, encodeU64(1));
        this.emit('rejected', name, e.message);
        return;
      }
      this.log.error({ request: name, err: e.message }, 'protocol error; closing connection');
      return this.close(e.message, 'protocol_error');
    }
    this.closeFds(msg.fds);
    if (rule!.hasReply) this.send(msg.request, reply);
    else if (wantsAck) this.send(msg.request, encodeU64(0));
  }

  private send(request: number, payload?: Uint8Array): void {
    if (this.closed) return;
    const buf = encodeReply(request, payload);
    let off = 0;
    // Replies are small; a full socket buffer here means the front-end stopped reading.
    for (let tries = 0; off < buf.byteLength; tries++) {
      const n = native.sendMsg(this.fd, buf, off, buf.byteLength - off, null);
      if (n < 0) {
        if (tries > 1000) return this.close(`front-end does not read replies (${requestName(request)})`, 'io_error');
        continue;
      }
      off += n;
    }
  }

  /** Takes an fd out of the message so the dispatcher does not close it. */
  private takeFd(msg: Message): number {
    const fd = msg.fds.shift();
    if (fd === undefined) throw new ProtocolError(requestName(msg.request), 'expected an fd');
    return fd;
  }

  private handle(msg: Message): Uint8Array | undefined {
    const s = this.state;
    const p = msg.payload;
    switch (msg.request) {
      case Req.GET_FEATURES:
        return encodeU64(this.offeredFeatures());
      case Req.SET_FEATURES: {
        const f = decodeU64(msg.request, p);
        const extra = f & ~this.offeredFeatures();
        if (extra) throw new ProtocolError('SET_FEATURES', `features 0x${extra.toString(16)} were not offered (offered 0x${this.offeredFeatures().toString(16)})`);
        s.ackedFeatures = f;
        this.device.featuresAcked(f);
        // Without protocol features, rings are enabled as soon as they start.
        if (!hasBit(f, VirtioFeature.PROTOCOL_FEATURES)) for (const v of s.vrings) v.enabled = true;
        return undefined;
      }
      case Req.SET_OWNER:
        s.owner = true;
        return undefined;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        this.resetDevice(requestName(msg.request));
        return undefined;
      case Req.GET_PROTOCOL_FEATURES:
        return encodeU64(this.offeredProtocolFeatures());
      case Req.SET_PROTOCOL_FEATURES: {
        const f = decodeU64(msg.request, p);
        const extra = f & ~this.offeredProtocolFeatures();
        if (extra) throw new ProtocolError('SET_PROTOCOL_FEATURES', `protocol features 0x${extra.toString(16)} were not offered (offered 0x${this.offeredProtocolFeatures().toString(16)})`);
        s.protocolFeatures = f;
        return undefined;
      }
      case Req.GET_QUEUE_NUM:
        return encodeU64(this.device.numQueues);
      case Req.GET_MAX_MEM_SLOTS:
        return encodeU64(MAX_MEM_SLOTS);
      case Req.SET_MEM_TABLE: {
        const regions = decodeMemTable(msg.request, p);
        if (regions.length !== msg.fds.length) throw new ProtocolError('SET_MEM_TABLE', `${regions.length} regions but ${msg.fds.length} fds`);
        const fds = msg.fds.splice(0);
        let handed = 0; // fds[0, handed) belong to this.mem, which closes them exactly once
        this.changeMemory(
          () => {
            this.mem.clear();
            while (handed < regions.length) {
              const i = handed++;
              this.mem.add('SET_MEM_TABLE', regions[i]!, fds[i]!);
            }
          },
          () => fds.slice(handed),
        );
        return undefined;
      }
      case Req.ADD_MEM_REG: {
        const region = decodeMemRegion(msg.request, p);
        const fd = this.takeFd(msg);
        this.changeMemory(() => this.mem.add('ADD_MEM_REG', region, fd), () => []); // add owns fd
        return undefined;
      }
      case Req.REM_MEM_REG: {
        const region = decodeMemRegion(msg.request, p);
        this.changeMemory(() => this.mem.remove('REM_MEM_REG', region), () => []);
        return undefined;
      }
      case Req.SET_VRING_NUM: {
        const st = decodeVringState(msg.request, p);
        const v = this.vring(msg.request, st.index);
        if (v.started) throw new ProtocolError('SET_VRING_NUM', `queue ${st.index} is running; stop it with GET_VRING_BASE first`);
        const max = Math.min(this.device.maxQueueSize, MAX_QUEUE_SIZE);
        if (st.num === 0 || st.num > max || (st.num & (st.num - 1)) !== 0) {
          throw new ProtocolError('SET_VRING_NUM', `queue ${st.index} size ${st.num} must be a power of two in 1..${max}`);
        }
        v.size = st.num;
        return undefined;
      }
      case Req.SET_VRING_ADDR: {
        const a = decodeVringAddr(msg.request, p);
        const v = this.vring(msg.request, a.index);
        if (a.flags & ~VHOST_VRING_F_LOG) throw new ProtocolError('SET_VRING_ADDR', `unknown flags 0x${a.flags.toString(16)}`);
        if (a.flags & VHOST_VRING_F_LOG) throw new ProtocolError('SET_VRING_ADDR', 'dirty logging (VHOST_VRING_F_LOG) requested, but VHOST_F_LOG_ALL was not offered');
        v.addr = { descUser: a.descUser, availUser: a.availUser, usedUser: a.usedUser, logGuestAddr: a.logGuestAddr, flags: a.flags };
        if (v.started) this.restartRing(v.index);
        return undefined;
      }
      case Req.SET_VRING_BASE: {
        const st = decodeVringState(msg.request, p);
        const v = this.vring(msg.request, st.index);
        if (v.started) throw new ProtocolError('SET_VRING_BASE', `queue ${st.index} is running; stop it with GET_VRING_BASE first`);
        if (st.num > 0xffff) throw new ProtocolError('SET_VRING_BASE', `base ${st.num} exceeds 65535 (packed rings are not supported)`);
        v.lastAvailIdx = st.num;
        return undefined;
      }
      case Req.GET_VRING_BASE: {
        const st = decodeVringState(msg.request, p);
        const v = this.vring(msg.request, st.index);
        this.stopRing(st.index);
        v.started = false;
        this.closeVringFds(v);
        this.log.info({ queue: st.index, base: v.lastAvailIdx }, 'queue stopped');
        return encodeVringState({ index: st.index, num: v.lastAvailIdx });
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const name = requestName(msg.request);
        const vf = decodeVringFd(msg.request, p);
        const v = this.vring(msg.request, vf.index);
        if (vf.noFd !== (msg.fds.length === 0)) {
          throw new ProtocolError(name, vf.noFd ? 'no-fd bit set but an fd was attached' : 'no fd attached and the no-fd bit is clear');
        }
        const fd = vf.noFd ? null : this.takeFd(msg);
        if (fd !== null) {
          try {
            adoptEventfd(name, fd);
          } catch (e) {
            safeClose(fd);
            throw e;
          }
        }
        if (msg.request === Req.SET_VRING_KICK) {
          if (fd === null) throw new ProtocolError(name, `queue ${vf.index}: polling without a kick eventfd is not supported; send an eventfd`);
          this.stopRing(vf.index);
          replaceFd(v, 'kickFd', fd);
          v.started = true;
          if (!hasBit(s.ackedFeatures, VirtioFeature.PROTOCOL_FEATURES)) v.enabled = true;
          this.restartRing(vf.index);
        } else if (msg.request === Req.SET_VRING_CALL) {
          replaceFd(v, 'callFd', fd);
        } else {
          replaceFd(v, 'errFd', fd);
        }
        return undefined;
      }
      case Req.SET_VRING_ENABLE: {
        const st = decodeVringState(msg.request, p);
        const v = this.vring(msg.request, st.index);
        if (!hasBit(s.ackedFeatures, VirtioFeature.PROTOCOL_FEATURES)) {
          throw new ProtocolError('SET_VRING_ENABLE', 'only valid after VHOST_USER_F_PROTOCOL_FEATURES was acked with SET_FEATURES');
        }
        if (st.num > 1) throw new ProtocolError('SET_VRING_ENABLE', `enable must be 0 or 1, got ${st.num}`);
        v.enabled = st.num === 1;
        this.restartRing(st.index);
        return undefined;
      }
      case Req.GET_CONFIG: {
        const c = decodeConfig(msg.request, p);
        const data = this.device.getConfig(c.offset, c.size);
        if (data.byteLength !== c.size) throw new ProtocolError('GET_CONFIG', `device returned ${data.byteLength} bytes for a ${c.size}-byte request`);
        return encodeConfig({ offset: c.offset, flags: c.flags, data });
      }
      case Req.SET_CONFIG: {
        const c = decodeConfig(msg.request, p);
        this.device.setConfig(c.offset, c.data);
        return undefined;
      }
      case Req.SET_STATUS: {
        const st = decodeU64(msg.request, p);
        if (st > 0xffn) throw new ProtocolError('SET_STATUS', `status 0x${st.toString(16)} does not fit the 8-bit device status`);
        s.status = Number(st);
        if (s.status === 0) this.resetDevice('SET_STATUS 0');
        return undefined;
      }
      case Req.GET_STATUS:
        return encodeU64(s.status);
      default:
        throw new ProtocolError(requestName(msg.request), 'request not supported by this back-end');
    }
  }

  private offeredFeatures(): bigint {
    return this.device.features | bit(VirtioFeature.PROTOCOL_FEATURES);
  }

  private offeredProtocolFeatures(): bigint {
    return this.device.protocolFeatures & SUPPORTED_PROTOCOL_FEATURES;
  }

  private vring(request: number, index: number): VringConfig {
    const v = this.state.vrings[index];
    if (!v) throw new ProtocolError(requestName(request), `queue index ${index} is out of range (device has ${this.device.numQueues} queues)`);
    return v;
  }

  // -------------------------------------------------------------------------------------------
  // Memory and rings

  /**
   * Apply a memory-table change: stop running rings, change, record, restart them from state.
   * On failure, `notHanded()` names the fds the change never gave to GuestMemory.add (which owns
   * and closes the ones it got, even when it fails): those are closed here, so each fd once.
   */
  private changeMemory(change: () => void, notHanded: () => number[]): void {
    const running = this.rings.map((r, i) => (r ? i : -1)).filter((i) => i >= 0);
    for (const i of running) this.stopRing(i);
    try {
      change();
    } catch (e) {
      for (const fd of notHanded()) this.mem.closeFd(fd);
      throw e;
    } finally {
      this.state.memory = this.mem.descriptions();
      this.state.memoryFds = this.mem.fds();
      for (const i of running) this.restartRing(i);
    }
    this.log.info({ regions: this.state.memory.length }, 'memory table updated');
  }

  /** Bring ring `index` to match its config: running if started, enabled and complete; else stopped. */
  private restartRing(index: number): void {
    this.stopRing(index);
    const v = this.state.vrings[index]!;
    if (!v.started || !v.enabled || v.kickFd === null) return;
    if (v.size === 0 || v.addr === null) {
      throw new ProtocolError('SET_VRING_KICK', `queue ${index} started before its size and addresses were set`);
    }
    if (this.mem.regionCount === 0) throw new ProtocolError('SET_VRING_KICK', `queue ${index} started before any guest memory was mapped`);
    const features = this.state.ackedFeatures;
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
          if (this.closed || this.rings[index]?.ready !== ready) return;
          this.guarded(`deferred work of queue ${index}`, () => this.runDevice(index, fn));
        });
      },
    };
    const watcher = native.watchEventfd(v.kickFd, (count) =>
      this.guarded(`kick watcher of queue ${index}`, () => (count < 0 ? this.kickFdFailed(index, count) : this.onKick(index))),
    );
    this.rings[index] = { vq, watcher, ready };
    watcher.start();
    this.log.info({ queue: index, size, base: v.lastAvailIdx, usedIdx: vq.usedIdx }, 'queue ready');
    this.device.queueReady(ready);
    // Buffers made available before the kick fd arrived would otherwise wait for the next kick.
    this.onKick(index);
  }

  private stopRing(index: number): void {
    const r = this.rings[index];
    if (!r) return;
    this.rings[index] = null;
    r.watcher.close();
    this.state.vrings[index]!.lastAvailIdx = r.vq.lastAvailIdx;
    this.device.queueStopped(index);
  }

  private syncRingIndices(): void {
    this.rings.forEach((r, i) => {
      if (r) this.state.vrings[i]!.lastAvailIdx = r.vq.lastAvailIdx;
    });
  }

  private onKick(index: number): void {
    const r = this.rings[index];
    if (!r || r.vq.broken || this.closed) return;
    this.runDevice(index, () => this.device.kicked(index));
  }

  /** The kick fd could not be read (the watcher has stopped): the front-end broke its end. */
  private kickFdFailed(index: number, errno: number): void {
    const msg = `the kick fd of queue ${index} failed (${errnoName(errno)}); it must be an eventfd`;
    this.log.error({ queue: index, errno }, 'closing connection: unreadable kick fd');
    this.close(msg, 'io_error');
  }

  /** Run device code for queue `index`; its errors are charged to a queue or to the connection. */
  private runDevice(index: number, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      // The device may have been working on another queue than the kicked one (a tx kick takes an
      // rx buffer): charge the error to the queue it names.
      if (e instanceof QueueError) return this.queueFailed(e.queueIndex >= 0 && e.queueIndex < this.rings.length ? e.queueIndex : index, e);
      if (e instanceof MemoryAccessError) return this.queueFailed(index, e);
      this.log.error({ queue: index, err: errText(e), stack: (e as Error).stack }, 'device failed handling a kick; closing connection');
      this.close(`device error: ${errText(e)}`, 'internal_error');
    }
  }

  private queueFailed(index: number, err: Error): void {
    const v = this.state.vrings[index]!;
    this.log.error({ queue: index, err: err.message }, 'queue broken by the driver; it stays stopped until the device is reset');
    const r = this.rings[index];
    if (r) {
      r.watcher.stop();
      this.device.queueStopped(index);
    }
    if (v.errFd !== null) native.eventfdWrite(v.errFd, 1);
  }

  private resetDevice(why: string): void {
    for (let i = 0; i < this.rings.length; i++) this.stopRing(i);
    this.state.vrings = this.state.vrings.map((v) => {
      this.closeVringFds(v);
      return initialVring(v.index);
    });
    this.state.ackedFeatures = 0n;
    this.state.status = 0;
    this.device.reset(why);
    this.log.info({ why }, 'device reset');
  }

  private closeVringFds(v: VringConfig): void {
    replaceFd(v, 'kickFd', null);
    replaceFd(v, 'callFd', null);
    replaceFd(v, 'errFd', null);
  }

  private closeFds(fds: number[]): void {
    for (const fd of fds.splice(0)) safeClose(fd);
  }
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
function adoptEventfd(request: string, fd: number): void {
  const what = fdTarget(fd);
  if (what !== 'anon_inode:[eventfd]') {
    throw new ProtocolError(request, `fd ${fd} is ${what}, not an eventfd; send an eventfd (eventfd(2))`, 'bad_fd');
  }
  let info = '';
  try {
    info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    // no fdinfo: nothing more to check
  }
  if (/^eventfd-semaphore:\s*1\s*$/m.test(info)) {
    throw new ProtocolError(request, `fd ${fd} is an EFD_SEMAPHORE eventfd; send a plain eventfd`, 'bad_fd');
  }
  native.setNonblock(fd);
}


function replaceFd(v: VringConfig, key: 'kickFd' | 'callFd' | 'errFd', fd: number | null): void {
  const old = v[key];
  if (old !== null && old !== fd) safeClose(old);
  v[key] = fd;
}



function protoFeatureName(n: number): string {
  return Object.entries(ProtoFeature).find(([, v]) => v === n)?.[0] ?? `bit ${n}`;
}
