/**
 * The vhost-user message codec (src/vhost-user/messages.ts) against the request registry (requests.ts):
 * a round trip for every request the back-end understands, the exact wire layout of each payload
 * shape, and the malformed variants each decoder must reject with a ProtocolError naming the request.
 */
import t, { type Test } from 'tap';
import { ProtocolError, type ErrorScope, type VhostUserErrorCode } from '../src/vhost-user/errors.js';
import {
  decodeConfig,
  decodeMemRegion,
  decodeMemTable,
  decodeReplyHeader,
  decodeRequestHeader,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  type MemRegionDesc,
  type VringAddr,
} from '../src/vhost-user/messages.js';
import {
  CONFIG_SPACE_MAX,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  MEM_TABLE_MAX_REGIONS,
  Req,
  requestName,
} from '../src/vhost-user/protocol.js';
import { REQUESTS, REQUEST_RULES } from '../src/vhost-user/requests.js';

type T = Test;

/**
 * Run `fn`, require a ProtocolError for `request` with the given code and scope, whose message
 * is "`request`: ..." containing `detail` (a string is matched as a substring).
 */
function throwsProtocol(tt: T, fn: () => unknown, request: string, detail: string | RegExp, code: VhostUserErrorCode = 'bad_request', scope: ErrorScope = 'request'): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof ProtocolError)) {
    tt.fail(`expected ProtocolError for ${request}, got ${err === undefined ? 'no error' : String(err)}`);
    return;
  }
  tt.equal(err.name, 'ProtocolError');
  tt.equal(err.request, request, 'error names the request');
  tt.equal(err.code, code, `code ${code}`);
  tt.equal(err.scope, scope, `scope ${scope}`);
  tt.ok(err.message.startsWith(`${request}: `), 'message starts with the request name');
  tt.match(err.message, detail);
}

/** Put `payload` after `pad` junk bytes so decoders are exercised on views with a byteOffset. */
function offsetView(payload: Uint8Array, pad = 5): Uint8Array {
  const b = new Uint8Array(pad + payload.byteLength + 3).fill(0xee);
  b.set(payload, pad);
  return b.subarray(pad, pad + payload.byteLength);
}

function rawHeader(request: number, flags: number, size: number, len = HEADER_SIZE): Uint8Array {
  const b = new Uint8Array(Math.max(len, HEADER_SIZE));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, size, true);
  return b.subarray(0, len);
}

const REGIONS: MemRegionDesc[] = [
  { guestPhysAddr: 0, size: 0xa0000, userAddr: 0x7f12_3400_0000, mmapOffset: 0 },
  { guestPhysAddr: 0xc0000, size: 0x7ff4_0000, userAddr: 0x7f12_340c_0000, mmapOffset: 0xc0000 },
  // Numbers above 2^32 in every field, close to (but under) 2^53.
  { guestPhysAddr: 0x1_0000_0000, size: 0x1_8000_0000, userAddr: 0x1f_fff0_0000_0000, mmapOffset: 0x3_0000_1000 },
];

const ADDR: VringAddr = {
  index: 3,
  flags: 1,
  descUser: 0x7f00_1234_5000,
  usedUser: 0x7f00_1234_6000,
  availUser: 0x7f00_1234_5800,
  logGuestAddr: 0x1_2345_6000,
};

// ---------------------------------------------------------------------------------------------
// Round trip for every request in REQUEST_RULES

interface Sample {
  payload: Uint8Array;
  check(tt: T, p: Uint8Array): void;
}

function sampleFor(req: number): Sample {
  const rule = REQUEST_RULES.get(req)!;
  switch (rule.payload) {
    case 'none':
      return { payload: new Uint8Array(0), check: (tt, p) => tt.equal(p.byteLength, 0) };
    case 'u64':
      if (req === Req.SET_VRING_KICK || req === Req.SET_VRING_CALL || req === Req.SET_VRING_ERR) {
        const index = req - Req.SET_VRING_KICK + 1; // 1, 2, 3
        const noFd = req === Req.SET_VRING_CALL;
        return {
          payload: encodeVringFd(index, noFd),
          check: (tt, p) => {
            tt.same(decodeVringFd(req, p), { index, noFd });
            tt.equal(decodeU64(req, p), BigInt(index) | (noFd ? 0x100n : 0n));
          },
        };
      }
      return {
        payload: encodeU64(0x8000_0001_4000_0003n + BigInt(req)),
        check: (tt, p) => tt.equal(decodeU64(req, p), 0x8000_0001_4000_0003n + BigInt(req)),
      };
    case 'vring-state': {
      const s = { index: 1, num: 0x8000_0000 + req };
      return { payload: encodeVringState(s), check: (tt, p) => tt.same(decodeVringState(req, p), s) };
    }
    case 'vring-addr':
      return { payload: encodeVringAddr(ADDR), check: (tt, p) => tt.same(decodeVringAddr(req, p), ADDR) };
    case 'mem-table':
      return { payload: encodeMemTable(REGIONS), check: (tt, p) => tt.same(decodeMemTable(req, p), REGIONS) };
    case 'mem-region':
      return { payload: encodeMemRegion(REGIONS[2]!), check: (tt, p) => tt.same(decodeMemRegion(req, p), REGIONS[2]) };
    case 'config': {
      const data = Uint8Array.from({ length: 20 }, (_, i) => i * 7 + 1);
      return {
        payload: encodeConfig({ offset: 16, flags: 1, data }),
        check: (tt, p) => {
          const c = decodeConfig(req, p);
          tt.equal(c.offset, 16);
          tt.equal(c.size, 20);
          tt.equal(c.flags, 1);
          tt.same([...c.data], [...data]);
        },
      };
    }
    default:
      throw new Error(`no sample for payload shape ${rule.payload} (request ${requestName(req)})`);
  }
}

t.test('every request in REQUEST_RULES round-trips through encodeMessage / decode*', async (t) => {
  t.equal(REQUEST_RULES.size, 24, 'rule table has the expected number of requests (update this test when it grows)');
  for (const [req, rule] of REQUEST_RULES) {
    const name = requestName(req);
    t.not(name, `UNKNOWN(${req})`, `${req} has a name`);
    t.test(name, async (t) => {
      const s = sampleFor(req);
      for (const flags of [0, FLAG_NEED_REPLY]) {
        const msg = encodeMessage(req, flags, s.payload);
        t.equal(msg.byteLength, HEADER_SIZE + s.payload.byteLength);
        const h = decodeRequestHeader(offsetView(msg.subarray(0, HEADER_SIZE)));
        t.same(h, { request: req, flags: FLAG_VERSION | flags, size: s.payload.byteLength });
        t.doesNotThrow(() => REQUESTS.get(req)!.decode(req, msg.subarray(HEADER_SIZE, HEADER_SIZE + h.size)), 'the registry decodes it');
        const p = msg.subarray(HEADER_SIZE, HEADER_SIZE + h.size);
        t.same([...p], [...s.payload], 'payload bytes follow the header unchanged');
        s.check(t, p);
        s.check(t, offsetView(p)); // same result from a view that does not start at byte 0
      }
      // And the same payload as a reply (GET_* answers, or REPLY_ACK for the others).
      const reply = encodeReply(req, s.payload);
      const rh = decodeReplyHeader(reply, req);
      t.same(rh, { request: req, flags: FLAG_VERSION | FLAG_REPLY, size: s.payload.byteLength });
      if (rule.payload !== 'none') {
        // Wrong payload sizes: one byte short and one byte long.
        const n = s.payload.byteLength;
        const fixed = rule.payload !== 'mem-table' && rule.payload !== 'config';
        if (fixed) {
          throwsProtocol(t, () => decodeSized(req, n - 1), name, `must be ${n} bytes, got ${n - 1}`);
          throwsProtocol(t, () => decodeSized(req, n + 1), name, `must be ${n} bytes, got ${n + 1}`);
        }
      } else {
        throwsProtocol(t, () => decodeSized(req, 8), name, 'payload must be 0 bytes, got 8');
        throwsProtocol(t, () => decodeSized(req, 1), name, 'payload must be 0 bytes, got 1');
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Wire layout

t.test('encodeMessage / encodeReply write the exact header bytes', async (t) => {
  const msg = encodeMessage(Req.SET_FEATURES, FLAG_NEED_REPLY, encodeU64(0x0807_0605_0403_0201n));
  t.same([...msg], [2, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  t.same([...encodeMessage(Req.GET_FEATURES, 0)], [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], 'version bit added, no payload');
  t.same([...encodeReply(Req.GET_STATUS, encodeU64(0xf))], [40, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0]);
});

t.test('payload layouts match the spec', async (t) => {
  const st = new DataView(encodeVringState({ index: 0x0102, num: 0x0304_0506 }).buffer);
  t.equal(st.getUint32(0, true), 0x0102);
  t.equal(st.getUint32(4, true), 0x0304_0506);

  const a = encodeVringAddr(ADDR);
  const dv = new DataView(a.buffer);
  t.equal(a.byteLength, 40);
  t.equal(dv.getUint32(0, true), ADDR.index, 'index at 0');
  t.equal(dv.getUint32(4, true), ADDR.flags, 'flags at 4');
  t.equal(dv.getBigUint64(8, true), BigInt(ADDR.descUser), 'descriptor at 8');
  t.equal(dv.getBigUint64(16, true), BigInt(ADDR.usedUser), 'used at 16');
  t.equal(dv.getBigUint64(24, true), BigInt(ADDR.availUser), 'available at 24');
  t.equal(dv.getBigUint64(32, true), BigInt(ADDR.logGuestAddr), 'log at 32');

  const mt = encodeMemTable(REGIONS);
  const mv = new DataView(mt.buffer);
  t.equal(mt.byteLength, 8 + 32 * 3);
  t.equal(mv.getUint32(0, true), 3, 'nregions');
  t.equal(mv.getUint32(4, true), 0, 'padding');
  const r2 = 8 + 32 * 2;
  t.equal(mv.getBigUint64(r2, true), 0x1_0000_0000n, 'guest_phys_addr');
  t.equal(mv.getBigUint64(r2 + 8, true), 0x1_8000_0000n, 'memory_size');
  t.equal(mv.getBigUint64(r2 + 16, true), 0x1f_fff0_0000_0000n, 'userspace_addr');
  t.equal(mv.getBigUint64(r2 + 24, true), 0x3_0000_1000n, 'mmap_offset');

  const mr = encodeMemRegion(REGIONS[1]!);
  const rv = new DataView(mr.buffer);
  t.equal(mr.byteLength, 40);
  t.equal(rv.getBigUint64(0, true), 0n, 'u64 padding first');
  t.equal(rv.getBigUint64(8, true), 0xc0000n);
  t.equal(rv.getBigUint64(16, true), 0x7ff4_0000n);
  t.equal(rv.getBigUint64(24, true), 0x7f12_340c_0000n);
  t.equal(rv.getBigUint64(32, true), 0xc0000n);
  // The padding is ignored on decode.
  const dirty = mr.slice();
  dirty.fill(0xff, 0, 8);
  t.same(decodeMemRegion(Req.ADD_MEM_REG, dirty), REGIONS[1]);

  const cfg = encodeConfig({ offset: 0x20, flags: 0, data: Uint8Array.of(9, 8, 7) });
  t.same([...cfg], [0x20, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 8, 7]);

  t.same([...encodeVringFd(5, true)], [5, 1, 0, 0, 0, 0, 0, 0]);
  t.same([...encodeVringFd(0xff, false)], [0xff, 0, 0, 0, 0, 0, 0, 0]);
});

// ---------------------------------------------------------------------------------------------
// Request header

t.test('decodeRequestHeader rejects malformed headers', async (t) => {
  t.same(decodeRequestHeader(rawHeader(Req.SET_OWNER, 1, 0)), { request: 3, flags: 1, size: 0 });
  t.same(decodeRequestHeader(rawHeader(Req.SET_MEM_TABLE, 1 | 8, MAX_PAYLOAD_SIZE)), { request: 5, flags: 9, size: MAX_PAYLOAD_SIZE }, 'size at the limit is fine');
  t.same(decodeRequestHeader(rawHeader(99, 1, 0)), { request: 99, flags: 1, size: 0 }, 'unknown requests are left to the dispatcher');

  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_OWNER, 1, 0, 11)), 'header', 'needs 12 bytes, got 11', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(new Uint8Array(0)), 'header', 'needs 12 bytes, got 0', 'bad_header', 'connection');

  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_OWNER, 0, 0)), 'SET_OWNER', 'unsupported protocol version 0 (flags 0x0); only version 1 exists', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_FEATURES, 2, 8)), 'SET_FEATURES', 'unsupported protocol version 2 (flags 0x2); only version 1 exists', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_FEATURES, 3 | 8, 8)), 'SET_FEATURES', 'unsupported protocol version 3 (flags 0xb); only version 1 exists', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(99, 0, 0)), 'UNKNOWN(99)', /^UNKNOWN\(99\): unsupported protocol version 0/, 'bad_header', 'connection');

  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.GET_FEATURES, 1 | FLAG_REPLY, 0)), 'GET_FEATURES', 'reply flag set on a request', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.GET_FEATURES, 1 | FLAG_REPLY | FLAG_NEED_REPLY, 0)), 'GET_FEATURES', 'reply flag set on a request', 'bad_header', 'connection');

  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_VRING_NUM, 0x11, 8)), 'SET_VRING_NUM', 'unknown header flags 0x11', 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_VRING_NUM, 0x8000_0001, 8)), 'SET_VRING_NUM', 'unknown header flags 0x80000001', 'bad_header', 'connection');

  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_MEM_TABLE, 1, MAX_PAYLOAD_SIZE + 1)), 'SET_MEM_TABLE', `payload size ${MAX_PAYLOAD_SIZE + 1} exceeds the limit of ${MAX_PAYLOAD_SIZE}`, 'bad_header', 'connection');
  throwsProtocol(t, () => decodeRequestHeader(rawHeader(Req.SET_MEM_TABLE, 1, 0xffff_ffff)), 'SET_MEM_TABLE', `payload size 4294967295 exceeds the limit of ${MAX_PAYLOAD_SIZE}`, 'bad_header', 'connection');
});

t.test('decodeReplyHeader checks it answers the expected request', async (t) => {
  const ok = encodeReply(Req.GET_PROTOCOL_FEATURES, encodeU64(0x8000n));
  t.same(decodeReplyHeader(ok, Req.GET_PROTOCOL_FEATURES), { request: 15, flags: FLAG_VERSION | FLAG_REPLY, size: 8 });
  t.same(decodeReplyHeader(offsetView(ok.subarray(0, HEADER_SIZE)), Req.GET_PROTOCOL_FEATURES).request, 15);

  throwsProtocol(t, () => decodeReplyHeader(ok, Req.GET_FEATURES), 'GET_FEATURES', 'reply is for GET_PROTOCOL_FEATURES');
  throwsProtocol(t, () => decodeReplyHeader(rawHeader(77, 5, 0), Req.GET_STATUS), 'GET_STATUS', 'reply is for UNKNOWN(77)');
  throwsProtocol(t, () => decodeReplyHeader(encodeMessage(Req.GET_FEATURES, 0), Req.GET_FEATURES), 'GET_FEATURES', 'bad reply flags 0x1');
  throwsProtocol(t, () => decodeReplyHeader(rawHeader(Req.GET_FEATURES, FLAG_REPLY, 8), Req.GET_FEATURES), 'GET_FEATURES', 'bad reply flags 0x4');
  throwsProtocol(t, () => decodeReplyHeader(rawHeader(Req.GET_FEATURES, 2 | FLAG_REPLY, 8), Req.GET_FEATURES), 'GET_FEATURES', 'bad reply flags 0x6');
  throwsProtocol(t, () => decodeReplyHeader(rawHeader(Req.GET_CONFIG, 5, MAX_PAYLOAD_SIZE + 1), Req.GET_CONFIG), 'GET_CONFIG', `reply size ${MAX_PAYLOAD_SIZE + 1} too large`);
  t.equal(decodeReplyHeader(rawHeader(Req.GET_CONFIG, 5, MAX_PAYLOAD_SIZE), Req.GET_CONFIG).size, MAX_PAYLOAD_SIZE);
  throwsProtocol(t, () => decodeReplyHeader(rawHeader(Req.GET_FEATURES, 5, 8, 11), Req.GET_FEATURES), 'GET_FEATURES', 'reply header needs 12 bytes, got 11');
  throwsProtocol(t, () => decodeReplyHeader(new Uint8Array(0), Req.GET_STATUS), 'GET_STATUS', 'reply header needs 12 bytes, got 0');
});

// ---------------------------------------------------------------------------------------------
// Size ranges of the variable shapes (the decoders are the only size check a request gets)

/** The registry's decoder for `req` on `size` bytes of zeroes. */
function decodeSized(req: number, size: number): unknown {
  return REQUESTS.get(req)!.decode(req, new Uint8Array(size));
}

/** A one-region table padded with zeroes to `size` bytes. */
function paddedTable(size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(encodeMemTable([REGIONS[0]!]));
  return b;
}

t.test('decoders: memory table and config size ranges', async (t) => {
  const maxTable = 8 + 32 * MEM_TABLE_MAX_REGIONS;
  t.equal(maxTable, 264);
  for (const ok of [40, maxTable]) t.doesNotThrow(() => decodeMemTable(Req.SET_MEM_TABLE, paddedTable(ok)), `mem table ${ok}`);
  throwsProtocol(t, () => decodeSized(Req.SET_MEM_TABLE, 7), 'SET_MEM_TABLE', 'memory table payload of 7 bytes is out of range 8..264');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, paddedTable(maxTable + 1)), 'SET_MEM_TABLE', 'memory table payload of 265 bytes is out of range 8..264');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, paddedTable(8 + 32 * 9)), 'SET_MEM_TABLE', 'memory table payload of 296 bytes is out of range 8..264');

  for (const req of [Req.GET_CONFIG, Req.SET_CONFIG]) {
    const name = requestName(req);
    for (const ok of [12, 13, 12 + CONFIG_SPACE_MAX]) t.doesNotThrow(() => decodeSized(req, ok), `${name} ${ok}`);
    throwsProtocol(t, () => decodeSized(req, 11), name, 'config payload of 11 bytes is out of range 12..268');
    throwsProtocol(t, () => decodeSized(req, 269), name, 'config payload of 269 bytes is out of range 12..268');
  }
  t.notOk(REQUESTS.has(Req.SET_LOG_BASE), 'SET_LOG_BASE is not in the registry (refused as unsupported by the dispatcher)');
});

// ---------------------------------------------------------------------------------------------
// Fixed-size decoders given the wrong size

t.test('fixed-size decoders reject other sizes', async (t) => {
  throwsProtocol(t, () => decodeU64(Req.SET_FEATURES, new Uint8Array(7)), 'SET_FEATURES', 'u64 payload must be 8 bytes, got 7');
  throwsProtocol(t, () => decodeU64(Req.SET_STATUS, new Uint8Array(16)), 'SET_STATUS', 'u64 payload must be 8 bytes, got 16');
  throwsProtocol(t, () => decodeVringFd(Req.SET_VRING_KICK, new Uint8Array(4)), 'SET_VRING_KICK', 'u64 payload must be 8 bytes, got 4');
  throwsProtocol(t, () => decodeVringState(Req.SET_VRING_NUM, new Uint8Array(9)), 'SET_VRING_NUM', 'vring state must be 8 bytes, got 9');
  throwsProtocol(t, () => decodeVringState(Req.GET_VRING_BASE, new Uint8Array(0)), 'GET_VRING_BASE', 'vring state must be 8 bytes, got 0');
  throwsProtocol(t, () => decodeVringAddr(Req.SET_VRING_ADDR, new Uint8Array(39)), 'SET_VRING_ADDR', 'vring address must be 40 bytes, got 39');
  throwsProtocol(t, () => decodeVringAddr(Req.SET_VRING_ADDR, new Uint8Array(48)), 'SET_VRING_ADDR', 'vring address must be 40 bytes, got 48');
  throwsProtocol(t, () => decodeMemRegion(Req.ADD_MEM_REG, new Uint8Array(32)), 'ADD_MEM_REG', 'memory region message must be 40 bytes, got 32');
  throwsProtocol(t, () => decodeMemRegion(Req.REM_MEM_REG, new Uint8Array(41)), 'REM_MEM_REG', 'memory region message must be 40 bytes, got 41');
  throwsProtocol(t, () => decodeConfig(Req.GET_CONFIG, new Uint8Array(11)), 'GET_CONFIG', 'config payload of 11 bytes is out of range 12..268');
});

// ---------------------------------------------------------------------------------------------
// Vring fd and vring address

t.test('decodeVringFd: index, no-fd bit, unknown bits', async (t) => {
  t.same(decodeVringFd(Req.SET_VRING_KICK, encodeU64(0)), { index: 0, noFd: false });
  t.same(decodeVringFd(Req.SET_VRING_KICK, encodeU64(0x105)), { index: 5, noFd: true });
  t.same(decodeVringFd(Req.SET_VRING_CALL, encodeU64(0xff)), { index: 255, noFd: false });
  t.same(decodeVringFd(Req.SET_VRING_ERR, encodeU64(0x1ff)), { index: 255, noFd: true });
  t.same(decodeVringFd(Req.SET_VRING_CALL, encodeU64(0x100)), { index: 0, noFd: true });
  throwsProtocol(t, () => decodeVringFd(Req.SET_VRING_KICK, encodeU64(0x200)), 'SET_VRING_KICK', 'unknown bits in 0x200 (only queue index and the no-fd bit 0x100 are defined)');
  throwsProtocol(t, () => decodeVringFd(Req.SET_VRING_CALL, encodeU64(0x301)), 'SET_VRING_CALL', 'unknown bits in 0x301 (only queue index and the no-fd bit 0x100 are defined)');
  throwsProtocol(t, () => decodeVringFd(Req.SET_VRING_ERR, encodeU64(1n << 63n)), 'SET_VRING_ERR', 'unknown bits in 0x8000000000000000 (only queue index and the no-fd bit 0x100 are defined)');
  throwsProtocol(t, () => decodeVringFd(Req.SET_VRING_ERR, encodeU64(1n << 32n)), 'SET_VRING_ERR', /unknown bits in 0x100000000 /);
});

t.test('decodeVringAddr: fields and 2^53 limit', async (t) => {
  const max = { ...ADDR, descUser: Number.MAX_SAFE_INTEGER, usedUser: 0, availUser: 2 ** 32, logGuestAddr: 2 ** 32 - 1 };
  t.same(decodeVringAddr(Req.SET_VRING_ADDR, encodeVringAddr(max)), max, 'values up to 2^53-1 survive');
  const fields: [number, string][] = [
    [8, 'descriptor table address'],
    [16, 'used ring address'],
    [24, 'available ring address'],
    [32, 'log address'],
  ];
  for (const [off, field] of fields) {
    const b = encodeVringAddr(ADDR);
    new DataView(b.buffer).setBigUint64(off, 1n << 53n, true);
    throwsProtocol(t, () => decodeVringAddr(Req.SET_VRING_ADDR, b), 'SET_VRING_ADDR', `${field} 0x20000000000000 exceeds 2^53`);
    new DataView(b.buffer).setBigUint64(off, 0xffff_ffff_ffff_ffffn, true);
    throwsProtocol(t, () => decodeVringAddr(Req.SET_VRING_ADDR, b), 'SET_VRING_ADDR', `${field} 0xffffffffffffffff exceeds 2^53`);
  }
});

// ---------------------------------------------------------------------------------------------
// Memory table and memory region

function tableWith(regions: { gpa: bigint; size: bigint; uva: bigint; off: bigint }[], count = regions.length): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, count, true);
  regions.forEach((r, i) => {
    const o = 8 + 32 * i;
    dv.setBigUint64(o, r.gpa, true);
    dv.setBigUint64(o + 8, r.size, true);
    dv.setBigUint64(o + 16, r.uva, true);
    dv.setBigUint64(o + 24, r.off, true);
  });
  return b;
}

const R0 = { gpa: 0n, size: 0x1000n, uva: 0x7f00_0000_0000n, off: 0n };

t.test('decodeMemTable: counts and truncation', async (t) => {
  const eight = Array.from({ length: 8 }, (_, i) => ({
    guestPhysAddr: i * 0x10_0000,
    size: 0x10_0000,
    userAddr: 0x7f00_0000_0000 + i * 0x10_0000,
    mmapOffset: i * 0x1000,
  }));
  t.same(decodeMemTable(Req.SET_MEM_TABLE, encodeMemTable(eight)), eight, '8 regions is the maximum and fine');
  t.same(decodeMemTable(Req.SET_MEM_TABLE, encodeMemTable(eight.slice(0, 1))), eight.slice(0, 1));

  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, new Uint8Array(8)), 'SET_MEM_TABLE', 'region count 0 is out of range 1..8');
  const nine = [...eight, { ...eight[0]!, guestPhysAddr: 0x1_0000_0000 }];
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, encodeMemTable(nine)), 'SET_MEM_TABLE', 'memory table payload of 296 bytes is out of range 8..264');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, tableWith([R0], 9)), 'SET_MEM_TABLE', 'region count 9 is out of range 1..8');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, tableWith([R0], 0xffff_ffff)), 'SET_MEM_TABLE', 'region count 4294967295 is out of range 1..8');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, new Uint8Array(7)), 'SET_MEM_TABLE', 'memory table payload of 7 bytes is out of range 8..264');

  const two = encodeMemTable(eight.slice(0, 2));
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, two.subarray(0, 71)), 'SET_MEM_TABLE', '2 regions need 72 bytes, got 71');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, two.subarray(0, 40)), 'SET_MEM_TABLE', '2 regions need 72 bytes, got 40');
  throwsProtocol(t, () => decodeMemTable(Req.SET_MEM_TABLE, tableWith([R0], 3)), 'SET_MEM_TABLE', '3 regions need 104 bytes, got 40');
});

t.test('memory regions: zero size and address-space overflow', async (t) => {
  const decoders: [string, (p: Uint8Array) => unknown, (r: typeof R0) => Uint8Array][] = [
    ['SET_MEM_TABLE', (p) => decodeMemTable(Req.SET_MEM_TABLE, p), (r) => tableWith([R0, r])],
    ['ADD_MEM_REG', (p) => decodeMemRegion(Req.ADD_MEM_REG, p), (r) => tableWith([R0, r]).subarray(32)],
    ['REM_MEM_REG', (p) => decodeMemRegion(Req.REM_MEM_REG, p), (r) => tableWith([R0, r]).subarray(32)],
  ];
  const LIMIT = 1n << 53n;
  for (const [name, decode, build] of decoders) {
    t.test(name, async (t) => {
      // Sanity: the builder produces something the decoder accepts.
      const good = { gpa: 0x1_0000_0000n, size: 0x4000_0000n, uva: 0x7f00_4000_0000n, off: 0x1000n };
      const decoded = decode(build(good));
      const last = Array.isArray(decoded) ? decoded[1] : decoded;
      t.same(last, { guestPhysAddr: 0x1_0000_0000, size: 0x4000_0000, userAddr: 0x7f00_4000_0000, mmapOffset: 0x1000 });

      throwsProtocol(t, () => decode(build({ ...good, size: 0n })), name, 'region at guest address 0x100000000 has size 0');

      throwsProtocol(t, () => decode(build({ ...good, gpa: LIMIT })), name, 'guest_phys_addr 0x20000000000000 exceeds 2^53');
      throwsProtocol(t, () => decode(build({ ...good, size: LIMIT })), name, 'memory_size 0x20000000000000 exceeds 2^53');
      throwsProtocol(t, () => decode(build({ ...good, uva: 0xffff_ffff_ffff_f000n })), name, 'userspace_addr 0xfffffffffffff000 exceeds 2^53');
      throwsProtocol(t, () => decode(build({ ...good, off: 1n << 63n })), name, 'mmap_offset 0x8000000000000000 exceeds 2^53');

      // Each field is < 2^53 on its own, but field + size is not.
      throwsProtocol(t, () => decode(build({ ...good, gpa: LIMIT - 0x1000n, size: 0x2000n })), name, 'region at guest address 0x1ffffffffff000 size 0x2000 overflows the address space');
      throwsProtocol(t, () => decode(build({ ...good, gpa: LIMIT - 0x1000n, size: 0x1000n })), name, 'region at guest address 0x1ffffffffff000 size 0x1000 overflows the address space');
      throwsProtocol(t, () => decode(build({ ...good, uva: LIMIT - 0x1000n, size: 0x1001n })), name, 'region at guest address 0x100000000 size 0x1001 overflows the address space');
      throwsProtocol(t, () => decode(build({ ...good, off: LIMIT - 0x1000n, size: 0x1000n })), name, 'region at guest address 0x100000000 size 0x1000 overflows the address space');
      // Ending exactly at 2^53 - 1 is still representable.
      const edge = decode(build({ ...good, gpa: LIMIT - 0x1001n, size: 0x1000n }));
      const e = Array.isArray(edge) ? edge[1] : edge;
      t.equal((e as { guestPhysAddr: number }).guestPhysAddr, Number(LIMIT - 0x1001n));
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Config

function rawConfig(offset: number, size: number, flags: number, dataLen = size): Uint8Array {
  const b = new Uint8Array(12 + dataLen);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, size, true);
  dv.setUint32(8, flags, true);
  for (let i = 0; i < dataLen; i++) b[12 + i] = i + 1;
  return b;
}

t.test('decodeConfig: range, truncation, flags', async (t) => {
  for (const req of [Req.GET_CONFIG, Req.SET_CONFIG]) {
    const name = requestName(req);
    const full = decodeConfig(req, rawConfig(0, 256, 0));
    t.equal(full.size, 256);
    t.equal(full.data.byteLength, 256);
    t.equal(full.data[255], 0, '256th data byte (i+1 truncated to u8)');
    const tail = decodeConfig(req, rawConfig(248, 8, 0));
    t.same({ offset: tail.offset, size: tail.size, flags: tail.flags, data: [...tail.data] }, { offset: 248, size: 8, flags: 0, data: [1, 2, 3, 4, 5, 6, 7, 8] });
    t.equal(decodeConfig(req, rawConfig(256, 0, 0)).size, 0, 'empty range at the end');
    t.equal(decodeConfig(req, rawConfig(0, 4, 0, 10)).data.byteLength, 4, 'trailing bytes beyond size are not data');
    t.equal(decodeConfig(req, rawConfig(0, 4, 1)).flags, 1, 'flags 1 (migration) is defined');

    const range = (o: number, s: number): string => `config range offset ${o} size ${s} exceeds the 256-byte config space`;
    throwsProtocol(t, () => decodeConfig(req, rawConfig(250, 8, 0)), name, range(250, 8));
    throwsProtocol(t, () => decodeConfig(req, rawConfig(249, 8, 0)), name, range(249, 8));
    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 257, 0)), name, 'config payload of 269 bytes is out of range 12..268');
    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 257, 0).subarray(0, 12)), name, range(0, 257));
    throwsProtocol(t, () => decodeConfig(req, rawConfig(257, 0, 0)), name, range(257, 0));
    throwsProtocol(t, () => decodeConfig(req, rawConfig(0xffff_ffff, 1, 0, 1)), name, range(0xffff_ffff, 1));
    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 0xffff_ffff, 0, 1)), name, range(0, 0xffff_ffff));

    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 8, 0, 4)), name, 'config of size 8 needs 20 bytes, got 16');
    throwsProtocol(t, () => decodeConfig(req, rawConfig(16, 1, 0, 0)), name, 'config of size 1 needs 13 bytes, got 12');

    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 4, 2)), name, 'unknown config flags 0x2');
    throwsProtocol(t, () => decodeConfig(req, rawConfig(0, 4, 0x8000_0000)), name, 'unknown config flags 0x80000000');
  }
});

t.test('decodeConfig data is a view of the payload (no copy)', async (t) => {
  const p = rawConfig(4, 4, 0);
  const c = decodeConfig(Req.SET_CONFIG, p);
  p[12] = 0x55;
  t.equal(c.data[0], 0x55);
  t.equal(c.data.buffer, p.buffer);
});
