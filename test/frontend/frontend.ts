/**
 * frontend.ts — a userspace vhost-user FRONT-END (QEMU's role) for tests and benchmarks.
 *
 * Owns: the front-end end of one vhost-user socket: connecting (native.connectUnix), sending
 * requests built with the shared codec (src/vhost-user/messages.ts) with their fds
 * (native.sendMsg / SCM_RIGHTS), and reading replies asynchronously (native.watchReadable).
 * Requests are serialised, like QEMU's: `request()` sends one, waits for its reply (a GET_*
 * reply, or the REPLY_ACK u64 when VHOST_USER_PROTOCOL_F_REPLY_ACK was negotiated, in which case
 * NEED_REPLY is set on every request that has no reply of its own) and rejects with an Error that
 * names the request on a nack, a timeout or a closed connection. It also tracks the back-end
 * closing the socket (`closed`, `waitClosed()`), which is how a back-end answers a bad request
 * when no REPLY_ACK was asked for.
 *
 * `handshake()` does what QEMU 10 does for vhost-user-gpio-pci, in this order: GET_FEATURES,
 * SET_FEATURES (with VHOST_USER_F_PROTOCOL_FEATURES), GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
 * GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER, GET_CONFIG, then guest memory (SET_MEM_TABLE, or
 * one ADD_MEM_REG per region), then per queue SET_VRING_NUM/BASE/ADDR/ERR/KICK/CALL/ENABLE, and
 * SET_STATUS (DRIVER_OK). Guest memory is a GuestMemoryImage (memfd regions), queues are
 * DriverQueues in it.
 */
import { native, type FdWatcher } from '../../src/sys/native.js';
import {
  decodeReplyHeader,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  type MemRegionDesc,
} from '../../src/vhost-user/messages.js';
import {
  DeviceStatus,
  FLAG_NEED_REPLY,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  ProtoFeature,
  Req,
  VirtioFeature,
  bit,
  hasBit,
  requestName,
  SUPPORTED_PROTOCOL_FEATURES,
} from '../../src/vhost-user/protocol.js';
import { REQUEST_RULES } from '../../src/vhost-user/requests.js';
import { DriverQueue } from './driver-queue.js';
import type { GuestMemoryImage } from './guest-memory.js';

export const DEFAULT_TIMEOUT_MS = 2000;

/** Protocol features this front-end knows how to use. */
export const FRONTEND_PROTOCOL_FEATURES = SUPPORTED_PROTOCOL_FEATURES;

export interface RequestOptions {
  fds?: number[];
  /** Extra header flags (e.g. FLAG_NEED_REPLY on purpose); the version bit is always set. */
  flags?: number;
  /**
   * Wait for a reply: default = the request has a reply of its own (GET_*), or REPLY_ACK was
   * negotiated (then NEED_REPLY is set and the u64 is checked). false: send and resolve.
   */
  reply?: boolean;
  timeoutMs?: number;
}

interface Waiter {
  request: number;
  ack: boolean;
  resolve: (payload: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** A failed request: `request` names it; `ackValue` is set for a REPLY_ACK nack. */
export class FrontendRequestError extends Error {
  override name = 'FrontendRequestError';
  constructor(
    readonly request: string,
    message: string,
    readonly ackValue?: bigint,
  ) {
    super(`${request}: ${message}`);
  }
}

export class VhostUserFrontend {
  readonly fd: number;
  /** Protocol features in force (after SET_PROTOCOL_FEATURES). */
  protocolFeatures = 0n;
  /** Virtio features in force (after SET_FEATURES). */
  features = 0n;
  closed = false;
  closeReason = '';
  private readonly watcher: FdWatcher;
  private rx = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD_SIZE + 64);
  private rxGot = 0;
  private waiter: Waiter | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private closeWaiters: ((reason: string) => void)[] = [];
  readonly timeoutMs: number;

  constructor(path: string, opts: { timeoutMs?: number } = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.fd = native.connectUnix(path);
    this.watcher = native.watchReadable(this.fd, (events) => this.onReadable(events));
    this.watcher.start();
  }

  get replyAck(): boolean {
    return hasBit(this.protocolFeatures, ProtoFeature.REPLY_ACK);
  }

  // -------------------------------------------------------------------------------------------
  // Requests

  /**
   * Send `request` with `payload` (and fds) and wait for its reply as described in RequestOptions.
   * Resolves with the reply payload (the GET_* reply, or the 8-byte ack), or undefined when no
   * reply was awaited. Requests are queued behind each other.
   */
  request(request: number, payload?: Uint8Array, opts: RequestOptions = {}): Promise<Uint8Array | undefined> {
    const run = this.tail.then(
      () => this.doRequest(request, payload, opts),
      () => this.doRequest(request, payload, opts),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  private doRequest(request: number, payload: Uint8Array | undefined, opts: RequestOptions): Promise<Uint8Array | undefined> {
    const name = requestName(request);
    if (this.closed) return Promise.reject(new FrontendRequestError(name, `connection closed (${this.closeReason})`));
    const rule = REQUEST_RULES.get(request);
    const ownReply = rule?.hasReply ?? false;
    const ack = !ownReply && this.replyAck && opts.reply !== false;
    const wait = opts.reply ?? (ownReply || ack);
    const flags = (opts.flags ?? 0) | (ack ? FLAG_NEED_REPLY : 0);
    const msg = encodeMessage(request, flags, payload);
    return new Promise<Uint8Array | undefined>((resolve, reject) => {
      if (wait) {
        const timer = setTimeout(() => {
          this.waiter = null;
          reject(new FrontendRequestError(name, `no reply within ${opts.timeoutMs ?? this.timeoutMs} ms`));
        }, opts.timeoutMs ?? this.timeoutMs);
        this.waiter = { request, ack, resolve, reject, timer };
      }
      try {
        this.sendAll(msg, opts.fds ?? null);
      } catch (e) {
        if (this.waiter) {
          clearTimeout(this.waiter.timer);
          this.waiter = null;
        }
        reject(new FrontendRequestError(name, `send failed: ${(e as Error).message}`));
        return;
      }
      if (!wait) resolve(undefined);
    });
  }

  /** Write raw bytes (with fds on the first byte); for malformed-message tests. */
  sendRaw(bytes: Uint8Array, fds: number[] | null = null): void {
    this.sendAll(bytes, fds);
  }

  private sendAll(buf: Uint8Array, fds: number[] | null): void {
    let off = 0;
    let spins = 0;
    while (off < buf.byteLength) {
      const n = native.sendMsg(this.fd, buf, off, buf.byteLength - off, off === 0 ? fds : null);
      if (n < 0) {
        if (++spins > 100_000) throw new Error('socket send buffer stays full');
        continue;
      }
      off += n;
    }
  }

  private onReadable(events: number): void {
    if (this.closed) return;
    if (events < 0) return this.markClosed('socket error');
    for (;;) {
      if (this.rxGot === this.rx.byteLength) return this.markClosed('reply larger than any legal reply');
      let r;
      try {
        r = native.recvMsg(this.fd, this.rx, this.rxGot, this.rx.byteLength - this.rxGot, 8);
      } catch (e) {
        return this.markClosed(`recvmsg failed: ${(e as Error).message}`);
      }
      if (r === null) return;
      for (const fd of r.fds) native.close(fd);
      if (r.bytes === 0) return this.markClosed('back-end closed the connection');
      this.rxGot += r.bytes;
      this.deliver();
    }
  }

  private deliver(): void {
    while (this.rxGot >= HEADER_SIZE) {
      const dv = new DataView(this.rx.buffer, 0, HEADER_SIZE);
      const size = dv.getUint32(8, true);
      if (size > MAX_PAYLOAD_SIZE) return this.markClosed(`reply with payload size ${size}`);
      if (this.rxGot < HEADER_SIZE + size) return;
      const w = this.waiter;
      const whole = this.rx.slice(0, HEADER_SIZE + size);
      this.rx.copyWithin(0, HEADER_SIZE + size, this.rxGot);
      this.rxGot -= HEADER_SIZE + size;
      if (!w) {
        this.markClosed(`unsolicited message from the back-end: ${requestName(dv.getUint32(0, true))}`);
        return;
      }
      this.waiter = null;
      clearTimeout(w.timer);
      const name = requestName(w.request);
      try {
        const h = decodeReplyHeader(whole, w.request);
        const payload = whole.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
        if (w.ack) {
          if (payload.byteLength !== 8) throw new FrontendRequestError(name, `REPLY_ACK payload of ${payload.byteLength} bytes`);
          const v = new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
          if (v !== 0n) throw new FrontendRequestError(name, `back-end rejected the request (REPLY_ACK ${v})`, v);
        }
        w.resolve(payload);
      } catch (e) {
        w.reject(e instanceof FrontendRequestError ? e : new FrontendRequestError(name, (e as Error).message));
      }
    }
  }

  private markClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.watcher.close();
    const w = this.waiter;
    this.waiter = null;
    if (w) {
      clearTimeout(w.timer);
      w.reject(new FrontendRequestError(requestName(w.request), `connection closed (${reason})`));
    }
    for (const cb of this.closeWaiters.splice(0)) cb(reason);
  }

  /** Resolves with the reason once the connection is closed (by either side); rejects after `ms`. */
  waitClosed(ms = this.timeoutMs): Promise<string> {
    if (this.closed) return Promise.resolve(this.closeReason);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`back-end did not close the connection within ${ms} ms`)), ms);
      this.closeWaiters.push((r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** Close our end of the socket. Idempotent. */
  close(): void {
    if (!this.closed) this.markClosed('closed by the front-end');
    if (this.fd >= 0 && !this.fdClosed) {
      this.fdClosed = true;
      native.close(this.fd);
    }
  }
  private fdClosed = false;

  // -------------------------------------------------------------------------------------------
  // Typed helpers

  async getU64(request: number): Promise<bigint> {
    const p = await this.request(request);
    if (!p || p.byteLength !== 8) throw new FrontendRequestError(requestName(request), `reply payload of ${p?.byteLength ?? 0} bytes, expected 8`);
    return new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0, true);
  }

  async setU64(request: number, v: bigint | number, opts?: RequestOptions): Promise<void> {
    await this.request(request, encodeU64(v), opts);
  }

  getFeatures(): Promise<bigint> {
    return this.getU64(Req.GET_FEATURES);
  }

  async setFeatures(f: bigint, opts?: RequestOptions): Promise<void> {
    await this.setU64(Req.SET_FEATURES, f, opts);
    this.features = f;
  }

  getProtocolFeatures(): Promise<bigint> {
    return this.getU64(Req.GET_PROTOCOL_FEATURES);
  }

  /** SET_PROTOCOL_FEATURES; REPLY_ACK applies from the next request on. */
  async setProtocolFeatures(f: bigint): Promise<void> {
    await this.request(Req.SET_PROTOCOL_FEATURES, encodeU64(f), { reply: false });
    this.protocolFeatures = f;
  }

  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const p = await this.request(Req.GET_CONFIG, encodeConfig({ offset, flags: 0, data: new Uint8Array(size) }));
    if (!p || p.byteLength !== 12 + size) throw new FrontendRequestError('GET_CONFIG', `reply of ${p?.byteLength ?? 0} bytes, expected ${12 + size}`);
    return p.slice(12);
  }

  async setMemTable(mem: GuestMemoryImage, regions: MemRegionDesc[] = mem.descs()): Promise<void> {
    await this.request(Req.SET_MEM_TABLE, encodeMemTable(regions), { fds: regions.map(() => mem.fd) });
  }

  async addMemReg(mem: GuestMemoryImage, region: MemRegionDesc): Promise<void> {
    await this.request(Req.ADD_MEM_REG, encodeMemRegion(region), { fds: [mem.fd] });
  }

  async remMemReg(region: MemRegionDesc): Promise<void> {
    await this.request(Req.REM_MEM_REG, encodeMemRegion(region));
  }

  async setVringState(request: number, index: number, num: number): Promise<void> {
    await this.request(request, encodeVringState({ index, num }));
  }

  async getVringBase(index: number): Promise<number> {
    const p = await this.request(Req.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (!p || p.byteLength !== 8) throw new FrontendRequestError('GET_VRING_BASE', 'bad reply size');
    return new DataView(p.buffer, p.byteOffset, 8).getUint32(4, true);
  }

  async setVringFd(request: number, index: number, fd: number | null): Promise<void> {
    await this.request(request, encodeVringFd(index, fd === null), { fds: fd === null ? [] : [fd] });
  }

  /** SET_VRING_NUM/BASE/ADDR/ERR/KICK/CALL (and ENABLE 1 when protocol features are on) for `q`. */
  async startQueue(q: DriverQueue, enable = true): Promise<void> {
    await this.setVringState(Req.SET_VRING_NUM, q.index, q.size);
    await this.setVringState(Req.SET_VRING_BASE, q.index, q.base);
    await this.request(Req.SET_VRING_ADDR, encodeVringAddr({ index: q.index, flags: 0, ...q.userAddrs(), logGuestAddr: 0 }));
    await this.setVringFd(Req.SET_VRING_ERR, q.index, q.errFd);
    await this.setVringFd(Req.SET_VRING_KICK, q.index, q.kickFd);
    await this.setVringFd(Req.SET_VRING_CALL, q.index, q.callFd);
    if (enable && hasBit(this.features, VirtioFeature.PROTOCOL_FEATURES)) await this.setVringState(Req.SET_VRING_ENABLE, q.index, 1);
  }

  // -------------------------------------------------------------------------------------------
  // Handshake

  async handshake(opts: HandshakeOptions): Promise<HandshakeResult> {
    const offered = await this.getFeatures();
    const want = opts.features ?? bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC);
    let features = offered & (want | bit(VirtioFeature.PROTOCOL_FEATURES));
    if (opts.eventIdx === false) features &= ~bit(VirtioFeature.RING_EVENT_IDX);
    if (opts.indirect === false) features &= ~bit(VirtioFeature.RING_INDIRECT_DESC);
    await this.setFeatures(features);
    let protocolOffered = 0n;
    let queueNum: number | undefined;
    let maxMemSlots: number | undefined;
    let config: Uint8Array | undefined;
    if (hasBit(features, VirtioFeature.PROTOCOL_FEATURES)) {
      protocolOffered = await this.getProtocolFeatures();
      await this.setProtocolFeatures(protocolOffered & (opts.protocolFeatures ?? FRONTEND_PROTOCOL_FEATURES));
      if (hasBit(this.protocolFeatures, ProtoFeature.MQ)) queueNum = Number(await this.getU64(Req.GET_QUEUE_NUM));
      if (hasBit(this.protocolFeatures, ProtoFeature.CONFIGURE_MEM_SLOTS)) maxMemSlots = Number(await this.getU64(Req.GET_MAX_MEM_SLOTS));
    }
    await this.request(Req.SET_OWNER);
    if (hasBit(this.protocolFeatures, ProtoFeature.CONFIG)) config = await this.getConfig(0, opts.configSize ?? 8);

    if (opts.memoryVia === 'add-mem-reg') {
      for (const r of opts.memory.descs()) await this.addMemReg(opts.memory, r);
    } else {
      await this.setMemTable(opts.memory);
    }

    const eventIdx = hasBit(features, VirtioFeature.RING_EVENT_IDX);
    const indirect = hasBit(features, VirtioFeature.RING_INDIRECT_DESC);
    const queues: DriverQueue[] = [];
    try {
      for (const qo of opts.queues) {
        queues.push(
          new DriverQueue(opts.memory, {
            index: qo.index ?? queues.length,
            size: qo.size,
            eventIdx,
            maxIndirect: indirect ? (qo.maxIndirect ?? 0) : 0,
            base: qo.base,
            region: qo.region,
          }),
        );
      }
      for (const q of queues) await this.startQueue(q);
      if (hasBit(this.protocolFeatures, ProtoFeature.STATUS)) {
        await this.setU64(Req.SET_STATUS, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
      }
    } catch (e) {
      for (const q of queues) q.close();
      throw e;
    }
    return { offeredFeatures: offered, features, protocolOffered, protocolFeatures: this.protocolFeatures, queueNum, maxMemSlots, config, queues, eventIdx, indirect };
  }
}

export interface QueueSetup {
  index?: number;
  size: number;
  /** Entries per indirect table (only used when INDIRECT_DESC is negotiated). */
  maxIndirect?: number;
  base?: number;
  /** Guest memory region to put the rings in. */
  region?: number;
}

export interface HandshakeOptions {
  memory: GuestMemoryImage;
  queues: QueueSetup[];
  /** Virtio features to accept if offered (default VERSION_1 | EVENT_IDX | INDIRECT_DESC); PROTOCOL_FEATURES is always taken. */
  features?: bigint;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Protocol features to accept if offered (default FRONTEND_PROTOCOL_FEATURES). */
  protocolFeatures?: bigint;
  configSize?: number;
  memoryVia?: 'set-mem-table' | 'add-mem-reg';
}

export interface HandshakeResult {
  offeredFeatures: bigint;
  features: bigint;
  protocolOffered: bigint;
  protocolFeatures: bigint;
  queueNum: number | undefined;
  maxMemSlots: number | undefined;
  config: Uint8Array | undefined;
  queues: DriverQueue[];
  eventIdx: boolean;
  indirect: boolean;
}
