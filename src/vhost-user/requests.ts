/**
 * requests.ts — the registry of the requests this back-end implements: one entry per request.
 *
 * Owns: for each request code, its rule (payload shape, fds it must/may carry, whether it has a
 * reply of its own, the protocol feature that gates it), the decoder of its payload (which is the
 * request's only size check) and its handler. The dispatcher (dispatch.ts) checks the rule,
 * decodes once and calls the handler; the test front-end reads the same rules. A request missing
 * here is offered to the device (VhostUserDevice.handleRequest), else refused as unsupported.
 */
import { safeClose } from '../sys/fd.js';
import type { Logger } from '../sys/log.js';
import type { VhostUserDevice } from './device.js';
import { ProtocolError } from './errors.js';
import {
  decodeConfig,
  decodeMemRegion,
  decodeMemTable,
  decodeNone,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeU64,
  encodeVringState,
  type Message,
} from './messages.js';
import {
  MAX_MEM_SLOTS,
  MAX_QUEUE_SIZE,
  MEM_TABLE_MAX_REGIONS,
  ProtoFeature,
  Req,
  SUPPORTED_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VirtioFeature,
  bit,
  hasBit,
  requestName,
  type PayloadShape,
  type RequestRule,
} from './protocol.js';
import { adoptEventfd, closeVringFds, replaceFd, type Rings } from './rings.js';
import type { ConnectionState, VringConfig } from './state.js';

/** What a handler works on: the connection's state, device and rings. */
export interface RequestContext {
  readonly state: ConnectionState;
  readonly device: VhostUserDevice;
  readonly rings: Rings;
  readonly log: Logger;
}

export interface RequestSpec<T = unknown> extends RequestRule {
  /** Decode (and size-check) the payload; throws ProtocolError. */
  decode(request: number, payload: Uint8Array): T;
  /**
   * Do the request; returns the reply payload for requests with `hasReply`. Fds the handler keeps
   * it takes out of `msg.fds`; the dispatcher closes the rest.
   */
  handle(ctx: RequestContext, value: T, msg: Message): Uint8Array | undefined;
}

interface RuleOptions {
  hasReply?: boolean;
  needs?: number;
  minFds?: number;
  maxFds?: number;
}

function spec<T>(
  payload: PayloadShape,
  decode: (request: number, payload: Uint8Array) => T,
  handle: (ctx: RequestContext, value: T, msg: Message) => Uint8Array | undefined,
  o: RuleOptions = {},
): RequestSpec {
  const minFds = o.minFds ?? 0;
  return { payload, hasReply: o.hasReply ?? false, needs: o.needs, minFds, maxFds: o.maxFds ?? minFds, decode, handle } as RequestSpec;
}

const offeredFeatures = (c: RequestContext): bigint => c.device.features | bit(VirtioFeature.PROTOCOL_FEATURES);
const offeredProtocolFeatures = (c: RequestContext): bigint => c.device.protocolFeatures & SUPPORTED_PROTOCOL_FEATURES;

function vring(c: RequestContext, request: number, index: number): VringConfig {
  const v = c.state.vrings[index];
  if (!v) throw new ProtocolError(requestName(request), `queue index ${index} is out of range (device has ${c.device.numQueues} queues)`);
  return v;
}

const reset = (c: RequestContext, m: Message): undefined => void c.rings.resetDevice(requestName(m.request));

/** SET_VRING_KICK / CALL / ERR. */
function setVringFd(c: RequestContext, vf: { index: number; noFd: boolean }, m: Message): undefined {
  const name = requestName(m.request);
  const v = vring(c, m.request, vf.index);
  if (vf.noFd !== (m.fds.length === 0)) {
    throw new ProtocolError(name, vf.noFd ? 'no-fd bit set but an fd was attached' : 'no fd attached and the no-fd bit is clear');
  }
  const fd = vf.noFd ? null : m.fds.shift()!; // the check above guarantees one
  if (fd !== null) {
    try {
      adoptEventfd(name, fd);
    } catch (e) {
      safeClose(fd);
      throw e;
    }
  }
  if (m.request === Req.SET_VRING_KICK) {
    if (fd === null) throw new ProtocolError(name, `queue ${vf.index}: polling without a kick eventfd is not supported; send an eventfd`);
    c.rings.stop(vf.index);
    replaceFd(v, 'kickFd', fd);
    v.started = true;
    if (!hasBit(c.state.ackedFeatures, VirtioFeature.PROTOCOL_FEATURES)) v.enabled = true;
    c.rings.restart(vf.index);
  } else {
    replaceFd(v, m.request === Req.SET_VRING_CALL ? 'callFd' : 'errFd', fd);
  }
  return undefined;
}

const fdRule = { minFds: 0, maxFds: 1 };

/** Requests this back-end implements. */
export const REQUESTS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [Req.GET_FEATURES, spec('none', decodeNone, (c) => encodeU64(offeredFeatures(c)), { hasReply: true })],
  [
    Req.SET_FEATURES,
    spec('u64', decodeU64, (c, f) => {
      const extra = f & ~offeredFeatures(c);
      if (extra) throw new ProtocolError('SET_FEATURES', `features 0x${extra.toString(16)} were not offered (offered 0x${offeredFeatures(c).toString(16)})`);
      c.state.ackedFeatures = f;
      c.device.featuresAcked(f);
      // Without protocol features, rings are enabled as soon as they start.
      if (!hasBit(f, VirtioFeature.PROTOCOL_FEATURES)) for (const v of c.state.vrings) v.enabled = true;
      return undefined;
    }),
  ],
  [Req.SET_OWNER, spec('none', decodeNone, (c) => void (c.state.owner = true))],
  [Req.RESET_OWNER, spec('none', decodeNone, (c, _v, m) => reset(c, m))],
  [
    Req.SET_MEM_TABLE,
    spec(
      'mem-table',
      decodeMemTable,
      (c, regions, m) => {
        if (regions.length !== m.fds.length) throw new ProtocolError('SET_MEM_TABLE', `${regions.length} regions but ${m.fds.length} fds`);
        const fds = m.fds.splice(0);
        let handed = 0; // fds[0, handed) belong to the memory, which closes them exactly once
        c.rings.changeMemory(
          () => {
            c.rings.mem.clear();
            while (handed < regions.length) {
              const i = handed++;
              c.rings.mem.add('SET_MEM_TABLE', regions[i]!, fds[i]!);
            }
          },
          () => fds.slice(handed),
        );
        return undefined;
      },
      { minFds: 1, maxFds: MEM_TABLE_MAX_REGIONS },
    ),
  ],
  [
    Req.SET_VRING_NUM,
    spec('vring-state', decodeVringState, (c, st, m) => {
      const v = vring(c, m.request, st.index);
      if (v.started) throw new ProtocolError('SET_VRING_NUM', `queue ${st.index} is running; stop it with GET_VRING_BASE first`);
      const max = Math.min(c.device.maxQueueSize, MAX_QUEUE_SIZE);
      if (st.num === 0 || st.num > max || (st.num & (st.num - 1)) !== 0) {
        throw new ProtocolError('SET_VRING_NUM', `queue ${st.index} size ${st.num} must be a power of two in 1..${max}`);
      }
      v.size = st.num;
      return undefined;
    }),
  ],
  [
    Req.SET_VRING_ADDR,
    spec('vring-addr', decodeVringAddr, (c, a, m) => {
      const v = vring(c, m.request, a.index);
      if (a.flags & ~VHOST_VRING_F_LOG) throw new ProtocolError('SET_VRING_ADDR', `unknown flags 0x${a.flags.toString(16)}`);
      if (a.flags & VHOST_VRING_F_LOG) throw new ProtocolError('SET_VRING_ADDR', 'dirty logging (VHOST_VRING_F_LOG) requested, but VHOST_F_LOG_ALL was not offered');
      v.addr = { descUser: a.descUser, availUser: a.availUser, usedUser: a.usedUser, logGuestAddr: a.logGuestAddr, flags: a.flags };
      if (v.started) c.rings.restart(v.index);
      return undefined;
    }),
  ],
  [
    Req.SET_VRING_BASE,
    spec('vring-state', decodeVringState, (c, st, m) => {
      const v = vring(c, m.request, st.index);
      if (v.started) throw new ProtocolError('SET_VRING_BASE', `queue ${st.index} is running; stop it with GET_VRING_BASE first`);
      if (st.num > 0xffff) throw new ProtocolError('SET_VRING_BASE', `base ${st.num} exceeds 65535 (packed rings are not supported)`);
      v.lastAvailIdx = st.num;
      return undefined;
    }),
  ],
  [
    Req.GET_VRING_BASE,
    spec(
      'vring-state',
      decodeVringState,
      (c, st, m) => {
        const v = vring(c, m.request, st.index);
        c.rings.stop(st.index);
        v.started = false;
        closeVringFds(v);
        c.log.info({ queue: st.index, base: v.lastAvailIdx }, 'queue stopped');
        return encodeVringState({ index: st.index, num: v.lastAvailIdx });
      },
      { hasReply: true },
    ),
  ],
  [Req.SET_VRING_KICK, spec('u64', decodeVringFd, setVringFd, fdRule)],
  [Req.SET_VRING_CALL, spec('u64', decodeVringFd, setVringFd, fdRule)],
  [Req.SET_VRING_ERR, spec('u64', decodeVringFd, setVringFd, fdRule)],
  [Req.GET_PROTOCOL_FEATURES, spec('none', decodeNone, (c) => encodeU64(offeredProtocolFeatures(c)), { hasReply: true })],
  [
    Req.SET_PROTOCOL_FEATURES,
    spec('u64', decodeU64, (c, f) => {
      const extra = f & ~offeredProtocolFeatures(c);
      if (extra) throw new ProtocolError('SET_PROTOCOL_FEATURES', `protocol features 0x${extra.toString(16)} were not offered (offered 0x${offeredProtocolFeatures(c).toString(16)})`);
      c.state.protocolFeatures = f;
      return undefined;
    }),
  ],
  [Req.GET_QUEUE_NUM, spec('none', decodeNone, (c) => encodeU64(c.device.numQueues), { hasReply: true, needs: ProtoFeature.MQ })],
  [
    Req.SET_VRING_ENABLE,
    spec('vring-state', decodeVringState, (c, st, m) => {
      const v = vring(c, m.request, st.index);
      if (!hasBit(c.state.ackedFeatures, VirtioFeature.PROTOCOL_FEATURES)) {
        throw new ProtocolError('SET_VRING_ENABLE', 'only valid after VHOST_USER_F_PROTOCOL_FEATURES was acked with SET_FEATURES');
      }
      if (st.num > 1) throw new ProtocolError('SET_VRING_ENABLE', `enable must be 0 or 1, got ${st.num}`);
      v.enabled = st.num === 1;
      c.rings.restart(st.index);
      return undefined;
    }),
  ],
  [
    Req.GET_CONFIG,
    spec(
      'config',
      decodeConfig,
      (c, cfg) => {
        const data = c.device.getConfig(cfg.offset, cfg.size);
        if (data.byteLength !== cfg.size) throw new ProtocolError('GET_CONFIG', `device returned ${data.byteLength} bytes for a ${cfg.size}-byte request`);
        return encodeConfig({ offset: cfg.offset, flags: cfg.flags, data });
      },
      { hasReply: true, needs: ProtoFeature.CONFIG },
    ),
  ],
  [Req.SET_CONFIG, spec('config', decodeConfig, (c, cfg) => void c.device.setConfig(cfg.offset, cfg.data), { needs: ProtoFeature.CONFIG })],
  [Req.RESET_DEVICE, spec('none', decodeNone, (c, _v, m) => reset(c, m), { needs: ProtoFeature.RESET_DEVICE })],
  [Req.GET_MAX_MEM_SLOTS, spec('none', decodeNone, () => encodeU64(MAX_MEM_SLOTS), { hasReply: true, needs: ProtoFeature.CONFIGURE_MEM_SLOTS })],
  [
    Req.ADD_MEM_REG,
    spec(
      'mem-region',
      decodeMemRegion,
      (c, region, m) => {
        const fd = m.fds.shift()!; // the rule requires exactly one
        c.rings.changeMemory(() => c.rings.mem.add('ADD_MEM_REG', region, fd), () => []); // add owns fd
        return undefined;
      },
      { needs: ProtoFeature.CONFIGURE_MEM_SLOTS, minFds: 1 },
    ),
  ],
  [
    Req.REM_MEM_REG,
    spec('mem-region', decodeMemRegion, (c, region) => void c.rings.changeMemory(() => c.rings.mem.remove('REM_MEM_REG', region), () => []), {
      needs: ProtoFeature.CONFIGURE_MEM_SLOTS,
      minFds: 0,
      maxFds: 1,
    }),
  ],
  [
    Req.SET_STATUS,
    spec(
      'u64',
      decodeU64,
      (c, st) => {
        if (st > 0xffn) throw new ProtocolError('SET_STATUS', `status 0x${st.toString(16)} does not fit the 8-bit device status`);
        c.state.status = Number(st);
        if (c.state.status === 0) c.rings.resetDevice('SET_STATUS 0');
        return undefined;
      },
      { needs: ProtoFeature.STATUS },
    ),
  ],
  [Req.GET_STATUS, spec('none', decodeNone, (c) => encodeU64(c.state.status), { hasReply: true, needs: ProtoFeature.STATUS })],
]);

/** The wire rules alone (for the test front-end and the codec tests). */
export const REQUEST_RULES: ReadonlyMap<number, RequestRule> = REQUESTS;
