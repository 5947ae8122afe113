/**
 * series.ts — the systems of Fig. 4a (host ↔ VM goodput), each a Series (../common/series.ts),
 * each measured in both directions (`measure(…, 'to-guest' | 'to-host')`), always at the receiver.
 *
 *  - TgenShimSeries (the paper's system): the shim DIF for hypervisors with vmpi-tgen over the
 *    IPC API at both ends, as a user runs it. Host: VmpiHost + shim IPC process + IPC daemon in
 *    this process (what `vmpi serve` runs), the tgen client on the client library. Guest: Node
 *    runs `vmpi guest` (shim IPC process over /dev/vmpi0 + IPC daemon) and `vmpi tgen server`,
 *    which reads its flow's driver file directly. Goodput is measured by the tgen server.
 *    To-host (the paper's setup: rina-tgen's client in the guest): a tgen server on the host's
 *    IPC daemon (application HOST_TGEN_APP), and in the guest one Node process with a TgenClient
 *    (GUEST_TGEN_CLIENT, the same client `vmpi tgen client` runs) that does one run per line
 *    written to its FIFO, so Node's start-up under TCG is paid once, not per measurement.
 *  - UdpNicSeries: an emulated NIC (virtio-net-pci or e1000) on a tap in the bench's private
 *    network namespace; the guest runs `udp-goodput recv`, the host (inside the namespace) runs
 *    `udp-goodput send` with the same static binary: a netperf UDP_STREAM-like unpaced stream.
 *    To-host: the same two commands the other way round (the receiver in the namespace on the
 *    tap's address, the guest with a permanent neighbour entry for it).
 *  - ShimVmpiSeries ('vmpi-channel', optional): no DIF, one VMPI device served by VmpiHost in this process; the host sends SDUs on
 *    channel 2 as fast as backpressure allows (SendResult.Full → wait for 'drain'); the guest
 *    reads /dev/vmpi0 with `udp-goodput -B 262144 vmpi-recv` (the same receive loop and window as
 *    the UDP receiver, payload not inspected, in batch-read mode: each read() returns as many
 *    queued SDUs as fit in 256 KiB, as Node's readers in the guest do, every one counted;
 *    FIG4A_VMPI_RECV_BATCH=0: one read() per SDU, as before; series 'vmpi-channel-readone' is
 *    always that, for before/after ratios in one run) or, with receiver 'vmpi-perf', with
 *    `vmpi-perf recv` (which verifies the pattern and CRC of every SDU, so it is slower per byte).
 *    To-host: `udp-goodput -B 64 vmpi-send` in the guest (batch-write mode, 64 SDUs per write(),
 *    as Node's writers do; FIG4A_VMPI_SEND_BATCH=0: one write() per SDU; blocking on a full tx
 *    ring), the host counts the channel's SDUs with the receivers' window rules (WindowCounter).
 *  - SerialSeries ('virtio-serial', optional): virtio-serial-pci with one virtserialport whose
 *    chardev is a unix socket QEMU listens on; the guest loads virtio_console only for this
 *    series. `udp-goodput stream-send` / `stream-recv` at both ends (the host side over the
 *    socket): one write() per SDU, reads of the SDU size, bytes counted at the receiver.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { SendResult, type VmpiDevice } from '../../src/vmpi/device.js';
import type { ChildProcess } from 'node:child_process';
import { VmpiHost } from '../../src/vmpi/host.js';
import { DifError } from '../../src/dif/api.js';
import { IpcClient } from '../../src/dif/ipc/client.js';
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { ShimHvIpcp } from '../../src/dif/shim-hv/ipcp.js';
import { DEFAULT_TGEN_APP, TgenClient, startTgenServer, type ServerRunEvent, type TgenServer } from '../../src/dif/tgen.js';
import { Guest } from '../../test/helpers/guest.js';
import { parseResults, patternSdu } from '../../test/helpers/pattern.js';
import { BOOT_MS, fromRecord, GUEST, IDLE_MS, liveSenders, record, ROTATE, UDP_PORT_BASE, VMPI_CLI, WAIT_MS, type Direction, type Measurement, type Series } from '../common/series.js';
import { GUEST_ADDR, GUEST_MAC, HOST_ADDR, PREFIX, type PrivateNet } from '../common/netns.js';
import { nicGuest, setupNic, type NicModel } from '../common/nic.js';

/** SDUs of the raw VMPI channel series go on channel CHANNEL_BASE + (run % ROTATE). */
const CHANNEL_BASE = 2;
/**
 * To-host senders in the guest run this much longer than the window: the agent runs one command
 * at a time, so the sender ends by itself after the host's receiver has closed its window.
 */
const TAIL_MS = 1000;

/** A host-side process of the bench (udp-goodput): its output, awaited for READY and RESULT lines. */
class HostTool {
  out = '';
  readonly exited: Promise<void>;
  private readonly proc: ChildProcess;
  private readonly waiters = new Set<() => void>();

  constructor(argv: string[]) {
    const [cmd, ...args] = argv;
    this.proc = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveSenders.add(this.proc);
    const onData = (d: Buffer) => {
      this.out += d.toString();
      for (const w of [...this.waiters]) w();
    };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    this.exited = new Promise((res) =>
      this.proc.on('exit', () => {
        liveSenders.delete(this.proc);
        for (const w of [...this.waiters]) w();
        res();
      }),
    );
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The first match of `re` in the output; rejects when the process ends without it or after `ms`. */
  waitFor(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    return new Promise((res, rej) => {
      const t = setTimeout(() => done(new Error(`timed out after ${ms} ms waiting for ${re}; host tool said: ${this.out.slice(-1500)}`)), ms);
      const done = (e: Error | null, m?: RegExpMatchArray) => {
        clearTimeout(t);
        this.waiters.delete(check);
        if (e) rej(e);
        else res(m!);
      };
      const check = () => {
        const m = re.exec(this.out);
        if (m) done(null, m);
        else if (!this.running) done(new Error(`host tool ended without ${re}: ${this.out.slice(-1500) || '(no output)'}`));
      };
      this.waiters.add(check);
      check();
    });
  }

  kill(sig: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.proc.kill(sig);
  }
}

/**
 * The receivers' window (udp-goodput's receive loop) for SDUs that arrive in this process: the
 * first arrival opens the window and is not counted; it closes `ms` later, or at the last arrival
 * when nothing arrives for IDLE_MS; nothing within WAIT_MS is an error.
 */
class WindowCounter {
  private t0 = 0;
  private tend = 0;
  private tlast = 0;
  private sdus = 0;
  private bytes = 0;
  private started = false;
  private finish: ((m: Measurement) => void) | null = null;
  private timer: NodeJS.Timeout | undefined;
  readonly result: Promise<Measurement>;

  constructor(private readonly ms: number) {
    this.result = new Promise((res, rej) => {
      this.finish = res;
      this.timer = setTimeout(() => {
        this.finish = null;
        rej(new Error(`the host got no SDU within ${WAIT_MS} ms`));
      }, WAIT_MS);
    });
    this.result.catch(() => {});
  }

  take(len: number): void {
    if (!this.finish) return;
    const t = performance.now();
    if (!this.started) {
      this.started = true;
      this.t0 = this.tlast = t;
      this.tend = t + this.ms;
      clearTimeout(this.timer);
      const tick = () => {
        const now = performance.now();
        if (now >= this.tend) return this.close();
        if (now - this.tlast >= IDLE_MS) {
          this.tend = this.tlast;
          return this.close();
        }
        this.timer = setTimeout(tick, Math.min(100, this.tend - now + 1));
      };
      this.timer = setTimeout(tick, 100);
      return;
    }
    if (t > this.tend) return this.close();
    this.sdus++;
    this.bytes += len;
    this.tlast = t;
  }

  private close(): void {
    const f = this.finish;
    if (!f) return;
    this.finish = null;
    clearTimeout(this.timer);
    const seconds = (this.tend - this.t0) / 1000;
    f({ mbps: seconds > 0 ? (this.bytes * 8) / seconds / 1e6 : 0, pps: seconds > 0 ? this.sdus / seconds : 0, seconds, sdus: this.sdus, bytes: this.bytes });
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.finish = null;
  }
}

/** The sender's `RESULT mode=<mode> … pps=` in `out`, if any. */
function senderPps(out: string, mode: string): number | undefined {
  const s = parseResults(out).find((x) => x.kind === 'RESULT' && x.mode === mode);
  return s ? Number(s.pps) : undefined;
}

export class UdpNicSeries implements Series {
  readonly key: string;
  readonly name: string;
  private guest: Guest | null = null;
  private runs = 0;

  constructor(
    private readonly model: NicModel,
    private readonly net: PrivateNet,
    /** udp-goodput on the host (the static build, .cache/guest/udp-goodput). */
    private readonly goodputBin: string,
    /** nice(1) increment of the unpaced sender (0: none). */
    private readonly senderNice = 0,
  ) {
    this.key = model === 'e1000' ? 'e1000' : 'virtio-net';
    this.name = model === 'e1000' ? 'e1000 (UDP, emulated NIC)' : 'virtio-net-pci (UDP, no vhost-net)';
  }

  async start(): Promise<void> {
    this.guest = nicGuest({ name: `vmpi-fig4a-${this.key}`, netns: this.net.ns, tap: this.net.tap, model: this.model, mac: GUEST_MAC });
    await this.guest.agentReady(1, BOOT_MS);
    // To-host: no ARP during the guest's flood either (busybox: arp -s, permanent).
    await setupNic(this.guest, this.model, GUEST_ADDR, PREFIX, [`arp -i eth0 -s ${HOST_ADDR} ${this.net.tapMac()}`]);
  }

  measure(size: number, seconds: number, direction: Direction = 'to-guest'): Promise<Measurement> {
    return direction === 'to-host' ? this.measureToHost(size, seconds) : this.measureToGuest(size, seconds);
  }

  /** VM → host: `udp-goodput send` in the guest, `udp-goodput recv` in the namespace. */
  private async measureToHost(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const ms = Math.round(seconds * 1000);
    const port = UDP_PORT_BASE + (this.runs++ % ROTATE);
    const recv = new HostTool(this.net.exec([this.goodputBin, '-w', String(WAIT_MS), '-t', String(IDLE_MS), 'recv', String(port), String(ms)]));
    try {
      await recv.waitFor(new RegExp(`READY mode=recv port=${port}\\b`), 10_000);
      const nice = this.senderNice ? `nice -n ${this.senderNice} ` : '';
      const job = g.start(`${nice}udp-goodput send ${HOST_ADDR} ${port} ${size} ${ms + TAIL_MS}`, WAIT_MS + ms + 60_000);
      const m = await recv.waitFor(/RESULT mode=recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000);
      const res = fromRecord(record(m[0], 'recv'), size);
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput send in the guest exited ${done.rc}:\n${done.out}`);
      const sent = senderPps(done.out, 'send');
      if (sent !== undefined) res.sentPps = sent;
      return res;
    } finally {
      recv.kill('SIGKILL');
      await recv.exited;
    }
  }

  private async measureToGuest(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const ms = Math.round(seconds * 1000);
    const port = UDP_PORT_BASE + (this.runs++ % ROTATE);
    const job = g.start(`udp-goodput -w ${WAIT_MS} -t ${IDLE_MS} recv ${port} ${ms}`, WAIT_MS + ms + 60_000);
    await g.waitFor(new RegExp(`READY mode=recv port=${port}\\b`), 30_000, job.from);
    // The sender runs until the guest reports (SIGTERM), with a generous cap.
    const send = [this.goodputBin, 'send', GUEST_ADDR, String(port), String(size), String(ms + 60_000)];
    const [cmd, ...argv] = this.net.exec(this.senderNice ? ['nice', '-n', String(this.senderNice), ...send] : send);
    const sender = spawn(cmd!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveSenders.add(sender);
    let sout = '';
    sender.stdout.on('data', (d: Buffer) => (sout += d.toString()));
    sender.stderr.on('data', (d: Buffer) => (sout += d.toString()));
    const senderExit = new Promise<void>((res) =>
      sender.on('exit', () => {
        liveSenders.delete(sender);
        res();
      }),
    );
    try {
      const m = await g.waitFor(/RESULT mode=recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000, job.from);
      sender.kill('SIGTERM');
      let res: Measurement;
      try {
        res = fromRecord(record(m[0], 'recv'), size);
      } catch (e) {
        await senderExit;
        throw new Error(`${(e as Error).message}; host sender said: ${sout.trim() || '(nothing)'}`);
      }
      await senderExit;
      const s = parseResults(sout).find((x) => x.kind === 'RESULT' && x.mode === 'send');
      if (s) res.sentPps = Number(s.pps);
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput recv exited ${done.rc}:\n${done.out}`);
      return res;
    } finally {
      if (sender.exitCode === null && sender.signalCode === null) sender.kill('SIGKILL');
    }
  }

  async stop(): Promise<void> {
    await this.guest?.stop();
    this.guest = null;
  }
}

export type ShimReceiver = 'udp-goodput' | 'vmpi-perf';

/** Host device options a series may vary: rxPacked false = the one-frame-per-rx-buffer format (before VMPI_F_RX_PACKED). */
export interface VmpiSeriesOptions {
  /** false: the host does not offer VMPI_F_RX_PACKED (series '…-unpacked'). */
  rxPacked?: boolean;
  /** false: the host does not offer VMPI_F_TX_PACKED (series '…-txunpacked'). */
  txPacked?: boolean;
}

/** The series key and name suffix for `opts` (at most one of the two packings turned off). */
function packingVariant(opts: VmpiSeriesOptions): { key: string; note: string } {
  if (opts.rxPacked === false) return { key: '-unpacked', note: '; one frame per rx buffer' };
  if (opts.txPacked === false) return { key: '-txunpacked', note: '; one frame per tx buffer' };
  return { key: '', note: '' };
}

/**
 * SDUs per write() of the raw channel's to-host sender (`udp-goodput -B`, batch-write mode, as
 * Node's writers in the guest use it); FIG4A_VMPI_SEND_BATCH=0: one write() per SDU.
 */
const VMPI_SEND_BATCH = Number(process.env.FIG4A_VMPI_SEND_BATCH ?? 64);
/**
 * Bytes per read() of the raw channel's to-guest receiver (`udp-goodput -B`, batch-read mode, as
 * Node's readers in the guest use it: CHANNEL_READ_BUFFER); FIG4A_VMPI_RECV_BATCH=0: one read()
 * per SDU.
 */
const VMPI_RECV_BATCH = Number(process.env.FIG4A_VMPI_RECV_BATCH ?? 256 * 1024);

export class ShimVmpiSeries implements Series {
  readonly key: string;
  readonly name: string;
  private guest: Guest | null = null;
  private host: VmpiHost | null = null;
  private device: VmpiDevice | null = null;
  private dir = '';
  private runs = 0;
  /** Bytes per batch read of udp-goodput vmpi-recv (0: one read() per SDU). */
  private readonly recvBatch: number;

  constructor(
    private readonly receiver: ShimReceiver = 'udp-goodput',
    private readonly opts: VmpiSeriesOptions = {},
    /** true: udp-goodput vmpi-recv does one read() per SDU whatever VMPI_RECV_BATCH says (key '…-readone'). */
    readOne = false,
  ) {
    const v = packingVariant(opts);
    this.recvBatch = readOne ? 0 : VMPI_RECV_BATCH;
    this.key = `vmpi-channel${v.key}${readOne ? '-readone' : ''}`;
    const recv = receiver === 'vmpi-perf' ? 'vmpi-perf' : this.recvBatch > 0 ? 'udp-goodput vmpi-recv, batch reads' : 'udp-goodput vmpi-recv, one read per SDU';
    this.name = `raw VMPI channel (no DIF; ${recv} in C${v.note})`;
  }

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4a-'));
    this.host = new VmpiHost();
    const sock = join(this.dir, 'vm.sock');
    this.device = this.host.addDevice({ socketPath: sock, vmpiId: 1, rxPacked: this.opts.rxPacked, txPacked: this.opts.txPacked });
    this.guest = new Guest({ ...GUEST, name: 'vmpi-fig4a-shim', sockets: [sock] });
    await this.guest.agentReady(1, BOOT_MS);
    const r = await this.guest.exec('ls /dev/vmpi0');
    if (r.rc !== 0) throw new Error(`no /dev/vmpi0 in the guest:\n${r.out}`);
  }

  measure(size: number, seconds: number, direction: Direction = 'to-guest'): Promise<Measurement> {
    return direction === 'to-host' ? this.measureToHost(size, seconds) : this.measureToGuest(size, seconds);
  }

  /** VM → host: `udp-goodput vmpi-send` in the guest; the host counts the channel's SDUs. */
  private async measureToHost(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const dev = this.device!;
    const ms = Math.round(seconds * 1000);
    const CHANNEL = CHANNEL_BASE + (this.runs++ % ROTATE);
    const win = new WindowCounter(ms);
    dev.bind(CHANNEL, (sdu) => win.take(sdu.length));
    try {
      const batch = VMPI_SEND_BATCH > 0 ? `-B ${VMPI_SEND_BATCH} ` : '';
      const job = g.start(`udp-goodput ${batch}vmpi-send /dev/vmpi0 ${CHANNEL} ${size} ${ms + TAIL_MS}`, WAIT_MS + ms + 60_000);
      const failed = job.done.then((d) => {
        if (d.rc !== 0) throw new Error(`udp-goodput vmpi-send exited ${d.rc}:\n${d.out}`);
        return new Promise<never>(() => {});
      });
      const res = await Promise.race([win.result, failed]);
      if (res.sdus === 0) throw new Error('the host got only one SDU');
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput vmpi-send exited ${done.rc}:\n${done.out}`);
      const sent = senderPps(done.out, 'vmpi-send');
      if (sent !== undefined) res.sentPps = sent;
      return res;
    } finally {
      win.cancel();
      dev.unbind(CHANNEL);
    }
  }

  private async measureToGuest(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const dev = this.device!;
    const ms = Math.round(seconds * 1000);
    const perf = this.receiver === 'vmpi-perf';
    const CHANNEL = CHANNEL_BASE + (this.runs++ % ROTATE);
    // Let the previous measurement's leftovers (host backlog) reach the guest, which drops them.
    for (let i = 0; i < 100 && dev.stats.backlogSdus > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const cmd = perf
      ? `vmpi-perf -t 1000 recv /dev/vmpi0 ${CHANNEL} ${size} 4000000000`
      : `udp-goodput -w ${WAIT_MS} -t ${IDLE_MS}${this.recvBatch > 0 ? ` -B ${this.recvBatch}` : ''} vmpi-recv /dev/vmpi0 ${CHANNEL} ${ms}`;
    const job = g.start(cmd, WAIT_MS + ms + 60_000);
    await g.waitFor(new RegExp(`READY mode=(vmpi-recv|recv) dev=/dev/vmpi0 channel=${CHANNEL}\\b`), 30_000, job.from);
    const resultRe = new RegExp(`RESULT mode=(vmpi-recv|recv) dev=/dev/vmpi0 channel=${CHANNEL} [^\\n]*status=\\S+\\s`);
    let reported = false;
    const result = g.waitFor(resultRe, WAIT_MS + ms + 60_000, job.from).finally(() => (reported = true));
    result.catch(() => {});

    // Keep the guest's rx ring full: send until refused, then wait for 'drain'. vmpi-perf needs
    // its pattern (seq in bytes 0..3); udp-goodput ignores the payload, the cost is the same.
    const sdus = Array.from({ length: 256 }, (_, i) => patternSdu(CHANNEL, i, size));
    const t0 = performance.now();
    // udp-goodput closes its window itself: send until it reports. vmpi-perf counts SDUs until
    // it sees none for 1 s: send for the window's length.
    const until = t0 + (perf ? ms : ms + WAIT_MS);
    let sent = 0;
    while (!reported && performance.now() < until) {
      for (let k = 0; k < 256 && !reported; ) {
        const sdu = sdus[sent & 255]!;
        if (size >= 8) new DataView(sdu.buffer).setUint32(0, sent, true);
        if (dev.send(CHANNEL, sdu) === SendResult.Full) {
          await Promise.race([
            new Promise<void>((res) => dev.once('drain', res)),
            result.then(() => {}, () => {}),
            new Promise((res) => setTimeout(res, 500)),
          ]);
          continue;
        }
        sent++;
        k++;
      }
      await yieldLoop();
    }
    const sentSeconds = (performance.now() - t0) / 1000;
    const m = await result;
    const rec = record(m[0], perf ? 'recv' : 'vmpi-recv');
    if (perf && rec.status !== 'ok' && rec.status !== 'timeout') throw new Error(`vmpi-perf: status ${rec.status}`);
    const res = fromRecord(rec, size);
    res.sentPps = sent / sentSeconds;
    const done = await job.done;
    // vmpi-perf exits 2 when its idle timeout ends the run (expected here).
    if (done.rc !== 0 && !(perf && done.rc === 2)) throw new Error(`${cmd} exited ${done.rc}:\n${done.out}`);
    return res;
  }

  async stop(): Promise<void> {
    await this.guest?.stop();
    this.guest = null;
    this.host?.close();
    this.host = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
  }
}

/** The VMPI-id of the bench's device, and so the shim DIF's name. */
const TGEN_VMPI_ID = 1;
const TGEN_DIF = `hv.vmpi-${TGEN_VMPI_ID}`;
/** The host's tgen server (to-host), under its own name: the guest's server keeps rina-tgen. */
const HOST_TGEN_APP = 'rina-tgen-host';
const TGEN_FIFO = '/tmp/fig4a-tgen.fifo';
/**
 * The guest's to-host client (argv: DIF, server app, FIFO): opens one flow to the host's server
 * (retrying while the host does not know it yet), then one run per line "SIZE MS" on the FIFO,
 * printing FIG4A-TGEN-RUN (or -ERROR) on the console. The FIFO is opened read-write, so writers
 * coming and going never end it.
 */
const GUEST_TGEN_CLIENT = `
import { createReadStream, openSync } from 'node:fs';
import { createInterface } from 'node:readline';
const { IpcClient } = await import('/opt/vmpi/dist/src/dif/ipc/client.js');
const { TgenClient } = await import('/opt/vmpi/dist/src/dif/tgen.js');
const [dif, app, fifo] = process.argv.slice(2);
const client = await IpcClient.connect();
let tg;
for (let i = 0; ; i++) {
  try { tg = await TgenClient.open(client, dif, app, { src: 'fig4a/guest' }); break; }
  catch (e) { if (i > 240) { console.log('FIG4A-TGEN-ERROR open: ' + e.message); process.exit(1); } await new Promise((r) => setTimeout(r, 500)); }
}
console.log('FIG4A-TGEN-READY');
const rl = createInterface({ input: createReadStream('', { fd: openSync(fifo, 'r+') }) });
for await (const line of rl) {
  const [size, ms] = line.trim().split(/\\s+/).map(Number);
  try {
    const r = await tg.run({ sduSize: size, durationMs: ms, reportTimeoutMs: 10000 });
    console.log('FIG4A-TGEN-RUN size=' + size + ' sent=' + r.sent + ' sdus=' + r.sdus);
  } catch (e) { console.log('FIG4A-TGEN-ERROR run: ' + e.message); }
}
`;

export class TgenShimSeries implements Series {
  readonly key: string;
  readonly name: string;
  private guest: Guest | null = null;
  private host: VmpiHost | null = null;
  private ipcp: ShimHvIpcp | null = null;
  private daemon: IpcDaemon | null = null;
  private client: IpcClient | null = null;
  private tgen: TgenClient | null = null;
  private server: TgenServer | null = null;
  /** Resolves the to-host measurement waiting for the host server's next run. */
  private onRun: ((r: ServerRunEvent) => void) | null = null;
  private dir = '';

  constructor(private readonly opts: VmpiSeriesOptions = {}) {
    const v = packingVariant(opts);
    this.key = `shim-dif${v.key}`;
    this.name = `shim DIF for hypervisors (vmpi-tgen, IPC API${v.note})`;
  }

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4a-'));
    this.host = new VmpiHost();
    const sock = join(this.dir, 'vm.sock');
    const device = this.host.addDevice({ socketPath: sock, vmpiId: TGEN_VMPI_ID, rxPacked: this.opts.rxPacked, txPacked: this.opts.txPacked });
    this.ipcp = new ShimHvIpcp({ port: device, role: 'host', allocateTimeoutMs: 30_000 });
    this.daemon = new IpcDaemon({ socketPath: join(this.dir, 'ipc.sock') });
    this.daemon.addIpcp(this.ipcp);
    this.daemon.listen();
    this.guest = new Guest({ ...GUEST, name: 'vmpi-fig4a-shim', sockets: [sock], node: true });
    await this.guest.agentReady(1, BOOT_MS);
    const up = [
      'mkdir -p /run/vmpi',
      `(node ${VMPI_CLI} guest --log-level warn >/tmp/vmpi-guest.log 2>&1 &)`,
      // Node's start under TCG on a loaded host can take a minute.
      'i=0; while [ ! -S /run/vmpi/ipc.sock ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done',
      '[ -S /run/vmpi/ipc.sock ] || { cat /tmp/vmpi-guest.log; false; }',
      `(node ${VMPI_CLI} tgen server --dif ${TGEN_DIF} >/tmp/vmpi-tgen.log 2>&1 &)`,
    ].join(' && ');
    // In a subshell: a failing step must not end the agent's shell.
    const r = await this.guest.exec(`( ${up} )`, 240_000);
    if (r.rc !== 0) throw new Error(`vmpi guest / tgen server did not start in the guest:\n${r.out}`);
    this.client = await IpcClient.connect(this.daemon.socketPath);
    // The server registers once Node has loaded it: retry while the guest says it does not know it.
    const end = Date.now() + 180_000;
    for (;;) {
      try {
        this.tgen = await TgenClient.open(this.client, TGEN_DIF, DEFAULT_TGEN_APP, { src: 'fig4a/1' });
        break;
      } catch (e) {
        // 'timeout': under a loaded host the guest's Node processes can still be starting up.
        if (!(e instanceof DifError && (e.code === 'rejected' || e.code === 'timeout')) || Date.now() > end) throw e;
        await new Promise((res) => setTimeout(res, 500));
      }
    }
  }

  measure(size: number, seconds: number, direction: Direction = 'to-guest'): Promise<Measurement> {
    return direction === 'to-host' ? this.measureToHost(size, seconds) : this.measureToGuest(size, seconds);
  }

  /** The host's tgen server and the guest's client process (first to-host measurement). */
  private async startToHost(): Promise<void> {
    const g = this.guest!;
    this.server = await startTgenServer(this.client!, TGEN_DIF, HOST_TGEN_APP, { onRun: (r) => this.onRun?.(r) });
    const js = Buffer.from(GUEST_TGEN_CLIENT).toString('base64');
    const from = g.mark;
    const r = await g.exec(`( rm -f ${TGEN_FIFO} && mkfifo ${TGEN_FIFO} && echo ${js} | base64 -d > /tmp/fig4a-tgen.mjs && (node /tmp/fig4a-tgen.mjs ${TGEN_DIF} ${HOST_TGEN_APP} ${TGEN_FIFO} &) )`, 60_000);
    if (r.rc !== 0) throw new Error(`could not start the tgen client in the guest:\n${r.out}`);
    await g.waitFor(/FIG4A-TGEN-READY/, 240_000, from);
  }

  /** VM → host, as in the paper: the tgen client in the guest, the tgen server here. */
  private async measureToHost(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    if (!this.server) await this.startToHost();
    const ms = Math.round(seconds * 1000);
    const ran = new Promise<ServerRunEvent>((res) => (this.onRun = res));
    const from = g.mark;
    try {
      const w = await g.exec(`echo ${size} ${ms} > ${TGEN_FIFO}`, 30_000);
      if (w.rc !== 0) throw new Error(`could not write to the guest's tgen client:\n${w.out}`);
      const line = await g.waitFor(new RegExp(`FIG4A-TGEN-(RUN size=${size} sent=(\\d+) sdus=|ERROR [^\\r\\n]*[\\r\\n])`), ms + 90_000, from);
      if (line[1]!.startsWith('ERROR')) throw new Error(`the guest's tgen client: ${line[1]}`);
      // The server reported before the client printed; its event is in by now, or very soon.
      const r = await Promise.race([ran, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no run on the host tgen server')), 10_000))]);
      const secs = r.elapsedNs / 1e9;
      return { mbps: r.mbps, pps: secs > 0 ? r.sdus / secs : 0, seconds: secs, sdus: r.sdus, bytes: r.bytes, sentPps: Number(line[2]) / seconds };
    } finally {
      this.onRun = null;
    }
  }

  private async measureToGuest(size: number, seconds: number): Promise<Measurement> {
    const r = await this.tgen!.run({ sduSize: size, durationMs: Math.round(seconds * 1000), reportTimeoutMs: 10_000 });
    const secs = r.elapsedNs / 1e9;
    return { mbps: r.mbps, pps: secs > 0 ? r.sdus / secs : 0, seconds: secs, sdus: r.sdus, bytes: r.bytes, sentPps: r.sent / seconds };
  }

  async stop(): Promise<void> {
    await this.tgen?.close().catch(() => {});
    await this.server?.close().catch(() => {});
    this.server = null;
    this.client?.close();
    this.daemon?.close();
    this.ipcp?.close();
    await this.guest?.stop();
    this.host?.close();
    this.tgen = null;
    this.client = null;
    this.daemon = null;
    this.ipcp = null;
    this.guest = null;
    this.host = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The virtserialport's name (the guest finds its /dev/vportNpM under it). */
const SERIAL_PORT_NAME = 'org.vmpi.fig4a';

export class SerialSeries implements Series {
  readonly key = 'virtio-serial';
  readonly name = 'virtio-serial-pci (one port, unix socket chardev; udp-goodput stream in C)';
  private guest: Guest | null = null;
  private dir = '';
  private sock = '';
  private dev = '';

  /** udp-goodput on the host (the static build, .cache/guest/udp-goodput). */
  constructor(private readonly goodputBin: string) {}

  async start(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'vmpi-fig4a-'));
    this.sock = join(this.dir, 'serial.sock');
    this.guest = new Guest({
      ...GUEST,
      name: 'vmpi-fig4a-serial',
      qemuArgs: [
        '-chardev', `socket,id=vser0,path=${this.sock},server=on,wait=off`,
        '-device', 'virtio-serial-pci,id=vser',
        '-device', `virtserialport,bus=vser.0,chardev=vser0,name=${SERIAL_PORT_NAME}`,
      ],
    });
    await this.guest.agentReady(1, BOOT_MS);
    // virtio_console only for this series (build.sh ships it, /etc/vmpi-serial-modules lists it).
    const setup = [
      'for m in $(cat /etc/vmpi-serial-modules); do insmod /lib/modules/$m.ko || exit 1; done',
      `i=0; while [ -z "$(grep -l '^${SERIAL_PORT_NAME}$' /sys/class/virtio-ports/*/name 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done`,
      `p=$(grep -l '^${SERIAL_PORT_NAME}$' /sys/class/virtio-ports/*/name) && p=\${p%/name} && p=\${p##*/}`,
      'i=0; while [ ! -e /dev/$p ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
      'echo "SERIAL-PORT dev=/dev/$p"',
    ].join(' && ');
    const r = await this.guest.exec(`( ${setup} )`, 60_000);
    const m = /SERIAL-PORT dev=(\/dev\/vport\S+)/.exec(r.out);
    if (r.rc !== 0 || !m) throw new Error(`no virtio-serial port in the guest (rc ${r.rc}):\n${r.out}`);
    this.dev = m[1]!;
  }

  measure(size: number, seconds: number, direction: Direction = 'to-guest'): Promise<Measurement> {
    if (size === 0) throw new Error('virtio-serial is a byte stream: no 0-byte SDUs (leave size 0 out of FIG4A_SIZES)');
    return direction === 'to-host' ? this.measureToHost(size, seconds) : this.measureToGuest(size, seconds);
  }

  private async measureToGuest(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const ms = Math.round(seconds * 1000);
    const job = g.start(`udp-goodput -w ${WAIT_MS} -t ${IDLE_MS} stream-recv ${this.dev} ${size} ${ms}`, WAIT_MS + ms + 60_000);
    await g.waitFor(new RegExp(`READY mode=stream-recv target=${this.dev} `), 30_000, job.from);
    const send = new HostTool([this.goodputBin, 'stream-send', `unix:${this.sock}`, String(size), String(ms + 60_000)]);
    try {
      const m = await g.waitFor(/RESULT mode=stream-recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000, job.from);
      send.kill('SIGTERM');
      await send.exited;
      const res = fromRecord(record(m[0], 'stream-recv'), size);
      const sent = senderPps(send.out, 'stream-send');
      if (sent !== undefined) res.sentPps = sent;
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput stream-recv exited ${done.rc}:\n${done.out}`);
      return res;
    } finally {
      send.kill('SIGKILL');
      await send.exited;
    }
  }

  private async measureToHost(size: number, seconds: number): Promise<Measurement> {
    const g = this.guest!;
    const ms = Math.round(seconds * 1000);
    const recv = new HostTool([this.goodputBin, '-w', String(WAIT_MS), '-t', String(IDLE_MS), 'stream-recv', `unix:${this.sock}`, String(size), String(ms)]);
    try {
      await recv.waitFor(/READY mode=stream-recv /, 10_000);
      const job = g.start(`udp-goodput stream-send ${this.dev} ${size} ${ms + TAIL_MS}`, WAIT_MS + ms + 60_000);
      const m = await recv.waitFor(/RESULT mode=stream-recv [^\n]*status=\S+\s/, WAIT_MS + ms + 60_000);
      const res = fromRecord(record(m[0], 'stream-recv'), size);
      const done = await job.done;
      if (done.rc !== 0) throw new Error(`udp-goodput stream-send in the guest exited ${done.rc}:\n${done.out}`);
      const sent = senderPps(done.out, 'stream-send');
      if (sent !== undefined) res.sentPps = sent;
      return res;
    } finally {
      recv.kill('SIGKILL');
      await recv.exited;
    }
  }

  async stop(): Promise<void> {
    await this.guest?.stop();
    this.guest = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
  }
}
