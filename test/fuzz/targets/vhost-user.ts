/**
 * vhost-user.ts — fuzz target: a hostile front-end's message stream, with fds, against a real
 * vhost-user Connection (src/vhost-user/connection.ts) serving a real VmpiDevice.
 *
 * Each case connects a fresh Unix stream socket to a Connection and sends a sequence of steps:
 * requests built from the codec with arbitrary fields (often after a plausible handshake, so
 * deep states are reached), raw or mutated bytes, messages split across several sendmsg calls,
 * fds of several kinds (memfd of guest RAM, eventfd, /dev/null, a socket) attached anywhere,
 * guest memory writes (descriptors, avail ring) with kicks, and host → guest SDUs. Between steps
 * the event loop turns so the connection's own watchers do the reading.
 *
 * Property: the connection never ends with 'internal_error' (an untyped exception reached its
 * dispatcher or kick handler), nothing reaches the process (child.ts), every reply header is
 * well formed, and a device send() throws only typed errors.
 *
 * Issue #9 items 2, 3 and 4 (fixed) used to kill this process (SIGBUS, a fatal exception from the
 * addon's poll callback) or end the connection with an untyped error; their reproducers run first
 * in every run (hazardExamples) and the fds are sent as generated. FUZZ_VHOST_HAZARDS=0 brings
 * back the old safe mode: a shadow of the connection's framing swaps, before anything is sent,
 * every fd that would become a non-eventfd kick/call/err fd or back a region larger than its
 * memfd for an eventfd (to look for other bugs should one of those fixes regress).
 * Guest RAM is a sealed memfd, as QEMU's memory-backend-memfd makes it (the server refuses others).
 */
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { safeClose } from '../../../src/sys/fd.js';
import { native } from '../../../src/sys/native.js';
import { Connection, type DisconnectCause } from '../../../src/vhost-user/connection.js';
import { VhostUserError } from '../../../src/vhost-user/errors.js';
import {
  decodeMemRegion,
  decodeMemTable,
  decodeReplyHeader,
  decodeRequestHeader,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  type MemRegionDesc,
} from '../../../src/vhost-user/messages.js';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtoFeature, Req, SUPPORTED_PROTOCOL_FEATURES, VirtioFeature, bit } from '../../../src/vhost-user/protocol.js';
import { VmpiDevice, VmpiDeviceError } from '../../../src/vmpi/device.js';
import { InvariantError, type FuzzTarget } from '../runner.js';
import { mutate, mutation, type Mutation } from './util.js';

const HAZARDS = process.env.FUZZ_VHOST_HAZARDS !== '0';

// ---------------------------------------------------------------------------------------------
// Guest memory of a case: one memfd, two regions (a hole between them), rings at fixed places

export const MEMFD_SIZE = 1 << 20;
const HALF = MEMFD_SIZE / 2;
const UVA0 = 0x7f00_0000_0000;
const UVA1 = 0x7f10_0000_0000;
const GPA1 = 0x1000_0000;
const REGIONS: readonly MemRegionDesc[] = [
  { guestPhysAddr: 0, size: HALF, userAddr: UVA0, mmapOffset: 0 },
  { guestPhysAddr: GPA1, size: HALF, userAddr: UVA1, mmapOffset: HALF },
];
/** Queue q's rings: desc at q*0x8000, avail +0x4000, used +0x6000 (gpa = uva offset in region 0). */
export const ring = (q: number) => ({ desc: q * 0x8000, avail: q * 0x8000 + 0x4000, used: q * 0x8000 + 0x6000 });
const FEATURES = bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC) | bit(VirtioFeature.PROTOCOL_FEATURES);

export type FdKind = 'memfd' | 'eventfd' | 'devnull' | 'socket';
const fdKind: fc.Arbitrary<FdKind> = fc.oneof({ weight: 3, arbitrary: fc.constant('eventfd' as const) }, { weight: 3, arbitrary: fc.constant('memfd' as const) }, { weight: 1, arbitrary: fc.constantFrom('devnull' as const, 'socket' as const) });

export type Step =
  /** One request: header fields, payload, fds, and where to cut it into several sendmsg calls. */
  | { kind: 'msg'; request: number; flags: number; payload: Uint8Array; fds: FdKind[]; cuts: number[]; mutations: Mutation[] }
  | { kind: 'raw'; bytes: Uint8Array; fds: FdKind[] }
  /** Guest driver: write bytes into guest RAM (offset in the memfd), then maybe kick queue q. */
  | { kind: 'guest'; at: number; bytes: Uint8Array; kick: number | null }
  /** Guest driver: post one well-formed buffer (descriptor `head`, avail entry, avail.idx++) and kick. */
  | { kind: 'post'; queue: number; head: number; len: number; channel: number; flags: number }
  | { kind: 'host-send'; channel: number; len: number }
  | { kind: 'turn' };

/** A 'post' step in guest memory: one descriptor (buffer at 0x10000 + 0x1000 * head in region 0,
 * away from the rings, starting with the frame's channel) made available on its queue. */
export function postBuffer(guest: Uint8Array, s: Extract<Step, { kind: 'post' }>): void {
  const r = ring(s.queue);
  const dv = new DataView(guest.buffer, guest.byteOffset, guest.byteLength);
  const d = r.desc + 16 * (s.head % 64);
  const buf = 0x10000 + 0x1000 * (s.head % 64);
  dv.setBigUint64(d, BigInt(buf), true);
  dv.setUint32(d + 8, s.len, true);
  dv.setUint16(d + 12, s.flags >= 0 ? s.flags : s.queue === 0 ? 2 : 0, true);
  dv.setUint16(d + 14, 0, true);
  dv.setUint32(buf, s.channel, true);
  const idx = dv.getUint16(r.avail + 2, true);
  dv.setUint16(r.avail + 4 + 2 * (idx % 64), s.head, true);
  dv.setUint16(r.avail + 2, (idx + 1) & 0xffff, true);
}

/** A fresh fd of `kind` to attach to a message (the caller closes it): the guest memfd's dup, a
 * new eventfd, /dev/null's dup, or a socket whose peer is already gone. */
export function newFdOfKind(kind: FdKind, memfd: number, devNull: number): number {
  switch (kind) {
    case 'memfd':
      return native.dup(memfd);
    case 'eventfd':
      return native.eventfd(0);
    case 'devnull':
      return native.dup(devNull);
    case 'socket': {
      const [a, b] = native.socketpairSeqpacket();
      safeClose(b);
      return a;
    }
  }
}

export interface StreamCase {
  /** Start with QEMU's handshake (features, memory, both queues started). */
  handshake: boolean;
  replyAck: boolean;
  steps: Step[];
}

// ---------------------------------------------------------------------------------------------
// Generators

const u64 = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0n, FEATURES, FEATURES & ~bit(VirtioFeature.PROTOCOL_FEATURES), SUPPORTED_PROTOCOL_FEATURES, bit(ProtoFeature.REPLY_ACK), 0xffn, 0x100n, 0x101n, 0x1ffn, 2n ** 64n - 1n) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) },
);
const qIndex = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: fc.constantFrom(2, 255, 256, 0xffffffff) });
const num = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1, 2, 16, 64, 256, 1024, 2048, 65535, 65536) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) });
/** Front-end virtual addresses: ring places, region edges, elsewhere. */
const uva = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(0, 1), fc.constantFrom('desc', 'avail', 'used') as fc.Arbitrary<'desc' | 'avail' | 'used'>).map(([q, p]) => UVA0 + ring(q)[p]) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(UVA0, UVA1, UVA0 + HALF, UVA1 + HALF), fc.integer({ min: -64, max: 64 })).map(([b, d]) => b + d) },
  { weight: 1, arbitrary: fc.constantFrom(0, 2 ** 53 - 1, 2 ** 52) },
);
const region = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...REGIONS) },
  {
    weight: 3,
    arbitrary: fc.record({
      guestPhysAddr: fc.oneof(fc.constantFrom(0, GPA1, 0x1000, HALF), fc.nat({ max: 2 ** 40 })),
      size: fc.oneof(fc.constantFrom(HALF, 0x1000, MEMFD_SIZE, 0, 1, MEMFD_SIZE + 0x1000, 2 ** 33), fc.nat({ max: MEMFD_SIZE })),
      userAddr: fc.oneof(fc.constantFrom(UVA0, UVA1, UVA0 + 0x1000), fc.nat({ max: 2 ** 47 })),
      mmapOffset: fc.oneof(fc.constantFrom(0, HALF, 0x1000, 1, MEMFD_SIZE, MEMFD_SIZE - 0x1000), fc.nat({ max: MEMFD_SIZE })),
    }),
  },
);

function payloadFor(request: number): fc.Arbitrary<Uint8Array> {
  switch (request) {
    case Req.SET_FEATURES:
    case Req.SET_PROTOCOL_FEATURES:
    case Req.SET_STATUS:
      return u64.map(encodeU64);
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR:
      return fc.oneof(fc.tuple(qIndex, fc.boolean()).map(([i, nofd]) => encodeVringFd(i, nofd)), u64.map(encodeU64));
    case Req.SET_VRING_NUM:
    case Req.SET_VRING_BASE:
    case Req.GET_VRING_BASE:
    case Req.SET_VRING_ENABLE:
      return fc.record({ index: qIndex, num }).map(encodeVringState);
    case Req.SET_VRING_ADDR:
      return fc.record({ index: qIndex, flags: fc.constantFrom(0, 0, 0, 1, 2), descUser: uva, usedUser: uva, availUser: uva, logGuestAddr: fc.constantFrom(0, 0x1000) }).map(encodeVringAddr);
    case Req.SET_MEM_TABLE:
      return fc.array(region, { minLength: 1, maxLength: 9 }).map((rs) => encodeMemTable(rs));
    case Req.ADD_MEM_REG:
    case Req.REM_MEM_REG:
      return region.map(encodeMemRegion);
    case Req.GET_CONFIG:
    case Req.SET_CONFIG:
      return fc.record({ offset: fc.constantFrom(0, 4, 8, 255, 256, 257), flags: fc.constantFrom(0, 1, 2), size: fc.constantFrom(0, 4, 8, 12, 256) }).map((c) => encodeConfig({ offset: c.offset, flags: c.flags, data: new Uint8Array(c.size) }));
    default:
      return fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 48 }));
  }
}

const REQUESTS = Object.values(Req);
const request = fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...REQUESTS) }, { weight: 1, arbitrary: fc.constantFrom(0, 44, 99, 0xffffffff) });

const msgStep: fc.Arbitrary<Step> = request.chain((req) =>
  fc.record({
    kind: fc.constant('msg' as const),
    request: fc.constant(req),
    flags: fc.oneof({ weight: 6, arbitrary: fc.constant(FLAG_NEED_REPLY) }, { weight: 2, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(0x4, 0x10, 0x2, 0xffffffff) }),
    payload: payloadFor(req),
    fds: fc.oneof(
      { weight: 4, arbitrary: fc.constant([] as FdKind[]) },
      { weight: req === Req.SET_VRING_KICK || req === Req.SET_VRING_CALL || req === Req.SET_VRING_ERR ? 2 : 0, arbitrary: fdKind.map((k) => [k]) },
      { weight: 4, arbitrary: fc.array(fc.constant(req === Req.SET_MEM_TABLE || req === Req.ADD_MEM_REG ? ('memfd' as const) : ('eventfd' as const)), { minLength: 1, maxLength: 2 }) },
      { weight: 1, arbitrary: fc.array(fdKind, { minLength: 1, maxLength: 9 }) },
    ),
    cuts: fc.oneof({ weight: 6, arbitrary: fc.constant([] as number[]) }, { weight: 1, arbitrary: fc.array(fc.nat({ max: 400 }), { minLength: 1, maxLength: 3 }) }),
    mutations: fc.oneof({ weight: 8, arbitrary: fc.constant([] as Mutation[]) }, { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 2 }) }),
  }),
);

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 10, arbitrary: msgStep },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('raw' as const), bytes: fc.uint8Array({ maxLength: 64 }), fds: fc.array(fdKind, { maxLength: 2 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('guest' as const),
      at: fc.oneof(fc.tuple(fc.constantFrom(0, 1), fc.constantFrom('desc', 'avail', 'used') as fc.Arbitrary<'desc' | 'avail' | 'used'>, fc.nat({ max: 64 })).map(([q, p, d]) => ring(q)[p] + d), fc.nat({ max: MEMFD_SIZE - 1 })),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
      kick: fc.option(fc.constantFrom(0, 1), { freq: 2 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('post' as const),
      queue: fc.constantFrom(0, 1),
      head: fc.oneof({ weight: 8, arbitrary: fc.nat({ max: 63 }) }, { weight: 1, arbitrary: fc.constantFrom(64, 0xffff) }),
      len: fc.oneof(fc.constantFrom(0, 3, 4, 5, 64, 4 + 65536, 4 + 65537), fc.nat({ max: 0x8000 })),
      channel: fc.constantFrom(0, 1, 2),
      flags: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.nat({ max: 7 }) }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('host-send' as const), channel: fc.constantFrom(0, 1, 5), len: fc.constantFrom(0, 1, 100, 65536, 65537) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'turn' as const }) },
);

/** Exported for bench/hostile.ts's attacker, which sends the same streams to a server in another process. */
export const streamCase: fc.Arbitrary<StreamCase> = fc.record({
  handshake: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  replyAck: fc.boolean(),
  steps: fc.array(step, { minLength: 1, maxLength: 16 }),
});

// ---------------------------------------------------------------------------------------------
// Turning a case into sendmsg calls

export interface Chunk {
  bytes: Uint8Array;
  fds: FdKind[];
}

export function msgChunks(s: Extract<Step, { kind: 'msg' }>): Chunk[] {
  const bytes = mutate(encodeMessage(s.request, s.flags, s.payload), s.mutations);
  const cuts = [...new Set(s.cuts.map((c) => c % Math.max(1, bytes.length)).filter((c) => c > 0))].sort((a, b) => a - b);
  const out: Chunk[] = [];
  let from = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push({ bytes: bytes.subarray(from, c), fds: out.length === 0 ? s.fds : [] });
    from = c;
  }
  return out.filter((c) => c.bytes.length > 0 || c.fds.length > 0);
}

/** QEMU's handshake for the VMPI device, as steps (so the same sending path runs). */
export function handshake(replyAck: boolean): Step[] {
  const m = (request: number, payload: Uint8Array = new Uint8Array(0), fds: FdKind[] = []): Step => ({ kind: 'msg', request, flags: 0, payload, fds, cuts: [], mutations: [] });
  const steps: Step[] = [
    m(Req.GET_FEATURES),
    m(Req.SET_FEATURES, encodeU64(FEATURES)),
    m(Req.GET_PROTOCOL_FEATURES),
    m(Req.SET_PROTOCOL_FEATURES, encodeU64(replyAck ? SUPPORTED_PROTOCOL_FEATURES : SUPPORTED_PROTOCOL_FEATURES & ~bit(ProtoFeature.REPLY_ACK))),
    m(Req.SET_OWNER),
    m(Req.SET_MEM_TABLE, encodeMemTable(REGIONS), ['memfd', 'memfd']),
  ];
  for (const q of [0, 1]) {
    const r = ring(q);
    steps.push(
      m(Req.SET_VRING_NUM, encodeVringState({ index: q, num: 64 })),
      m(Req.SET_VRING_BASE, encodeVringState({ index: q, num: 0 })),
      m(Req.SET_VRING_ADDR, encodeVringAddr({ index: q, flags: 0, descUser: UVA0 + r.desc, availUser: UVA0 + r.avail, usedUser: UVA0 + r.used, logGuestAddr: 0 })),
      m(Req.SET_VRING_CALL, encodeVringFd(q, false), ['eventfd']),
      m(Req.SET_VRING_ERR, encodeVringFd(q, false), ['eventfd']),
      m(Req.SET_VRING_KICK, encodeVringFd(q, false), ['eventfd']),
      m(Req.SET_VRING_ENABLE, encodeVringState({ index: q, num: 1 })),
    );
  }
  return steps;
}

/**
 * The connection's framing, replayed on what will be sent: which fds end up with which request.
 * Fds travel with the first byte of their chunk; a request owns the fds of the chunks whose first
 * byte falls in its header or payload. Returns, per chunk, the fd kinds to actually send.
 */
function defuse(chunks: Chunk[]): FdKind[][] {
  const out = chunks.map((c) => [...c.fds]);
  if (HAZARDS) return out;
  let header = new Uint8Array(0);
  let need = -1; // payload bytes still expected, -1 while reading a header
  let payload: number[] = [];
  let owners: { chunk: number; k: number }[] = [];
  const done = (request: number): void => {
    const bytes = Uint8Array.from(payload);
    const swap = (): void => {
      for (const o of owners) out[o.chunk]![o.k] = 'eventfd';
    };
    const fdsHere = owners.map((o) => out[o.chunk]![o.k]!);
    // Issue #9 item 3: a kick fd that is not an eventfd ends the process (a socket: EIO thrown
    // from the addon's poll callback) or the connection (/dev/null, a memfd: uv_poll_init EPERM,
    // an untyped error). Item 4: call and err fds are not checked for type either (a socket
    // whose peer is gone: EPIPE from eventfdWrite in the middle of a kick).
    if ((request === Req.SET_VRING_KICK || request === Req.SET_VRING_CALL || request === Req.SET_VRING_ERR) && fdsHere.some((k) => k !== 'eventfd')) swap();
    // Issue #9 item 2: a region beyond the end of its memfd faults (SIGBUS) when touched.
    const tooBig = (r: MemRegionDesc): boolean => r.mmapOffset + r.size > MEMFD_SIZE;
    try {
      if (request === Req.SET_MEM_TABLE && decodeMemTable(request, bytes).some(tooBig)) swap();
      if (request === Req.ADD_MEM_REG && tooBig(decodeMemRegion(request, bytes))) swap();
    } catch {
      // Not decodable: refused before any mapping.
    }
    owners = [];
  };
  let request = 0;
  chunks.forEach((c, ci) => {
    c.fds.forEach((_, k) => owners.push({ chunk: ci, k }));
    for (const b of c.bytes) {
      if (need < 0) {
        header = Uint8Array.from([...header, b]);
        if (header.length < HEADER_SIZE) continue;
        try {
          const h = decodeRequestHeader(header);
          request = h.request;
          need = h.size;
          payload = [];
        } catch {
          return; // the connection closes here; nothing after this matters
        }
        header = new Uint8Array(0);
        if (need === 0) {
          done(request);
          need = -1;
        }
      } else {
        payload.push(b);
        if (payload.length === need) {
          done(request);
          need = -1;
        }
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Running a case

/** How cases ended: close cause, +kicked (a ring ran), +rx (a frame from the guest), +tx (one to it). */
export const outcomes = new Map<string, number>();

let dir = '';
let listenFd = -1;
let devNull = -1;
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Captured {
  lines: string[];
}
const captured: Captured = { lines: [] };
const log = pino({ level: 'error' }, { write: (line: string) => void captured.lines.push(line) });

async function runCase(c: StreamCase): Promise<void> {
  captured.lines = [];
  const frontFd = native.connectUnix(join(dir, 'vhost.sock'));
  const backFd = native.accept(listenFd);
  // Sealed as QEMU's memory-backend-memfd seals it: the server refuses anything else.
  const memfd = native.memfdCreateSealed('fuzz-guest', MEMFD_SIZE, native.F_SEAL_GROW | native.F_SEAL_SHRINK | native.F_SEAL_SEAL);
  const guest = new Uint8Array(native.mmap(memfd, 0, MEMFD_SIZE));
  const device = new VmpiDevice({ vmpiId: 1 });
  let fromGuest = 0;
  device.bind(1, (sdu) => void (fromGuest += sdu.byteLength));
  const conn = new Connection(backFd, device, log);
  let closed: { reason: string; cause: DisconnectCause } | null = null;
  conn.on('close', (reason, cause) => void (closed = { reason, cause }));
  const mine: number[] = [frontFd, memfd];
  const kicks: (number | null)[] = [null, null];
  const rx = new Uint8Array(HEADER_SIZE + 4096 + 64);
  const problems: string[] = [];

  const makeFd = (kind: FdKind): number => {
    const fd = newFdOfKind(kind, memfd, devNull);
    mine.push(fd);
    return fd;
  };
  const drainReplies = (): void => {
    for (;;) {
      let r;
      try {
        r = native.recvMsg(frontFd, rx, 0, rx.length, 4);
      } catch {
        return;
      }
      if (r === null || r.bytes === 0) return;
      for (const fd of r.fds) safeClose(fd);
      // Replies are small and written whole; check each header we can see.
      if (r.bytes >= HEADER_SIZE) {
        const request = new DataView(rx.buffer, 0, 4).getUint32(0, true);
        try {
          decodeReplyHeader(rx.subarray(0, HEADER_SIZE), request);
        } catch (e) {
          problems.push(`malformed reply: ${(e as Error).message}`);
        }
      }
    }
  };
  const send = async (chunks: Chunk[], kinds: FdKind[][], kickQueue: number | null): Promise<void> => {
    for (let i = 0; i < chunks.length; i++) {
      if (closed) return;
      const fds = kinds[i]!.map(makeFd);
      if (kickQueue !== null && fds.length === 1 && kinds[i]![0] === 'eventfd') kicks[kickQueue] = fds[0]!;
      try {
        native.sendMsg(frontFd, chunks[i]!.bytes, 0, chunks[i]!.bytes.length, fds.length ? fds : null);
      } catch {
        return; // the back-end closed its end
      }
      await turn();
      drainReplies();
    }
  };

  try {
    const steps = [...(c.handshake ? handshake(c.replyAck) : []), ...c.steps];
    for (const s of steps) {
      if (closed) break;
      switch (s.kind) {
        case 'msg': {
          const chunks = msgChunks(s);
          const vf = s.payload.length === 8 ? Number(new DataView(s.payload.buffer, s.payload.byteOffset, 8).getBigUint64(0, true) & 0xffn) : -1;
          await send(chunks, defuse(chunks), s.request === Req.SET_VRING_KICK && (vf === 0 || vf === 1) ? vf : null);
          break;
        }
        case 'raw': {
          const chunks = [{ bytes: s.bytes, fds: s.fds }];
          await send(chunks, defuse(chunks), null);
          break;
        }
        case 'guest':
          guest.set(s.bytes.subarray(0, MEMFD_SIZE - s.at), s.at);
          if (s.kick !== null && kicks[s.kick] !== null) {
            try {
              native.eventfdWrite(kicks[s.kick]!, 1);
            } catch {
              // closed by a later SET_VRING_KICK of ours
            }
          }
          await turn();
          await turn();
          drainReplies();
          break;
        case 'post': {
          postBuffer(guest, s);
          if (kicks[s.queue] !== null) {
            try {
              native.eventfdWrite(kicks[s.queue]!, 1);
            } catch {
              // closed by a later SET_VRING_KICK of ours
            }
          }
          await turn();
          drainReplies();
          break;
        }
        case 'host-send':
          try {
            device.send(s.channel, new Uint8Array(s.len));
          } catch (e) {
            if (!(e instanceof VmpiDeviceError || e instanceof VhostUserError)) {
              throw new InvariantError(`VmpiDevice.send threw ${(e as Error)?.stack ?? String(e)}`);
            }
          }
          break;
        case 'turn':
          await turn();
          drainReplies();
          break;
      }
    }
    await turn();
    drainReplies();
  } finally {
    conn.close('fuzz case done');
    native.munmap(guest.buffer as ArrayBuffer);
    for (const fd of mine) safeClose(fd);
  }
  const end = closed as { reason: string; cause: DisconnectCause } | null;
  if (end?.cause === 'internal_error') {
    const stack = captured.lines.map((l) => (JSON.parse(l) as { stack?: string }).stack).find((s) => s);
    throw new InvariantError(`connection closed with an internal error: ${end.reason}${stack ? `\n${stack}` : ''}`);
  }
  if (problems.length) throw new InvariantError(problems.join('; '));
  const key = `${end?.cause ?? 'open'}${device.stats.kicks > 0 ? '+kicked' : ''}${fromGuest > 0 ? '+rx' : ''}${device.stats.toGuest.sdus > 0 ? '+tx' : ''}`;
  outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
}

/**
 * Inputs that reproduced the bugs above (issue #9 items 2-4): each must stay a contained, typed
 * failure. Replayed first in every run, safe mode or not (and by bench/hostile.ts's attacker).
 */
export function hazardExamples(): StreamCase[] {
  const m = (request: number, payload: Uint8Array, fds: FdKind[] = []): Step => ({ kind: 'msg', request, flags: FLAG_NEED_REPLY, payload, fds, cuts: [], mutations: [] });
  const r1 = ring(1);
  return [
    // Item 3: a kick fd that is a socket whose peer is gone: EIO thrown from the poll callback.
    { handshake: true, replyAck: true, steps: [m(Req.SET_VRING_KICK, encodeVringFd(1, false), ['socket']), { kind: 'turn' }, { kind: 'turn' }] },
    // Item 3: /dev/null or a memfd as kick fd: uv_poll_init EPERM, an untyped error.
    { handshake: true, replyAck: true, steps: [m(Req.SET_VRING_KICK, encodeVringFd(0, false), ['devnull'])] },
    // Item 4: a call fd that is a socket: EPIPE from eventfdWrite while handling a kick.
    { handshake: true, replyAck: true, steps: [m(Req.SET_VRING_CALL, encodeVringFd(1, false), ['socket']), { kind: 'post', queue: 1, head: 0, len: 64, channel: 1, flags: -1 }, { kind: 'turn' }] },
    // Item 2: a region larger than its memfd, with the used ring past the end of the file (SIGBUS).
    {
      handshake: true,
      replyAck: true,
      steps: [
        m(Req.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 })),
        m(Req.SET_MEM_TABLE, encodeMemTable([{ guestPhysAddr: 0, size: 2 * MEMFD_SIZE, userAddr: UVA0, mmapOffset: 0 }]), ['memfd']),
        m(Req.SET_VRING_ADDR, encodeVringAddr({ index: 1, flags: 0, descUser: UVA0 + r1.desc, availUser: UVA0 + r1.avail, usedUser: UVA0 + MEMFD_SIZE + 0x1000, logGuestAddr: 0 })),
        m(Req.SET_VRING_KICK, encodeVringFd(1, false), ['eventfd']),
      ],
    },
  ];
}

export const vhostUserTarget: FuzzTarget<StreamCase> = {
  name: 'vhost-user',
  description: 'front-end message streams with fds (memfd/eventfd/devnull/socket) + guest ring writes → Connection + VmpiDevice',
  arbitrary: streamCase,
  // Protocol errors end or nack inside the connection; nothing is expected to come out.
  expected: () => false,
  caseTimeoutMs: 3000,
  examples: hazardExamples(),
  run: runCase,
  outcomes: () => Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])),
  setup() {
    dir = mkdtempSync(join(tmpdir(), 'vmpi-fuzz-'));
    listenFd = native.listenUnix(join(dir, 'vhost.sock'), 4);
    devNull = openSync('/dev/null', 'r+');
  },
  teardown() {
    safeClose(listenFd);
    safeClose(devNull);
    rmSync(dir, { recursive: true, force: true });
  },
  show: (c) => JSON.stringify(c, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : typeof v === 'bigint' ? v.toString() : v)),
};
