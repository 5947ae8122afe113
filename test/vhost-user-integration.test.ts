/**
 * vhost-user-integration.test.ts — a real VhostUserServer (src/vhost-user/server.ts) on a Unix
 * socket, driven by the userspace front-end in test/frontend (QEMU's role) with the loopback
 * device: the whole handshake, data both ways with content checks (sizes 0..65536, direct,
 * chained and indirect buffers, guest memory in 2 regions, buffers straddling regions, 16-bit
 * index wrap-around, event idx on and off), malformed and forbidden requests over the socket,
 * drivers that corrupt their rings, two servers at once, and disconnects mid-traffic with an fd
 * leak check.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/sys/native.js';
import type { DisconnectCause } from '../src/vhost-user/connection.js';
import { VhostUserServer, type ServerOptions } from '../src/vhost-user/server.js';
import { ProtocolError } from '../src/vhost-user/errors.js';
import { encodeMessage, encodeU64, encodeVringFd, encodeVringState, encodeMemTable } from '../src/vhost-user/messages.js';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtoFeature, Req, VRING_DESC_F_NEXT, VirtioFeature, bit, hasBit } from '../src/vhost-user/protocol.js';
import { FRONTEND_PROTOCOL_FEATURES, FrontendRequestError, VhostUserFrontend, type HandshakeOptions, type HandshakeResult } from './frontend/frontend.js';
import { DriverQueue } from './frontend/driver-queue.js';
import { GuestMemoryImage, type RegionLayout } from './frontend/guest-memory.js';
import { LoopbackDevice, RX_QUEUE, TX_QUEUE, type LoopbackOptions } from './frontend/loopback-device.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'vmpi-vu-int-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let sockSeq = 0;

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(pred: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Server, connection and traffic helpers

interface Srv {
  server: VhostUserServer;
  path: string;
  devices: LoopbackDevice[];
  dev(): LoopbackDevice;
}

function makeServer(tt: Test, opts: LoopbackOptions = {}, serverOpts: Partial<ServerOptions> = {}): Srv {
  const path = join(dir, `s${sockSeq++}.sock`);
  const devices: LoopbackDevice[] = [];
  const server = new VhostUserServer({
    ...serverOpts,
    path,
    createDevice: () => {
      const d = new LoopbackDevice(opts);
      devices.push(d);
      return d;
    },
  }).listen();
  tt.teardown(() => server.close());
  return { server, path, devices, dev: () => devices[devices.length - 1]! };
}

interface Link {
  fe: VhostUserFrontend;
  mem: GuestMemoryImage;
  hs: HandshakeResult;
  rx: DriverQueue;
  tx: DriverQueue;
  /** Called on every call eventfd signal of either queue. */
  pump: (() => void) | null;
  close(): void;
}

interface ConnectOptions extends Partial<Omit<HandshakeOptions, 'memory' | 'queues'>> {
  layout?: number | RegionLayout[];
  queueSize?: number;
  base?: number;
  maxIndirect?: number;
  ringRegion?: number;
}

async function connect(tt: Test, srv: Srv, o: ConnectOptions = {}): Promise<Link> {
  const mem = new GuestMemoryImage(o.layout ?? 16 * MiB);
  const fe = new VhostUserFrontend(srv.path);
  let hs: HandshakeResult;
  try {
    hs = await fe.handshake({
      ...o,
      memory: mem,
      queues: [0, 1].map((index) => ({ index, size: o.queueSize ?? 64, base: o.base, maxIndirect: o.maxIndirect ?? 16, region: o.ringRegion })),
    });
  } catch (e) {
    fe.close();
    mem.close();
    throw e;
  }
  const link: Link = {
    fe,
    mem,
    hs,
    rx: hs.queues[RX_QUEUE]!,
    tx: hs.queues[TX_QUEUE]!,
    pump: null,
    close() {
      for (const q of hs.queues) q.close();
      fe.close();
      mem.close();
    },
  };
  link.rx.onCall(() => link.pump?.());
  link.tx.onCall(() => link.pump?.());
  tt.teardown(() => link.close());
  return link;
}

/** Deterministic payload byte k of message i (seeded per stream). */
function pat(seed: number, i: number, k: number): number {
  return (seed * 131 + i * 31 + k * 7 + (k >> 8)) & 0xff;
}

interface TrafficOptions {
  /** Payload size of message i. */
  size: (i: number) => number;
  count: number;
  maxSize: number;
  txSegs?: number;
  rxSegs?: number;
  txIndirect?: boolean;
  rxIndirect?: boolean;
  /** Buffer slots per direction (in flight). */
  slots?: number;
  seed?: number;
  /** Explicit slot addresses (e.g. straddling two regions); default: allocated alternating regions. */
  txSlots?: number[];
  rxSlots?: number[];
  timeoutMs?: number;
  /** Called after each received message (e.g. to disconnect mid-traffic). */
  onReceived?: (n: number) => void;
}

interface TrafficResult {
  sent: number;
  received: number;
  bytes: number;
  mismatches: string[];
}

/** Segment k's [offset, length) inside a slot: placed in reverse order with 16-byte gaps. */
function layoutSegs(total: number, n: number, offs: number[], lens: number[]): void {
  const base = Math.floor(total / n);
  for (let k = 0; k < n; k++) lens[k] = k === n - 1 ? total - base * (n - 1) : base;
  let off = 0;
  for (let k = n - 1; k >= 0; k--) {
    offs[k] = off;
    off += lens[k]! + 16;
  }
}

function slotBytes(maxSize: number, segs: number): number {
  return maxSize + 16 * segs + 64;
}

/** Push `count` messages through tx → loopback → rx and check every byte and length. */
function traffic(link: Link, o: TrafficOptions): Promise<TrafficResult> {
  const { mem, rx, tx } = link;
  const txSegs = o.txSegs ?? 1;
  const rxSegs = o.rxSegs ?? 1;
  const slots = o.slots ?? Math.min(16, tx.size);
  const seed = o.seed ?? 1;
  const regions = mem.regions.length;
  const txSlots = o.txSlots ?? Array.from({ length: slots }, (_, i) => mem.alloc(slotBytes(o.maxSize, txSegs), 64, i % regions));
  const rxSlots = o.rxSlots ?? Array.from({ length: slots }, (_, i) => mem.alloc(slotBytes(o.maxSize, rxSegs), 64, (i + 1) % regions));
  const txFree = txSlots.map((_, i) => i);
  const rxFree = rxSlots.map((_, i) => i);
  const res: TrafficResult = { sent: 0, received: 0, bytes: 0, mismatches: [] };
  const offs: number[] = [];
  const lens: number[] = [];
  const scratch = new Uint8Array(slotBytes(o.maxSize, Math.max(txSegs, rxSegs)));
  const rxOffs: number[] = [];
  const rxLens: number[] = [];
  layoutSegs(o.maxSize, rxSegs, rxOffs, rxLens);

  return new Promise<TrafficResult>((resolve, reject) => {
    let done = false;
    let rxPosted = 0;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      link.pump = null;
      if (err) reject(err);
      else resolve(res);
    };
    const timer = setTimeout(
      () => finish(new Error(`traffic timed out: sent ${res.sent}, received ${res.received} of ${o.count}`)),
      o.timeoutMs ?? 10_000,
    );
    const onRx = (token: number, len: number): void => {
      const i = res.received++;
      const slot = token;
      const gpa = rxSlots[slot]!;
      const want = o.size(i);
      if (len !== want) {
        if (res.mismatches.length < 10) res.mismatches.push(`message ${i}: length ${len}, expected ${want}`);
      } else {
        // Reassemble from the writable segments in chain order.
        let got = 0;
        for (let k = 0; k < rxSegs && got < len; k++) {
          const n = Math.min(rxLens[k]!, len - got);
          mem.read(gpa + rxOffs[k]!, n, scratch, got);
          got += n;
        }
        for (let k = 0; k < len; k++) {
          if (scratch[k] !== pat(seed, i, k)) {
            if (res.mismatches.length < 10) res.mismatches.push(`message ${i} (size ${len}): byte ${k} is ${scratch[k]}, expected ${pat(seed, i, k)}`);
            break;
          }
        }
      }
      res.bytes += len;
      rxFree.push(slot);
      o.onReceived?.(res.received);
    };
    const onTx = (token: number, len: number): void => {
      if (len !== 0 && res.mismatches.length < 10) res.mismatches.push(`tx chain returned with used.len ${len}`);
      txFree.push(token);
    };
    const pump = (): void => {
      if (done) return;
      try {
        for (;;) {
          tx.harvest(onTx);
          rx.harvest(onRx);
          if (done) return;
          if (res.received >= o.count) {
            // Every tx chain was used before its frame reached rx: collect them all now.
            tx.harvest(onTx);
            if (tx.outstanding !== 0) throw new Error(`${tx.outstanding} tx chains still outstanding after the last frame came back`);
            return finish();
          }
          // Post receive buffers.
          // Post no more receive buffers than messages still to come, so none is left in the
          // ring when this run ends (the next run on the same rings must not see stale tokens).
          while (rxFree.length > 0 && rxPosted < o.count) {
            const slot = rxFree[rxFree.length - 1]!;
            const gpa = rxSlots[slot]!;
            for (let k = 0; k < rxSegs; k++) {
              rx.segAddr[k] = gpa + rxOffs[k]!;
              rx.segLen[k] = rxLens[k]!;
            }
            if (rx.add(rxSegs, 0, o.rxIndirect ?? false, slot) < 0) break;
            rxFree.pop();
            rxPosted++;
          }
          rx.publish();
          // Send.
          while (txFree.length > 0 && res.sent < o.count) {
            const slot = txFree[txFree.length - 1]!;
            const gpa = txSlots[slot]!;
            const i = res.sent;
            const size = o.size(i);
            layoutSegs(size, txSegs, offs, lens);
            for (let k = 0, logical = 0; k < txSegs; k++) {
              for (let b = 0; b < lens[k]!; b++) scratch[b] = pat(seed, i, logical + b);
              mem.write(gpa + offs[k]!, scratch, 0, lens[k]!);
              logical += lens[k]!;
              tx.segAddr[k] = gpa + offs[k]!;
              tx.segLen[k] = lens[k]!;
            }
            if (tx.add(txSegs, txSegs, o.txIndirect ?? false, slot) < 0) break;
            txFree.pop();
            res.sent++;
          }
          tx.publish();
          const more = rx.enableCalls() || tx.enableCalls();
          if (!more) return;
        }
      } catch (e) {
        finish(e as Error);
      }
    };
    link.pump = pump;
    pump();
  });
}

function checkTraffic(tt: Test, r: TrafficResult, count: number, what: string): void {
  tt.equal(r.received, count, `${what}: all ${count} messages came back`);
  tt.same(r.mismatches, [], `${what}: every length and byte matches`);
}

const SIZES = [0, 1, 2, 3, 7, 15, 16, 17, 63, 64, 65, 255, 256, 1000, 1500, 4095, 4096, 4097, 9000, 32768, 65535, 65536];

// ---------------------------------------------------------------------------------------------
// Handshake and config

t.test('handshake like QEMU 10 vhost-user-gpio-pci, GET_CONFIG returns the device bytes', async (tt) => {
  const config = new Uint8Array([0x56, 0x4d, 0x50, 0x49, 1, 16, 7, 0]);
  const srv = makeServer(tt, { config });
  const link = await connect(tt, srv, { layout: GuestMemoryImage.splitLayout(8 * MiB) });
  const hs = link.hs;
  tt.ok(hasBit(hs.offeredFeatures, VirtioFeature.PROTOCOL_FEATURES), 'PROTOCOL_FEATURES offered');
  tt.ok(hasBit(hs.features, VirtioFeature.VERSION_1) && hasBit(hs.features, VirtioFeature.RING_EVENT_IDX) && hasBit(hs.features, VirtioFeature.RING_INDIRECT_DESC), 'VERSION_1, EVENT_IDX, INDIRECT negotiated');
  tt.equal(hs.protocolFeatures, FRONTEND_PROTOCOL_FEATURES, 'all protocol features the front-end asked for were offered');
  tt.equal(hs.queueNum, 2, 'GET_QUEUE_NUM = 2');
  tt.equal(hs.maxMemSlots, 32, 'GET_MAX_MEM_SLOTS = 32');
  tt.same([...hs.config!], [...config], 'GET_CONFIG returns the device config bytes');
  tt.same([...(await link.fe.getConfig(4, 3))], [1, 16, 7], 'GET_CONFIG at an offset');
  const dev = srv.dev();
  tt.equal(dev.ackedFeatures, hs.features, 'device saw the acked features');
  await until(() => dev.queues[0] !== null && dev.queues[1] !== null, 2000, 'both queues ready');
  const conn = [...srv.server.connections][0]!;
  tt.equal(conn.state.status, 15, 'SET_STATUS recorded');
  tt.equal(conn.state.memory.length, 2, 'two memory regions mapped');
  tt.equal(await link.fe.getU64(Req.GET_STATUS), 15n, 'GET_STATUS');
});

// ---------------------------------------------------------------------------------------------
// Data path

t.test('data both ways: sizes 0..65536, direct buffers, two regions with a hole, event idx on', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv, { layout: [{ gpa: 0, size: 8 * MiB }, { gpa: 0x1_0000_0000, size: 8 * MiB }] });
  tt.ok(link.hs.eventIdx, 'event idx negotiated');
  const r = await traffic(link, { size: (i) => SIZES[i % SIZES.length]!, count: SIZES.length * 3, maxSize: 65536, slots: 8 });
  checkTraffic(tt, r, SIZES.length * 3, 'direct');
  tt.ok(srv.dev().stats.forwarded >= SIZES.length * 3, 'device forwarded them');
});

t.test('chained and indirect buffers, rings in the second region', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv, { layout: [{ gpa: 0x10_0000, size: 8 * MiB }, { gpa: 0x4000_0000, size: 8 * MiB }], ringRegion: 1 });
  const n = SIZES.length * 2;
  const size = (i: number): number => SIZES[i % SIZES.length]!;
  checkTraffic(tt, await traffic(link, { size, count: n, maxSize: 65536, txSegs: 3, rxSegs: 4, slots: 8, seed: 2 }), n, 'chained tx(3) / chained rx(4)');
  checkTraffic(tt, await traffic(link, { size, count: n, maxSize: 65536, txSegs: 5, rxSegs: 3, txIndirect: true, rxIndirect: true, slots: 8, seed: 3 }), n, 'indirect tx(5) / indirect rx(3)');
  checkTraffic(tt, await traffic(link, { size, count: n, maxSize: 65536, txSegs: 16, rxSegs: 1, txIndirect: true, slots: 4, seed: 4 }), n, 'indirect tx(16) / direct rx');
  checkTraffic(tt, await traffic(link, { size, count: n, maxSize: 65536, txSegs: 2, rxSegs: 16, rxIndirect: true, slots: 4, seed: 5 }), n, 'chained tx(2) / indirect rx(16)');
});

t.test('buffers straddling adjacent regions (ADD_MEM_REG flow)', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv, {
    layout: [
      { gpa: 0, size: 4 * MiB },
      { gpa: 4 * MiB, size: 4 * MiB },
      { gpa: 8 * MiB, size: 4 * MiB },
    ],
    memoryVia: 'add-mem-reg',
  });
  const conn = [...srv.server.connections][0]!;
  tt.equal(conn.state.memory.length, 3, 'three regions added with ADD_MEM_REG');
  // tx slot crosses region 0 → 1, rx slot crosses region 1 → 2; reserve the spill-over space.
  const txGpa = link.mem.allocAtEnd(3000, 0);
  link.mem.alloc(8192, 64, 1);
  const rxGpa = link.mem.allocAtEnd(2000, 1);
  link.mem.alloc(8192, 64, 2);
  const sizes = [5000, 2999, 3001, 100, 1999, 2000, 2001, 6000];
  const r = await traffic(link, { size: (i) => sizes[i % sizes.length]!, count: 16, maxSize: 6000, txSlots: [txGpa], rxSlots: [rxGpa], seed: 6 });
  checkTraffic(tt, r, 16, 'tx and rx buffers straddle regions');
  const r2 = await traffic(link, { size: (i) => sizes[i % sizes.length]!, count: 16, maxSize: 6000, txSlots: [txGpa], rxSlots: [rxGpa], txSegs: 3, rxSegs: 2, txIndirect: true, seed: 9 });
  checkTraffic(tt, r2, 16, 'straddling, chained and indirect');
});

t.test('event idx off (flag-based notification suppression)', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv, { eventIdx: false, layout: GuestMemoryImage.splitLayout(8 * MiB) });
  tt.notOk(link.hs.eventIdx, 'event idx not negotiated');
  const n = 2000;
  checkTraffic(tt, await traffic(link, { size: (i) => (i * 37) % 1600, count: n, maxSize: 1600, slots: 32, txSegs: 2, rxSegs: 2 }), n, 'flags mode');
});

t.test('16-bit index wrap-around', async (tt) => {
  for (const eventIdx of [true, false]) {
    await tt.test(`SET_VRING_BASE 65500, event idx ${eventIdx ? 'on' : 'off'}`, async (t2) => {
      const srv = makeServer(t2);
      const link = await connect(t2, srv, { base: 65500, eventIdx });
      const n = 300;
      checkTraffic(t2, await traffic(link, { size: (i) => 1 + (i % 300), count: n, maxSize: 300, slots: 48, seed: 7 }), n, 'wraps past 65535');
      t2.equal(link.rx.usedIdx(), (65500 + n) & 0xffff, 'rx used.idx wrapped');
      t2.equal(link.tx.usedIdx(), (65500 + n) & 0xffff, 'tx used.idx wrapped');
      t2.equal(await link.fe.getVringBase(TX_QUEUE), (65500 + n) & 0xffff, 'GET_VRING_BASE reports the wrapped index');
    });
  }
  await tt.test('more than 65536 buffers from base 0', async (t2) => {
    const srv = makeServer(t2);
    const link = await connect(t2, srv, { queueSize: 256 });
    const n = 70_000;
    checkTraffic(t2, await traffic(link, { size: (i) => i % 17, count: n, maxSize: 64, slots: 128, seed: 8, timeoutMs: 60_000 }), n, '70000 messages');
    t2.ok(link.tx.stats.kicks < link.tx.stats.chains, `kicks are suppressed (${link.tx.stats.kicks} kicks for ${link.tx.stats.chains} chains)`);
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed and forbidden requests over the real socket

async function stillUsable(tt: Test, fe: VhostUserFrontend, what: string): Promise<void> {
  tt.notOk(fe.closed, `${what}: connection still open`);
  const f = await fe.getFeatures();
  tt.ok(hasBit(f, VirtioFeature.PROTOCOL_FEATURES), `${what}: GET_FEATURES still answered`);
}

async function rejects(tt: Test, p: Promise<unknown>, request: string, what: string): Promise<void> {
  try {
    await p;
    tt.fail(`${what}: was accepted`);
  } catch (e) {
    tt.ok(e instanceof FrontendRequestError && e.request === request && e.ackValue !== undefined && e.ackValue !== 0n, `${what}: nacked (${(e as Error).message})`);
  }
}

t.test('bad requests with REPLY_ACK are nacked and the connection stays usable', async (tt) => {
  const srv = makeServer(tt);
  const baseline = fdCount();
  const link = await connect(tt, srv);
  const fe = link.fe;
  tt.ok(fe.replyAck, 'REPLY_ACK negotiated');
  const efd = native.eventfd(0);
  const efd2 = native.eventfd(0);

  await rejects(tt, fe.request(Req.SEND_RARP, new Uint8Array(8)), 'SEND_RARP', 'request the back-end does not support');
  await rejects(tt, fe.request(99, new Uint8Array(0)), 'UNKNOWN(99)', 'unknown request code');
  await rejects(tt, fe.setFeatures(link.hs.features | bit(VirtioFeature.RING_PACKED)), 'SET_FEATURES', 'SET_FEATURES with a bit not offered');
  await rejects(tt, fe.setFeatures(link.hs.features | 1n), 'SET_FEATURES', 'SET_FEATURES with device bit 0 not offered');
  await rejects(tt, fe.request(Req.SET_PROTOCOL_FEATURES, encodeU64(bit(ProtoFeature.BACKEND_REQ) | fe.protocolFeatures)), 'SET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES with a bit not offered');
  await rejects(tt, fe.setVringState(Req.SET_VRING_NUM, 7, 64), 'SET_VRING_NUM', 'bad queue index (SET_VRING_NUM 7)');
  await rejects(tt, fe.setVringFd(Req.SET_VRING_CALL, 2, efd), 'SET_VRING_CALL', 'bad queue index (SET_VRING_CALL 2)');
  await rejects(tt, fe.request(Req.SET_VRING_CALL, encodeVringFd(0, false), { fds: [efd, efd2] }), 'SET_VRING_CALL', 'two fds on SET_VRING_CALL');
  await rejects(tt, fe.request(Req.SET_VRING_CALL, encodeVringFd(0, false), { fds: [] }), 'SET_VRING_CALL', 'no fd and no NOFD bit');
  await rejects(tt, fe.request(Req.SET_OWNER, undefined, { fds: [efd] }), 'SET_OWNER', 'an fd on SET_OWNER');
  await rejects(tt, fe.request(Req.SET_MEM_TABLE, encodeMemTable(link.mem.descs()), { fds: [] }), 'SET_MEM_TABLE', 'SET_MEM_TABLE without fds');
  await rejects(tt, fe.request(Req.SET_FEATURES, new Uint8Array(4)), 'SET_FEATURES', 'truncated payload (4-byte u64)');
  await rejects(tt, fe.request(Req.SET_VRING_ADDR, new Uint8Array(20)), 'SET_VRING_ADDR', 'truncated vring address');
  await rejects(tt, fe.request(Req.SET_VRING_BASE, encodeVringState({ index: 0, num: 5 })), 'SET_VRING_BASE', 'SET_VRING_BASE on a running queue');
  await rejects(tt, fe.request(Req.SET_STATUS, encodeU64(0x100)), 'SET_STATUS', 'status wider than 8 bits');
  await stillUsable(tt, fe, 'after all the nacks');
  // The data path was not disturbed.
  checkTraffic(tt, await traffic(link, { size: (i) => i * 10, count: 50, maxSize: 500 }), 50, 'traffic after nacks');
  // SET_FEATURES with a bit not offered must not have changed the acked features.
  tt.equal(srv.dev().ackedFeatures, link.hs.features, 'acked features unchanged by the rejected SET_FEATURES');
  link.close();
  native.close(efd);
  native.close(efd2);
  await until(() => srv.server.connections.size === 0, 2000, 'server to drop the connection');
  tt.equal(fdCount(), baseline, 'no fd leaked (fds of rejected requests were closed)');
});

/** Connect, negotiate without REPLY_ACK, then send `bad`; the back-end must close the connection. */
interface Disconnect {
  reason: string;
  cause: DisconnectCause;
}

/** The next 'disconnect' of `srv`'s server; rejects after `ms` naming what did not happen. */
function nextDisconnect(srv: Srv, what: string, ms = 2000): Promise<Disconnect> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      srv.server.off('disconnect', on);
      reject(new Error(`${what}: the server did not drop the connection within ${ms} ms`));
    }, ms);
    const on = (_c: unknown, reason: string, cause: DisconnectCause): void => {
      clearTimeout(timer);
      srv.server.off('disconnect', on);
      resolve({ reason, cause });
    };
    srv.server.on('disconnect', on);
  });
}

/** One bad request without REPLY_ACK: the server must close with exactly `cause` and a reason matching `reason`. */
async function closesWithoutAck(tt: Test, srv: Srv, c: BadCase): Promise<void> {
  const mem = new GuestMemoryImage(MiB);
  const fe = new VhostUserFrontend(srv.path);
  try {
    const hs = await fe.handshake({ memory: mem, queues: [{ size: 16 }, { size: 16 }], protocolFeatures: FRONTEND_PROTOCOL_FEATURES & ~bit(ProtoFeature.REPLY_ACK) });
    tt.notOk(fe.replyAck, `${c.what}: REPLY_ACK not negotiated`);
    const dropped = nextDisconnect(srv, c.what);
    await c.bad(fe, mem);
    const d = await dropped;
    tt.equal(d.cause, c.cause, `${c.what}: disconnect cause ${c.cause}`);
    tt.match(d.reason, c.reason, `${c.what}: reason says what was wrong (${d.reason})`);
    await fe.waitClosed(2000);
    for (const q of hs.queues) q.close();
  } finally {
    fe.close();
    mem.close();
  }
  await until(() => srv.server.connections.size === 0, 2000, 'server to forget the connection');
}

interface BadCase {
  what: string;
  bad: (fe: VhostUserFrontend, mem: GuestMemoryImage) => void | Promise<unknown>;
  cause: DisconnectCause;
  reason: RegExp;
}

t.test('bad requests without REPLY_ACK close the connection; the server keeps accepting', async (tt) => {
  const srv = makeServer(tt);
  const baseline = fdCount();
  const efd = native.eventfd(0);
  const bad = (what: string, reason: RegExp, fn: BadCase['bad'], cause: DisconnectCause = 'protocol_error'): BadCase => ({ what, bad: fn, cause, reason });
  const cases: BadCase[] = [
    bad('unsupported request', /^SEND_RARP: request not supported by this back-end$/, (fe) => fe.request(Req.SEND_RARP, new Uint8Array(8))),
    bad('SET_FEATURES with a bit not offered', /^SET_FEATURES: features 0x400000000 were not offered/, (fe) => fe.setFeatures(fe.features | bit(VirtioFeature.RING_PACKED))),
    bad('bad queue index', /^SET_VRING_ENABLE: queue index 9 is out of range \(device has 2 queues\)$/, (fe) => fe.setVringState(Req.SET_VRING_ENABLE, 9, 1)),
    bad('wrong fd count', /^SET_VRING_KICK: carries 2 fds, expected 0\.\.1$/, (fe) => fe.request(Req.SET_VRING_KICK, encodeVringFd(0, false), { fds: [efd, efd] })),
    bad('truncated payload', /^SET_VRING_NUM: vring state must be 8 bytes, got 6$/, (fe) => fe.request(Req.SET_VRING_NUM, new Uint8Array(6))),
    bad('GET_* with an fd (NEED_REPLY cannot help)', /^GET_FEATURES: carries 1 fds, expected 0$/, (fe) => fe.request(Req.GET_FEATURES, undefined, { fds: [efd], reply: false })),
    bad('GET_CONFIG with a truncated payload', /^GET_CONFIG: config payload of 4 bytes is out of range 12\.\.268$/, (fe) => fe.request(Req.GET_CONFIG, new Uint8Array(4), { reply: false })),
    bad('header with protocol version 2', /^GET_FEATURES: unsupported protocol version 2/, (fe) => fe.sendRaw(new Uint8Array([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]))),
    bad('reply flag on a request', /^GET_FEATURES: reply flag set on a request$/, (fe) => fe.sendRaw(encodeMessage(Req.GET_FEATURES, 0x4))),
    bad('payload size beyond the limit', /^GET_FEATURES: payload size 65536 exceeds the limit of 4096$/, (fe) => fe.sendRaw(new Uint8Array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]))),
    bad(
      'more than 8 fds on one message',
      /EMSGSIZE/,
      (fe, mem) => fe.request(Req.SET_MEM_TABLE, encodeMemTable(mem.descs()), { fds: new Array<number>(9).fill(mem.fd), reply: false }),
      'io_error',
    ),
  ];
  for (const c of cases) await closesWithoutAck(tt, srv, c);
  // A front-end that leaves with our reply unread: its socket resets ours (ECONNRESET), which is
  // a front-end leaving (peer_closed), not an I/O error.
  {
    const fd = native.connectUnix(srv.path);
    const dropped = nextDisconnect(srv, 'front-end leaving with a reply unread');
    native.sendMsg(fd, encodeMessage(Req.GET_FEATURES, 0x1), 0, 12, null);
    await sleep(50);
    native.close(fd);
    tt.same(await dropped, { reason: 'front-end closed the socket (connection reset)', cause: 'peer_closed' }, 'a reset is the front-end leaving, and said so');
    await until(() => srv.server.connections.size === 0, 2000, 'server to drop the reset connection');
  }
  // A message sent in pieces, each with fds: the fds of one message are bounded as they arrive,
  // not only once the message is whole (it never would be here).
  {
    const fe = new VhostUserFrontend(srv.path);
    await fe.getFeatures();
    const dropped = nextDisconnect(srv, 'fds spread over the pieces of one message');
    const msg = encodeMessage(Req.SET_VRING_ADDR, 0, new Uint8Array(40));
    for (let i = 0; i < 3; i++) fe.sendRaw(msg.subarray(i, i + 1), [efd, efd, efd, efd]);
    tt.same(await dropped, { reason: 'front-end sent 12 fds with one message; a message carries at most 8', cause: 'protocol_error' }, 'fds spread over pieces: connection dropped at the ninth fd, and why');
    fe.close();
    await until(() => srv.server.connections.size === 0, 2000, 'server to drop the fd-spraying front-end');
  }
  // A message cut short by the front-end going away.
  {
    const fe = new VhostUserFrontend(srv.path);
    await fe.getFeatures();
    fe.sendRaw(encodeMessage(Req.SET_VRING_ADDR, 0, new Uint8Array(40)).subarray(0, 20));
    await sleep(20);
    const dropped = nextDisconnect(srv, 'front-end leaving mid-message');
    fe.close();
    tt.same(await dropped, { reason: 'front-end closed the socket in the middle of a message', cause: 'peer_closed' }, 'front-end leaving mid-message: connection dropped, and why');
    await until(() => srv.server.connections.size === 0, 2000, 'server to drop a half-sent message');
  }
  // The server still serves a well-behaved front-end, and nothing leaked.
  const link = await connect(tt, srv);
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 100, maxSize: 100 }), 100, 'new connection after all the closes');
  link.close();
  native.close(efd);
  await until(() => srv.server.connections.size === 0, 2000, 'last connection closed');
  tt.equal(fdCount(), baseline, 'no fd leaked across all those connections');
});

t.test('NEED_REPLY without negotiated REPLY_ACK gets no ack', async (tt) => {
  const srv = makeServer(tt);
  const events: string[] = [];
  srv.server.on('rejected', (_c, request, message) => events.push(`rejected ${request}: ${message}`));
  srv.server.on('disconnect', (_c, reason, cause) => events.push(`disconnect ${cause}: ${reason}`));
  const fe = new VhostUserFrontend(srv.path);
  tt.teardown(() => fe.close());
  await fe.getFeatures();
  // No REPLY_ACK negotiated: the back-end must not answer; the next GET_FEATURES reply must be its own.
  await fe.request(Req.SET_OWNER, undefined, { flags: FLAG_NEED_REPLY, reply: false });
  tt.ok(hasBit(await fe.getFeatures(), VirtioFeature.PROTOCOL_FEATURES), 'next reply is the GET_FEATURES reply');
  tt.notOk(fe.closed, 'still connected');
  tt.same(events, [], 'nothing rejected, nothing dropped');
  // The only way this connection ends is the front-end leaving.
  const dropped = nextDisconnect(srv, 'front-end closing');
  fe.close();
  tt.same(await dropped, { reason: 'front-end closed the socket', cause: 'peer_closed' }, 'closed because the front-end left, for no other reason');
  tt.same(events, ['disconnect peer_closed: front-end closed the socket'], 'and nothing before that');
});

t.test('a front-end that never reads its replies is disconnected at the output budget; memory stays bounded', async (tt) => {
  const budget = 4096;
  const srv = makeServer(tt, {}, { outputBudget: budget });
  const dropped = nextDisconnect(srv, 'front-end that does not read', 10_000);
  const fd = native.connectUnix(srv.path);
  tt.teardown(() => {
    if (fdOpen) native.close(fd);
  });
  let fdOpen = true;
  const batch = new Uint8Array(100 * HEADER_SIZE);
  for (let i = 0; i < 100; i++) batch.set(encodeMessage(Req.GET_FEATURES, 0), i * HEADER_SIZE);
  let maxQueued = 0;
  let sent = 0;
  let sendError = '';
  let done = false;
  void dropped.then(() => (done = true), () => (done = true));
  const end = Date.now() + 10_000;
  // Send GET_FEATURES requests and never read a reply, until the server drops us.
  while (!done && Date.now() < end) {
    try {
      const n = native.sendMsg(fd, batch, sent % batch.byteLength, batch.byteLength - (sent % batch.byteLength), null);
      if (n > 0) sent += n;
    } catch (e) {
      sendError = (e as Error).message; // EPIPE/ECONNRESET once the server has closed
      break;
    }
    for (const c of srv.server.connections) maxQueued = Math.max(maxQueued, c.queuedReplyBytes);
    await sleep(0);
  }
  const d = await dropped;
  tt.equal(d.cause, 'io_error', 'closed as an I/O failure of the peer');
  tt.match(d.reason, /^front-end does not read its replies: \d+ bytes unread .* exceed the budget of 4096 bytes/, `reason says so (${d.reason})`);
  tt.ok(maxQueued <= budget, `queued replies never exceeded the budget (max ${maxQueued} of ${budget})`);
  tt.ok(maxQueued > 0, 'replies did queue up before the close');
  tt.ok(sent > 0, `requests were sent (${sent} bytes${sendError ? `; then ${sendError}` : ''})`);
  native.close(fd);
  fdOpen = false;
});

t.test('messagesPerTurn: a connection yields after its share of requests and picks up the rest on the next turn', async (tt) => {
  const srv = makeServer(tt, {}, { messagesPerTurn: 1 });
  const fd = native.connectUnix(srv.path);
  tt.teardown(() => native.close(fd));
  const n = 50;
  const batch = new Uint8Array(n * HEADER_SIZE);
  for (let i = 0; i < n; i++) batch.set(encodeMessage(Req.GET_FEATURES, 0), i * HEADER_SIZE);
  tt.equal(native.sendMsg(fd, batch, 0, batch.byteLength, null), batch.byteLength, `${n} requests in one write`);
  const want = n * (HEADER_SIZE + 8);
  const rx = new Uint8Array(want + 64);
  let got = 0;
  let turns = 0;
  const end = Date.now() + 2000;
  while (got < want && Date.now() < end) {
    const r = native.recvMsg(fd, rx, got, rx.byteLength - got, 0);
    if (r === null) {
      turns++;
      await sleep(0);
      continue;
    }
    if (r.bytes === 0) break;
    got += r.bytes;
  }
  tt.equal(got, want, `all ${n} replies arrived within 2 s (after ${turns} empty reads)`);
  const conn = [...srv.server.connections][0];
  tt.ok(conn && !conn.isClosed, 'connection still up');
});

t.test("a device's own requests go through its handleRequest hook; unknown ones are still refused", async (tt) => {
  const srv = makeServer(tt);
  const baseline = fdCount();
  const rejected: [string, string][] = [];
  srv.server.on('rejected', (_c, request, message) => rejected.push([request, message]));
  const fe = new VhostUserFrontend(srv.path);
  tt.teardown(() => fe.close());
  await fe.getFeatures();
  const dev = srv.dev();
  const kept: number[] = [];
  const seen: string[] = [];
  dev.handleRequest = (request, payload, fds) => {
    seen.push(`${request}/${payload.byteLength}/${fds.length}`);
    if (request === 1000) return { reply: Uint8Array.of(payload.byteLength, 42) };
    if (request === 1001) {
      kept.push(...fds.splice(0, 1)); // the device keeps the first fd; the connection closes the rest
      return {};
    }
    if (request === 1003) throw new ProtocolError('UNKNOWN(1003)', 'the device refuses this one');
    return false;
  };
  // Before REPLY_ACK: a request with a reply of its own.
  tt.same([...((await fe.request(1000, new Uint8Array(5), { reply: true })) ?? [])], [5, 42], 'device reply delivered');
  await fe.setProtocolFeatures(FRONTEND_PROTOCOL_FEATURES);
  tt.ok(fe.replyAck, 'REPLY_ACK negotiated');
  const e1 = native.eventfd(0);
  const e2 = native.eventfd(0);
  await fe.request(1001, new Uint8Array(8), { fds: [e1, e2] });
  tt.pass('handled without a reply of its own: REPLY_ACK 0');
  tt.equal(kept.length, 1, 'the device kept one fd');
  await rejects(tt, fe.request(1002, new Uint8Array(0)), 'UNKNOWN(1002)', 'not handled');
  await rejects(tt, fe.request(1003, new Uint8Array(0)), 'UNKNOWN(1003)', 'refused by the device');
  tt.same(
    rejected,
    [
      ['UNKNOWN(1002)', 'UNKNOWN(1002): request not supported by this back-end'],
      ['UNKNOWN(1003)', 'UNKNOWN(1003): the device refuses this one'],
    ],
    'both refusals say why',
  );
  tt.same(seen, ['1000/5/0', '1001/8/2', '1002/0/0', '1003/0/0'], 'the hook saw each request once, with its payload and fds');
  tt.ok(hasBit(await fe.getFeatures(), VirtioFeature.PROTOCOL_FEATURES), 'connection still serves registry requests');
  native.close(e1);
  native.close(e2);
  for (const fd of kept) native.close(fd);
  fe.close();
  await until(() => srv.server.connections.size === 0, 2000, 'connection closed');
  tt.equal(fdCount(), baseline, 'no fd leaked: the fd the device did not keep was closed');
});

// ---------------------------------------------------------------------------------------------
// Drivers that corrupt their rings

t.test('descriptor loop on queue 1: queue 1 broken (err eventfd), queue 0 and the server still work', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  const dev = srv.dev();
  let errSignals = 0;
  link.tx.onError(() => errSignals++);
  let rx0Err = 0;
  link.rx.onError(() => rx0Err++);
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 10, maxSize: 64 }), 10, 'before the corruption');
  const buf = link.mem.alloc(64);
  link.tx.rawDesc(0, buf, 16, VRING_DESC_F_NEXT, 1);
  link.tx.rawDesc(1, buf, 16, VRING_DESC_F_NEXT, 0);
  link.tx.rawAvail(0);
  link.tx.publish();
  link.tx.kick();
  await until(() => errSignals > 0, 2000, 'queue 1 error eventfd');
  tt.equal(errSignals, 1, 'queue 1 error eventfd signalled');
  tt.match(String(dev.errors[TX_QUEUE]?.message), /loop|longer than its table/, 'error names the loop');
  // Queue 0 still delivers device-originated data.
  const rxBuf = link.mem.alloc(256);
  link.rx.addBuffer(rxBuf, 256, true, 0);
  link.rx.publish();
  link.rx.enableCalls();
  let got = -1;
  link.pump = () => link.rx.harvest((_t, len) => (got = len));
  dev.inject(new Uint8Array([1, 2, 3, 4, 5]));
  await until(() => got >= 0, 2000, 'rx delivery after tx broke');
  tt.equal(got, 5, 'queue 0 delivered 5 bytes');
  tt.same([...link.mem.read(rxBuf, 5)], [1, 2, 3, 4, 5], 'bytes intact');
  tt.equal(rx0Err, 0, 'queue 0 error eventfd not signalled');
  await stillUsable(tt, link.fe, 'after the loop');
  link.close();
  await until(() => srv.server.connections.size === 0);
  const link2 = await connect(tt, srv);
  checkTraffic(tt, await traffic(link2, { size: (i) => i, count: 10, maxSize: 64 }), 10, 'a new connection works');
});

t.test('out-of-range buffer on queue 0: queue 0 broken, queue 1 keeps returning buffers', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  const dev = srv.dev();
  let rxErr = 0;
  let txErr = 0;
  link.rx.onError(() => rxErr++);
  link.tx.onError(() => txErr++);
  link.rx.addBuffer(0x40_0000_0000, 4096, true, 0); // 256 GiB: no region there
  link.rx.publish();
  const txBuf = link.mem.alloc(64);
  link.mem.write(txBuf, new Uint8Array(64).fill(9));
  let txDone = 0;
  link.pump = () => link.tx.harvest(() => txDone++);
  for (let i = 0; i < 4; i++) link.tx.addBuffer(txBuf, 64, false, i);
  link.tx.publish();
  link.tx.enableCalls();
  await until(() => rxErr > 0, 2000, 'queue 0 error eventfd');
  tt.match(String(dev.errors[RX_QUEUE]?.message), /outside guest memory/, 'error names the bad address');
  await until(() => txDone === 4, 2000, 'tx completions');
  tt.equal(txDone, 4, 'queue 1 still returns its chains');
  tt.equal(txErr, 0, 'queue 1 error eventfd not signalled');
  tt.equal(dev.backlogLength, 4, 'frames wait in the backlog');
  await stillUsable(tt, link.fe, 'after the bad address');
});

t.test('indirect table out of range breaks only its queue; the queue can be restarted', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  let txErr = 0;
  link.tx.onError(() => txErr++);
  link.tx.rawDesc(3, 0x3_0000_0000, 64, 4 /* INDIRECT */, 0);
  link.tx.rawAvail(3);
  link.tx.publish();
  await until(() => txErr > 0, 2000, 'tx error eventfd');
  tt.match(String(srv.dev().errors[TX_QUEUE]?.message), /indirect table/, 'indirect table outside memory');
  await stillUsable(tt, link.fe, 'after the bad indirect table');
  // Restart queue 1 from scratch (GET_VRING_BASE stops it; the rings are re-created) and it works again.
  const base = await link.fe.getVringBase(TX_QUEUE);
  tt.equal(base, 0, 'GET_VRING_BASE on the broken queue: nothing consumed');
  await rejects(tt, link.fe.setVringState(Req.SET_VRING_NUM, TX_QUEUE, 100), 'SET_VRING_NUM', 'queue size not a power of two');
  await rejects(tt, link.fe.setVringState(Req.SET_VRING_NUM, TX_QUEUE, 4096), 'SET_VRING_NUM', 'queue size above the device maximum');
  const tx2 = new DriverQueue(link.mem, { index: TX_QUEUE, size: 32, eventIdx: link.hs.eventIdx, maxIndirect: 4 });
  tt.teardown(() => tx2.close());
  await link.fe.startQueue(tx2);
  link.tx = tx2;
  tx2.onCall(() => link.pump?.());
  checkTraffic(tt, await traffic(link, { size: (i) => i * 5, count: 100, maxSize: 500, txSegs: 2, txIndirect: true }), 100, 'queue 1 restarted with new rings');
});

t.test('avail.idx jumping further than the queue size breaks only that queue', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  let txErr = 0;
  link.tx.onError(() => txErr++);
  link.tx.rawAvailIdx(link.tx.size + 1);
  link.tx.kick();
  await until(() => txErr > 0, 2000, 'tx error eventfd');
  tt.match(String(srv.dev().errors[TX_QUEUE]?.message), /more than the queue size/, 'avail index jump detected');
  await stillUsable(tt, link.fe, 'after the jump');
});

t.test('a queue error thrown out of kicked() is charged to the queue that is broken, not the kicked one', async (tt) => {
  // The device does not catch: the connection's kick handler must attribute the error itself.
  const srv = makeServer(tt, { catchQueueErrors: false });
  const link = await connect(tt, srv);
  let rxErr = 0;
  let txErr = 0;
  link.rx.onError(() => rxErr++);
  link.tx.onError(() => txErr++);
  link.rx.addBuffer(0x40_0000_0000, 4096, true, 0); // rx (queue 0) buffer outside guest memory
  link.rx.publish();
  // Let the server handle the rx kick first: with nothing to send, the device leaves rx alone.
  await sleep(30);
  tt.equal(rxErr + txErr, 0, 'nothing broken yet');
  const txBuf = link.mem.alloc(64);
  link.tx.addBuffer(txBuf, 64, false, 0); // the kick on tx (queue 1) makes the device pop rx
  link.tx.publish();
  await until(() => rxErr + txErr > 0, 2000, 'an error eventfd');
  await sleep(20);
  tt.equal(rxErr, 1, 'queue 0 (the broken one) error eventfd signalled');
  tt.equal(txErr, 0, 'queue 1 (the kicked one) error eventfd not signalled');
  await stillUsable(tt, link.fe, 'after the error');
});

// ---------------------------------------------------------------------------------------------
// Concurrency and lifecycle

t.test('two connections on two servers at once', async (tt) => {
  const a = makeServer(tt);
  const b = makeServer(tt);
  const la = await connect(tt, a);
  const lb = await connect(tt, b, { layout: GuestMemoryImage.splitLayout(16 * MiB) });
  const [ra, rb] = await Promise.all([
    traffic(la, { size: (i) => (i * 13) % 9000, count: 3000, maxSize: 9000, seed: 11, slots: 16 }),
    traffic(lb, { size: (i) => (i * 7) % 4000, count: 3000, maxSize: 4000, seed: 12, slots: 16, txSegs: 2, txIndirect: true }),
  ]);
  checkTraffic(tt, ra, 3000, 'server A');
  checkTraffic(tt, rb, 3000, 'server B');
  tt.equal(a.devices.length, 1, 'one device on A');
  tt.equal(b.devices.length, 1, 'one device on B');
});

t.test('second front-end on a busy socket is refused; first keeps working', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  const fe2 = new VhostUserFrontend(srv.path);
  tt.teardown(() => fe2.close());
  await fe2.waitClosed(2000);
  tt.ok(fe2.closed, 'second front-end was closed');
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 20, maxSize: 64 }), 20, 'first still works');
});

t.test('disconnect mid-traffic releases everything; the server accepts again', async (tt) => {
  const srv = makeServer(tt);
  const baseline = fdCount();
  for (let round = 0; round < 3; round++) {
    const link = await connect(tt, srv, { layout: GuestMemoryImage.splitLayout(8 * MiB) });
    const dev = srv.dev();
    const disconnected = new Promise<string>((resolve) => srv.server.once('disconnect', (_c, reason) => resolve(reason)));
    const p = traffic(link, {
      size: (i) => (i * 101) % 65537,
      count: 1_000_000,
      maxSize: 65536,
      slots: 16,
      onReceived: (n) => {
        if (n === 200 + round * 50) link.close();
      },
    });
    const err = await p.then(
      () => null,
      (e: Error) => e,
    );
    // The traffic loop stops either by timeout or by an exception after close; either way, drop it.
    void err;
    const reason = await disconnected;
    tt.match(reason, /closed/, `round ${round}: server saw the disconnect (${reason})`);
    tt.equal(srv.server.connections.size, 0, `round ${round}: connection gone`);
    tt.match(dev.lastReset, /disconnected/, `round ${round}: device reset`);
    tt.equal(dev.queues[0], null, `round ${round}: queue 0 released`);
    tt.equal(dev.queues[1], null, `round ${round}: queue 1 released`);
    await sleep(10);
    tt.equal(fdCount(), baseline, `round ${round}: no fd leaked`);
  }
  const link = await connect(tt, srv);
  checkTraffic(tt, await traffic(link, { size: (i) => i * 3, count: 100, maxSize: 300 }), 100, 'after the disconnects');
});

t.test('memory table replaced while queues run (SET_MEM_TABLE again) keeps the data path', async (tt) => {
  const srv = makeServer(tt);
  const link = await connect(tt, srv);
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 20, maxSize: 64, seed: 21 }), 20, 'before');
  await link.fe.setMemTable(link.mem);
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 20, maxSize: 64, seed: 22 }), 20, 'after re-sending the table');
  // A third region added and removed while the queues run.
  const extra = new GuestMemoryImage([{ gpa: 0x2_0000_0000, size: MiB, uva: 0x6000_0000_0000 }]);
  tt.teardown(() => extra.close());
  await link.fe.addMemReg(extra, extra.descs()[0]!);
  const conn = [...srv.server.connections][0]!;
  tt.equal(conn.state.memory.length, 2, 'ADD_MEM_REG added a region');
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 20, maxSize: 64, seed: 23 }), 20, 'after ADD_MEM_REG');
  await link.fe.remMemReg(extra.descs()[0]!);
  tt.equal(conn.state.memory.length, 1, 'REM_MEM_REG removed it');
  checkTraffic(tt, await traffic(link, { size: (i) => i, count: 20, maxSize: 64, seed: 24 }), 20, 'after REM_MEM_REG');
  await rejects(tt, link.fe.remMemReg(extra.descs()[0]!), 'REM_MEM_REG', 'REM_MEM_REG of a region not mapped');
  // ADD_MEM_REG of an overlapping region is rejected.
  await rejects(tt, link.fe.addMemReg(link.mem, link.mem.descs()[0]!), 'ADD_MEM_REG', 'overlapping ADD_MEM_REG');
  await stillUsable(tt, link.fe, 'after the overlap');
});
