/**
 * host-stack.ts — `npm run bench:host-stack`: what the whole host stack costs per SDU, next to
 * bench:datapath's raw vhost-user loopback measured in the same run (interleaved, same load).
 *
 * Three processes, each on its own event loop, as in production:
 *   back-end   (this process)  VhostUserServer + VmpiDevice + host ShimHvIpcp + IpcDaemon; also
 *                              the raw loopback's VhostUserServer + LoopbackDevice (idle while
 *                              the full stack runs, and the other way round)
 *   guest      (child)         the test front-end (test/frontend) as QEMU and the guest driver:
 *                              memfd guest memory, split rings, a VmpiPort over them (FrontendPort
 *                              below: it takes VMPI_F_TX_PACKED and VMPI_F_RX_PACKED, as
 *                              guest-driver/vmpi.c does, so SDUs travel as records packed many to
 *                              a chain both ways, and a chain's run of records of one channel
 *                              reaches the guest IPC process as one batch; HOSTSTACK_PACKED=0: one
 *                              frame, le32 channel + SDU, per chain, the driver without them),
 *                              a guest-role ShimHvIpcp on that port, and the guest application
 *                              on the IPC API in process (in a real guest the application holds
 *                              the channel's file; here it is a Flow of the guest IPC process);
 *                              also the raw loopback's front-end (bench/common/loopback.ts)
 *   host app   (child)         an application on the IPC client library (IpcClient) over the
 *                              daemon's Unix socket: SOCK_SEQPACKET records, small SDUs packed many
 *                              to a record both ways (record.ts RECORD_SDUS), many records per
 *                              sendmmsg/recvmmsg
 * The guest allocates one flow to the host application; every measurement runs on it.
 *
 * Per size (64, 256, 1500, 4000, 65536 B) and repeat, in this order:
 *   raw    the loopback: round trips through both rings, counted at the front-end
 *   g2h    guest app → host app, the guest writing as fast as the tx ring lets it (write() until
 *          false, then 'drain'), SDUs counted at the host application. The guest outruns the host
 *          application, and the host IPC process drops what is over its receive budget (by design:
 *          the ring is shared by every channel, so it never pushes back on one): goodput under
 *          overload, the drops printed; CPU per SDU is per delivered SDU, the dropped ones included
 *   h2g    host app → guest app, likewise (the host app's writes until false), counted in the guest
 *   rtt    echo: the guest keeps `window` SDUs in flight (at most 4 MiB of them: 64 at 64 KiB, so
 *          none is dropped at the host IPC process's receive budget), the host application writes each back,
 *          round trips counted in the guest (the raw loopback's shape, through the whole stack)
 * Each full-stack window: warm-up, then the receiver's count and clock and every process's CPU
 * time are read at the start and end of the window (µs of CPU per SDU, per process). Between
 * windows the receiver is left to go quiet, so nothing of one window counts in the next.
 * The ratio column is full-stack SDUs/s ÷ raw round trips/s (a raw round trip crosses both rings
 * once, as an rtt round trip does; g2h and h2g cross one ring per SDU, so against the raw rate
 * they are the generous comparison). The raw loopback (bench:datapath's, unchanged) moves one
 * SDU per chain each way: it has no packed formats, so with the default HOSTSTACK_PACKED=1 the full
 * stack rides on fewer ring operations per SDU than the raw loopback does (what a real guest with
 * the current driver gets); HOSTSTACK_PACKED=0 is the like-for-like ring comparison. Medians of BENCH_REPEATS (default 5) with min and max.
 *
 * Environment: BENCH_REPEATS (5), HOSTSTACK_SECONDS (1, per window), HOSTSTACK_SIZES
 * (64,256,1500,4000,65536), HOSTSTACK_QUEUE_SIZE (256, both benches), HOSTSTACK_WINDOW (256, rtt),
 * HOSTSTACK_SERIES (raw,g2h,h2g,rtt: a subset, e.g. for a profile; ratios need raw).
 * Writes bench-results/host-stack.json. Profile with `node --cpu-prof --cpu-prof-dir=DIR
 * dist/bench/host-stack.js` (the children inherit the flag: one profile per process).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setLogLevel } from '../src/sys/log.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { FRAME_HEADER_SIZE, PACKED_RECORD_HEADER_SIZE, VMPI_F_RX_PACKED, VMPI_F_TX_PACKED, VmpiDevice } from '../src/vmpi/device.js';
import { SendResult, type SduBatchHandler, type SduHandler, type VmpiPort, type VmpiPortEvents } from '../src/vmpi/port.js';
import { SduRun } from '../src/vmpi/sdu-run.js';
import { VirtioFeature, bit, hasBit } from '../src/vhost-user/protocol.js';
import { ShimHvIpcp } from '../src/dif/shim-hv/ipcp.js';
import { IpcDaemon } from '../src/dif/ipc/daemon.js';
import { IpcClient } from '../src/dif/ipc/client.js';
import type { Flow, SduBatch } from '../src/dif/api.js';
import { VhostUserFrontend } from '../test/frontend/frontend.js';
import { GuestMemoryImage } from '../test/frontend/guest-memory.js';
import type { DriverQueue } from '../test/frontend/driver-queue.js';
import { LoopbackDevice } from '../test/frontend/loopback-device.js';
import { LoopbackFrontend, type LoopbackResult } from './common/loopback.js';

const SELF = fileURLToPath(import.meta.url);
/** Project root: works from bench/ (tsx) and dist/bench/ (built). */
const ROOT = SELF.includes(`${join('dist', 'bench')}`) ? resolve(dirname(SELF), '..', '..') : resolve(dirname(SELF), '..');

const VMPI_ID = 7;
/** The rtt's window in bytes at most (see rttWindow). */
const RTT_WINDOW_BYTES = 4 * 1024 * 1024;
const DIF = `hv.vmpi-${VMPI_ID}`;
const HOST_APP = 'bench-host-app';
const GUEST_APP = 'bench-guest-app';
/** The guest's VMPI rings: queue 0 host → guest (rx), queue 1 guest → host (tx), as the gpio carrier. */
const RXQ = 0;
const TXQ = 1;

const SERIES = ['raw', 'g2h', 'h2g', 'rtt'] as const;
type SeriesKey = (typeof SERIES)[number];

interface Options {
  repeats: number;
  seconds: number;
  sizes: number[];
  queueSize: number;
  window: number;
  /** Which series run (HOSTSTACK_SERIES, default all): e.g. only rtt for a profile. */
  series: SeriesKey[];
  /** The guest side takes VMPI_F_TX_PACKED and VMPI_F_RX_PACKED (HOSTSTACK_PACKED, default 1). */
  packed: boolean;
}

function envNumber(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive number`);
  return n;
}

function options(): Options {
  const sizes = (process.env.HOSTSTACK_SIZES ?? '64,256,1500,4000,65536').split(',').map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 65536)) throw new Error('HOSTSTACK_SIZES must be integers in 1..65536');
  const o: Options = {
    repeats: Math.round(envNumber('BENCH_REPEATS', 5)),
    seconds: envNumber('HOSTSTACK_SECONDS', 1),
    sizes,
    queueSize: Math.round(envNumber('HOSTSTACK_QUEUE_SIZE', 256)),
    window: Math.round(envNumber('HOSTSTACK_WINDOW', 256)),
    series: (process.env.HOSTSTACK_SERIES ?? SERIES.join(',')).split(',') as SeriesKey[],
    packed: process.env.HOSTSTACK_PACKED !== '0',
  };
  if (o.series.some((k) => !SERIES.includes(k))) throw new Error(`HOSTSTACK_SERIES: a comma-separated subset of ${SERIES.join(',')}`);
  if (o.seconds > 60) throw new Error('HOSTSTACK_SECONDS must be at most 60');
  if ((o.queueSize & (o.queueSize - 1)) !== 0 || o.queueSize > 1024) throw new Error('HOSTSTACK_QUEUE_SIZE must be a power of two up to 1024');
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Commands between the processes (Node's IPC channel; never on a measured path)

type Msg = { id: number; op: string } & Record<string, unknown>;
type Reply = { id: number; ok: boolean; value?: unknown; error?: string };
type Handlers = Record<string, (m: Msg) => unknown>;

/** A child's side: run each command, answer with its value or its error. */
function serveCommands(handlers: Handlers): void {
  process.on('message', (m: Msg) => {
    void (async () => {
      let reply: Reply;
      try {
        const h = handlers[m.op];
        if (!h) throw new Error(`unknown command ${m.op}`);
        reply = { id: m.id, ok: true, value: await h(m) };
      } catch (e) {
        reply = { id: m.id, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
      }
      process.send!(reply);
    })();
  });
}

/** The parent's side of one child. */
class Child {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  exited = false;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    proc.on('message', (r: Reply) => {
      const w = this.waiting.get(r.id);
      if (!w) return;
      this.waiting.delete(r.id);
      clearTimeout(w.timer);
      if (r.ok) w.resolve(r.value);
      else w.reject(new Error(`${name}: ${r.error}`));
    });
    proc.on('exit', (code, signal) => {
      this.exited = true;
      for (const w of this.waiting.values()) {
        clearTimeout(w.timer);
        w.reject(new Error(`${name} exited (${signal ?? code}) before answering`));
      }
      this.waiting.clear();
    });
  }

  call<T>(op: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.name}: no answer to ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.proc.send({ id, op, ...args });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// What both applications do with their end of the flow

/** A process's CPU time and clock, for a window's start or end. */
interface Mark {
  /** SDUs (or round trips) counted by this end so far. */
  count: number;
  wrong: number;
  tNs: number;
  cpuUs: number;
}

/** One end of the bench flow: counts what arrives, sends as fast as it may, or echoes. */
class FlowEnd {
  mode: 'sink' | 'echo' | 'source' | 'ping' = 'sink';
  size = -1;
  count = 0;
  wrong = 0;
  lastRx = 0;
  sent = 0;
  private sdu = new Uint8Array(0);
  private running = false;
  private waitingDrain = false;
  /** Echo: SDUs the flow refused, written back in order after 'drain'. */
  private held: Uint8Array[] = [];
  /** Ping (rtt, the guest): SDUs in flight, at most `window`. */
  private window = 0;
  private onQuiet: (() => void) | null = null;

  constructor(readonly flow: Flow) {
    flow.on('sdus', this.onBatch);
    flow.on('drain', this.onDrain);
  }

  setMode(mode: FlowEnd['mode'], size: number, window = 0): void {
    this.mode = mode;
    this.size = size;
    this.window = window;
    this.count = 0;
    this.wrong = 0;
    this.sent = 0;
    this.sdu = new Uint8Array(size).fill(0xa5);
  }

  mark(): Mark {
    const c = process.cpuUsage();
    return { count: this.count, wrong: this.wrong, tNs: Number(process.hrtime.bigint()), cpuUs: c.user + c.system };
  }

  /**
   * What arrives, in batches ('sdus': views into the flow's read buffer, valid during the call):
   * counted by length, without a copy or a call per SDU; the echo writes each view back (write()
   * copies) and copies only what the flow refused.
   */
  private readonly onBatch = (batch: SduBatch): void => {
    this.lastRx = performance.now();
    const n = batch.count;
    const size = this.size;
    if (this.mode === 'echo') {
      for (let i = 0; i < n; i++) {
        if (batch.length(i) === size) this.count++;
        else this.wrong++;
        const sdu = batch.sdu(i);
        if (this.held.length > 0 || !this.flow.write(sdu)) this.held.push(sdu.slice());
      }
      return;
    }
    let ok = 0;
    for (let i = 0; i < n; i++) if (batch.length(i) === size) ok++;
    this.count += ok;
    this.wrong += n - ok;
    if (this.mode === 'ping') {
      this.fill();
      if (this.onQuiet && this.sent - this.count - this.wrong <= 0) this.quiet();
    }
  };

  private readonly onDrain = (): void => {
    this.waitingDrain = false;
    if (this.mode === 'echo') {
      while (this.held.length > 0 && this.flow.write(this.held[0]!)) this.held.shift();
    } else if (this.mode === 'ping') {
      this.fill();
    } else if (this.mode === 'source') {
      this.pump();
    }
  };

  /** Source: write until refused (then 'drain' resumes), at most 256 per turn of the loop. */
  startSource(): void {
    this.running = true;
    if (!this.waitingDrain) this.pump();
  }

  private readonly pump = (): void => {
    if (!this.running || this.mode !== 'source') return;
    for (let k = 0; k < 256; k++) {
      if (!this.flow.write(this.sdu)) {
        this.waitingDrain = true;
        return;
      }
      this.sent++;
    }
    setImmediate(this.pump);
  };

  stopSource(): number {
    this.running = false;
    return this.sent;
  }

  /** Ping: keep `window` SDUs in flight. */
  startPing(): void {
    this.running = true;
    this.fill();
  }

  private fill(): void {
    if (!this.running || this.waitingDrain) return;
    while (this.sent - this.count - this.wrong < this.window) {
      if (!this.flow.write(this.sdu)) {
        this.waitingDrain = true;
        return;
      }
      this.sent++;
    }
  }

  /** Stop pinging; resolves once every SDU in flight came back (or after `ms`: what did not is reported). */
  async stopPing(ms = 10_000): Promise<number> {
    this.running = false;
    if (this.sent - this.count - this.wrong > 0) {
      await Promise.race([new Promise<void>((r) => (this.onQuiet = r)), sleep(ms)]);
      this.onQuiet = null;
    }
    return this.sent - this.count - this.wrong;
  }

  private quiet(): void {
    const cb = this.onQuiet;
    this.onQuiet = null;
    cb?.();
  }

  /** Nothing arrived for `quietMs` (bounded by `ms`); the echo's refused SDUs are written too. */
  async idle(quietMs = 150, ms = 10_000): Promise<{ quiet: boolean; held: number }> {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      if (performance.now() - this.lastRx >= quietMs && this.held.length === 0) return { quiet: true, held: 0 };
      await sleep(20);
    }
    return { quiet: false, held: this.held.length };
  }
}

function flowCommands(end: () => FlowEnd): Handlers {
  return {
    mode: (m) => end().setMode(m.mode as FlowEnd['mode'], m.size as number, (m.window as number) ?? 0),
    mark: () => end().mark(),
    'source-start': () => end().startSource(),
    'source-stop': () => end().stopSource(),
    'ping-start': () => end().startPing(),
    'ping-stop': () => end().stopPing(),
    idle: () => end().idle(),
    sent: () => end().sent,
  };
}

// ---------------------------------------------------------------------------------------------
// Guest (child): the front-end as the VMPI guest driver, a guest shim IPC process on it

/**
 * A VmpiPort over the front-end's two rings, doing what the guest driver does. With the packed
 * formats (the default, HOSTSTACK_PACKED=1: the driver takes VMPI_F_TX_PACKED and
 * VMPI_F_RX_PACKED, as guest-driver/vmpi.c does, docs/DEVICE.md): send() appends a record
 * (le32 channel | le32 length | SDU, 8-aligned) to the open tx buffer, a new one when it does not
 * fit (Full when none is free: 'drain' once the device returned some); the open buffer goes on the
 * ring at the end of the burst (a microtask), with the publish and the kick decision. Received rx
 * chains are parsed into their records, and the consecutive records of one channel go to its batch
 * handler in one call (bindBatch, as the guest port's batched read), straight from guest memory
 * (valid during the call), then the buffer is posted again. HOSTSTACK_PACKED=0: one frame (le32
 * channel + SDU) per chain both ways, the old driver.
 */
class FrontendPort extends EventEmitter<VmpiPortEvents> implements VmpiPort {
  readonly vmpiId = VMPI_ID;
  readonly maxSdu: number;
  readonly isUp = true;
  private readonly handlers = new Map<number, SduHandler>();
  private readonly batchHandlers = new Map<number, SduBatchHandler>();
  private readonly bytes: Uint8Array;
  private readonly run: SduRun;
  private readonly txSlots: Float64Array;
  private readonly rxSlots: Float64Array;
  private readonly txFree: Int32Array;
  private txFreeTop = 0;
  private readonly slotBytes: number;
  /** Packed tx: the tx slot being filled (-1: none) and its bytes so far. */
  private txOpen = -1;
  private txOpenLen = 0;
  private refused = false;
  private publishDue = false;
  private pumping = false;
  readonly stats = { sent: 0, received: 0, unbound: 0, refused: 0, txChains: 0, rxChains: 0 };

  constructor(
    mem: GuestMemoryImage,
    private readonly rx: DriverQueue,
    private readonly tx: DriverQueue,
    maxSdu: number,
    readonly txPacked: boolean,
    readonly rxPacked: boolean,
  ) {
    super();
    this.maxSdu = maxSdu;
    this.slotBytes = Math.ceil((PACKED_RECORD_HEADER_SIZE + maxSdu) / 64) * 64;
    this.bytes = mem.regions[0]!.bytes;
    this.run = new SduRun(this.bytes, 1024);
    const qs = tx.size;
    this.txSlots = new Float64Array(qs);
    this.rxSlots = new Float64Array(rx.size);
    this.txFree = new Int32Array(qs);
    for (let i = 0; i < qs; i++) this.txSlots[i] = mem.alloc(this.slotBytes, 64, 0);
    for (let i = 0; i < rx.size; i++) this.rxSlots[i] = mem.alloc(this.slotBytes, 64, 0);
    for (let i = 0; i < qs; i++) this.txFree[this.txFreeTop++] = i;
    for (let i = 0; i < rx.size; i++) rx.addBuffer(this.rxSlots[i]!, this.slotBytes, true, i);
    rx.publish();
    rx.onCall(this.pump);
    tx.onCall(this.pump);
    rx.enableCalls();
    tx.enableCalls();
  }

  bind(channel: number, handler: SduHandler): void {
    this.batchHandlers.delete(channel);
    this.handlers.set(channel, handler);
  }

  bindBatch(channel: number, handler: SduBatchHandler): void {
    this.handlers.delete(channel);
    this.batchHandlers.set(channel, handler);
  }

  unbind(channel: number): void {
    this.handlers.delete(channel);
    this.batchHandlers.delete(channel);
  }

  send(channel: number, sdu: Uint8Array): SendResult {
    const len = sdu.byteLength;
    if (len > this.maxSdu) throw new Error(`SDU of ${len} bytes exceeds ${this.maxSdu}`);
    const b = this.bytes;
    if (this.txPacked) {
      let at = (this.txOpenLen + 7) & ~7;
      if (this.txOpen >= 0 && at + PACKED_RECORD_HEADER_SIZE + len > this.slotBytes) this.closeTx();
      if (this.txOpen < 0) {
        if (!this.takeTxSlot()) return SendResult.Full;
        at = 0;
      }
      const off = this.txSlots[this.txOpen]! + at; // one region at guest address 0: offset = address
      putLe32(b, off, channel);
      putLe32(b, off + 4, len);
      b.set(sdu, off + PACKED_RECORD_HEADER_SIZE);
      this.txOpenLen = at + PACKED_RECORD_HEADER_SIZE + len;
    } else {
      if (!this.takeTxSlot()) return SendResult.Full;
      const off = this.txSlots[this.txOpen]!;
      putLe32(b, off, channel);
      b.set(sdu, off + FRAME_HEADER_SIZE);
      this.txOpenLen = FRAME_HEADER_SIZE + len;
      this.closeTx();
    }
    this.stats.sent++;
    this.schedulePublish();
    return SendResult.Sent;
  }

  /** A free tx buffer becomes the open one; false (refused, 'drain' later) when none is. */
  private takeTxSlot(): boolean {
    if (this.txFreeTop === 0) this.tx.harvest(this.onTx);
    if (this.txFreeTop === 0) {
      this.refused = true;
      this.stats.refused++;
      this.schedulePublish();
      return false;
    }
    this.txOpen = this.txFree[--this.txFreeTop]!;
    this.txOpenLen = 0;
    return true;
  }

  /** The open tx buffer goes on the ring (published with the burst). */
  private closeTx(): void {
    const slot = this.txOpen;
    if (slot < 0) return;
    this.txOpen = -1;
    this.tx.addBuffer(this.txSlots[slot]!, this.txOpenLen, false, slot);
    this.stats.txChains++;
  }

  private schedulePublish(): void {
    if (this.publishDue) return;
    this.publishDue = true;
    queueMicrotask(this.publishNow);
  }

  private readonly publishNow = (): void => {
    this.publishDue = false;
    this.closeTx();
    this.tx.publish();
  };

  private readonly onTx = (token: number): void => {
    this.txFree[this.txFreeTop++] = token;
  };

  /** One SDU at b[at, at + len) of `channel` to its handler (a batch handler: a run, see onRx). */
  private deliverOne(channel: number, at: number, len: number): void {
    const h = this.handlers.get(channel);
    if (h) {
      this.stats.received++;
      h(this.bytes.subarray(at, at + len), channel);
      return;
    }
    const bh = this.batchHandlers.get(channel);
    if (!bh) {
      this.stats.unbound++;
      return;
    }
    const run = this.run;
    run.clear();
    run.add(at, len);
    this.stats.received++;
    bh(run, channel);
  }

  private readonly onRx = (token: number, len: number): void => {
    const off = this.rxSlots[token]!;
    const b = this.bytes;
    this.stats.rxChains++;
    if (!this.rxPacked) {
      if (len >= FRAME_HEADER_SIZE) this.deliverOne(le32(b, off), off + FRAME_HEADER_SIZE, len - FRAME_HEADER_SIZE);
    } else {
      // Records; a run of one channel's records to its batch handler in one call.
      const end = off + len;
      let p = off;
      while (p + PACKED_RECORD_HEADER_SIZE <= end) {
        const channel = le32(b, p);
        const l = le32(b, p + 4);
        const at = p + PACKED_RECORD_HEADER_SIZE;
        if (at + l > end) break; // malformed: the rest of the chain is dropped
        p = (at + l + 7) & ~7;
        const bh = this.batchHandlers.get(channel);
        if (bh === undefined) {
          this.deliverOne(channel, at, l);
          continue;
        }
        const run = this.run;
        run.clear();
        run.add(at, l);
        while (p + PACKED_RECORD_HEADER_SIZE <= end && le32(b, p) === channel) {
          const l2 = le32(b, p + 4);
          const at2 = p + PACKED_RECORD_HEADER_SIZE;
          if (at2 + l2 > end || !run.add(at2, l2)) break;
          p = (at2 + l2 + 7) & ~7;
        }
        this.stats.received += run.count;
        bh(run, channel);
      }
    }
    this.rx.addBuffer(off, this.slotBytes, true, token);
  };

  private readonly pump = (): void => {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        this.tx.harvest(this.onTx);
        this.rx.harvest(this.onRx);
        this.rx.publish();
        if (this.refused && this.txFreeTop > 0) {
          this.refused = false;
          this.emit('drain');
        }
        const more = this.rx.enableCalls();
        if (!(this.tx.enableCalls() || more)) return;
      }
    } finally {
      this.pumping = false;
    }
  };
}

function le32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000;
}

function putLe32(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = v >>> 24;
}

async function runGuest(loopbackPath: string, vmpiPath: string, o: Options): Promise<void> {
  const maxSize = Math.max(...o.sizes);
  const loop = await LoopbackFrontend.connect(loopbackPath, maxSize, o.queueSize);

  const maxSdu = 65536;
  const slot = Math.ceil((PACKED_RECORD_HEADER_SIZE + maxSdu) / 64) * 64;
  const mem = new GuestMemoryImage(2 * o.queueSize * slot + 8 * 1024 * 1024, 'vmpi-bench-host-stack');
  const fe = new VhostUserFrontend(vmpiPath, { timeoutMs: 5000 });
  const features =
    bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_INDIRECT_DESC) | (o.packed ? bit(VMPI_F_RX_PACKED) | bit(VMPI_F_TX_PACKED) : 0n);
  const hs = await fe.handshake({ memory: mem, features, queues: [{ index: RXQ, size: o.queueSize }, { index: TXQ, size: o.queueSize }] });
  const port = new FrontendPort(mem, hs.queues[RXQ]!, hs.queues[TXQ]!, maxSdu, hasBit(fe.features, VMPI_F_TX_PACKED), hasBit(fe.features, VMPI_F_RX_PACKED));
  const ipcp = new ShimHvIpcp({ port, role: 'guest' });
  let end: FlowEnd | null = null;
  serveCommands({
    raw: (m): Promise<LoopbackResult> => loop.measure(m.size as number, m.seconds as number),
    allocate: async () => {
      const flow = await ipcp.allocateFlow(GUEST_APP, HOST_APP, { maxSdu }, { timeoutMs: 10_000 });
      end = new FlowEnd(flow);
      return { portId: flow.portId, maxSdu: flow.qos.maxSdu };
    },
    stats: () => ({ port: port.stats, ipcp: ipcp.stats }),
    ...flowCommands(() => end!),
    exit: () => {
      setImmediate(() => {
        ipcp.close();
        loop.close();
        for (const q of hs.queues) q.close();
        fe.close();
        mem.close();
        process.exit(0);
      });
    },
  });
  process.send!({ id: 0, ok: true, value: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// Host application (child): the IPC client library over the daemon's socket

async function runApp(ipcPath: string): Promise<void> {
  const client = await IpcClient.connect(ipcPath);
  const reg = await client.register(DIF, HOST_APP);
  let end: FlowEnd | null = null;
  reg.on('request', (req) => {
    req.accept().then(
      (flow) => (end = new FlowEnd(flow)),
      (e: unknown) => console.error('host app: accept failed', e),
    );
  });
  serveCommands({
    ...flowCommands(() => {
      if (!end) throw new Error('no flow accepted yet');
      return end;
    }),
    hasFlow: () => end !== null,
    exit: () => {
      setImmediate(() => {
        client.close();
        process.exit(0);
      });
    },
  });
  process.send!({ id: 0, ok: true, value: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// Back-end (this process) and the sweep

interface Window {
  sdus: number;
  seconds: number;
  pps: number;
  gbps: number;
  wrong: number;
  /** CPU µs per SDU of each process over the window. */
  cpuUsPerSdu: { backend: number; guest: number; app: number };
  /** g2h: SDUs the host IPC process dropped for its receive budget during the window. */
  drops?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? Number.NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

function spread(xs: number[]): { min: number; median: number; max: number } {
  return { min: Math.min(...xs), median: median(xs), max: Math.max(...xs) };
}

async function main(): Promise<void> {
  const role = process.argv[2];
  if (role === '--guest') return runGuest(process.argv[3]!, process.argv[4]!, JSON.parse(process.argv[5]!) as Options);
  if (role === '--app') return runApp(process.argv[3]!);

  const o = options();
  setLogLevel(process.env.VMPI_LOG_LEVEL ?? 'warn');
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-host-stack-'));
  const loopPath = join(dir, 'loopback.sock');
  const vmpiPath = join(dir, 'vmpi.sock');
  const ipcPath = join(dir, 'ipc.sock');

  const loopServer = new VhostUserServer({ path: loopPath, createDevice: () => new LoopbackDevice({ name: 'bench-loopback', maxQueueSize: 1024 }) }).listen();
  const device = new VmpiDevice({ vmpiId: VMPI_ID });
  const vmpiServer = new VhostUserServer({ path: vmpiPath, createDevice: () => device, maxConnections: 1 }).listen();
  const hostIpcp = new ShimHvIpcp({ port: device, role: 'host' });
  const daemon = new IpcDaemon({ socketPath: ipcPath });
  daemon.addIpcp(hostIpcp);
  daemon.listen();

  const load0 = loadavg();
  const perWindow = o.seconds + 0.2 + 0.5;
  const estimate = Math.ceil(o.repeats * o.sizes.length * o.series.length * perWindow + 5);
  console.log(
    `vmpi host-stack benchmark: ${o.sizes.length} sizes × ${o.series.length} series (${o.series.join(', ')}) × ${o.repeats} repeats, ${o.seconds} s windows, queue size ${o.queueSize}, rtt window ${o.window}, guest ${o.packed ? 'packed tx + rx records (VMPI_F_TX_PACKED, VMPI_F_RX_PACKED)' : 'one frame per chain'} (~${estimate} s)`,
  );
  console.log(`load average at start: ${load0.map((x) => x.toFixed(2)).join(' ')} on ${cpus().length} CPUs`);

  const spawnChild = (name: string, args: string[]): Promise<Child> => {
    const proc = fork(SELF, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const child = new Child(name, proc);
    return new Promise<Child>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${name} did not start within 20 s`)), 20_000);
      const onMsg = (m: Reply): void => {
        if (m.id !== 0) return;
        clearTimeout(timer);
        proc.off('message', onMsg);
        if (m.ok) res(child);
        else rej(new Error(`${name}: ${m.error}`));
      };
      proc.on('message', onMsg);
      proc.once('exit', (code) => rej(new Error(`${name} exited with ${code} while starting`)));
    });
  };

  const children: Child[] = [];
  const killAll = (): void => {
    for (const c of children) if (!c.exited) c.proc.kill('SIGKILL');
  };
  process.on('exit', killAll);
  try {
    const app = await spawnChild('host app', ['--app', ipcPath]);
    children.push(app);
    const guest = await spawnChild('guest', ['--guest', loopPath, vmpiPath, JSON.stringify(o)]);
    children.push(guest);
    for (let i = 0; i < 200 && !device.isUp; i++) await sleep(10);
    if (!device.isUp) throw new Error('the VMPI device did not come up');
    await guest.call('allocate');
    for (let i = 0; i < 200 && !(await app.call<boolean>('hasFlow')); i++) await sleep(10);

    const backendMark = (): number => {
      const c = process.cpuUsage();
      return c.user + c.system;
    };

    /** One full-stack window: `rx` counts, everyone's CPU read at both ends. */
    const windowOf = async (size: number, rx: Child, other: Child, rxIsGuest: boolean): Promise<Window> => {
      await sleep(200);
      const d0 = hostIpcp.stats.rxBudgetDrops.sdus + hostIpcp.stats.rxBudgetDrops.flow_bytes + hostIpcp.stats.rxBudgetDrops.total_bytes;
      const [a0, b0] = await Promise.all([rx.call<Mark>('mark'), other.call<Mark>('mark')]);
      const c0 = backendMark();
      await sleep(o.seconds * 1000);
      const [a1, b1] = await Promise.all([rx.call<Mark>('mark'), other.call<Mark>('mark')]);
      const c1 = backendMark();
      const d1 = hostIpcp.stats.rxBudgetDrops.sdus + hostIpcp.stats.rxBudgetDrops.flow_bytes + hostIpcp.stats.rxBudgetDrops.total_bytes;
      const sdus = a1.count - a0.count;
      const seconds = (a1.tNs - a0.tNs) / 1e9;
      const per = (us: number): number => us / Math.max(1, sdus);
      const guestCpu = rxIsGuest ? a1.cpuUs - a0.cpuUs : b1.cpuUs - b0.cpuUs;
      const appCpu = rxIsGuest ? b1.cpuUs - b0.cpuUs : a1.cpuUs - a0.cpuUs;
      return {
        sdus,
        seconds,
        pps: sdus / seconds,
        gbps: (sdus * size * 8) / seconds / 1e9,
        wrong: a1.wrong - a0.wrong,
        cpuUsPerSdu: { backend: per(c1 - c0), guest: per(guestCpu), app: per(appCpu) },
        drops: d1 - d0,
      };
    };

    // Keep what the rtt has in flight within the host IPC process's receive budget (8 MiB per
    // flow by default): beyond it, SDUs the host application has no room for yet are dropped (by
    // design) and never come back.
    const rttWindow = (size: number): number => Math.max(1, Math.min(o.window, Math.floor(RTT_WINDOW_BYTES / size)));
    const samples = new Map<string, Array<Window | LoopbackResult>>();
    const add = (k: SeriesKey, size: number, w: Window | LoopbackResult): void => {
      const key = `${k}:${size}`;
      if (!samples.has(key)) samples.set(key, []);
      samples.get(key)!.push(w);
    };
    const problems: string[] = [];

    for (let rep = 1; rep <= o.repeats; rep++) {
      for (const size of o.sizes) {
        const on = (k: SeriesKey): boolean => o.series.includes(k);
        const line: string[] = [];
        let wrong = 0;
        // raw loopback (bench:datapath's measurement)
        if (on('raw')) {
          const raw = await guest.call<LoopbackResult>('raw', { size, seconds: o.seconds }, (o.seconds + 5) * 1000 + 30_000);
          add('raw', size, raw);
          wrong += raw.errors;
          line.push(`raw ${Math.round(raw.pps)}/s`);
        }

        // guest → host
        if (on('g2h')) {
        await app.call('mode', { mode: 'sink', size });
        await guest.call('mode', { mode: 'source', size });
        await guest.call('source-start');
        const g2h = await windowOf(size, app, guest, false);
        await guest.call('source-stop');
        const gi = await app.call<{ quiet: boolean }>('idle');
        if (!gi.quiet) problems.push(`g2h ${size} B repeat ${rep}: the host app did not go quiet`);
        add('g2h', size, g2h);
        wrong += g2h.wrong;
        line.push(`g2h ${Math.round(g2h.pps)}/s`);
        }

        // host → guest
        if (on('h2g')) {
        await guest.call('mode', { mode: 'sink', size });
        await app.call('mode', { mode: 'source', size });
        await app.call('source-start');
        const h2g = await windowOf(size, guest, app, true);
        await app.call('source-stop');
        const hi = await guest.call<{ quiet: boolean }>('idle');
        if (!hi.quiet) problems.push(`h2g ${size} B repeat ${rep}: the guest did not go quiet`);
        add('h2g', size, h2g);
        wrong += h2g.wrong;
        line.push(`h2g ${Math.round(h2g.pps)}/s`);
        }

        // round trips (echo)
        if (on('rtt')) {
        await app.call('mode', { mode: 'echo', size });
        await guest.call('mode', { mode: 'ping', size, window: rttWindow(size) });
        await guest.call('ping-start');
        const rtt = await windowOf(size, guest, app, true);
        const lost = await guest.call<number>('ping-stop', {}, 30_000);
        if (lost !== 0) problems.push(`rtt ${size} B repeat ${rep}: ${lost} SDUs did not come back`);
        await app.call('idle');
        add('rtt', size, rtt);
        wrong += rtt.wrong;
        line.push(`rtt ${Math.round(rtt.pps)}/s`);
        }

        if (wrong) problems.push(`${size} B repeat ${rep}: ${wrong} SDUs of the wrong size`);
        console.log(`  repeat ${rep}/${o.repeats} ${String(size).padStart(5)} B: ${line.join(', ')}  (load ${loadavg()[0]!.toFixed(2)})`);
      }
    }

    const guestStats = await guest.call<unknown>('stats');
    const load1 = loadavg();
    await Promise.allSettled([guest.call('exit', {}, 5000), app.call('exit', {}, 5000)]);
    // Let them exit on their own (a --cpu-prof profile is written at exit), for at most 5 s.
    for (let i = 0; i < 250 && children.some((c) => !c.exited); i++) await sleep(20);

    // Table
    const rows = o.sizes.map((size) => {
      const row: Record<string, unknown> = { size };
      const rawPps = (samples.get(`raw:${size}`) ?? []).map((w) => w.pps);
      const rawMedian = median(rawPps);
      for (const k of o.series) {
        const ws = samples.get(`${k}:${size}`) ?? [];
        const pps = ws.map((w) => w.pps);
        const entry: Record<string, unknown> = { pps: spread(pps), gbps: spread(ws.map((w) => w.gbps)) };
        if (k === 'raw') {
          const lr = ws as LoopbackResult[];
          entry.kicksPerPacket = median(lr.map((w) => w.kicksPerPacket));
          entry.callsPerPacket = median(lr.map((w) => w.callsPerPacket));
        } else {
          const fw = ws as Window[];
          // Ratio per repeat (each full-stack window against the raw window just before it), and of the medians.
          if (rawPps.length > 0) entry.ratio = { ofMedians: median(pps) / rawMedian, perRepeat: spread(fw.map((w, i) => w.pps / rawPps[i]!)) };
          entry.cpuUsPerSdu = {
            backend: median(fw.map((w) => w.cpuUsPerSdu.backend)),
            guest: median(fw.map((w) => w.cpuUsPerSdu.guest)),
            app: median(fw.map((w) => w.cpuUsPerSdu.app)),
          };
          entry.drops = fw.reduce((a, w) => a + (w.drops ?? 0), 0);
        }
        row[k] = entry;
      }
      return row;
    });

    const fmtK = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : `${(x / 1e3).toFixed(1)}k`);
    const pad = (s: string, n: number): string => s.padStart(n);
    console.log('');
    console.log('SDUs/s: median [min–max] of the repeats; ratio = median full-stack ÷ median raw round trips/s; Gb/s of the median');
    console.log(
      `${pad('size', 6)} ${pad('raw rt/s', 22)} ${pad('Gb/s', 6)} | ${['g2h', 'h2g', 'rtt'].map((k) => `${pad(`${k} SDU/s`, 22)} ${pad('Gb/s', 6)} ${pad('ratio', 5)}`).join(' | ')}`,
    );
    for (const r of rows) {
      const cell = (k: SeriesKey): string => {
        const e = r[k] as { pps: { min: number; median: number; max: number }; gbps: { median: number }; ratio?: { ofMedians: number } } | undefined;
        if (!e) return pad('n/a', k === 'raw' ? 29 : 35);
        const s = `${pad(fmtK(e.pps.median), 7)} [${fmtK(e.pps.min)}–${fmtK(e.pps.max)}]`;
        return `${pad(s, 22)} ${pad(e.gbps.median.toFixed(2), 6)}${k === 'raw' ? '' : ` ${pad(e.ratio ? e.ratio.ofMedians.toFixed(2) : 'n/a', 5)}`}`;
      };
      console.log(`${pad(String(r.size), 6)} ${cell('raw')} | ${cell('g2h')} | ${cell('h2g')} | ${cell('rtt')}`);
    }
    console.log('');
    console.log('CPU µs per SDU (median), per process: back-end (device + shim IPC process + IPC daemon) / guest (front-end + guest IPC process) / host app');
    for (const r of rows) {
      const c = (k: SeriesKey): string => {
        const e = r[k] as { cpuUsPerSdu: { backend: number; guest: number; app: number }; drops: number } | undefined;
        if (!e) return `${k} n/a`;
        return `${k} ${e.cpuUsPerSdu.backend.toFixed(2)} / ${e.cpuUsPerSdu.guest.toFixed(2)} / ${e.cpuUsPerSdu.app.toFixed(2)}${e.drops ? ` (${e.drops} dropped)` : ''}`;
      };
      console.log(`${pad(String(r.size), 6)}  ${c('g2h')}   ${c('h2g')}   ${c('rtt')}`);
    }
    console.log(`\nload average at the end: ${load1.map((x) => x.toFixed(2)).join(' ')} on ${cpus().length} CPUs`);
    for (const p of problems) console.log(`PROBLEM: ${p}`);

    const outDir = join(ROOT, 'bench-results');
    mkdirSync(outDir, { recursive: true });
    const out = {
      benchmark: 'host-stack',
      date: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      loadavg: { start: load0, end: load1 },
      options: o,
      rttWindow: Object.fromEntries(o.sizes.map((size) => [size, rttWindow(size)])),
      processes: {
        backend: 'VhostUserServer + VmpiDevice + host ShimHvIpcp + IpcDaemon (and the idle loopback server)',
        guest: 'test front-end + FrontendPort + guest ShimHvIpcp + guest application (in process)',
        app: 'host application on IpcClient (own process)',
      },
      results: rows,
      samples: Object.fromEntries(samples),
      device: { ...device.stats },
      hostIpcp: hostIpcp.stats,
      daemon: daemon.stats,
      guest: guestStats,
      problems,
    };
    writeFileSync(join(outDir, 'host-stack.json'), JSON.stringify(out, null, 2) + '\n');
    console.log(`results written to ${join(outDir, 'host-stack.json')}`);
    if (problems.length > 0) process.exitCode = 1;
  } finally {
    killAll();
    daemon.close();
    hostIpcp.close();
    vmpiServer.close();
    loopServer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
